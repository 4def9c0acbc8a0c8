// Autocomplete from a compact-lm .onnx file in a browser (onnxruntime-web) or in Node (onnxruntime-node).
//
//     import * as ort from "onnxruntime-web";      // or "onnxruntime-node"
//     import { Autocompleter } from "./compact_lm.js";
//     const ac = await Autocompleter.create("model.onnx", { ort, beam: 4, maxChars: 16, sequence: "model.seq.onnx" });
//     await ac.nextChars("What say", 3);         // [{ text: " ", prob: 0.49 }, ...]
//     await ac.complete("What sa", 3);           // [{ text: "y", prob: 0.31 }, ...]: distinct words, the rest of each
//     const s = ac.session(); s.type("ROMEO: What s"); s.backspace(1); await s.suggestions(3); s.text;
//     await s.nextChars(3); s.accept((await s.suggestions(1))[0]); s.type(",");   // "word," (the space replaced)
//     ac.metadata                                // the decoded metadata_props (cell, hidden_sizes, metrics, ...)
//
// Sources (model and `sequence`): Uint8Array, ArrayBuffer, URL or URL string (fetched), file path or file:
// URL (Node). Autocompleter: nextChars(prefix, k = 3), complete(prefix, k = 3, maxChars), session(),
// metadata, normalize(text), encode(text) (BigInt64Array), runs (session.run calls so far), release().
// Session: type(text), backspace(n = 1) and accept(suggestion) change `text` at once and return a promise that
// settles when the model state is ready (awaiting it is optional: suggestions(k = 3, maxChars) and
// nextChars(k = 3) wait); `unknown` counts the typed characters that became <unk>.
//
// The same semantics as compact_lm/autocomplete.py (Autocompleter, Session), which tests/test_web_node.py
// checks against golden cases written by the Python one: the model sees `start_text` (a newline) and then
// the typed text, normalized as the file's metadata says (NFC over the text, lowercasing code point by code point;
// a mark typed after the letter it composes with runs the model again from before that letter); characters outside the
// vocabulary become <unk>, which is never suggested. A word completion is the rest of a run of word characters
// that a boundary character ends, without that boundary: the k suggestions are k distinct words, each with its
// probability of ending there whatever boundary follows (log-sum-exp over the boundary characters, float64,
// summed in vocabulary order as Python does). While the word being typed holds an unknown character there is
// no word completion. Beam search advances all beams in ONE session.run per character and stops when no
// unfinished word beats the k-th finished one. Scores are float64 sums of the model's float32
// log-probabilities, finished words sort by (-log p, text in code point order), as in Python. accept()
// types the word, then a space (two runs at most); attaching punctuation typed next replaces the space
// from the stored checkpoint before it (no run). Two things
// Python leaves to its platform are fixed here: among candidates whose float64 scores tie exactly at the
// beam's (or next characters' k-th) cut, the lower token id wins (numpy's argpartition picks any); and the
// word-boundary rule and normalization use this engine's Unicode tables, which for code points that Python's
// unicodedata (14.0 in Python 3.11) leaves unassigned may know more (Python's boundary rule knows Unicode 17's
// boundaries there: compact_lm/lexicon.py NEWER_BOUNDARY_RANGES; lowercasing a letter newer than its tables
// may still differ).
//
// Model calls (each costs ~250-300 us of fixed overhead in onnxruntime-web): one per typed character, one
// per paste (sequence graph; else one per character, at most CONTEXT_CHARS), one per beam-search depth,
// none for next characters or a backspace to a stored checkpoint. Calls of one Autocompleter run one at a time.
//
// The metadata is read from the file's bytes (onnxruntime-web does not expose metadata_props) by a
// minimal protobuf reader, which also refuses what compact-lm never loads (external tensor data, custom
// operator domains), as compact_lm/onnx_scan.py does. No dependency: pass the onnxruntime module as `ort`
// (default: globalThis.ort, as onnxruntime-web's script tag sets it).

export const START_TEXT = "\n";
export const CONTEXT_CHARS = 1024;          // at most this many characters run when several arrive at once
export const MAX_CHECKPOINTS = 1 << 14;     // per session: states kept for free backspace
export const ONNX_KIND = "compact-lm-onnx";
export const ONNX_FORMAT_VERSION = 1;
const STRING_KEYS = new Set(["kind", "cell", "dtype", "graph"]);   // stored verbatim; all other values JSON
const KEYS_KEY = "metadata_keys";
const GRAPH_KINDS = ["step", "sequence"];
const TOKENS = "tokens", LOG_PROBS = "log_probs";
const UNK_TOKEN = "<unk>";
const WORD_JOINERS = new Set(["'", "\u2019", "-"]);   // "don't", "o'er", "well-known" are one word
// Python's str.isspace() is true only for characters of categories Z* and Cc, so these four cover it.
const BOUNDARY_CHAR = /^[\p{P}\p{S}\p{Z}\p{Cc}]$/u;
const CACHED_CHARS = 1 << 12;
// NFC composes a base character with what is typed after it (e + U+0323 + U+0302 -> U+1EC7): a "joiner" may change
// the character before it. Joiners: the code points whose decomposition starts with a nonzero combining class
// (canonical ordering moves them before U+0345, the one mark of the highest class), and these starters, second
// halves of canonical compositions (Hangul vowel and final jamo, ...). As compact_lm/autocomplete.py, plus the
// second halves that Unicode 16.0 added (Tulu-Tigalari, Gurung Khema, Kirat Rai: this engine's NFC composes them,
// Python 3.11's Unicode 14 knows neither those scripts nor their compositions).
const JOINING_STARTERS = new Set([
  0x09BE, 0x09D7, 0x0B3E, 0x0B56, 0x0B57, 0x0BBE, 0x0BD7, 0x0CC2, 0x0CD5, 0x0CD6, 0x0D3E, 0x0D57, 0x0DCF, 0x0DDF,
  0x102E, 0x1B35, 0x11127, 0x1133E, 0x11357, 0x114B0, 0x114BA, 0x114BD, 0x115AF, 0x11930,
  0x113B8, 0x113BB, 0x113C2, 0x113C9, 0x1611E, 0x1611F, 0x16120, 0x16129, 0x16D67,
  ...Array.from({ length: 0x1176 - 0x1161 }, (_, i) => 0x1161 + i), ...Array.from({ length: 0x11C3 - 0x11A8 }, (_, i) => 0x11A8 + i),
].map((point) => String.fromCodePoint(point)));
const COMPOSING_CHARS = CONTEXT_CHARS;   // typed code points looked back over for the base a joiner composes with
/** Typed right after an accepted suggestion, these replace its automatic space: "word" + "," gives "word,". */
// not the straight quotes ' and ": they open a quotation as often as they close one
export const ATTACHING_PUNCTUATION = new Set([...",.;:!?)]}\u2019\u201d\u00bb"]);

/** A one-line error, as compact-lm's CompactLMError. */
export class CompactLMError extends Error {
  constructor(message) {
    super(message);
    this.name = "CompactLMError";
  }
}

/** Whitespace, punctuation and symbols end a word; apostrophes and hyphens do not (one code point). */
export function defaultIsBoundary(char) {
  return !WORD_JOINERS.has(char) && BOUNDARY_CHAR.test(char);
}

// ------------------------------------------------------------------------------------------ helpers
/** Python's repr() of a JSON-like value, for error messages worded as compact-lm's. */
function pyRepr(value) {
  if (value === undefined || value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return Number.isInteger(value) && !Object.is(value, -0) && Math.abs(value) < 1e16
    ? String(value) : pyFloat(value);
  if (typeof value === "string") {
    const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
    let out = "";
    for (const c of value) {
      if (c === "\\" || c === quote) out += "\\" + c;
      else if (c === "\n") out += "\\n";
      else if (c === "\r") out += "\\r";
      else if (c === "\t") out += "\\t";
      else if (c < " " || c === "\x7f") out += "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0");
      else out += c;
    }
    return quote + out + quote;
  }
  if (Array.isArray(value)) return "[" + value.map(pyRepr).join(", ") + "]";
  if (typeof value === "object") {
    return "{" + Object.entries(value).map(([k, v]) => `${pyRepr(k)}: ${pyRepr(v)}`).join(", ") + "}";
  }
  return String(value);
}

function pyFloat(x) {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return x.toFixed(1);
  return String(x).replace(/e([+-])(\d)$/, "e$10$2");
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.prototype.hasOwnProperty.call(b, key) && deepEqual(a[key], b[key]));
}

/** Strings in code point order (Python's str order; JS's < compares UTF-16 units). */
export function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i), y = b.charCodeAt(i);
    if (x !== y) {
      const p = a.codePointAt(i), q = b.codePointAt(i);
      // both strings agree before i, so i starts a code point in both (or is the low half of the same lead)
      return p < q ? -1 : p > q ? 1 : x < y ? -1 : 1;
    }
  }
  return a.length - b.length;
}

function positive(name, value) {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new CompactLMError(`${name} must be a whole number >= 1, got ${pyRepr(value)}`);
  }
  return value;
}

function checkText(name, text) {
  if (typeof text !== "string") throw new CompactLMError(`${name} must be a string, got ${text === null ? "null" : typeof text}`);
  return text;
}

function oneLine(error, limit = 200) {
  return String(error && error.message !== undefined ? error.message : error).split(/\s+/).join(" ").trim().slice(0, limit);
}

// ------------------------------------------------------------------------------------- protobuf walk
// Field numbers of onnx.proto, as compact_lm/onnx_scan.py.
const MAX_NESTING = 64;
const EXTERNAL = 1;
const MODEL_GRAPH = 7, MODEL_METADATA_PROPS = 14, MODEL_FUNCTIONS = 25;
const GRAPH_NODE = 1, GRAPH_INITIALIZER = 5, GRAPH_SPARSE_INITIALIZER = 15;
const NODE_ATTRIBUTE = 5, NODE_DOMAIN = 7, NODE_OP_TYPE = 4;
const ATTR_T = 5, ATTR_G = 6, ATTR_TENSORS = 10, ATTR_GRAPHS = 11, ATTR_SPARSE = 22, ATTR_SPARSES = 23;
const TENSOR_EXTERNAL_DATA = 13, TENSOR_DATA_LOCATION = 14;
const SPARSE_VALUES = 1, SPARSE_INDICES = 2;
const FUNCTION_NODE = 7;
const DEFAULT_DOMAINS = new Set(["", "ai.onnx"]);

class Malformed extends Error {}

function varint(data, pos) {
  let value = 0, scale = 1;
  for (let shift = 0; ; shift += 7) {
    if (pos >= data.length) throw new Malformed("varint runs past the end");
    const byte = data[pos++];
    value += (byte & 0x7f) * scale;   // exact below 2**53, enough for any length that fits in memory
    if (!(byte & 0x80)) return [value, pos];
    scale *= 128;
    if (shift + 7 >= 70) throw new Malformed("varint longer than 10 bytes");
  }
}

/** [field number, wire type, value] of one message: a number for varints, a Uint8Array view for
 * length-delimited fields, null for fixed32/fixed64. Throws Malformed on bad framing. */
function fields(data) {
  const out = [];
  let pos = 0;
  const end = data.length;
  while (pos < end) {
    let key;
    [key, pos] = varint(data, pos);
    const number = Math.floor(key / 8), wire = key % 8;
    if (number === 0) throw new Malformed("field number 0");
    if (wire === 0) {
      let value;
      [value, pos] = varint(data, pos);
      out.push([number, wire, value]);
    } else if (wire === 2) {
      let size;
      [size, pos] = varint(data, pos);
      if (size > end - pos) throw new Malformed("length-delimited field runs past the end");
      out.push([number, wire, data.subarray(pos, pos + size)]);
      pos += size;
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
      if (pos > end) throw new Malformed("fixed-size field runs past the end");
      out.push([number, wire, null]);
    } else {
      throw new Malformed(`unsupported wire type ${wire}`);
    }
  }
  return out;
}

function sub(decoded, wanted) {
  return decoded.filter(([n, w]) => n === wanted && w === 2).map(([, , v]) => v);
}

const lossyUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function checkTensor(data) {
  const decoded = fields(data);
  if (decoded.some(([n, w]) => n === TENSOR_EXTERNAL_DATA && w === 2)) return "a tensor with external data";
  if (decoded.some(([n, w, v]) => n === TENSOR_DATA_LOCATION && w === 0 && v === EXTERNAL)) {
    return "a tensor with data_location EXTERNAL";
  }
  return null;
}

function checkSparse(data) {
  const decoded = fields(data);
  for (const tensor of [...sub(decoded, SPARSE_VALUES), ...sub(decoded, SPARSE_INDICES)]) {
    const found = checkTensor(tensor);
    if (found) return found;
  }
  return null;
}

