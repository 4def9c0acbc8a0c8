// node bench/learning.mjs MODEL.onnx TEXT.txt CHARS  ->  one JSON line: keystroke latencies (ms) of three sessions
// typed side by side on onnxruntime-node, as `compact-lm eval-complete --learn` types in Python: learning off, the
// user's words, the user's words with the context cache. In turns of 500 keystrokes, the order rotating each
// turn, so that a drift in the machine's speed reaches all three alike.
import { readFileSync } from "node:fs";
import * as ortModule from "onnxruntime-node";
import { Autocompleter, UserWords } from "../compact_lm.js";
import { summary } from "./keystrokes.js";

const TURN = 500;
const [model, textPath, chars] = process.argv.slice(2);
const ort = ortModule.default ?? ortModule;
const text = Array.from(readFileSync(textPath, "utf8")).slice(0, Number(chars));
const names = ["off", "words", "cache"];
const sessions = [
  (await Autocompleter.create(model, { ort })).session(),
  (await Autocompleter.create(model, { ort })).session({ userWords: new UserWords() }),
  (await Autocompleter.create(model, { ort, contextCache: true })).session({ userWords: new UserWords() }),
];
const times = names.map(() => []);
for (let start = 0, turn = 0; start < text.length; start += TURN, turn += 1) {
  for (let j = 0; j < names.length; j++) {
    const which = (j + turn) % names.length;
    for (const char of text.slice(start, start + TURN)) {
      const t0 = performance.now();
      await sessions[which].type(char);
      await sessions[which].suggestions(3);
      times[which].push(performance.now() - t0);
    }
  }
}
const result = { ort: ort.env.versions, chars: text.length };
for (const [j, name] of names.entries()) result[name] = summary(times[j]);
console.log(JSON.stringify(result));
