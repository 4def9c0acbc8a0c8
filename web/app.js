// The live demo page: loads site.json, onnxruntime-web and the model, then follows the text area
// keystroke by keystroke with one compact-lm session. Everything runs in this tab; nothing is sent anywhere.
//
// For tests and the curious, window.compactLM holds the page's state: status ("loading", "ready",
// "error"), shown ({context, suggestions, next, unknown}: what is on screen, the text before the caret it
// is for, and how many typed characters the model does not know), latencies (ms per keystroke), error
// (the message shown).
//
// Tab or a click accepts a suggestion: the word and a space (session.accept). Punctuation that attaches to a
// word (compact_lm.js's ATTACHING_PUNCTUATION: , . ; : ! ? closing quotes and brackets) typed right after
// replaces that space: "word" + "," gives "word,". Any other key keeps it; Backspace removes it.

const $ = (id) => document.getElementById(id);
const els = {
  status: $("status"), text: $("text"), chips: $("suggestions"), next: $("next"),
  latency: $("latency"), latencyDetail: $("latency-detail"), error: $("error"),
  errorTitle: $("error-title"), errorMessage: $("error-message"), errorHint: $("error-hint"), privacy: $("privacy"),
};
const state = { status: "loading", shown: null, latencies: [], error: null, site: null, metadata: null };
window.compactLM = state;

const GLYPHS = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "↵", "\u00a0": "⍽" };
const glyph = (char) => GLYPHS[char] ?? (/^\p{Cc}$/u.test(char) ? "·" : char);
const CHAR_NAMES = { " ": "space", "\n": "new line", "\t": "tab" };

// ------------------------------------------------------------------------------------- formatting
function percent(p) {
  const value = p * 100;
  if (value >= 9.95) return `${value.toFixed(0)}%`;
  if (value >= 0.1) return `${value.toFixed(1)}%`;
  return "<0.1%";
}

function bytes(n) {
  const size = n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(n >= 1e5 ? 0 : 1)} KB`;
  return `${size} (${n.toLocaleString("en-US")} bytes)`;
}

function ms(value) {
  return value >= 100 ? `${value.toFixed(0)} ms` : value >= 10 ? `${value.toFixed(1)} ms` : `${value.toFixed(2)} ms`;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function oneLine(error) {
  const text = String(error?.message ?? error ?? "unknown error");
  return text.split("\n").map((line) => line.trim()).filter(Boolean)[0] ?? "unknown error";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ------------------------------------------------------------------------------------ status, errors
function setStatus(status, label) {
  state.status = status;
  document.body.dataset.status = status;
  els.status.textContent = label;
}

function showError(title, error, hint = "") {
  state.error = oneLine(error);
  els.errorTitle.textContent = title;
  els.errorMessage.textContent = state.error;
  els.errorHint.textContent = hint;
  els.error.hidden = false;
  els.text.disabled = true;
  els.chips.replaceChildren();
  els.next.replaceChildren();
  setStatus("error", "Error");
}

class StageError extends Error {
  constructor(title, cause, hint) {
    super(oneLine(cause));
    Object.assign(this, { title, hint });
  }
}

async function stage(title, hint, work) {
  try {
    return await work();
  } catch (error) {
    throw error instanceof StageError ? error : new StageError(title, error, hint);
  }
}

async function fetchBytes(url, what) {
  const response = await fetch(url, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${what} ${url}: HTTP ${response.status} ${response.statusText}`.trim());
  return new Uint8Array(await response.arrayBuffer());
}

// -------------------------------------------------------------------------------------- model card
function corpusName(meta) {
  if (!meta.train_config) return "not recorded";
  const corpus = meta.train_config.corpus;
  const paths = Array.isArray(corpus) ? corpus : corpus ? [corpus] : [];
  if (!paths.length) return "alice.txt (bundled)";
  const names = paths.map((path) => String(path).split(/[\\/]/).pop());
  return names.length > 2 ? `${names.slice(0, 2).join(", ")} +${names.length - 2} more` : names.join(", ");
}

