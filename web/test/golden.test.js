// web/compact_lm.js against golden cases from the Python Autocompleter (written by tests/web_golden.py;
// tests/test_web_node.py writes them to a folder and runs `node --test web/test/` with COMPACT_LM_GOLDEN
// pointing there). Every suggestion text and order must be Python's, every probability within 1e-5
// relative, every count of onnxruntime session.run calls the same. This file: half of the model
// configurations, Python's errors for damaged files, errors for bytes damaged here, and Unicode.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { Autocompleter, CompactLMError, ContextCache, UserWords, defaultIsBoundary, readMetadataProps } from "../compact_lm.js";
import { GOLDEN, SKIP, compare, modelFiles, modelTests, open, ortNode, readJson, report } from "./golden_helpers.js";

modelTests(0, 2);

test("damaged, foreign and mismatched files: Python's one-line errors", { skip: SKIP }, async () => {
  const problems = [];
  const faults = readJson("faults.json");
  for (const c of faults) {
    let message = null;
    try {
      await Autocompleter.create(c.file, { ort: ortNode, sequence: c.sequence });
      problems.push(`${c.name}: loads`);
      continue;
    } catch (error) {
      if (!(error instanceof CompactLMError)) problems.push(`${c.name}: ${error.name}, not CompactLMError: ${error.message}`);
      message = error.message;
    }
    if (message.includes("\n")) problems.push(`${c.name}: message has several lines: ${JSON.stringify(message)}`);
    // onnxruntime's own failures: "onnxruntime VERSION could not open NAME: its words" (versions and words differ)
    const opening = (text) => /^onnxruntime [^ ]+ (could not open .*?: )/.exec(text)?.[1];
    if (c.exact ? message !== c.message : !(opening(c.message) && opening(message) === opening(c.message))) {
      problems.push(`${c.name}: ${JSON.stringify(message)}\n    Python: ${JSON.stringify(c.message)}`);
    }
  }
  report(problems, faults.length);
});

// ---------------------------------------------------------------------------- bytes damaged here
function varint(value) {
  const out = [];
  while (value >= 0x80) { out.push((value % 0x80) | 0x80); value = Math.floor(value / 0x80); }
  out.push(value);
  return out;
}

/** The model's bytes with its metadata_props (ModelProto field 14) replaced by `props` ({key: value}). */
function withProps(bytes, props) {
  const chunks = [];
  let pos = 0;
  const read = () => { let v = 0, s = 1, b; do { b = bytes[pos++]; v += (b & 0x7f) * s; s *= 128; } while (b & 0x80); return v; };
  while (pos < bytes.length) {
    const start = pos, key = read(), wire = key % 8;
    if (wire === 0) read();
    else if (wire === 2) { const size = read(); pos += size; }   // (not pos += read(): pos would be read first)
    else pos += wire === 1 ? 8 : 4;
    if (Math.floor(key / 8) !== 14) chunks.push(bytes.subarray(start, pos));
  }
  const enc = new TextEncoder();
  for (const [k, v] of Object.entries(props)) {
    const kb = enc.encode(k), vb = enc.encode(v);
    const entry = [0x0a, ...varint(kb.length), ...kb, 0x12, ...varint(vb.length), ...vb];
    chunks.push(Uint8Array.from([0x72, ...varint(entry.length), ...entry]));
  }
  return Buffer.concat(chunks);
}

test("a truncated file, a file without metadata and a wrong format_version each throw a one-line Error", { skip: SKIP }, async () => {
  const golden = readJson(modelFiles()[0]);
  const bytes = new Uint8Array(fs.readFileSync(golden.model));
  const props = readMetadataProps(bytes);
  assert.equal(props.kind, "compact-lm-onnx");
  // rebuilding with the same props gives a model that loads (the rewriting itself is sound)
  const same = await Autocompleter.create(withProps(bytes, props), { ort: ortNode });
  assert.deepEqual(same.metadata, golden.metadata);
  const cases = [
    ["truncated", bytes.slice(0, Math.floor(bytes.length / 2)),
      "model.onnx is not a valid ONNX model (truncated or corrupted?): length-delimited field runs past the end"],
    ["truncated in the metadata", bytes.slice(0, bytes.length - 5).buffer,
      "model.onnx is not a valid ONNX model (truncated or corrupted?): length-delimited field runs past the end"],
    ["no metadata", withProps(bytes, {}),
      "model.onnx is an ONNX model without compact-lm metadata (not a compact-lm export, or cut off)"],
    ["format_version 2", withProps(bytes, { ...props, format_version: "2" }),
      "model.onnx has ONNX format version 2; this compact-lm reads version 1"],
    ["format_version \"1\"", withProps(bytes, { ...props, format_version: "\"1\"" }),
      "model.onnx has ONNX format version '1'; this compact-lm reads version 1"],
    ["metadata cut off", withProps(bytes, Object.fromEntries(Object.entries(props).slice(0, 5))),
      "model.onnx has damaged compact-lm metadata (truncated file?): no 'metadata_keys' entry"],
  ];
  for (const [what, data, message] of cases) {
    await assert.rejects(Autocompleter.create(data, { ort: ortNode, name: "model.onnx" }), (error) => {
      assert.ok(error instanceof Error && error instanceof CompactLMError, what);
      assert.equal(error.message, message, what);
      assert.ok(!error.message.includes("\n"), what);
      return true;
    }, what);
  }
  await assert.rejects(Autocompleter.create(bytes, { ort: ortNode, beam: 0 }), /beam must be a whole number >= 1, got 0/);
});

