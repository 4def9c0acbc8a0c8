// node bench/node.mjs node|web MODEL.onnx TEXT.txt CHARS  ->  one JSON line (see keystrokes.js)
import { readFileSync } from "node:fs";
import { Autocompleter } from "../compact_lm.js";
import { measure } from "./keystrokes.js";

const [runtime, model, textPath, chars] = process.argv.slice(2);
const ort = runtime === "web" ? await import("onnxruntime-web") : await import("onnxruntime-node");
if (runtime === "web") ort.env.wasm.numThreads = 1;
const text = Array.from(readFileSync(textPath, "utf8")).slice(0, Number(chars)).join("");
const result = await measure(Autocompleter, ort.default ?? ort, model, text);
console.log(JSON.stringify({ runtime: runtime === "web" ? "node onnxruntime-web (wasm)" : "node onnxruntime-node",
                             ort: (ort.default ?? ort).env.versions, ...result }));