function fillCard(site, meta) {
  const hidden = Array.isArray(meta.hidden_sizes) ? meta.hidden_sizes : [];
  const layers = hidden.length || meta.layers || 1;
  const set = (id, text, title) => {
    const node = $(id);
    node.textContent = text;
    if (title) node.title = title;
  };
  set("card-cell", `${String(meta.cell ?? "?").toUpperCase()}, ${layers} layer${layers === 1 ? "" : "s"}`);
  set("card-hidden", hidden.length ? hidden.join(" → ") : "?");
  set("card-embed", meta.embed_size ?? "?");
  set("card-vocab", meta.vocab_size ? `${meta.vocab_size} characters` : "?");
  set("card-precision", meta.int8 ? "int8 (quantized)" : "fp32");
  set("card-bpc", ...validation(site, meta));
  set("card-corpus", corpusName(meta));
  const where = site.ort.source === "local" ? "local" : "jsDelivr";
  set("card-runtime", `onnxruntime-web ${site.ort.version}\nWASM · 1 thread · ${where}`);
}

/** The validation bpc and where it comes from: measured on this very file (site.json, written by the
 * demo), the model's own training metrics, or, for an int8 model, its float source's (int8 moves it ~0.001). */
function validation(site, meta) {
  const number = (x) => typeof x === "number" && Number.isFinite(x);
  const test = meta.metrics?.test?.bpc;
  const withTest = (bpc) => `${bpc.toFixed(3)} bpc` + (number(test) ? ` · test ${test.toFixed(3)}` : "");
  if (number(site.measured?.val_bpc)) return [`${site.measured.val_bpc.toFixed(3)} bpc`, site.measured.how ?? ""];
  if (number(meta.metrics?.val?.bpc)) return [withTest(meta.metrics.val.bpc), "measured after training"];
  const source = meta.quantization?.source_metrics?.val?.bpc;
  if (number(source)) return [`${source.toFixed(3)} bpc before int8`, "the float model's, measured before quantizing"];
  return ["not recorded", ""];
}

// ---------------------------------------------------------------------------------- suggestions view
function renderChips(context, suggestions) {
  const word = [...context.slice(-64)];   // the word being typed is at the end (a paste may be long)
  let typed = word.slice(wordStart(word)).join("");
  if (typed.length > 14) typed = "…" + typed.slice(-13);
  const chips = suggestions.map((suggestion, index) => {
    const item = el("li");
    const chip = el("button", "chip");
    chip.type = "button";
    chip.dataset.text = suggestion.text;
    chip.dataset.index = String(index);
    chip.title = `append ${JSON.stringify(suggestion.text + " ")} (punctuation typed next replaces the space)`;
    const label = el("span", "chip-text");
    if (typed) label.append(el("span", "typed", typed));
    label.append(el("span", "completion", suggestion.text));
    label.append(el("span", "boundary", glyph(" ")));   // accepting adds a space
    chip.append(label, el("span", "prob", percent(suggestion.prob)));
    if (index === 0) chip.append(el("kbd", "tab", "Tab"));
    item.append(chip);
    return item;
  });
  els.chips.replaceChildren(...chips);
  if (!chips.length) {
    els.chips.append(el("li", "empty", session?.inUnknownWord() && !dismissed
      ? "no suggestion (a typed character is not in the model's vocabulary)" : "no suggestion"));
  }
}

function renderNext(next) {
  const top = next.length ? next[0].prob : 1;
  els.next.replaceChildren(...next.map((item) => {
    const li = el("li");
    li.dataset.text = item.text;
    li.title = `${CHAR_NAMES[item.text] ?? JSON.stringify(item.text)}: ${(item.prob * 100).toFixed(2)}%`;
    const bar = el("span", "bar");
    bar.style.setProperty("--w", `${Math.max(4, (item.prob / top) * 100).toFixed(1)}%`);
    li.append(el("span", "char", glyph(item.text)), el("span", "p", percent(item.prob)), bar);
    return li;
  }));
}