// ---------------------------------------------------------------------------------------- Unicode
function flags(ranges) {
  const out = new Uint8Array(0x110000);
  for (const [a, b] of ranges) out.fill(1, a, b + 1);
  return out;
}

test("word boundaries, per-code-point normalization and joiners agree with Python's unicodedata on every code point", { skip: SKIP }, async () => {
  const uni = readJson("unicode.json");
  const boundary = flags(uni.boundary), unassigned = flags(uni.unassigned), joins = flags(uni.joins);
  const files = modelFiles().map(readJson);
  const plain = files.find((g) => !g.metadata.lowercase && g.metadata.nfc && !g.options.boundaries);
  const lower = files.find((g) => g.metadata.lowercase && g.metadata.nfc);
  const normalizers = [[await open(plain, ortNode), uni.nfc], [await open(lower, ortNode), uni.nfc_lower]];
  const problems = [], newer = [];
  let checked = 0;
  for (let cp = 0; cp < 0x110000; cp++) {
    const char = String.fromCodePoint(cp);
    const results = [defaultIsBoundary(char) === Boolean(boundary[cp])];
    for (const [ac, table] of normalizers) results.push(ac.normalize(char) === (table[cp] ?? char));
    results.push(normalizers[0][0]._joins(char) === Boolean(joins[cp]));
    if (results.every(Boolean)) { checked += 1; continue; }
    const line = `U+${cp.toString(16).toUpperCase().padStart(4, "0")}: boundary ${defaultIsBoundary(char)} (Python ${Boolean(boundary[cp])}), `
      + `normalized ${JSON.stringify(normalizers.map(([ac]) => ac.normalize(char)))} (Python ${JSON.stringify(normalizers.map(([, t]) => t[cp] ?? char))}), `
      + `joins ${normalizers[0][0]._joins(char)} (Python ${Boolean(joins[cp])})`;
    // Python knows the boundaries of Unicode newer_boundaries_unicode where its own tables are older: an engine
    // of that version must agree on them; only its normalization of those code points may differ
    const sameBoundary = results[0] || process.versions.unicode !== uni.newer_boundaries_unicode;
    (unassigned[cp] && sameBoundary ? newer : problems).push(line);
  }
  if (newer.length) {
    console.log(`# ${newer.length} code points unassigned in Python's Unicode ${uni.unidata_version} are classified by `
      + `this engine's Unicode ${process.versions.unicode} (normalization not compared), e.g. ${newer[0]}`);
  }
  report(problems, checked + problems.length);
  // every vocabulary character of every golden model is assigned, so its boundary flag is Python's
  for (const g of files) {
    for (const char of g.metadata.vocab.slice(1)) assert.equal(unassigned[char.codePointAt(0)], 0, `${g.name}: ${JSON.stringify(char)}`);
  }
});

test("golden cases are present", { skip: SKIP }, () => {
  assert.ok(modelFiles().length >= 1, `no model-*.json in ${GOLDEN}`);
});

test("the context cache: Python's words and shares through adds, removes, take-backs, forgets, clears, another dictionary and a full ring", { skip: SKIP }, async () => {
  const problems = [];
  let queries = 0;
  for (const [n, c] of readJson("context_cache.json").entries()) {
    const cache = new ContextCache({ size: c.size, halfLife: 5.0 });
    const dictionaries = [new UserWords({ maxWords: c.maxWords ?? 5 }), new UserWords({ maxWords: c.maxWords ?? 5 })];
    let held = dictionaries[0];
    const taken = [];   // [dictionary, undo, use] of the adds, for take-backs
    for (const op of c.ops) {
      if (op.op === "add") {
        const undo = held.learn(op.word);
        if (undo !== null) {
          taken.push([held, undo, cache.add(Promise.resolve(Float32Array.from(op.state)), op.word, undo.arrival, held)]);
        }
      } else if (op.op === "takeback") {
        const [owner, undo, use] = taken.pop();
        owner.unlearn(undo);
        cache.remove(use);
      } else if (op.op === "remove") cache.remove(op.use);
      else if (op.op === "forget") held.forget(op.word);
      else if (op.op === "clear") held.clear();
      else if (op.op === "swap") held = held === dictionaries[0] ? dictionaries[1] : dictionaries[0];
      else {
        queries += 1;
        await cache.settle();
        const got = cache.continuing(Float32Array.from(op.state), op.prefix, op.k ?? 3, held).map(([text, prob]) => ({ text, prob }));
        problems.push(...compare(got, op.expected, `case ${n} prefix ${JSON.stringify(op.prefix)}`));
      }
    }
  }
  report(problems, queries);
});

test("exact ties: finished words in Python's order, by text in code point order", { skip: SKIP }, async () => {
  const ties = readJson("ties.json");
  const ac = await Autocompleter.create(ties.model, { ort: ortNode });
  const problems = [];
  for (const c of ties.cases) problems.push(...compare(await ac.complete(c.prefix, c.k), c.complete, `${JSON.stringify(c.prefix)} k=${c.k}`));
  report(problems, ties.cases.length);
});