function checkNode(data, depth) {
  const decoded = fields(data);
  for (const domain of sub(decoded, NODE_DOMAIN)) {
    const name = lossyUtf8.decode(domain);
    if (!DEFAULT_DOMAINS.has(name)) {
      const ops = sub(decoded, NODE_OP_TYPE);
      const op = ops.length ? lossyUtf8.decode(ops[0]) : "?";
      return `operator ${pyRepr(op)} from the custom domain ${pyRepr(name)}`;
    }
  }
  for (const attribute of sub(decoded, NODE_ATTRIBUTE)) {
    const attr = fields(attribute);
    for (const tensor of [...sub(attr, ATTR_T), ...sub(attr, ATTR_TENSORS)]) {
      const found = checkTensor(tensor);
      if (found) return found;
    }
    for (const sparse of [...sub(attr, ATTR_SPARSE), ...sub(attr, ATTR_SPARSES)]) {
      const found = checkSparse(sparse);
      if (found) return found;
    }
    for (const graph of [...sub(attr, ATTR_G), ...sub(attr, ATTR_GRAPHS)]) {
      const found = checkGraph(graph, depth + 1);
      if (found) return found;
    }
  }
  return null;
}

function checkGraph(data, depth) {
  if (depth > MAX_NESTING) throw new Malformed(`subgraphs nested more than ${MAX_NESTING} deep`);
  const decoded = fields(data);
  for (const tensor of sub(decoded, GRAPH_INITIALIZER)) {
    const found = checkTensor(tensor);
    if (found) return found;
  }
  for (const sparse of sub(decoded, GRAPH_SPARSE_INITIALIZER)) {
    const found = checkSparse(sparse);
    if (found) return found;
  }
  for (const node of sub(decoded, GRAPH_NODE)) {
    const found = checkNode(node, depth);
    if (found) return found;
  }
  return null;
}

/**
 * The metadata_props of a serialized ONNX ModelProto as {key: value string}, after checking, as
 * compact-lm does before onnxruntime sees a file, that it is well-formed protobuf and uses no external
 * tensor data and no custom operator domain. `name` names the file in the one-line errors.
 */
export function readMetadataProps(bytes, name = "the model") {
  let unsafe = null;
  let decoded;
  try {
    decoded = fields(bytes);
    let graphs = 0;
    for (const graph of sub(decoded, MODEL_GRAPH)) {
      unsafe = unsafe || checkGraph(graph, 0);
      graphs += 1;
    }
    if (!graphs) throw new Malformed("no graph");   // an empty or cut-off file, as compact_lm/onnx_scan.py says
    for (const fn of sub(decoded, MODEL_FUNCTIONS)) {
      for (const node of sub(fields(fn), FUNCTION_NODE)) unsafe = unsafe || checkNode(node, 0);
    }
  } catch (error) {
    if (error instanceof Malformed) {
      throw new CompactLMError(`${name} is not a valid ONNX model (truncated or corrupted?): ${error.message}`);
    }
    throw error;
  }
  if (unsafe) throw new CompactLMError(`${name} is refused: it uses ${unsafe}, which compact-lm never loads`);
  const props = [];
  try {
    for (const entry of sub(decoded, MODEL_METADATA_PROPS)) {
      let key = "", value = "";
      for (const [n, w, v] of fields(entry)) {
        if (w !== 2) continue;
        if (n === 1) key = strictUtf8.decode(v);
        else if (n === 2) value = strictUtf8.decode(v);
      }
      props.push([key, value]);
    }
  } catch (error) {
    if (error instanceof Malformed) {
      throw new CompactLMError(`${name} is not a valid ONNX model (truncated or corrupted?): ${error.message}`);
    }
    throw new CompactLMError(`${name} has damaged metadata (not valid UTF-8)`);
  }
  return Object.fromEntries(props);
}

/** metadata_props strings -> values (JSON-decoded except kind, cell, dtype, graph); throws Error if damaged. */
export function decodeMetadata(props) {
  const meta = Object.fromEntries(Object.entries(props).map(([key, text]) => {
    if (STRING_KEYS.has(key)) return [key, text];
    try {
      return [key, JSON.parse(text)];
    } catch (error) {
      throw new Error(oneLine(error));
    }
  }));
  const listed = meta[KEYS_KEY];
  if (!Array.isArray(listed)) throw new Error(`no ${pyRepr(KEYS_KEY)} entry`);
  const missing = listed.filter((key) => !(typeof key === "string" && Object.prototype.hasOwnProperty.call(meta, key)));
  if (missing.length) throw new Error(`missing keys ${pyRepr(missing)}`);
  return meta;
}

function normalizationOf(nfc, lowercase) {
  const steps = [];
  if (nfc) steps.push("NFC");
  if (lowercase) steps.push("lowercase");
  return { unit: "code_point", steps };
}

/** The decoded compact-lm metadata of a file's metadata_props, checked as compact_lm.onnx_format.checked_metadata. */
export function checkedMetadata(name, props) {
  if (props.kind !== ONNX_KIND) {
    throw new CompactLMError(`${name} is an ONNX model without compact-lm metadata (not a compact-lm export, or cut off)`);
  }
  let meta;
  try {
    meta = decodeMetadata(props);
  } catch (error) {
    throw new CompactLMError(`${name} has damaged compact-lm metadata (truncated file?): ${error.message}`);
  }
  if (meta.format_version !== ONNX_FORMAT_VERSION) {
    throw new CompactLMError(`${name} has ONNX format version ${pyRepr(meta.format_version)}; `
      + `this compact-lm reads version ${ONNX_FORMAT_VERSION}`);
  }
  if (!GRAPH_KINDS.includes(meta.graph)) throw new CompactLMError(`${name} has an unknown graph kind ${pyRepr(meta.graph)}`);
  // Text is fed one way only (start text, per-code-point NFC / lowercasing); a file asking for another is refused.
  const expected = {
    start_text: START_TEXT,
    normalization: normalizationOf("nfc" in meta ? meta.nfc : true, "lowercase" in meta ? meta.lowercase : false),
  };
  for (const [key, value] of Object.entries(expected)) {
    if (key in meta && !deepEqual(meta[key], value)) {
      throw new CompactLMError(`${name} asks for ${key} ${pyRepr(meta[key])}, this compact-lm feeds text with ${pyRepr(value)}`);
    }
  }
  try {
    checkInfo(meta);
  } catch (error) {
    throw new CompactLMError(`${name} has invalid compact-lm metadata: ${error.message}`);
  }
  if (Array.isArray(meta.vocab) && meta.vocab.length !== meta.vocab_size) {
    throw new CompactLMError(`${name} has invalid compact-lm metadata: vocabulary has ${meta.vocab.length} entries, `
      + `the config says ${pyRepr(meta.vocab_size)}`);
  }
  return meta;
}

/** Throws an Error naming the first training-info entry whose type is wrong, as compact_lm.model_file.check_info. */
function checkInfo(meta) {
  const has = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  const isCount = (value) => typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 2 ** 53;
  for (const key of ["steps", "chars_seen"]) {
    if (has(meta, key) && !isCount(meta[key])) throw new Error(`'${key}' must be a whole number from 0 to 2^53`);
  }
  if (has(meta, "train_config") && !isObject(meta.train_config)) throw new Error("'train_config' must be an object");
  const metrics = has(meta, "metrics") ? meta.metrics : {};
  if (!isObject(metrics)) throw new Error("'metrics' must be an object");
  if (!Object.values(metrics).every((figures) => !(isObject(figures) && has(figures, "bpc")) || Number.isFinite(figures.bpc))) {
    throw new Error("'metrics' must give every 'bpc' as a finite number");
  }
  if (has(meta, "pruning") && !Array.isArray(meta.pruning)) throw new Error("'pruning' must be a list");
  const quantization = has(meta, "quantization") ? meta.quantization : {};
  if (!isObject(quantization)) throw new Error("'quantization' must be an object");
  if (has(quantization, "source_params") && !isCount(quantization.source_params)) {
    throw new Error("'quantization' must give 'source_params' as a whole number from 0 to 2^53");
  }
}

function metadataDifferences(a, b) {
  const differences = [];
  for (const key of ["cell", "embed_size", "hidden_sizes", "vocab_size", "vocab", "nfc", "lowercase", "quantized"]) {
    if (!deepEqual(a[key], b[key])) {
      differences.push(`${key}: ${key === "vocab" ? "entries differ" : `${pyRepr(a[key])} vs ${pyRepr(b[key])}`}`);
    }
  }
  return differences;
}

// ------------------------------------------------------------------------------------------ loading
const isNode = typeof globalThis.process === "object" && globalThis.process !== null
  && typeof globalThis.process.versions === "object" && globalThis.process.versions !== null
  && typeof globalThis.process.versions.node === "string";

/** The bytes of `source` (Uint8Array, ArrayBuffer, URL or URL string, or a file path in Node) and a name for errors. */
async function loadBytes(source, fallbackName) {
  if (source instanceof Uint8Array) return { bytes: source, name: fallbackName };
  if (source instanceof ArrayBuffer) return { bytes: new Uint8Array(source), name: fallbackName };
  if (ArrayBuffer.isView(source)) {
    return { bytes: new Uint8Array(source.buffer, source.byteOffset, source.byteLength), name: fallbackName };
  }
  if (typeof URL !== "undefined" && source instanceof URL) source = source.href;
  if (typeof source !== "string") {
    // (a File from an <input>, a Blob or a fetch Response is one await away from an ArrayBuffer)
    const hint = typeof source?.arrayBuffer === "function" ? `a ${source.constructor?.name || "Blob"}: pass await it.arrayBuffer()`
      : source === null ? "null" : typeof source;
    throw new CompactLMError(`expected a model as a Uint8Array, an ArrayBuffer, a URL or a file path, got ${hint}`);
  }
  const isUrl = /^[a-z][a-z0-9+.-]*:/i.test(source) && !/^[a-z]:[\\/]/i.test(source);   // not a Windows drive
  if (isNode && (!isUrl || /^file:/i.test(source))) {
    const { readFile, stat } = await import("node:fs/promises");
    let path = source;
    if (isUrl) path = (await import("node:url")).fileURLToPath(source);
    let info;
    try {
      info = await stat(path);
    } catch (error) {
      if (error.code === "ENOENT" || error.code === "ENOTDIR") throw new CompactLMError(`ONNX file ${source} does not exist`);
      throw new CompactLMError(`cannot read ONNX file ${source}: ${oneLine(error)}`);
    }
    if (info.isDirectory()) throw new CompactLMError(`ONNX file ${source} is a folder, not a file`);
    try {
      return { bytes: new Uint8Array(await readFile(path)), name: source };
    } catch (error) {
      throw new CompactLMError(`cannot read ONNX file ${source}: ${oneLine(error)}`);
    }
  }
  let response;
  try {
    response = await fetch(source);
  } catch (error) {
    throw new CompactLMError(`cannot fetch ${source}: ${oneLine(error)}`);
  }
  if (!response.ok) throw new CompactLMError(`cannot fetch ${source}: HTTP ${response.status} ${response.statusText}`.trim());
  return { bytes: new Uint8Array(await response.arrayBuffer()), name: source };
}

/** A file checked before onnxruntime sees it (protobuf scan, metadata, layout), as Python's OrtBackend: its name,
 * bytes, decoded metadata and what the graph's inputs and outputs should be; `session` comes with openSession. */
async function readFile(source, fallbackName) {
  const { bytes, name } = await loadBytes(source, fallbackName);
  return { name, bytes, session: null, ...checkedLayout(name, readMetadataProps(bytes, name)) };
}

/** The file's onnxruntime session, its inputs and outputs checked against the metadata. */
async function openSession(ort, file, options) {
  const session = await createSession(ort, file.bytes, file.name, options);
  try {
    checkSessionNames(file.name, file.layout, session);
  } catch (error) {
    await releaseQuietly(session);
    throw error;
  }
  file.session = session;
  file.bytes = null;   // (onnxruntime holds its own copy)
}

async function releaseQuietly(session) {
  try {
    if (session && typeof session.release === "function") await session.release();
  } catch {
    // the error being reported matters more than a failed clean-up
  }
}