function renderLatency(value) {
  state.latencies.push(value);
  els.latency.textContent = ms(value);
  const n = state.latencies.length;
  els.latencyDetail.textContent = n > 1 ? `median ${ms(median(state.latencies.slice(-200)))} over ${n} updates`
    : "suggestions + next characters";
}

// ------------------------------------------------------------------------------------ the editor loop
let completer = null;
let session = null;
let running = null;          // the update loop's promise while it runs
let dirty = false;           // the text or the caret changed since the loop last looked
let keyTime = null;          // when the oldest change not yet shown happened (performance.now())
let dismissed = false;       // Esc hid the suggestions until the next change
let wanted = null;           // the context the last change asked for
let attaching = new Set();   // ATTACHING_PUNCTUATION of compact_lm.js
let autoSpace = null;        // {value, caret} right after an accept inserted its space
let accepted = null;         // session.text right after session.accept, until the next sync
let swapped = false;         // onBeforeInput replaced an accept's space by punctuation, until the next sync
let UserWordsType = null;    // compact_lm.js's UserWords
let userWords = null;        // the user's words while "Learn my words" is on
let savedChanges = 0;        // userWords.changes when last stored
let typedAtEnd = false;      // the last input event changed the text at its end (typing, not editing inside)
// The word the caret was in when learning was ticked or the words forgotten, {before: the text before it, typed: its
// part typed then}: it was (partly) typed before, so finishing it learns nothing, as long as the text still begins
// with `before + typed` (an edit before or inside it ends the hold, as any edit there ends what typing learns).
let heldWord = null;
const WORDS_KEY = "compact-lm-user-words", LEARN_KEY = "compact-lm-learn";
const options = { suggestions: 3, nextChars: 5 };

/** The text before the caret: what the suggestions continue. */
function context() {
  const area = els.text;
  return area.value.slice(0, area.selectionDirection === "backward" ? area.selectionStart : area.selectionEnd);
}

