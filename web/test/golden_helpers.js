// Shared by the golden-case tests: where the cases are, onnxruntime-node with counted runs, comparison with
// Python's results, and the model-configuration tests (each test file takes a share of the models, so that
// `node --test --test-concurrency=2` runs them on two cores).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import * as ortNode from "onnxruntime-node";
import { Autocompleter, UserWords } from "../compact_lm.js";

export { ortNode };

export const GOLDEN = process.env.COMPACT_LM_GOLDEN;
export const SKIP = GOLDEN ? false : "COMPACT_LM_GOLDEN is not set (pytest tests/test_web_node.py writes the cases and sets it)";
const REL = 1e-5;
const MAX_REPORTED = 12;

export function readJson(name) {
  return JSON.parse(fs.readFileSync(path.join(GOLDEN, name), "utf8"));
}

export function modelFiles() {
  return GOLDEN ? fs.readdirSync(GOLDEN).filter((f) => /^model-.*\.json$/.test(f)).sort() : [];
}

/** onnxruntime-node with every session's run() counted. */
export function countingOrt() {
  const counter = { runs: 0 };
  const InferenceSession = {
    async create(...args) {
      const session = await ortNode.InferenceSession.create(...args);
      return new Proxy(session, {
        get(target, prop) {
          if (prop === "run") return (...a) => { counter.runs += 1; return target.run(...a); };
          const value = target[prop];
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
    },
  };
  return { ort: { InferenceSession, Tensor: ortNode.Tensor, env: ortNode.env }, counter };
}

export async function open(golden, ort) {
  const userWords = golden.userWords ? UserWords.fromJSON(golden.userWords, golden.userWordsOptions) : null;
  return Autocompleter.create(golden.model, { ort, sequence: golden.sequence, ...golden.options, userWords });
}

/** Differences between the Autocompleter's dictionary after the sessions and Python's (words, counts, last uses,
 * weights); none when the configuration has no user words. */
export function compareUserWords(ac, want) {
  if (!want) return [];
  const got = ac.userWords.toJSON();
  const out = [];
  if (got.clock !== want.clock) out.push(`user words: clock ${got.clock}, Python ${want.clock}`);
  const gotWords = Object.keys(got.words), wantWords = Object.keys(want.words);
  if (JSON.stringify(gotWords) !== JSON.stringify(wantWords)) {
    out.push(`user words: ${JSON.stringify(gotWords)} != Python's ${JSON.stringify(wantWords)}`);
  }
  for (const word of wantWords) {
    const a = got.words[word], b = want.words[word];
    if (a && (a.count !== b.count || a.last !== b.last || Math.abs(a.weight - b.weight) > 2e-6)) {
      out.push(`user words: ${JSON.stringify(word)} ${JSON.stringify(a)} != Python's ${JSON.stringify(b)}`);
    }
  }
  return out;
}

/**
 * compare() for a runtime whose kernels round differently (onnxruntime-web's wasm): the i-th best
 * probability within `rel` of Python's, the texts the same except where such a near tie swapped them.
 */
export function compareLoose(got, want, where, rel) {
  if (got.length !== want.length) return [`${where}: ${got.length} suggestions, Python ${want.length}`];
  const out = [];
  want.forEach(([text, p], i) => {
    const close = Math.abs(got[i].prob - p) <= rel * Math.abs(p);
    if (got[i].text === text) looseWorst.rel = Math.max(looseWorst.rel, Math.abs(got[i].prob - p) / Math.abs(p));
    const swapped = got[i].text !== text && !want.some(([t, q]) => t === got[i].text && Math.abs(q - p) <= rel * Math.abs(p))
      && i < want.length - 1;   // the last place may also be taken by a near-tied word Python ranked k+1-th
    if (!close || swapped) out.push(`${where}: #${i} ${JSON.stringify(got[i].text)} ${got[i].prob} vs Python ${JSON.stringify(text)} ${p}`);
  });
  return out;
}

/** The largest relative probability difference seen (reported at exit). */
export const worst = { rel: 0, compared: 0 };
const looseWorst = { rel: 0 };
process.on("exit", () => {
  if (worst.compared) console.log(`# ${worst.compared} probabilities compared, largest relative difference from Python ${worst.rel.toExponential(2)}`);
  if (looseWorst.rel) console.log(`# onnxruntime-web (wasm): largest relative difference from Python ${looseWorst.rel.toExponential(2)}`);
});

/** Differences between JS suggestions and Python's [text, prob] pairs, as strings. */
export function compare(got, want, where) {
  const texts = got.map((s) => s.text), wanted = want.map(([t]) => t);
  if (JSON.stringify(texts) !== JSON.stringify(wanted)) {
    return [`${where}: texts ${JSON.stringify(texts)} != Python's ${JSON.stringify(wanted)}`
      + ` (probs ${JSON.stringify(got.map((s) => s.prob))} vs ${JSON.stringify(want.map(([, p]) => p))})`];
  }
  const out = [];
  want.forEach(([, p], i) => {
    const rel = Math.abs(got[i].prob - p) / Math.abs(p);
    worst.rel = Math.max(worst.rel, rel);
    worst.compared += 1;
    if (!(rel <= REL)) out.push(`${where}: ${JSON.stringify(texts[i])} prob ${got[i].prob} vs ${p}`);
  });
  return out;
}

export function report(problems, total) {
  assert.equal(problems.length, 0,
    `${problems.length} of ${total} checks differ from Python:\n  ${problems.slice(0, MAX_REPORTED).join("\n  ")}`);
}

const show = (text) => JSON.stringify(text.length > 60 ? `...${text.slice(-60)}` : text);

/** The golden tests of every model configuration whose index % parts === part. */
export function modelTests(part, parts) {
  modelFiles().forEach((file, index) => {
    if (index % parts !== part) return;
    const golden = readJson(file);

    test(`${golden.name}: metadata as Python decodes it`, async () => {
      const ac = await open(golden, ortNode);
      assert.deepEqual(ac.metadata, golden.metadata);
      assert.equal(ac.hasSequenceGraph, Boolean(golden.sequence) || golden.metadata.graph === "sequence");
    });

    test(`${golden.name}: nextChars and complete on ${golden.prefixes.length} prefixes`, async () => {
      const { ort, counter } = countingOrt();
      const ac = await open(golden, ort);
      const problems = [];
      for (const c of golden.prefixes) {
        const where = `prefix ${show(c.prefix)} k=${c.k}`;
        let before = counter.runs;
        problems.push(...compare(await ac.nextChars(c.prefix, c.k), c.next, `${where} nextChars`));
        if (counter.runs - before !== c.runsNext) problems.push(`${where} nextChars: ${counter.runs - before} runs, Python ${c.runsNext}`);
        before = counter.runs;
        problems.push(...compare(await ac.complete(c.prefix, c.k, c.maxChars), c.complete, `${where} complete(maxChars=${c.maxChars})`));
        if (counter.runs - before !== c.runsComplete) {
          problems.push(`${where} complete: ${counter.runs - before} runs, Python ${c.runsComplete}`);
        }
      }
      report(problems, golden.prefixes.length * 4);
    });

    test(`${golden.name}: typed and backspaced sessions (awaited; run counts per action)`, async () => {
      const { ort, counter } = countingOrt();
      const ac = await open(golden, ort);
      const problems = [];
      let checks = 0;
      for (const [number, actions] of golden.sessions.entries()) {
        const s = ac.session();
        for (const [index, a] of actions.entries()) {
          const where = `session ${number} action ${index} (${a.op})`;
          const before = counter.runs;
          let got = null;
          if (a.op === "type") await s.type(a.text);
          else if (a.op === "backspace") await s.backspace(a.n);
          else if (a.op === "accept") await s.accept({ text: a.text, prob: 0.5 });
          else if (a.op === "suggestions") got = await s.suggestions(a.k, a.maxChars);
          else got = await s.nextChars(a.k);
          checks += 2;
          if (counter.runs - before !== a.runs) problems.push(`${where}: ${counter.runs - before} runs, Python ${a.runs}`);
          if (s.unknown !== a.unknown) problems.push(`${where}: unknown ${s.unknown}, Python ${a.unknown}`);
          if (a.after !== undefined && s.text !== a.after) problems.push(`${where}: text ${show(s.text)} != ${show(a.after)}`);
          if (got) {
            checks += 2;
            problems.push(...compare(got, a.expected, `${where} after ${show(a.text)}`));
            if (s.text !== a.text) problems.push(`${where}: text ${show(s.text)} != ${show(a.text)}`);
          }
        }
      }
      problems.push(...compareUserWords(ac, golden.finalUserWords));
      report(problems, checks + 1);
    });

    test(`${golden.name}: the same sessions with type/backspace not awaited`, async () => {
      const { ort, counter } = countingOrt();
      const ac = await open(golden, ort);
      const problems = [];
      let checks = 0;
      for (const [number, actions] of golden.sessions.entries()) {
        const s = ac.session();
        let before = counter.runs, expectedRuns = 0;
        for (const [index, a] of actions.entries()) {
          expectedRuns += a.runs;
          if (a.op === "type" || a.op === "backspace" || a.op === "accept") {
            if (a.op === "type") s.type(a.text);
            else if (a.op === "backspace") s.backspace(a.n);
            else s.accept(a.text);             // a string works too
            checks += 2;
            if (s.unknown !== a.unknown) problems.push(`session ${number} action ${index} (${a.op}): unknown ${s.unknown}, Python ${a.unknown}`);
            if (s.text !== a.after) problems.push(`session ${number} action ${index} (${a.op}): text ${show(s.text)} != ${show(a.after)}`);
            continue;
          }
          const got = a.op === "suggestions" ? await s.suggestions(a.k, a.maxChars) : await s.nextChars(a.k);
          const where = `session ${number} action ${index} (${a.op})`;
          checks += 3;
          problems.push(...compare(got, a.expected, `${where} after ${show(a.text)}`));
          if (s.text !== a.text) problems.push(`${where}: text ${show(s.text)} != ${show(a.text)}`);
          if (counter.runs - before !== expectedRuns) problems.push(`${where}: ${counter.runs - before} runs since the last check, Python ${expectedRuns}`);
          before = counter.runs;
          expectedRuns = 0;
        }
      }
      problems.push(...compareUserWords(ac, golden.finalUserWords));
      report(problems, checks + 1);
    });
  });
}