/** The decoded metadata and the graph's layout (state names, widths, vocabulary size) its metadata names. */
function checkedLayout(name, props) {
  const meta = checkedMetadata(name, props);
  const layout = {};
  try {
    const tokens = meta.vocab;
    if (!Array.isArray(tokens) || !tokens.length || tokens[0] !== UNK_TOKEN || meta.unk_id !== 0) {
      throw new Error("metadata 'vocab' must be a list starting with '<unk>' (unk_id 0)");
    }
    const seen = new Set();
    for (const char of tokens.slice(1)) {
      if (typeof char !== "string" || [...char].length !== 1) throw new Error("every vocabulary entry must be one character");
      if (seen.has(char)) throw new Error("vocabulary entries must be distinct");
      seen.add(char);
    }
    if (!["rnn", "gru", "lstm"].includes(meta.cell)) {   // (as Python's ModelConfig: the graph alone would run)
      throw new Error(`unknown cell ${pyRepr(meta.cell)}; choose one of rnn, gru, lstm`);
    }
    const sizes = meta.hidden_sizes;
    if (!Array.isArray(sizes) || !sizes.length || !sizes.every((h) => Number.isInteger(h) && h >= 1)) {
      throw new Error("hidden_sizes must be a list of whole numbers >= 1");
    }
    if (!Number.isInteger(meta.embed_size) || meta.embed_size < 1) throw new Error("embed_size must be a whole number >= 1");
    const ins = meta.state_inputs, outs = meta.state_outputs;
    const names = (value) => Array.isArray(value) && value.length === sizes.length
      && value.every((layer) => Array.isArray(layer) && layer.length >= 1 && layer.every((n) => typeof n === "string"));
    if (!names(ins) || !names(outs) || ins.some((layer, i) => layer.length !== outs[i].length)) {
      throw new Error("state_inputs / state_outputs must name one list of states per layer");
    }
    layout.stateInputs = ins.flat();
    layout.stateOutputs = outs.flat();
    layout.widths = ins.flatMap((layer, i) => layer.map(() => sizes[i]));
    layout.lastHidden = layout.stateInputs.length - ins[ins.length - 1].length;   // the last layer's h
    layout.vocabSize = tokens.length;
  } catch (error) {
    throw new CompactLMError(`${name} has invalid compact-lm metadata: ${error.message}`);
  }
  return { meta, layout };
}

/** Throws unless the session's inputs and outputs are the ones the metadata names. */
function checkSessionNames(name, layout, session) {
  const inputs = new Set(session.inputNames), outputs = new Set(session.outputNames);
  const wantIn = [TOKENS, ...layout.stateInputs], wantOut = [LOG_PROBS, ...layout.stateOutputs];
  if (inputs.size !== wantIn.length || !wantIn.every((n) => inputs.has(n))
      || outputs.size !== wantOut.length || !wantOut.every((n) => outputs.has(n))) {
    throw new CompactLMError(`${name}: graph inputs/outputs do not match its compact-lm metadata`);
  }
}

function providersFor(ort, options) {
  if (options.executionProviders) return options.executionProviders;
  const versions = (ort.env && ort.env.versions) || {};
  return versions.node ? ["cpu"] : ["wasm"];
}

async function createSession(ort, bytes, name, options) {
  const node = Boolean(((ort.env && ort.env.versions) || {}).node);
  const sessionOptions = {
    executionProviders: providersFor(ort, options),
    graphOptimizationLevel: "all",
    executionMode: "sequential",
    enableCpuMemArena: false,
    logSeverityLevel: 3,
    ...(node ? { intraOpNumThreads: 1, interOpNumThreads: 1 } : {}),
    ...(options.sessionOptions || {}),
  };
  try {
    return await ort.InferenceSession.create(bytes, sessionOptions);
  } catch (error) {
    // The bytes passed the protobuf scan and carry compact-lm metadata: what failed is most often onnxruntime
    // itself (its .wasm not served beside it, an execution provider it lacks, a file newer than it reads).
    const version = ort.env && ort.env.versions && ort.env.versions.common;
    throw new CompactLMError(`onnxruntime${version ? ` ${version}` : ""} could not open ${name}: ${oneLine(error, 400)}`);
  }
}

// ------------------------------------------------------------------------------------- the model
/**
 * A step graph (and optionally a sequence graph) behind one run queue: step(ids[B], state) and
 * run(ids[T], state) on batch 1. A state is an array of ort.Tensor, one per state input in feed order.
 */
class Model {
  constructor(ort, file, stepSession, sequenceSession) {
    this.ort = ort;
    this.name = file.name;
    this.meta = file.meta;
    this.vocabSize = file.layout.vocabSize;
    this.stateInputs = file.layout.stateInputs;
    this.stateOutputs = file.layout.stateOutputs;
    this.widths = file.layout.widths;
    this.lastHidden = file.layout.lastHidden;
    this.fetches = [LOG_PROBS, ...this.stateOutputs];
    this.step_ = stepSession;          // null when the source is a sequence graph
    this.sequence = sequenceSession;   // null without one
    this.runs = 0;                     // session.run calls so far
    this.released = null;              // release()'s promise once called: every later model call fails in one line
    this._tail = Promise.resolve();
  }

  zeroState(batch) {
    return this.widths.map((h) => new this.ort.Tensor("float32", new Float32Array(batch * h), [batch, h]));
  }

  /** One session.run, after every earlier one has finished (onnxruntime-web runs one at a time). */
  _call(session, tokens, dims, state) {
    const feeds = { [TOKENS]: new this.ort.Tensor("int64", tokens, dims) };
    this.stateInputs.forEach((name, i) => { feeds[name] = state[i]; });
    if (this.released) return Promise.reject(new CompactLMError("this Autocompleter was released (release()): create another"));
    const result = this._tail.then(() => {
      this.runs += 1;
      return session.run(feeds, this.fetches);
    });
    this._tail = result.then(() => undefined, () => undefined);
    return result.then((outputs) => ({
      logProbs: outputs[LOG_PROBS].data,
      state: this.stateOutputs.map((name) => outputs[name]),
      outputs,
    }));
  }

  /** {logProbs: Float32Array [B*V], state} after one token per stream. */
  step(ids, state) {
    const batch = ids.length;
    if (this.step_) return this._call(this.step_, ids, [batch], state);
    return this._call(this.sequence, ids, [batch, 1], state);
  }

  /** {logProbs: Float32Array [V] after the last of ids, state} for one stream: one run of the sequence graph, else steps. */
  async run(ids, state) {
    if (this.sequence) {
      const { logProbs, state: next } = await this._call(this.sequence, ids, [1, ids.length], state);
      const v = this.vocabSize;
      return { logProbs: logProbs.slice((ids.length - 1) * v, ids.length * v), state: next };
    }
    let result = { logProbs: null, state };
    for (let t = 0; t < ids.length; t++) result = await this.step(ids.slice(t, t + 1), result.state);
    return result;
  }

  /** Rows `parents` of every state tensor (a beam's states after its parents'). */
  gather(state, parents) {
    const b = parents.length;
    return state.map((tensor, i) => {
      const h = this.widths[i], from = tensor.data, to = new Float32Array(b * h);
      for (let r = 0; r < b; r++) to.set(from.subarray(parents[r] * h, parents[r] * h + h), r * h);
      return new this.ort.Tensor("float32", to, [b, h]);
    });
  }

  /** As compact_lm.ort_backend._probe: a batch-1 run, then every token for two steps; shapes and finite values checked. */
  async probe(session, graph, name) {
    const v = this.vocabSize;
    const runs = graph === "step" ? [[1, [1], 1], [v, [v], 2]] : [[1, [1, 2], 1], [v, [v, 2], 1]];
    for (const [batch, dims, steps] of runs) {
      const count = dims.reduce((a, b) => a * b, 1);
      const tokens = new BigInt64Array(count);
      for (let i = 0; i < batch; i++) {
        if (graph === "step") tokens[i] = BigInt(i);
        else { tokens[2 * i] = BigInt(i); tokens[2 * i + 1] = BigInt((i - 1 + v) % v); }
      }
      const want = [graph === "step" ? [batch, v] : [batch, dims[1], v], ...this.widths.map((h) => [batch, h])];
      let state = this.zeroState(batch);
      for (let s = 0; s < steps; s++) {
        let outputs;
        try {
          ({ outputs } = await this._call(session, tokens, dims, state));
        } catch (error) {
          throw new CompactLMError(`${name}: the graph fails to run (damaged?): ${oneLine(error)}`);
        }
        const got = this.fetches.map((n) => outputs[n].dims.map(Number));
        if (!deepEqual(got, want)) {
          const shapes = (list) => "[" + list.map((d) => `(${d.join(", ")}${d.length === 1 ? "," : ""})`).join(", ") + "]";
          throw new CompactLMError(`${name}: the graph's outputs have shapes ${shapes(got)}, its metadata `
            + `describes ${shapes(want)} (damaged graph?)`);
        }
        if (!this.fetches.every((n) => outputs[n].data.every(Number.isFinite))) {
          throw new CompactLMError(`${name}: the graph produces NaN or infinite values (damaged weights?)`);
        }
        state = this.stateOutputs.map((n) => outputs[n]);
      }
    }
  }
}


// -------------------------------------------------------------------------------------- user words
export const USER_WORDS_FORMAT = "compact-lm-user-words";
const USER_WORDS_VERSION = 1;
export const MIN_WORD_CHARS = 2;           // a one-letter word saves nothing when completed
export const MAX_WORD_CHARS = 40;
// typed code points looked back over for the word being typed: a word is at most MAX_WORD_CHARS characters once
// composed, and typed decomposed (a letter and two marks each) it may take three times as many (as Python's)
const TYPED_WORD_CHARS = 4 * MAX_WORD_CHARS;
export const LEARNED_UNDO = 64;            // per session: the last learned words a backspace over their boundary takes back
const MAX_CLOCK = 2 ** 53;
const REBASE = 600;
let arrivals = 0;                    // UserWords arrival numbers, shared by every dictionary of the page or process
const nextArrival = () => ++arrivals;
const KEPT_RANKINGS = 1 << 14;
const CANCELLED = 1e-6;   // a ranking's total that loses more than this share to a subtraction is summed again

function codePoints(text) {
  let n = 0;
  for (const _ of text) n += 1;   // eslint-disable-line no-unused-vars
  return n;
}

const isWhole = (value) => typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= MAX_CLOCK;
/** Ranking order: most weight first (smaller -key), then code point order; as Python's (-key, word) tuples. */
const byRank = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : compareCodePoints(a[1], b[1]));

// ranked's total minus a removed word's exp(key); when nearly all of the sum goes, the difference would be
// mostly rounding error (even negative), so it is summed again from the order, left to right as Python
function subtract(ranked, amount) {
  const before = ranked.total;
  let after = before - amount;
  if (after < before * CANCELLED) {
    after = 0;
    for (const [negativeKey] of ranked.order) after += Math.exp(-negativeKey);
  }
  ranked.total = after;
}