/** Code points in a string (a surrogate pair counts once, as in the session). */
function codePoints(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** Bring the session from its text to `target`: backspace to the common prefix, then type the rest. */
async function sync(target) {
  const current = session.text;
  if (current === target) return;
  const after = accepted === current, spaceSwapped = swapped;
  accepted = null;
  swapped = false;
  if (after) {
    // punctuation typed over an accept's space (onBeforeInput): the session swaps that space itself, keeping the
    // word learned once (a backspace and the punctuation would take the word back and learn it again)
    const rest = target.slice(current.length - 1);
    if (spaceSwapped && target.startsWith(current.slice(0, -1)) && rest && attaching.has([...rest][0])) {
      await session.type(rest);
      return;
    }
    session.keepSpace();   // anything else (a paste, a drop, an input method's text): the textarea kept its space
  }
  let common = 0;
  const limit = Math.min(current.length, target.length);
  while (common < limit && current.charCodeAt(common) === target.charCodeAt(common)) common++;
  if (common > 0 && common < current.length && /[\uD800-\uDBFF]/.test(current[common - 1])) common--;  // whole code points
  const remove = codePoints(current.slice(common));
  if (remove) session.backspace(remove);
  const add = target.slice(common);
  if (add) await session.type(add);
}

function schedule() {
  wanted = context();
  dirty = true;
  keyTime ??= performance.now();
  if (!running && session) running = loop().finally(() => { running = null; });
  return running;
}

async function loop() {
  try {
    while (dirty) {
      dirty = false;
      const started = keyTime ?? performance.now();
      keyTime = null;
      const target = context();
      // the user's words learn from typing at the end of the text only: a caret moved back over words, or an
      // edit inside the text, brings the session to the new text without learning or taking back any word
      const learning = typedAtEnd;
      typedAtEnd = false;
      session.userWords = null;
      try {
        const held = heldThrough(target);   // the held word and its boundary go in without learning
        if (held) await sync(held);
        if (learning) session.userWords = userWords;
        await sync(target);
      } finally {
        session.userWords = userWords;
      }
      const suggestions = dismissed ? [] : await session.suggestions(options.suggestions);
      const next = await session.nextChars(options.nextChars);
      if (userWords && userWords.changes !== savedChanges) storeWords();
      if (dirty) continue;   // the text changed meanwhile: show only what matches it
      state.shown = { context: target, suggestions: suggestions.map(({ text, prob }) => ({ text, prob })),
                      next: next.map(({ text, prob }) => ({ text, prob })), unknown: session.unknown };
      renderChips(target, dismissed ? [] : suggestions);
      els.chips.classList.toggle("dismissed", dismissed);
      renderNext(next);
      renderLatency(performance.now() - started);
    }
  } catch (error) {
    showError("Autocomplete stopped", error, "Reload the page to start again.");
    console.error(error);
  }
}

async function idle() {
  while (running) await running;
}

/** Insert `text` at the caret (replacing a selection): insertText keeps the browser's undo history and fires
 * "input"; setRangeText where it is unsupported. */
function insert(text) {
  const area = els.text;
  if (!document.execCommand?.("insertText", false, text)) {
    area.setRangeText(text, area.selectionStart, area.selectionEnd, "end");
    dismissed = false;
    schedule();
  }
}

/** Where the word at the end of `chars` (code points) begins: after the last boundary (the completer's rule). */
function wordStart(chars) {
  let start = chars.length;
  while (start > 0 && !completer.isBoundary(chars[start - 1])) start--;
  return start;
}

/** Where the text `target` ends the held word and the boundary after it, if the session has not typed that yet. */
function heldThrough(target) {
  if (heldWord === null) return null;
  const { before, typed } = heldWord;
  if (!target.startsWith(before + typed)) {
    heldWord = null;
    return null;
  }
  let end = before.length;
  for (const char of target.slice(before.length)) {
    end += char.length;
    if (!completer.isBoundary(char)) continue;
    const through = target.slice(0, end);
    return session.text.startsWith(through) ? null : through;
  }
  return null;   // the held word goes on to the end of the text
}

/** Whether the text `context` ends inside the held word. */
function inHeldWord(context) {
  return heldWord !== null && context.startsWith(heldWord.before + heldWord.typed)
    && ![...context.slice(heldWord.before.length)].some(completer.isBoundary);
}

/** Accept suggestion `index` of what is shown at the caret: its word and a space, where the suggestions continue the
 * text (a selection stays). */
async function accept(index) {
  await idle();
  const shown = state.shown;
  if (!shown || shown.context !== context() || !shown.suggestions[index]) return false;
  const area = els.text;
  area.focus();
  const caret = shown.context.length;   // (the end of a selection made forwards, its start if made backwards)
  area.setSelectionRange(caret, caret);
  const word = shown.suggestions[index].text;
  // the textarea gets the word and a space; the session accepts it (sync then lets the session swap that space
  // for punctuation typed next, as onBeforeInput does in the textarea)
  // learned only where typing learns: at the end of the text (else sync types it, not learning), not the held word
  const atEnd = caret === area.value.length;
  if (atEnd && session.text === shown.context && !inHeldWord(shown.context)) {
    session.accept(word);
    accepted = session.text;
  }
  if (!atEnd && area.value[caret] === " ") {
    // inside the text, before a space: the word takes that space instead of adding a second one, and attaching
    // punctuation typed next goes before it ("said| said" + "," -> "said, said")
    insert(word);
    area.setSelectionRange(caret + word.length + 1, caret + word.length + 1);
    autoSpace = { value: area.value, caret: area.selectionEnd, kept: true };
    schedule();
    await idle();
    return true;
  }
  insert(word + " ");
  autoSpace = { value: area.value, caret: area.selectionEnd };
  await idle();
  return true;
}

/** Attaching punctuation typed right after an accept replaces its space (and nothing else does). */
function onBeforeInput(event) {
  const spot = autoSpace;
  autoSpace = null;
  if (!spot || event.inputType !== "insertText" || !event.data || !attaching.has([...event.data][0])) return;
  const area = els.text;
  if (area.value !== spot.value || area.selectionStart !== spot.caret || area.selectionEnd !== spot.caret) return;
  event.preventDefault();
  swapped = true;
  area.setSelectionRange(spot.caret - 1, spot.caret);   // select the automatic space, type over it
  insert(spot.kept ? event.data + " " : event.data);   // (a space the text had stays after the punctuation)
}

function onKeyDown(event) {
  if (event.isComposing) return;
  if (event.key === "Tab" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
    const pending = dirty || running;
    const has = state.shown && state.shown.suggestions.length && !dismissed;
    if (!has && !pending) return;   // nothing to accept: Tab moves the focus as usual
    event.preventDefault();
    accept(0);
  } else if (event.key === "Escape" && !dismissed && state.shown?.suggestions.length) {
    event.preventDefault();
    dismissed = true;
    schedule();
  }
}

function wireEditor() {
  const area = els.text;
  area.addEventListener("input", () => {
    dismissed = false;
    typedAtEnd = area.selectionStart === area.selectionEnd && area.selectionEnd === area.value.length;
    schedule();
  });
  area.addEventListener("keydown", onKeyDown);
  area.addEventListener("beforeinput", onBeforeInput);
  // the caret moved (arrows, a click, a selection): the suggestions follow the text before it
  document.addEventListener("selectionchange", () => {
    // a caret moved away from an accept's space: punctuation typed later no longer replaces it
    if (autoSpace && (area.selectionStart !== autoSpace.caret || area.selectionEnd !== autoSpace.caret)) autoSpace = null;
    if (document.activeElement === area && session && context() !== wanted) schedule();
  });
  // keep the focus (and the caret) in the text area when a chip is pressed, then append its text
  els.chips.addEventListener("pointerdown", (event) => {
    if (event.target.closest(".chip")) event.preventDefault();
  });
  els.chips.addEventListener("click", (event) => {
    const chip = event.target.closest(".chip");
    if (chip) accept(Number(chip.dataset.index));
  });
}

// ------------------------------------------------------------------------------- the user's words
// Opt-in: the words typed (never the text) are kept in this browser's localStorage, as the same JSON
// document compact-lm's Python runtime reads (--user-words FILE).
function storeWords() {
  savedChanges = userWords.changes;
  try {
    localStorage.setItem(WORDS_KEY, JSON.stringify(userWords.toJSON()));
  } catch (error) {
    console.warn("the user's words could not be stored:", error);
  }
  showWords();
}

function showWords() {
  const on = Boolean(userWords);
  $("forget").hidden = !on;
  $("learn-detail").textContent = on ? `${userWords.size} word${userWords.size === 1 ? "" : "s"} learned, kept in this browser only`
    : "off: suggestions come from the model alone";
}

function readWords() {
  const stored = localStorage.getItem(WORDS_KEY);
  if (!stored) return new UserWordsType();
  try {
    return UserWordsType.fromJSON(stored, {}, "the stored words");
  } catch (error) {
    console.warn(`${oneLine(error)}: starting with no words`);
    return new UserWordsType();
  }
}

/** Learning on or off: a new session on the current text (the words already in it are not learned). */
async function setLearning(on) {
  await idle();
  try {
    localStorage.setItem(LEARN_KEY, on ? "1" : "0");
  } catch { /* private browsing: the choice lasts for this page */ }
  userWords = on ? readWords() : null;
  savedChanges = userWords ? userWords.changes : 0;
  await newSession();
}

/** A new session on the current text, learning (if on) only what is typed after this; its context cache starts
 * empty. */
async function newSession() {
  session = completer.session({ userWords: null });
  await sync(context());
  session.userWords = userWords;
  const chars = [...session.text];
  const start = wordStart(chars);
  heldWord = start < chars.length ? { before: chars.slice(0, start).join(""), typed: chars.slice(start).join("") } : null;
  showWords();
  await schedule();
}

function wireLearning() {
  const box = $("learn");
  let on = false;
  try {
    on = localStorage.getItem(LEARN_KEY) === "1";
  } catch { /* no storage */ }
  box.checked = on;
  box.disabled = false;
  box.addEventListener("change", () => setLearning(box.checked));
  $("forget").addEventListener("click", async () => {
    await idle();
    if (userWords) {
      userWords.clear();
      storeWords();
      await newSession();   // (and the context cache's states of the forgotten words go with the old session)
    }
    els.text.focus();
  });
  return on;
}

// ---------------------------------------------------------------------------------------- start-up
async function start() {
  setStatus("loading", "Loading…");
  const began = performance.now();
  const site = await stage("The page could not read site.json", "Write the site again with compact-lm web MODEL.onnx --out DIR.",
    async () => {
      const response = await fetch("site.json", { cache: "no-cache" });
      if (!response.ok) throw new Error(`site.json: HTTP ${response.status}`);
      return response.json();
    });
  state.site = site;
  $("card-file").textContent = site.model.name + (site.sequence ? ` + ${site.sequence.name}` : "");
  $("card-bytes").textContent = bytes(site.model.bytes);   // known before the model loads (or fails to)
  Object.assign(options, { suggestions: site.options?.suggestions ?? 3, nextChars: site.options?.nextChars ?? 5 });
  if (site.ort?.source !== "local") {
    els.privacy.textContent = "This page loads its own files and onnxruntime-web (from jsDelivr) once, then runs " +
      "offline: no request is made while you type.";
  }
  const { Autocompleter, ATTACHING_PUNCTUATION, UserWords } = await stage("The page could not load compact_lm.js", "Write the site again with compact-lm web.",
    () => import("./compact_lm.js"));
  attaching = ATTACHING_PUNCTUATION;
  UserWordsType = UserWords;
  setStatus("loading", "Loading runtime…");
  const ort = await stage("onnxruntime-web could not be loaded",
    site.ort?.source === "local" ? "Write the site again with compact-lm web (it copies the runtime into ort/)."
      : "The page loads onnxruntime-web from jsDelivr: check the connection, or write the site with a local copy (after `npm ci --ignore-scripts` in web/, or --ort-dir).",
    async () => {
      const module = await import(new URL(site.ort.module, location.href).href);
      const runtime = module.default?.InferenceSession ? module.default : module;
      runtime.env.wasm.numThreads = 1;   // one thread: no workers, no cross-origin isolation needed
      runtime.env.wasm.proxy = false;
      return runtime;
    });
  setStatus("loading", "Loading model…");
  const modelHint = `Check the file, or write the site again: compact-lm web MODEL.onnx --out DIR.`;
  const model = await stage(`The model ${site.model.name} could not be loaded`, modelHint,
    () => fetchBytes(site.model.file, "model"));
  const sequence = site.sequence ? await stage(`The sequence graph ${site.sequence.name} could not be loaded`, modelHint,
    () => fetchBytes(site.sequence.file, "sequence graph")) : null;
  completer = await stage(`The model ${site.model.name} could not be loaded`, modelHint,
    () => Autocompleter.create(model, {
      ort, beam: site.options?.beam ?? 4, maxChars: site.options?.maxChars ?? 16, sequence,
      contextCache: site.options?.contextCache ?? false,   // (used only while "Learn my words" is on)
      name: site.model.name, sequenceName: site.sequence?.name,   // the files' own names in error messages
    }));
  session = completer.session();
  if (wireLearning()) {
    userWords = readWords();
    savedChanges = userWords.changes;
    session.userWords = userWords;   // the session is empty: nothing learned yet
  }
  showWords();
  state.metadata = completer.metadata;
  fillCard(site, completer.metadata ?? {});
  wireEditor();
  els.text.disabled = false;
  els.text.focus();
  setStatus("ready", `Ready · loaded in ${((performance.now() - began) / 1000).toFixed(1)} s`);
  state.latencies = [];
  await schedule();   // the suggestions for the empty text: the first word
  state.latencies = [];
  els.latency.textContent = "–";
  els.latencyDetail.textContent = "type a character";
}

start().catch((error) => {
  console.error(error);
  if (error instanceof StageError) showError(error.title, error.message, error.hint);
  else showError("The page could not start", error, "");
});