function lowerBound(array, value, compare) {
  let lo = 0, hi = array.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compare(array[mid], value) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** [lo, hi): the words of `words` (sorted in code point order) that start with `prefix`, as lexicon.prefix_range. */
function prefixRange(words, prefix) {
  const lo = lowerBound(words, prefix, compareCodePoints);
  let hi = prefix ? lo : words.length;
  while (hi < words.length && words[hi].startsWith(prefix)) hi += 1;
  return [lo, hi];
}

/**
 * The user's own words, as compact_lm/user_words.py line for line (same JSON document, same ranking and
 * mixing, the same floating-point operations in the same order): a bounded dictionary of words with counts
 * and recency. Options: maxWords (5000), halfLife (300 learned words), share (0.25 of the probability for the
 * dictionary's words when one continues the prefix). `toJSON()` gives the document to store (localStorage,
 * a file), `changes` counts the changes (store when it moves); `UserWords.fromJSON(documentOrText, options)`
 * reads one.
 */
const USER_WORDS_OPTIONS = new Set(["maxWords", "halfLife", "share"]);

export class UserWords {
  constructor(options = {}) {
    if (options === null || typeof options !== "object" || options instanceof UserWords) {   // (not a path, as in Python)
      throw new CompactLMError(`UserWords takes options {maxWords, halfLife, share}; read a saved document with `
        + `UserWords.fromJSON, got ${options instanceof UserWords ? "a UserWords" : pyRepr(options)}`);
    }
    refuseUnknownOptions(" of UserWords", options, USER_WORDS_OPTIONS);
    const { maxWords = 5000, halfLife = 300, share = 0.25 } = options;
    if (typeof maxWords !== "number" || !Number.isInteger(maxWords) || maxWords < 1) {
      throw new CompactLMError(`maxWords must be a whole number >= 1, got ${pyRepr(maxWords)}`);
    }
    if (typeof halfLife !== "number" || !Number.isFinite(halfLife) || halfLife <= 0) {
      throw new CompactLMError(`halfLife must be a number > 0, got ${pyRepr(halfLife)}`);
    }
    if (typeof share !== "number" || !(share >= 0 && share <= 1)) {
      throw new CompactLMError(`share must be a number from 0 to 1, got ${pyRepr(share)}`);
    }
    this.maxWords = maxWords;
    this.halfLife = halfLife;
    this.share = share;
    this.path = null;            // the file open() read and save() writes (Node)
    this._rate = Math.log(2) / halfLife;
    this.clock = 0;
    this.changes = 0;
    this.removals = 0;           // words that left (unlearned, forgotten, evicted, cleared)
    this._entries = new Map();   // word -> [count, last use, weight at last use]
    this._arrivals = new Map();  // word -> its arrival (memory only: see arrival())
    this._sorted = [];           // the words in code point order
    this._base = 0;
    this._ranked = new Map();    // prefix -> {order: [-key, word] by byRank, total: sum of exp(key)}
  }

  /** A UserWords from a stored document (an object or its JSON text); `name` goes into error messages. */
  static fromJSON(document, options = {}, name = "user words") {
    if (typeof document === "string") {
      try {
        document = JSON.parse(document);
      } catch (error) {
        const path = !/^\s*[{[]/.test(document) ? " (a file path? in Node, await UserWords.open(path))" : "";
        throw new CompactLMError(`${name} is not valid JSON${path}: ${oneLine(error)}`);
      }
    }
    if (document === null || typeof document !== "object" || document.format !== USER_WORDS_FORMAT) {
      throw new CompactLMError(`${name} is not a ${USER_WORDS_FORMAT} file (no "format": "${USER_WORDS_FORMAT}")`);
    }
    if (document.version !== USER_WORDS_VERSION) {
      throw new CompactLMError(`${name} has version ${pyRepr(document.version).slice(0, 20)}; this compact-lm reads ${USER_WORDS_VERSION}`);
    }
    const words = document.words, clock = document.clock;
    if (words === null || typeof words !== "object" || Array.isArray(words) || !isWhole(clock)) {
      throw new CompactLMError(`${name} is damaged: "clock" must be a whole number from 0 to 2^53 and "words" an object`);
    }
    const out = new UserWords(options);
    out.clock = clock;
    for (const [word, entry] of Object.entries(words)) {
      const length = codePoints(word);
      const ok = entry !== null && typeof entry === "object" && isWhole(entry.count) && entry.count >= 1
        && isWhole(entry.last) && entry.last <= clock && typeof entry.weight === "number" && Number.isFinite(entry.weight)
        && entry.weight > 0 && entry.weight <= 1e300 && length >= MIN_WORD_CHARS && length <= MAX_WORD_CHARS && !/\p{Cs}/u.test(word);
      if (!ok) {
        throw new CompactLMError(`${name} is damaged: the entry of ${pyRepr(Array.from(word).slice(0, MAX_WORD_CHARS + 1).join(""))} `
          + `must have a whole count >= 1, a whole last <= clock and a finite weight > 0, for a word of `
          + `${MIN_WORD_CHARS}-${MAX_WORD_CHARS} characters`);
      }
      out._entries.set(word, [entry.count, entry.last, entry.weight]);
      out._arrivals.set(word, nextArrival());
    }
    out._sorted = [...out._entries.keys()].sort(compareCodePoints);
    out._rebase();
    while (out._entries.size > out.maxWords) {
      const order = out._ranking("").order;
      out._remove(order[order.length - 1][1]);
    }
    return out;
  }

  /** Node: the user words kept in the file at `path`, read if it exists (else none yet), as Python's UserWords(path);
   * save() writes them back there. The folder must exist. */
  static async open(path, options = {}) {
    if (!isNode) throw new CompactLMError("UserWords.open reads a file, in Node; in a page use UserWords.fromJSON");
    checkText("path", path);
    const fs = await import("node:fs/promises");
    const { dirname } = await import("node:path");
    const folder = dirname(path);
    const info = await fs.stat(folder).catch(() => null);
    if (!info || !info.isDirectory()) {
      throw new CompactLMError(`user words ${path}: the folder ${folder} ${info ? "is not a folder" : "does not exist"}`);
    }
    let text = null;
    try {
      if ((await fs.stat(path)).isDirectory()) throw new CompactLMError(`user words ${path} is a folder, not a file`);
      text = await fs.readFile(path, "utf8");
    } catch (error) {
      if (error instanceof CompactLMError) throw error;
      if (error.code !== "ENOENT") throw new CompactLMError(`cannot read user words ${path}: ${oneLine(error)}`);
    }
    const words = text === null ? new UserWords(options) : UserWords.fromJSON(text, options, `user words ${path}`);
    words.path = path;
    return words;
  }

  /** Node: write the words to `path` (default: the file open() read) atomically, readable by its owner only. */
  async save(path = this.path) {
    if (!isNode) throw new CompactLMError("save() writes a file, in Node; in a page store JSON.stringify(words.toJSON())");
    if (path === undefined || path === null) throw new CompactLMError("these user words have no file: give save() a path");
    checkText("path", path);
    const fs = await import("node:fs/promises");
    const text = JSON.stringify(this.toJSON(), null, 1);   // (the copy: learning may go on while it is written)
    const temporary = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    try {
      await fs.writeFile(temporary, text, { mode: 0o600 });
      await fs.rename(temporary, path);
    } catch (error) {
      await fs.rm(temporary, { force: true }).catch(() => {});
      throw new CompactLMError(`cannot write ${path}: ${oneLine(error)}`);
    }
    return path;
  }

  /** The document to store: each word with its count, last use (on the clock of learned words) and weight then. */
  toJSON() {
    const words = Object.fromEntries(this._ranking("").order.map(([, word]) => {
      const [count, last, weight] = this._entries.get(word);
      return [word, { count, last, weight }];
    }));
    return { format: USER_WORDS_FORMAT, version: USER_WORDS_VERSION, clock: this.clock, words };
  }

  get size() {
    return this._entries.size;
  }

  has(word) {
    return this._entries.has(word);
  }

  /** The words held, most weight first. */
  words() {
    return this._ranking("").order.map(([, word]) => word);
  }

  /** The word's weight now (0 if absent). */
  weight(word) {
    const entry = this._entries.get(word);
    return entry === undefined ? 0 : entry[2] * 2 ** (-(this.clock - entry[1]) / this.halfLife);
  }

  _key(word) {
    const [, last, weight] = this._entries.get(word);
    return Math.log(weight) + last * this._rate - this._base;
  }

  /** Count one use of `word` (normalized); returns what unlearn() needs (as Python's Learned: {word, previous, entry,
   * evicted, arrival, removals}), or null if the word is not kept. */
  learn(word) {
    if (typeof word !== "string") throw new CompactLMError(`learn() takes a word (a string), got ${word === null ? "null" : typeof word}`);
    const length = codePoints(word);
    // (a lone surrogate could be written to no file that Python reads, nor read back here)
    if (length < MIN_WORD_CHARS || length > MAX_WORD_CHARS || /\p{Cs}/u.test(word)) return null;
    const found = this._entries.get(word);
    const previous = found === undefined ? null : found.slice();
    this.clock += 1;
    let entry;
    if (previous === null) entry = [1, this.clock, 1.0];
    else {
      const [count, last, weight] = previous;
      entry = [count + 1, this.clock, weight * 2 ** (-(this.clock - last) / this.halfLife) + 1.0];
    }
    this._put(word, entry);
    const evicted = [];
    while (this._entries.size > this.maxWords) {
      const order = this._ranking("").order;
      const victim = order[order.length - 1][1];
      evicted.push([victim, this._entries.get(victim).slice(), this._arrivals.get(victim)]);
      this._remove(victim);
    }
    this.changes += 1;
    // (as Python's Learned: the word's arrival now, 0 if its own arrival evicted it; the removals count then)
    return { word, previous, entry: entry.slice(), evicted, arrival: this._arrivals.get(word) ?? 0, removals: this.removals };
  }

  /** Take back one learn() (its return value): the word's entry as it was before, and the words its arrival
   * evicted if nothing left the dictionary since. Nothing happens if the word changed since (another session used
   * it, or it was forgotten). As Python's. */
  unlearn(undo) {
    const { word, previous, entry, evicted } = undo;
    const now = this._entries.get(word);
    if (now === undefined || now[0] !== entry[0] || now[1] !== entry[1] || now[2] !== entry[2]) return;
    const untouched = this.removals === undo.removals;
    if (previous === null) this._remove(word);
    else this._put(word, previous.slice());
    if (untouched && evicted.length) {
      for (const [victim, victimEntry, arrival] of evicted) {
        if (!this._entries.has(victim) && this._entries.size < this.maxWords) this._put(victim, victimEntry.slice(), arrival);
      }
      this.removals += 1;   // (as Python: whoever saw the count before the victims' return looks again)
    }
    this.changes += 1;
  }

  /** Remove `word` (as stored: normalized); whether it was there. */
  forget(word) {
    if (!this._entries.has(word)) return false;
    this._remove(word);
    this.changes += 1;
    return true;
  }

  /** Remove every word (the clock stays). */
  clear() {
    this._entries.clear();
    this._arrivals.clear();
    this._sorted = [];
    this._ranked.clear();
    this.changes += 1;
    this.removals += 1;
  }

  _prefixes(word) {
    const out = [""];
    let prefix = "";
    for (const char of word) {
      prefix += char;
      out.push(prefix);
    }
    return out;
  }

  /** A number for the word's present stay in the dictionary (null if absent), as Python's arrival(): new, and
   * unique in the page or process, each time the word comes in from outside; the old one when unlearn() puts an
   * evicted word back. Memory only: the context cache keeps it with each use. */
  arrival(word) {
    return this._arrivals.get(word) ?? null;
  }

  _put(word, entry, arrival = null) {
    const oldKey = this._entries.has(word) ? this._key(word) : null;
    if (oldKey === null) {
      this._sorted.splice(lowerBound(this._sorted, word, compareCodePoints), 0, word);
      this._arrivals.set(word, arrival ?? nextArrival());
    }
    this._entries.set(word, entry);
    const key = this._key(word);
    if (key > REBASE) {
      this._rebase();
      return;
    }
    for (const prefix of this._prefixes(word)) {
      const ranked = this._ranked.get(prefix);
      if (ranked === undefined) continue;
      if (oldKey !== null) {
        ranked.order.splice(lowerBound(ranked.order, [-oldKey, word], byRank), 1);
        subtract(ranked, Math.exp(oldKey));
      }
      ranked.order.splice(lowerBound(ranked.order, [-key, word], byRank), 0, [-key, word]);
      ranked.total += Math.exp(key);
    }
  }

  _remove(word) {
    const key = this._key(word);
    for (const prefix of this._prefixes(word)) {
      const ranked = this._ranked.get(prefix);
      if (ranked === undefined) continue;
      ranked.order.splice(lowerBound(ranked.order, [-key, word], byRank), 1);
      subtract(ranked, Math.exp(key));
    }
    this._entries.delete(word);
    this._arrivals.delete(word);
    this._sorted.splice(lowerBound(this._sorted, word, compareCodePoints), 1);
    this.removals += 1;   // (after the word is gone, as Python)
  }

  _rebase() {
    this._ranked.clear();
    if (!this._entries.size) return;
    let top = -Infinity;
    for (const word of this._entries.keys()) top = Math.max(top, this._key(word));
    this._base += top;
  }

  _ranking(prefix) {
    let ranked = this._ranked.get(prefix);
    if (ranked === undefined) {
      const [start, end] = prefixRange(this._sorted, prefix);
      const order = this._sorted.slice(start, end).map((w) => [-this._key(w), w]).sort(byRank);
      let total = 0;
      for (const [negativeKey] of order) total += Math.exp(-negativeKey);   // left to right, as Python
      if (this._ranked.size >= KEPT_RANKINGS) this._ranked.clear();
      ranked = { order, total };
      this._ranked.set(prefix, ranked);
    }
    return ranked;
  }

  /** The k words of most weight that start with `prefix`, as [word, weight / W_prefix], and the dictionary's
   * share of the mixture (0 when no word continues `prefix`): {found, share}. */
  continuing(prefix, k) {
    const { order, total } = this._ranking(prefix);
    if (!order.length || !(total > 0)) return { found: [], share: 0 };
    return { found: order.slice(0, k).map(([negativeKey, w]) => [w, Math.exp(-negativeKey) / total]), share: this.share };
  }

  /** W_prefix: the weight now of all the words that start with `prefix`. */
  totalWeight(prefix) {
    return this._ranking(prefix).total * Math.exp(this._base - this.clock * this._rate);
  }
}

/** Throws on an option name `allowed` lacks: a misspelled one (max_chars, user_words) would be ignored without a word. */
function refuseUnknownOptions(what, options, allowed) {
  const unknown = Object.keys(options).filter((key) => !allowed.has(key));
  if (unknown.length) {
    throw new CompactLMError(`unknown option ${unknown[0]}${what}; the options are ${[...allowed].join(", ")}`);
  }
}

function openUserWords(userWords) {
  if (userWords === undefined || userWords === null || userWords instanceof UserWords) return userWords ?? null;
  if (typeof userWords === "object" || typeof userWords === "string") return UserWords.fromJSON(userWords, {}, "the userWords option");
  throw new CompactLMError(`userWords must be a UserWords or its JSON document (an object or its text), got ${typeof userWords}`);
}

// ----------------------------------------------------------------------------------- context cache
export const CONTEXT_THETA = 10.0, CONTEXT_HALF_LIFE = 300.0, CONTEXT_SIZE = 1000, CONTEXT_POOLED = 64;

/** The state pooled to at most CONTEXT_POOLED numbers (unit i added to sum i mod CONTEXT_POOLED, in unit order, in
 * float64) as a vector of length 1 (divided in float64, then rounded to float32), as context_cache._unit. */
function unitVector(values) {
  const vector = new Float64Array(Math.min(values.length, CONTEXT_POOLED));
  for (let i = 0; i < values.length; i++) vector[i % vector.length] += values[i];
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i] * vector[i];
  const norm = Math.sqrt(sum);
  if (norm > 0) for (let i = 0; i < vector.length; i++) vector[i] /= norm;
  return Float32Array.from(vector);
}

/**
 * A session's last `size` learned words, each with the model's state where it began (the last layer's h):
 * in memory only, never saved. weight(w | h) = sum over uses i of w of exp(theta cos(h, h_i) - (now - t_i)
 * ln 2 / halfLife); the words continuing the typed part share it. As compact_lm/context_cache.py, step for
 * step; a use's state may still be on its way (a promise): it lands when computed, settle() waits for all.
 */
export class ContextCache {
  /** size: the uses kept; theta: how sharply the cosine selects; halfLife: in words added (as Python's). */
  constructor({ size = CONTEXT_SIZE, theta = CONTEXT_THETA, halfLife = CONTEXT_HALF_LIFE } = {}) {
    this.size = size;
    this.theta = theta;
    this._rate = Math.log(2.0) / halfLife;
    // unit-length pooled states, row = slot, one array (allocated when the first lands: its length is the model's)
    this._vectors = null;
    this._landed = new Uint8Array(size);         // whether the slot's state has landed
    this._words = new Array(size).fill(null);   // the word in each slot (null: empty or taken back)
    this._times = new Float64Array(size);        // when each slot's word was added
    // the distinct words in a slot, in code point order, and each slot's index into them (as Python's _sorted and
    // _bins): a word start sums the weights per word straight into that order, with no sort
    this._sorted = [];
    this._uses = new Map();                      // word -> how many slots hold it
    this._bins = new Int32Array(size);           // 1 + that index (0: none)
    this._counted = new Int32Array(size);        // _bins, 0 for a use that does not count: the sums' bins
    this._arrivals = new Array(size).fill(0);    // the dictionary's arrival of each slot's word then
    this._inflight = new Set();                  // states not yet landed
    this.added = 0;                              // words added so far (the clock; slot = added % size)
    this._version = 0;                           // changes whenever a slot does
    this._query = null;                          // {version, held, changes, state, weights}
    // the dictionary and its `removals` count when which uses count was last decided
    this._removalsSeen = null;
    this._heldSeen = null;
  }

  /** Keep `word` with (a promise of) the model's state where it began and `arrival`, the word's arrival in `held`
   * (the dictionary) as it was just learned (learn()'s arrival); returns what remove() takes. */
  add(state, word, arrival, held) {
    if (held !== this._heldSeen) this._heldSeen = null;   // counted below, for `held`: decide again at the next query
    const slot = this.added % this.size;
    this._empty(slot);
    this._words[slot] = word;
    this._landed[slot] = 0;
    const count = this._uses.get(word) ?? 0;
    if (!count) {   // a new word: the indices at and after its place move up one
      const at = lowerBound(this._sorted, word, compareCodePoints);
      this._sorted.splice(at, 0, word);
      for (let i = 0; i < this.size; i++) {
        if (this._bins[i] > at) this._bins[i] += 1;
        if (this._counted[i] > at) this._counted[i] += 1;
      }
    }
    this._uses.set(word, count + 1);
    this._bins[slot] = this._counted[slot] = lowerBound(this._sorted, word, compareCodePoints) + 1;
    this._arrivals[slot] = arrival;
    this.added += 1;
    const added = this.added;
    this._times[slot] = added;
    this._version += 1;
    const landed = Promise.resolve(state).then((values) => {
      if (this._times[slot] !== added) return;
      const vector = unitVector(values);
      this._vectors ??= new Float32Array(this.size * vector.length);
      this._vectors.set(vector, slot * vector.length);
      this._landed[slot] = 1;
      this._version += 1;
    }, () => {   // the model failed (that error reaches whoever awaits the state): the use is left out
      if (this._times[slot] === added && this._words[slot] === word) { this._empty(slot); this._version += 1; }
    });
    this._inflight.add(landed);
    landed.then(() => this._inflight.delete(landed));
    return [slot, added];
  }

  /** Take back one add() (its return value), if its slot still holds that use. */
  remove([slot, added]) {
    if (this._times[slot] === added && this._words[slot] !== null) {
      this._empty(slot);
      this._version += 1;
    }
  }

  _empty(slot) {
    const word = this._words[slot];
    if (word === null) return;
    this._words[slot] = null;
    this._bins[slot] = this._counted[slot] = 0;
    const count = this._uses.get(word) - 1;
    if (count) {
      this._uses.set(word, count);
    } else {   // its last use: the indices after it move down one
      this._uses.delete(word);
      const at = lowerBound(this._sorted, word, compareCodePoints);
      this._sorted.splice(at, 1);
      for (let i = 0; i < this.size; i++) {
        if (this._bins[i] > at + 1) this._bins[i] -= 1;
        if (this._counted[i] > at + 1) this._counted[i] -= 1;
      }
    }
  }

  /** Wait until every state added so far has landed. */
  async settle() {
    while (this._inflight.size) await Promise.all([...this._inflight]);
  }

  /** The k words of most weight that continue `prefix` (and that `held`, the dictionary, has), as [word, weight /
   * total weight of the words continuing prefix], most first, ties in code point order; [] if none. */
  continuing(state, prefix, k, held) {
    this._decideCounted(held);
    let query = this._query;
    const same = query && query.version === this._version && query.held === held && query.changes === held.changes
      && query.state.length === state.length && query.state.every((x, i) => x === state[i]);
    if (!same) {
      query = this._query = { version: this._version, held, changes: held.changes, state: Float32Array.from(state),
        weights: this._weigh(state) };
    }
    const words = this._sorted, weights = query.weights;   // (_sorted changes only with the version)
    const [lo, hi] = prefixRange(words, prefix);
    let total = 0;
    for (let i = lo; i < hi; i++) total += weights[i];   // left to right, as Python
    if (!(total > 0) || k < 1) return [];
    // the k largest, in one pass: a later index enters only with a larger weight (ties: code point order)
    const top = [];
    for (let i = lo; i < hi; i++) {
      const weight = weights[i];
      if (!(weight > 0) || (top.length === k && weight <= weights[top[k - 1]])) continue;
      let at = top.length === k ? k - 1 : top.length;
      while (at > 0 && weights[top[at - 1]] < weight) { top[at] = top[at - 1]; at -= 1; }
      top[at] = i;
    }
    return top.map((i) => [words[i], weights[i] / total]);
  }

  /** weight(w | state) of every word in _sorted. */
  _weigh(state) {
    const totals = new Float64Array(this._sorted.length + 1);   // [0]: the empty slots' bin
    if (!this._sorted.length || this._vectors === null) return totals.subarray(1);
    const used = Math.min(this.added, this.size), query = unitVector(state), size = query.length;
    if (size * this.size !== this._vectors.length) {   // (as Python's product, which refuses the shapes)
      throw new CompactLMError(`the context cache holds states pooled to ${this._vectors.length / this.size} numbers, this one to ${size}`);
    }
    const vectors = this._vectors, bins = this._counted, landed = this._landed, times = this._times;
    const theta = this.theta, rate = this._rate, now = this.added;
    for (let slot = 0; slot < used; slot++) {   // one sum per word, in slot order (as Python's bincount)
      if (bins[slot] === 0 || !landed[slot]) continue;
      // four running sums, not one: the additions no longer wait on each other (2x faster in V8)
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
      const at = slot * size;
      for (; i + 3 < size; i += 4) {
        s0 += vectors[at + i] * query[i];
        s1 += vectors[at + i + 1] * query[i + 1];
        s2 += vectors[at + i + 2] * query[i + 2];
        s3 += vectors[at + i + 3] * query[i + 3];
      }
      for (; i < size; i++) s0 += vectors[at + i] * query[i];
      totals[bins[slot]] += Math.exp(theta * ((s0 + s1) + (s2 + s3)) - (now - times[slot]) * rate);
    }
    return totals.subarray(1);
  }

  /** Which uses count: those whose word `held` (the dictionary) has, in the stay the use was added in; decided
   * again when its removals change or it is another dictionary (as Python's _decide_counted). */
  _decideCounted(held) {
    const removals = held.removals;   // (read first, as Python)
    if (removals === this._removalsSeen && held === this._heldSeen) return;
    let changed = false;
    for (let slot = 0; slot < this.size; slot++) {
      const word = this._words[slot];
      if (word === null) continue;
      const counted = held.arrival(word) === this._arrivals[slot] ? this._bins[slot] : 0;
      if (counted !== this._counted[slot]) { this._counted[slot] = counted; changed = true; }
    }
    if (changed) this._version += 1;
    this._removalsSeen = removals;
    this._heldSeen = held;
  }
}

// ---------------------------------------------------------------------------------------- lexicon
export const LEXICON_ENCODING = "front-zlib-base64";
const FRONT = 0x30;   // a line starts with the code point FRONT + n, n the code points shared with the word before
const CACHED_PREFIXES = 1 << 12;     // lexicon prefixes whose next-character masks are remembered
const MAX_LEXICON_BYTES = 32 * 1024 * 1024;   // inflated: more is refused (a zip bomb)
const MAX_LEXICON_WORDS = 2000000;            // and more words than this are never split out


/** Whether `text` is padded standard base64, as Python's b64decode(validate=True) takes it (a loop: a regular
 * expression overflows the stack on megabytes). */
function isBase64(text) {
  if (text.length % 4) return false;
  const end = text.endsWith("==") ? text.length - 2 : text.endsWith("=") ? text.length - 1 : text.length;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    if (!((c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47)) return false;
  }
  return true;
}

/** The words of a model's training split (compact_lm/lexicon.py's Lexicon): membership, whether a string
 * starts some word, and which code points continue it. */
export class Lexicon {
  constructor(words, { sorted = false } = {}) {
    // code point order, distinct (as Python's sorted(set(words))); `sorted`: they already are
    this.words = sorted ? words : [...new Set(words)].sort(compareCodePoints);
    if (this.words.length && (!this.words[0] || this.words.some((w) => w.includes("\n")))) {
      throw new CompactLMError("a lexicon's words are non-empty and hold no newline");
    }
    this._set = new Set(words);
  }

  get size() {
    return this.words.length;
  }

  has(word) {
    return this._set.has(word);
  }

  /** Whether some word begins with `prefix`. */
  startsWord(prefix) {
    const at = lowerBound(this.words, prefix, compareCodePoints);
    return at < this.words.length && this.words[at].startsWith(prefix);
  }

  /** The code points that follow `prefix` in some word (a Set). */
  nextChars(prefix) {
    const words = this.words, found = new Set();
    let at = lowerBound(words, prefix, compareCodePoints);
    while (at < words.length && words[at].startsWith(prefix)) {
      if (words[at].length === prefix.length) {
        at += 1;
        continue;
      }
      const code = words[at].codePointAt(prefix.length);
      found.add(String.fromCodePoint(code));
      if (code === 0x10ffff) break;   // the last code point: no word goes on with a later one
      at = lowerBound(words, prefix + String.fromCodePoint(code + 1), compareCodePoints);   // past the words going on with it
    }
    return found;
  }

  /** The lexicon of a metadata value ({encoding, words, data}: the sorted words front-coded one per line,
   * zlib-compressed, base64), checked as
   * compact_lm/lexicon.py's Lexicon.from_json checks it, with the same one-line messages. */
  static async fromMetadata(value, name) {
    const damaged = (why) => new CompactLMError(`${name} has a damaged lexicon (${why})`);
    const words0 = value !== null && typeof value === "object" ? value.words : undefined;
    const count = typeof words0 === "number" ? words0 + 0 : words0;   // (JSON's -0 is Python's 0)
    if (value === null || typeof value !== "object" || Array.isArray(value) || value.encoding !== LEXICON_ENCODING
        || typeof value.data !== "string" || !Number.isInteger(count) || count < 0 || count > MAX_LEXICON_WORDS) {
      throw damaged(`expected encoding '${LEXICON_ENCODING}', words from 0 to ${MAX_LEXICON_WORDS.toLocaleString("en-US")} and data`);
    }
    if (typeof DecompressionStream !== "function") {
      throw new CompactLMError(`${name} has a lexicon, and this platform has no DecompressionStream to read it: `
        + "create the Autocompleter with { lexicon: false }");
    }
    let text;
    try {
      if (!isBase64(value.data)) throw new Error("not base64");
      const packed = Uint8Array.from(atob(value.data), (c) => c.charCodeAt(0));
      const reader = new Blob([packed]).stream().pipeThrough(new DecompressionStream("deflate")).getReader();
      const parts = [];
      let length = 0;
      for (;;) {
        const { done, value: part } = await reader.read();
        if (done) break;
        length += part.length;
        if (length > MAX_LEXICON_BYTES) {
          await reader.cancel().catch(() => {});
          throw damaged(`over ${MAX_LEXICON_BYTES.toLocaleString("en-US")} bytes inflated`);
        }
        parts.push(part);
      }
      const inflated = new Uint8Array(await new Blob(parts).arrayBuffer());
      // the stream must end the data: its last 4 bytes are the Adler-32 of what it inflates to (Node's
      // DecompressionStream lets bytes after the end pass, browsers do not; Python checks the same)
      if (packed.length < 4 || readUint32(packed, packed.length - 4) !== adler32(inflated)) throw new Error("trailing bytes");
      text = strictUtf8.decode(inflated);
    } catch (error) {
      if (error instanceof CompactLMError) throw error;
      throw damaged("not the base64 of a zlib stream of UTF-8 text");
    }
    const why = `its words are not ${count.toLocaleString("en-US")} sorted distinct words`;
    let lines = text ? 1 : 0;   // counted before anything is split out
    for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) lines += 1;
    if (lines !== count) throw damaged(why);
    const words = [];
    let previous = "";
    for (const line of text ? text.split("\n") : []) {
      // a valid front code is one code unit (FRONT + at most MAX_WORD_CHARS), as Python refuses any other
      const shared = line.length ? line.charCodeAt(0) - FRONT : -1;
      if (!(shared >= 0 && shared <= MAX_WORD_CHARS) || line.length < 2) throw damaged(why);
      let at = 0;   // code units of the first `shared` code points of the word before
      for (let k = 0; k < shared; k++) {
        if (at >= previous.length) throw damaged(why);
        at += previous.codePointAt(at) > 0xffff ? 2 : 1;
      }
      previous = previous.slice(0, at) + line.slice(1);
      words.push(previous);
    }
    for (let i = 1; i < words.length; i++) if (compareCodePoints(words[i - 1], words[i]) >= 0) throw damaged(why);
    return new Lexicon(words, { sorted: true });
  }
}

/** The Adler-32 checksum of `bytes` (zlib's), as an unsigned 32-bit number. */
function adler32(bytes) {
  let a = 1, b = 0;
  for (let i = 0; i < bytes.length; i++) {
    a = (a + bytes[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b * 65536 + a) >>> 0;
}

function readUint32(bytes, at) {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

// ------------------------------------------------------------------------------------ autocomplete
/**
 * Next characters and word completions from a compact-lm .onnx file; `session()` for keystroke use.
 * Create with `await Autocompleter.create(source, { ort, beam, maxChars, sequence })`.
 */
// What Autocompleter.create takes (its second argument)
const SESSION_OPTIONS = new Set(["userWords"]);
const CREATE_OPTIONS = new Set(["ort", "name", "sequence", "sequenceName", "beam", "maxChars", "contextChars", "boundaries",
  "userWords", "lexicon", "contextCache", "executionProviders", "sessionOptions"]);

export class Autocompleter {
  /**
   * source: the step graph (or a sequence graph) as Uint8Array, ArrayBuffer, URL (string or URL, fetched)
   * or file path (Node). Options: ort (the onnxruntime-web or onnxruntime-node module; default
   * globalThis.ort), beam (4), maxChars (16), sequence (the model's sequence graph, same kinds, for
   * pasted text in one run), boundaries (a string of boundary characters instead of the default rule),
   * contextChars (1024), lexicon (true: search the file's lexicon of training words, as Python; false: not;
   * with other boundaries it is not used), contextCache (default false; true: sessions that learn also weigh each
   * learned word by its context, compact_lm/context_cache.py, at a cost in latency), executionProviders (default ["cpu"] with onnxruntime-node, else ["wasm"]),
   * sessionOptions (merged into onnxruntime's), name / sequenceName (for byte sources in error messages).
   */
  static async create(source, options = {}) {
    if (options === null || typeof options !== "object") {
      throw new CompactLMError(`options must be an object, got ${pyRepr(options)}`);
    }
    refuseUnknownOptions("", options, CREATE_OPTIONS);
    for (const key of ["lexicon", "contextCache"]) {   // (null: off)
      if (options[key] !== undefined && options[key] !== null && typeof options[key] !== "boolean") {
        throw new CompactLMError(`${key} must be true or false, got ${pyRepr(options[key])}`);
      }
    }
    const ort = options.ort || globalThis.ort;
    if (!ort || !ort.InferenceSession || !ort.Tensor) {
      throw new CompactLMError("pass the onnxruntime module as the ort option (onnxruntime-web or onnxruntime-node)");
    }
    const beam = positive("beam", options.beam ?? 4);
    const maxChars = positive("maxChars", options.maxChars ?? 16);
    const contextChars = positive("contextChars", options.contextChars ?? CONTEXT_CHARS);
    const userWords = openUserWords(options.userWords);   // (a bad document fails before any download)
    const file = await readFile(source, options.name || "the model");
    await openSession(ort, file, options);
    let sequenceFile = null;
    try {
      if (options.sequence !== undefined && options.sequence !== null) {
        sequenceFile = await readFile(options.sequence, options.sequenceName || "the sequence graph");
        if (sequenceFile.meta.graph !== "sequence") {
          throw new CompactLMError(`${sequenceFile.name} holds a ${sequenceFile.meta.graph} graph, not a sequence graph`);
        }
        const differences = metadataDifferences(file.meta, sequenceFile.meta);
        if (differences.length) {
          throw new CompactLMError(`${sequenceFile.name} is not from the same model as ${file.name}: ${differences[0]}`);
        }
        await openSession(ort, sequenceFile, options);
      }
      const main = file.session, sequenceSession = sequenceFile ? sequenceFile.session : null;
      const isStep = file.meta.graph === "step";
      const model = new Model(ort, file, isStep ? main : null, isStep ? sequenceSession : (sequenceSession || main));
      await model.probe(main, file.meta.graph, file.name);
      if (sequenceSession) await model.probe(sequenceSession, "sequence", sequenceFile.name);
      // (lexicon null: off, as Python's lexicon=None)
      const useLexicon = (options.lexicon === undefined || Boolean(options.lexicon))
        && (options.boundaries === undefined || options.boundaries === null);
      const stored = file.meta.lexicon;   // (absent or null in a file without one)
      const lexicon = useLexicon && stored !== undefined && stored !== null ? await Lexicon.fromMetadata(stored, file.name) : null;
      const completer = new Autocompleter(model, { beam, maxChars, contextChars, boundaries: options.boundaries, userWords, lexicon,
        contextCache: options.contextCache ?? false });
      await completer._init();
      return completer;
    } catch (error) {
      await releaseQuietly(file.session);
      if (sequenceFile) await releaseQuietly(sequenceFile.session);
      throw error;
    }
  }

  constructor(model, { beam, maxChars, contextChars, boundaries, userWords = null, lexicon = null, contextCache = false }) {
    this.model = model;
    this.contextCache = contextCache;
    this.userWords = userWords;
    this.lexicon = lexicon;
    this.metadata = model.meta;
    this.beam = beam;
    this.maxChars = maxChars;
    this.contextChars = contextChars;
    const meta = model.meta;
    this.vocabSize = model.vocabSize;
    this.vocab = meta.vocab.slice();
    this.unkId = meta.unk_id ?? 0;
    this.startText = meta.start_text ?? START_TEXT;
    this.normalization = meta.normalization ?? normalizationOf(meta.nfc ?? true, meta.lowercase ?? false);
    if (boundaries === undefined || boundaries === null) {
      this.isBoundary = defaultIsBoundary;
    } else {
      const set = new Set(Array.from(checkText("boundaries", boundaries)));
      this.isBoundary = (char) => set.has(char);
    }
    const v = this.vocabSize, unk = this.unkId;
    this._idOf = new Map();
    this._charOf = this.vocab.map((c, i) => (i === unk ? "" : c));   // <unk> is never part of a suggestion
    this.vocab.forEach((c, i) => { if (i !== unk) this._idOf.set(c, i); });
    const boundary = this.vocab.map((c, i) => i !== unk && this.isBoundary(c));
    this._boundaryIds = boundary.flatMap((b, i) => (b ? [i] : []));
    if (!this._boundaryIds.length) throw new CompactLMError("no word-boundary character is in the model's vocabulary");
    this._wordMask = new Float64Array(v);       // -inf where a character may not extend a word
    this._nextMask = new Float64Array(v);       // -inf for <unk>
    boundary.forEach((b, i) => { if (b) this._wordMask[i] = -Infinity; });
    this._wordMask[unk] = -Infinity;
    this._nextMask[unk] = -Infinity;
    this._normalized = new Map();
    this._unknownChar = new Map();
    this._joining = new Map();
    this._composes = this.normalization.steps.includes("NFC");
  }

  /** The words completion searches first (null: the model alone); may be set to another Lexicon or null. */
  get lexicon() {
    return this._lexiconState.lexicon;
  }

  set lexicon(lexicon) {
    if (lexicon !== null && lexicon !== undefined && !(lexicon instanceof Lexicon)) {
      throw new CompactLMError(`lexicon must be a Lexicon or null, got ${typeof lexicon}`);
    }
    // with its own mask cache, replaced in one assignment: a search under way keeps the lexicon it started with
    this._lexiconState = { lexicon: lexicon && lexicon.size ? lexicon : null, masks: new Map() };
  }

  async _init() {
    const ids = this.encode(this.startText);
    const { logProbs, state } = await this.model.step(ids.slice(ids.length - 1), this.model.zeroState(1));
    // a checkpoint: characters typed, and a promise of {state after them, next-character log-probabilities}
    this._rootValue = { state, logProbs: logProbs.slice(0, this.vocabSize) };
    this._root = { length: 0, ready: Promise.resolve(this._rootValue) };
  }

  /** Free the onnxruntime sessions (wasm memory in a browser); the Autocompleter and its sessions are unusable after. */
  release() {
    const model = this.model;
    if (!model.released) {   // (a second call waits for the first)
      model.released = (async () => {
        const sessions = new Set([model.step_, model.sequence].filter(Boolean));
        await model._tail.catch(() => {});
        for (const session of sessions) await session.release();
      })();
    }
    return model.released;
  }


  /** How many session.run calls this Autocompleter has made (loading included). */
  get runs() {
    return this.model.runs;
  }

  /** Whether pasted text runs through a sequence graph in one call (else one step per character). */
  get hasSequenceGraph() {
    return this.model.sequence !== null;
  }

  // ---------------------------------------------------------------------------- text -> ids
  _normalizeChar(char) {
    let out = this._normalized.get(char);
    if (out === undefined) {
      out = char;
      for (const step of this.normalization.steps) {
        out = step === "NFC" ? out.normalize("NFC") : step === "lowercase" ? out.toLowerCase() : out;
      }
      if (this._normalized.size < CACHED_CHARS) this._normalized.set(char, out);
    }
    return out;
  }

  /** `text` as the model's vocabulary asks: NFC over the whole text (a letter and the combining marks after it
   * compose, as in the training text), then each code point on its own (lowercasing). */
  normalize(text) {
    checkText("text", text);
    if (this._composes && /[^\u0000-\u02ff]/.test(text)) text = text.normalize("NFC");   // below U+0300 nothing composes
    let out = "";
    for (const char of text) out += this._normalizeChar(char);
    return out;
  }

  _encodeChars(chars) {
    const ids = [];
    for (const c of this.normalize(chars.join(""))) ids.push(this._idOf.get(c) ?? this.unkId);
    return BigInt64Array.from(ids, BigInt);
  }

  /** Whether the typed code point `char` may compose with the one before it (NFC vocabularies only). */
  _joins(char) {
    if (char < "\u0300" || !this._composes) return false;   // (nothing below U+0300 composes with what is before it)
    let joins = this._joining.get(char);
    if (joins === undefined) {
      joins = char === "\u0345" || JOINING_STARTERS.has(char)
        || ("\u0345" + char).normalize("NFD") !== "\u0345" + char.normalize("NFD");
      if (this._joining.size < CACHED_CHARS) this._joining.set(char, joins);
    }
    return joins;
  }

  /** Where the group that chars[end - 1] belongs to begins: its base character, the last code point before it that
   * is not a joiner (at most COMPOSING_CHARS back). */
  _groupStart(chars, end) {
    let begin = end - 1;
    while (begin > 0 && end - begin < COMPOSING_CHARS && this._joins(chars[begin])) begin -= 1;
    return begin;
  }

  /** Where to run the model again from when `text` (code points), typed after chars[:end], composes with the code
   * points before it (NFC: U+0301 after "e" makes it one character); null when it does not (the common case). */
  _recomposedFrom(chars, end, text) {
    if (!end || !text.length || !this._joins(text[0])) return null;
    const begin = this._groupStart(chars, end);
    const group = chars.slice(begin, end).join(""), head = text.slice(0, COMPOSING_CHARS).join("");
    if ((group + head).normalize("NFC") === group.normalize("NFC") + head.normalize("NFC")) return null;
    return begin;
  }

  /** Positions in chars[begin:] of typed code points that map to <unk>, `begin` at a base character: in a group of
   * a base and its joiners whose composed text holds an <unk>, those unknown on their own (or, if none is, the last);
   * none where the group composes into known characters. */
  _unknownPositions(chars, begin) {
    const found = [], end = chars.length, unk = BigInt(this.unkId);
    while (begin < end) {
      let stop = begin + 1;
      while (stop < end && this._joins(chars[stop])) stop += 1;
      if (stop === begin + 1) {
        if (this._isUnknown(chars[begin])) found.push(begin);
      } else if (this._encodeChars(chars.slice(begin, stop)).includes(unk)) {
        const own = [];
        for (let i = begin; i < stop; i++) if (this._isUnknown(chars[i])) own.push(i);
        for (const i of own.length ? own : [stop - 1]) found.push(i);
      }
      begin = stop;
    }
    return found;
  }

  /** Whether the code point `char`, normalized on its own, maps to <unk>. */
  _isUnknown(char) {
    let out = this._unknownChar.get(char);
    if (out === undefined) {
      out = this._encodeChars([char]).includes(BigInt(this.unkId));
      if (this._unknownChar.size < CACHED_CHARS) this._unknownChar.set(char, out);
    }
    return out;
  }

  /** Token ids of `text` as a BigInt64Array (normalized as `normalize` says; unknown characters -> <unk>). */
  encode(text) {
    return this._encodeChars(Array.from(checkText("text", text)));
  }

  // ----------------------------------------------------------------------------- model calls
  /** {state, logProbs} after `chars` (code points) from `state`: one step for one id, else one run. */
  async _advance(state, chars) {
    if (chars.length > this.contextChars) {   // only the last contextChars characters matter
      state = this._rootValue.state;
      chars = chars.slice(chars.length - this.contextChars);
    }
    const ids = this._encodeChars(chars);
    if (ids.length === 1) {
      const { logProbs, state: next } = await this.model.step(ids, state);
      return { state: next, logProbs };
    }
    return this.model.run(ids, state);
  }

  _start(prefix) {
    checkText("prefix", prefix);
    return prefix ? this._advance(this._rootValue.state, Array.from(prefix)) : Promise.resolve(this._rootValue);
  }

  // ----------------------------------------------------------------------------- public API
  /** A new keystroke session (empty text), learning into `userWords` (default: the Autocompleter's). */
  session(options = {}) {
    if (options === null || typeof options !== "object" || options instanceof UserWords) {
      throw new CompactLMError(options instanceof UserWords ? "session() takes {userWords: words}, not the UserWords itself"
        : `session() takes options {userWords}, got ${pyRepr(options)}`);
    }
    refuseUnknownOptions(" of session()", options, SESSION_OPTIONS);
    const { userWords } = options;
    return new Session(this, userWords === undefined ? this.userWords : openUserWords(userWords));
  }

  /** The k most likely next characters after `prefix` (never <unk>), most likely first: [{text, prob}]. */
  async nextChars(prefix, k = 3) {
    positive("k", k);
    const { logProbs } = await this._start(prefix);
    return this._nextChars(logProbs, k);
  }

  /** The k most likely completions of the word being typed (the next word if `prefix` ends at a boundary). */
  async complete(prefix, k = 3, maxChars = undefined) {
    positive("k", k);
    maxChars = maxChars === undefined || maxChars === null ? this.maxChars : positive("maxChars", maxChars);
    checkText("prefix", prefix);
    const chars = Array.from(prefix);
    let start = chars.length;
    while (start && !this.isBoundary(chars[start - 1])) start -= 1;
    const typed = this.normalize(chars.slice(start).join(""));
    // a word holding an unknown character: no model completion, no run
    if (Array.from(typed).some((char) => this._isUnknown(char))) return this._mix([], typed, k, true, this.userWords);
    const { state, logProbs } = await this._start(prefix);
    const found = await this._search(state, logProbs, k, maxChars, typed);
    return this._mix(found, typed, k, false, this.userWords);
  }

  /** The model's completions of the typed part of the word (`typed`, normalized) mixed with the user's words that
   * continue it: p = (1 - share) p_model + share * weight share (compact_lm/user_words.py); the user's alone for
   * an unknown word. */
  _mix(suggestions, typed, k, unknown, userWords, context = null) {
    if (!userWords) return suggestions;
    // a session's words weighed by their contexts take the dictionary's place (ContextCache); else k + 1 of the
    // dictionary's words (the word as typed is no completion)
    const { found, share: dictionaryShare } = context ? { found: context, share: userWords.share }
      : userWords.continuing(typed, k + 1);
    if (!found.length) return suggestions;
    const share = unknown ? 1.0 : dictionaryShare;
    const probs = new Map(), users = new Set();
    for (const s of suggestions) probs.set(s.text, (1.0 - share) * s.prob);
    for (const [candidate, part] of found) {
      const text = candidate.slice(typed.length);
      // not the word as typed (no completion), nor a word that spans a boundary (a hand-edited entry, "New
      // York", or one whose normalization made a boundary character)
      if (!text || Array.from(text).some((char) => this.isBoundary(char))) continue;
      probs.set(text, (probs.get(text) ?? 0) + share * part);
      users.add(text);
    }
    // chosen as _search chooses: the lexicon's words and the user's first, then the model's other words (the
    // fill); shown most likely first
    const current = this.lexicon, lexicon = current && !unknown && current.startsWord(typed) ? current : null;
    const fill = (text) => (lexicon && !users.has(text) && !lexicon.has(typed + text) ? 1 : 0);
    return [...probs.entries()].sort((a, b) => (fill(a[0]) - fill(b[0])
      || (a[1] > b[1] ? -1 : a[1] < b[1] ? 1 : compareCodePoints(a[0], b[0]))))
      .slice(0, k).map(([text, prob]) => ({ text, prob })).sort(shownOrder);
  }

  _nextChars(logProbs, k) {
    const v = this.vocabSize;
    const scores = new Float64Array(v);
    for (let i = 0; i < v; i++) scores[i] = logProbs[i] + this._nextMask[i];
    const top = best(scores, Math.min(k, v - 1), -Infinity);
    return top.map((i) => ({ text: this._charOf[i], prob: Math.exp(scores[i]) }));
  }

  /** 0 for the characters that continue `prefix` in some lexicon word, -inf for the others (kept). */
  _lexiconMask(lexiconState, prefix) {
    const masks = lexiconState.masks;
    let mask = masks.get(prefix);
    if (mask === undefined) {
      mask = new Float64Array(this.vocabSize).fill(-Infinity);
      for (const char of lexiconState.lexicon.nextChars(prefix)) {
        const id = this._idOf.get(char);
        if (id !== undefined) mask[id] = 0;
      }
      if (masks.size >= CACHED_PREFIXES) masks.clear();
      masks.set(prefix, mask);
    }
    return mask;
  }

  /** The k most likely distinct words from (state, logProbs): the lexicon's words first, while `typed` (the part
   * of the word already typed, normalized) starts one; if they are fewer than k, the model's other words fill the
   * rest (shown most likely first). */
  async _search(state, logProbs, k, maxChars, typed = "") {
    const lexiconState = this._lexiconState, lexicon = lexiconState.lexicon;
    if (!lexicon || !lexicon.startsWord(typed)) return this._beamSearch(state, logProbs, k, maxChars, typed, null);
    const found = await this._beamSearch(state, logProbs, k, maxChars, typed, lexiconState);
    if (found.length < k) {
      const texts = new Set(found.map((s) => s.text));
      const others = await this._beamSearch(state, logProbs, k + found.length, maxChars, typed, null);
      found.push(...others.filter((s) => !texts.has(s.text)).slice(0, k - found.length));
      found.sort(shownOrder);
    }
    return found;
  }

  /** Beam search from (state, logProbs) to the k most likely distinct words (with `lexicon`, words that continue
   * `typed` in it), each with its probability of ending whatever boundary character follows (log-sum-exp over
   * the boundary columns, in float64). */
  async _beamSearch(state, logProbs, k, maxChars, typed, lexiconState) {
    const lexicon = lexiconState ? lexiconState.lexicon : null;
    const v = this.vocabSize, beam = this.beam, boundaryIds = this._boundaryIds, width = boundaryIds.length;
    const charOf = this._charOf, wordMask = this._wordMask;
    let finished = [];            // [-log p, text] of the best k so far: sorted best first, ties by text
    let threshold = -Infinity;    // log p of the k-th finished word: nothing below it can enter
    let texts = [""];
    let scores = Float64Array.from(logProbs.subarray(0, v));   // [beams * V]: log p of each beam + its next character
    for (let depth = 1; depth <= maxChars; depth++) {
      // a completion adds at least one character: the word as typed, complete, is the space bar's
      // (as a suggestion it would take a slot and save no keystroke)
      if (depth > 1) {
        let added = false;
        for (let b = 0; b < texts.length; b++) {
          // log p of the beam's word ending here: log-sum-exp over the boundary columns, summed left to right
          let top = -Infinity;
          for (let j = 0; j < width; j++) top = Math.max(top, scores[b * v + boundaryIds[j]]);
          let value = -Infinity;
          if (top > -Infinity) {
            let total = 0;
            for (let j = 0; j < width; j++) total += Math.exp(scores[b * v + boundaryIds[j]] - top);
            value = top + Math.log(total);
          }
          // texts differ from each other and from every shorter word
          if (value > threshold && (!lexicon || lexicon.has(typed + texts[b]))) {
            finished.push([-value, texts[b]]);
            added = true;
          }
        }
        if (added) {
          finished.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : compareCodePoints(a[1], b[1])));
          if (finished.length > k) finished.length = k;
          if (finished.length === k) threshold = -finished[k - 1][0];
        }
      }
      if (depth === maxChars) break;
      const flat = new Float64Array(scores.length);
      for (let i = 0; i < scores.length; i++) flat[i] = scores[i] + wordMask[i % v];
      if (lexicon) {   // only characters that continue a lexicon word
        for (let b = 0; b < texts.length; b++) {
          const mask = this._lexiconMask(lexiconState, typed + texts[b]);
          for (let c = 0; c < v; c++) flat[b * v + c] += mask[c];
        }
      }
      // a beam's own log p bounds every word it can become: at or below the k-th finished word, it is dropped
      const top = best(flat, beam, threshold).sort((a, b) => a - b);   // also drops boundaries and <unk> (-inf)
      if (!top.length) break;
      const parents = top.map((i) => Math.floor(i / v)), chars = top.map((i) => i % v);
      texts = top.map((_, r) => texts[parents[r]] + charOf[chars[r]]);
      const sameRows = parents.length === scores.length / v && parents.every((p, r) => p === r);
      const { logProbs: next, state: nextState } = await this.model.step(
        BigInt64Array.from(chars, BigInt), sameRows ? state : this.model.gather(state, parents));
      state = nextState;
      scores = new Float64Array(top.length * v);
      for (let r = 0; r < top.length; r++) {
        const parent = flat[top[r]];
        for (let c = 0; c < v; c++) scores[r * v + c] = next[r * v + c] + parent;
      }
    }
    return finished.map(([score, text]) => ({ text, prob: Math.exp(-score) }));
  }
}

/** How a list is shown: most likely first, ties by text (code point order). */
function shownOrder(a, b) {
  return a.prob > b.prob ? -1 : a.prob < b.prob ? 1 : compareCodePoints(a.text, b.text);
}

/** Indices of the (at most) `count` largest values above `floor`, largest first, ties by lower index. */
function best(values, count, floor) {
  const top = [];
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (!(value > floor)) continue;
    if (top.length === count) {
      if (!(value > values[top[count - 1]])) continue;
      top.pop();
    }
    let at = top.length;
    top.push(i);
    while (at > 0 && value > values[top[at - 1]]) {
      top[at] = top[at - 1];
      at -= 1;
    }
    top[at] = i;
  }
  return top;
}

/**
 * One person's typing: a stack of checkpoints, so typing a character costs one model run and backspace
 * none. A checkpoint holds the characters' count and a promise of the state after them: type() and
 * backspace() change `text` at once and return a promise that settles when the state is computed
 * (awaiting them is optional: suggestions() and nextChars() wait for it). accept(suggestion) appends the
 * suggestion and a space that attaching punctuation typed next replaces (no run); `unknown` counts the typed
 * characters that became <unk>; while the word being typed holds one, suggestions() come from the user's
 * words alone (none without them). With `userWords` (the Autocompleter's, or session({userWords})), every
 * word typed to a boundary is learned, and a backspace that deletes that boundary takes it back (the last
 * LEARNED_UNDO words); `userWords` may be set to null and back at any time (the page does so while the
 * caret moves: what the session types or deletes then changes nothing; a take-back goes to the dictionary the
 * word was learned into, only while the session still uses it). With the completer's contextCache,
 * each learned word is also kept with the model's state where it began, in the session's memory only
 * (ContextCache). As Python's Session.
 */
export class Session {
  constructor(completer, userWords = null) {
    this.completer = completer;
    this.userWords = userWords;
    this._learned = [];                  // [position of the boundary that ended it, undo, cache slot, dictionary] per word
    // with the completer's contextCache: learned words with the state where each began (memory only)
    this._cache = completer.contextCache ? new ContextCache() : null;
    this._chars = [];                    // code points typed so far
    this._stack = [completer._root];     // checkpoints, lengths increasing
    this._unknownAt = [];                // positions of typed characters that became <unk>, increasing
    this._autoSpace = null;              // length of the text right after an accept's space
  }

  /** How many characters of the text map to <unk> (outside the model's vocabulary). */
  get unknown() {
    return this._unknownAt.length;
  }

  /** Everything typed so far (as typed, before normalization). */
  get text() {
    return this._chars.join("");
  }

  _push(length, base, chars) {
    const checkpoint = { length, ready: null, base, chars };
    this._compute(checkpoint);
    this._stack.push(checkpoint);
    if (this._stack.length > 2 * MAX_CHECKPOINTS) this._stack.splice(1, MAX_CHECKPOINTS);   // the root stays
    return settled(checkpoint.ready);
  }

  /** Run a checkpoint's characters from its base's state; once that succeeds, the checkpoint lets its base go. */
  _compute(checkpoint) {
    const ready = this._readyOf(checkpoint.base).then((value) => this.completer._advance(value.state, checkpoint.chars));
    // (reported by whoever awaits it, not as an unhandled rejection)
    ready.then(() => { if (checkpoint.ready === ready) checkpoint.base = checkpoint.chars = null; }, () => {});
    checkpoint.ready = ready;
    return ready;
  }

  /** A checkpoint's state; one whose model call failed is computed once more when asked again, so a transient
   * failure fails the calls waiting on it, not every later one (Python's failed type() leaves nothing behind). */
  _readyOf(checkpoint) {
    const ready = checkpoint.ready;
    return ready.catch((error) => {
      if (checkpoint.ready !== ready) return checkpoint.ready;   // already being computed again
      if (!checkpoint.base) throw error;
      return this._compute(checkpoint);
    });
  }

  /** Append `text`: one model run for one character, one run for more (sequence graph). */
  type(text) {
    checkText("text", text);
    if (!text) return Promise.resolve();
    const chars = Array.from(text);
    if (this._autoSpace === this._chars.length && ATTACHING_PUNCTUATION.has(chars[0])) {
      // "word " + "," -> "word,": the checkpoint before the space is stored; the word stays learned
      this._delete(1, true);
    }
    this._autoSpace = null;
    const start = this._chars.length;
    for (const char of chars) this._chars.push(char);
    this._markUnknown(start);
    const done = this._pushFrom(this._stack[this._stack.length - 1], this._chars.length);
    if (this.userWords) this._learnFrom(start);
    return done;
  }

  /** Push the checkpoint of the first `length` characters, run from `checkpoint`; from an earlier one when the
   * characters after it start with a joiner that composes with what is before it (NFC: the model reads the composed
   * character, as in the training text; a paste leaves no checkpoint inside it, so the one found may again be
   * followed by a composing joiner). */
  _pushFrom(checkpoint, length) {
    const chars = this._chars, completer = this.completer;
    let begin;
    while ((begin = completer._recomposedFrom(chars, checkpoint.length, chars.slice(checkpoint.length, length))) !== null) {
      checkpoint = this._checkpointAtOrBefore(begin);
    }
    // (more than contextChars characters run from the root anyway: keep one more than that)
    const from = Math.max(checkpoint.length, length - completer.contextChars - 1);
    return this._push(length, checkpoint, chars.slice(from, length));
  }

  /** The last checkpoint of at most `length` characters (the root at worst). */
  _checkpointAtOrBefore(length) {
    const stack = this._stack;
    for (let i = stack.length - 1; i >= 0; i--) if (stack[i].length <= length) return stack[i];
    return stack[0];
  }

  /** Record again which typed code points from `start` on map to <unk> (from the base character of the group of a
   * base and its joiners that `start` falls in). */
  _markUnknown(start) {
    const completer = this.completer, chars = this._chars, unknownAt = this._unknownAt;
    const begin = completer._joins(chars[start]) ? completer._groupStart(chars, start + 1) : start;
    while (unknownAt.length && unknownAt[unknownAt.length - 1] >= begin) unknownAt.pop();
    if (begin + 1 === chars.length) {   // one code point (typing, key by key): the common case
      if (completer._isUnknown(chars[begin])) unknownAt.push(begin);
    } else {
      for (const position of completer._unknownPositions(chars, begin)) unknownAt.push(position);
    }
  }

  /** Learn every word that a boundary typed at or after `start` ends (unless already learned there). */
  _learnFrom(start) {
    const chars = this._chars, isBoundary = this.completer.isBoundary;
    for (let end = Math.max(start, 1); end < chars.length; end++) {
      if (!isBoundary(chars[end]) || isBoundary(chars[end - 1])) continue;
      if (this._learned.length && this._learned[this._learned.length - 1][0] === end) continue;   // the accept's space, swapped
      let begin = end - 1;
      while (begin > 0 && !isBoundary(chars[begin - 1]) && end - begin <= TYPED_WORD_CHARS) begin -= 1;
      if (end - begin > TYPED_WORD_CHARS) continue;   // (a shorter one that is too long composed: learn() refuses it)
      const word = this.completer.normalize(chars.slice(begin, end).join(""));
      const undo = this.userWords.learn(word);
      if (undo !== null) {
        const state = this._cache ? this._stateAt(begin) : null;   // none inside a paste
        const use = state === null ? null : this._cache.add(state, word, undo.arrival, this.userWords);
        this._learned.push([end, undo, use, this.userWords]);
        if (this._learned.length > 2 * LEARNED_UNDO) this._learned.splice(0, LEARNED_UNDO);
      }
    }
  }

  /** The characters after the last boundary (only the last TYPED_WORD_CHARS + 1: no word is longer). */
  _typedWord() {
    if (!this.userWords && !this.completer.lexicon) return "";
    const chars = this._chars, isBoundary = this.completer.isBoundary;
    let begin = chars.length;
    while (begin > 0 && !isBoundary(chars[begin - 1]) && chars.length - begin <= TYPED_WORD_CHARS) begin -= 1;
    return chars.slice(begin).join("");
  }

  /** Append a suggestion's text (a {text} or a string) and a space; text typed next that starts with attaching
   * punctuation (ATTACHING_PUNCTUATION) replaces that space. Two model runs at most, so the swap is free. */
  accept(suggestion) {
    if (Array.isArray(suggestion) || suggestion instanceof Promise) {
      throw new CompactLMError(`accept() takes one suggestion (a {text} or a string), got ${Array.isArray(suggestion)
        ? "a list: pass one of its entries" : "a promise: await suggestions() first"}`);
    }
    const text = suggestion !== null && typeof suggestion === "object" ? suggestion.text : suggestion;
    checkText("suggestion", text);
    this.type(text);
    const done = this.type(" ");
    this._autoSpace = this._chars.length;
    return done;
  }

  /** After accept(): its space stays, whatever is typed next (an editor whose own text kept it). As Python's. */
  keepSpace() {
    this._autoSpace = null;
  }

  /** Delete the last n characters: restores a stored state (a model run only inside pasted text). */
  backspace(n = 1) {
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
      throw new CompactLMError(`backspace count must be a whole number >= 0, got ${pyRepr(n)}`);
    }
    return this._delete(n, false);
  }

  /** Delete the last n characters; `swap`: the accept's space, replaced by punctuation (same boundary: its
   * learned word stays, and stays on record). */
  _delete(n, swap) {
    const target = Math.max(this._chars.length - n, 0);
    if (target === this._chars.length) return Promise.resolve();
    this._autoSpace = null;
    const learned = this._learned;
    while (!swap && learned.length && learned[learned.length - 1][0] >= target) {   // the boundary that ended a learned word goes
      const [, undo, use, words] = learned.pop();
      // taken back from the dictionary it went into, while the session still learns into that one (another
      // dictionary may hold an entry that looks the same: another session's)
      if (words === this.userWords) {
        words.unlearn(undo);
        if (use) this._cache.remove(use);
      }
    }
    const cutGroup = target > 0 && this.completer._joins(this._chars[target]);   // a joiner goes, its base stays
    this._chars.length = target;
    while (this._unknownAt.length && this._unknownAt[this._unknownAt.length - 1] >= target) this._unknownAt.pop();
    if (cutGroup) this._markUnknown(target - 1);
    const stack = this._stack;
    while (stack[stack.length - 1].length > target) stack.pop();
    const base = stack[stack.length - 1];
    if (base.length < target) return this._pushFrom(base, target);   // inside pasted text: from the checkpoint before it
    return settled(this._readyOf(base));
  }

  /** The k most likely completions of the word being typed (or of the next word at a boundary). The model's part
   * is that of the text when called; the user's words are read when it resolves, so words learned from text typed
   * after the call, without awaiting it, can take part (await each call, or drop results that arrive late, as the
   * page does). */
  async suggestions(k = 3, maxChars = undefined) {
    const completer = this.completer;
    positive("k", k);
    maxChars = maxChars === undefined || maxChars === null ? completer.maxChars : positive("maxChars", maxChars);
    const raw = this._typedWord(), unknown = this.inUnknownWord(), typed = completer.normalize(raw);
    const userWords = this.userWords;
    const pending = this._context(Array.from(raw).length, typed, k + 1, userWords);
    // (waits for typing, as always; both awaited together, so a failed step leaves no promise unhandled)
    const [{ state, logProbs }, context] = await Promise.all([this._readyOf(this._stack[this._stack.length - 1]), pending]);
    if (unknown) return completer._mix([], typed, k, true, userWords, context);
    return completer._mix(await completer._search(state, logProbs, k, maxChars, typed), typed, k, false, userWords, context);
  }

  /** The context cache's k words continuing `typed` (of `typedChars` code points as typed), or null: not learning,
   * nothing kept, or the word began inside a paste (compact_lm/context_cache.py). */
  async _context(typedChars, typed, k, userWords) {
    if (!userWords || !this._cache || !this._cache.added || typedChars > TYPED_WORD_CHARS) return null;
    const state = this._stateAt(this._chars.length - typedChars);
    if (state === null) return null;
    const vector = await state;
    await this._cache.settle();
    const found = this._cache.continuing(vector, typed, k, userWords);
    // only the word as typed (no completion): the dictionary's words are better than none
    return found.some(([word]) => word !== typed) ? found : null;
  }

  /** A promise of the last layer's h after the first `length` characters, if a checkpoint holds it (not inside a paste). */
  _stateAt(length) {
    const stack = this._stack, index = this.completer.model.lastHidden;
    if (index === undefined) return null;   // a model object that does not say where its h is
    for (let i = stack.length - 1; i >= 0; i--) {
      if (stack[i].length <= length) {
        return stack[i].length === length ? stack[i].ready.then((value) => value.state[index].data) : null;
      }
    }
    return null;
  }

  /** Whether the word being typed (the characters after the last boundary) holds an unknown character. */
  inUnknownWord() {
    if (!this._unknownAt.length) return false;
    const last = this._unknownAt[this._unknownAt.length - 1];
    for (let i = this._chars.length - 1; i >= last; i--) if (this.completer.isBoundary(this._chars[i])) return false;
    return true;
  }

  /** The k most likely next characters (never <unk>). */
  async nextChars(k = 3) {
    positive("k", k);
    const { logProbs } = await this._readyOf(this._stack[this._stack.length - 1]);
    return this.completer._nextChars(logProbs, k);
  }

  /** The model state (an array of ort.Tensor) after the typed text and the next-character log-probabilities. */
  async state() {
    return this._readyOf(this._stack[this._stack.length - 1]);
  }
}

function settled(promise) {
  const done = promise.then(() => undefined);
  done.catch(() => {});
  return done;
}
