// Where a model comes from and what runs it: file paths, file: URLs, URL objects and http URLs (fetched),
// bytes and ArrayBuffers; the execution provider chosen from the ort object given; and the same module on
// onnxruntime-web (its wasm backend runs in Node too) reproducing a share of one model's golden cases.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import http from "node:http";
import { pathToFileURL } from "node:url";
import * as ortWeb from "onnxruntime-web";
import { Autocompleter, CompactLMError, UserWords } from "../compact_lm.js";
import { SKIP, compare, compareLoose, modelFiles, ortNode, readJson, report } from "./golden_helpers.js";

// wasm kernels sum in another order than onnxruntime-node's (which gives Python's numbers bit for bit):
// measured up to 9e-6 on these peaky models' multi-character completions
const WASM_REL = 1e-4;

/** `ort` with the options of every InferenceSession.create recorded. */
function recording(ort) {
  const created = [];
  const InferenceSession = {
    create(bytes, options) {
      created.push(options);
      return ort.InferenceSession.create(bytes, options);
    },
  };
  return { ort: { InferenceSession, Tensor: ort.Tensor, env: ort.env }, created };
}

function pick() {
  const files = modelFiles().map(readJson);
  return files.find((g) => g.sequence && !g.metadata.int8) || files[0];
}

test("execution providers: cpu with onnxruntime-node, wasm with onnxruntime-web, or as given", { skip: SKIP }, async () => {
  const golden = pick();
  for (const [ort, want] of [[ortNode, ["cpu"]], [ortWeb, ["wasm"]]]) {
    const { ort: wrapped, created } = recording(ort);
    await Autocompleter.create(golden.model, { ort: wrapped, sequence: golden.sequence });
    assert.equal(created.length, 2);
    for (const options of created) assert.deepEqual(options.executionProviders, want);
  }
  const { ort: wrapped, created } = recording(ortNode);
  await Autocompleter.create(golden.model, { ort: wrapped, executionProviders: ["cpu"], sessionOptions: { intraOpNumThreads: 2 } });
  assert.deepEqual(created[0].executionProviders, ["cpu"]);
  assert.equal(created[0].intraOpNumThreads, 2);
  const ac = await Autocompleter.create(golden.model, { ort: ortNode });
  await ac.nextChars("ab", 2);
  await ac.release();
  await assert.rejects(ac.nextChars("abc", 2));
});

test("onnxruntime-web (wasm) reproduces Python's golden cases, from bytes and ArrayBuffers", { skip: SKIP }, async () => {
  const golden = pick();
  const ac = await Autocompleter.create(new Uint8Array(fs.readFileSync(golden.model)), {
    ort: ortWeb, sequence: golden.sequence ? new Uint8Array(fs.readFileSync(golden.sequence)).buffer : null, ...golden.options,
  });
  assert.deepEqual(ac.metadata, golden.metadata);
  const problems = [];
  let checks = 0;
  for (const c of golden.prefixes.slice(0, 120)) {
    checks += 2;
    const where = `prefix ${JSON.stringify(c.prefix.slice(-40))}`;
    problems.push(...compareLoose(await ac.nextChars(c.prefix, c.k), c.next, `${where} nextChars`, WASM_REL));
    problems.push(...compareLoose(await ac.complete(c.prefix, c.k, c.maxChars), c.complete, `${where} complete`, WASM_REL));
  }
  for (const actions of golden.sessions.slice(0, 2)) {
    const s = ac.session();
    for (const a of actions) {
      if (a.op === "type") s.type(a.text);
      else if (a.op === "backspace") s.backspace(a.n);
      else if (a.op === "accept") s.accept(a.text);
      else {
        checks += 1;
        const got = a.op === "suggestions" ? await s.suggestions(a.k, a.maxChars) : await s.nextChars(a.k);
        problems.push(...compareLoose(got, a.expected, `session ${a.op} after ${JSON.stringify(a.text.slice(-40))}`, WASM_REL));
      }
    }
  }
  report(problems, checks);
});

test("sources: a file path, a file: URL, a URL object and an http URL give the same model; HTTP errors are one line", { skip: SKIP }, async () => {
  const golden = pick();
  const bytes = fs.readFileSync(golden.model);
  const server = http.createServer((request, response) => {
    if (request.url === "/model.onnx") {
      response.writeHead(200, { "Content-Type": "application/octet-stream" });
      response.end(bytes);
    } else {
      response.writeHead(404);
      response.end("no");
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const base = `http://127.0.0.1:${server.address().port}`;
    const prefix = golden.prefixes.find((c) => c.prefix.length > 5);
    for (const source of [golden.model, pathToFileURL(golden.model).href, pathToFileURL(golden.model), `${base}/model.onnx`]) {
      const ac = await Autocompleter.create(source, { ort: ortNode, ...golden.options });
      assert.deepEqual(ac.metadata, golden.metadata);
      report(compare(await ac.nextChars(prefix.prefix, prefix.k), prefix.next, String(source)), 1);
    }
    await assert.rejects(Autocompleter.create(`${base}/missing.onnx`, { ort: ortNode }), (error) => {
      assert.ok(error instanceof CompactLMError);
      assert.equal(error.message, `cannot fetch ${base}/missing.onnx: HTTP 404 Not Found`);
      return true;
    });
  } finally {
    server.close();
  }
  await assert.rejects(Autocompleter.create(golden.model, {}), /pass the onnxruntime module as the ort option/);
  await assert.rejects(Autocompleter.create(42, { ort: ortNode }), /expected a model as a Uint8Array/);
});

test("two sessions typing at once, nothing awaited but their suggestions, each get Python's results", { skip: SKIP }, async () => {
  const golden = pick();
  const ac = await Autocompleter.create(golden.model, { ort: ortNode, sequence: golden.sequence, ...golden.options });
  const [first, second] = golden.sessions;
  const pending = [];
  const sessions = [ac.session(), ac.session()];
  for (let i = 0; i < Math.max(first.length, second.length); i++) {
    for (const [n, actions] of [first, second].entries()) {
      const a = actions[i];
      if (!a) continue;
      const s = sessions[n];
      if (a.op === "type") s.type(a.text);
      else if (a.op === "backspace") s.backspace(a.n);
      else if (a.op === "accept") s.accept(a.text);
      else {
        assert.equal(s.text, a.text);
        const got = a.op === "suggestions" ? s.suggestions(a.k, a.maxChars) : s.nextChars(a.k);
        pending.push(got.then((list) => compare(list, a.expected, `session ${n} action ${i} ${a.op}`)));
      }
    }
  }
  const problems = (await Promise.all(pending)).flat();
  report(problems, pending.length);
});

test("a take-back after a dictionary swap leaves the other dictionary alone (as Python's Session)", { skip: SKIP }, async () => {
  const golden = pick();
  const ac = await Autocompleter.create(golden.model, { ort: ortNode, sequence: golden.sequence });
  const main = new UserWords(), other = new UserWords();
  await ac.session({ userWords: other }).type("hello ");   // another session: the same entry (count 1, clock 1)
  const typist = ac.session({ userWords: main });
  await typist.type("hello ");
  typist.userWords = other;
  await typist.backspace(1);
  assert.deepEqual([main.words(), other.words()], [["hello"], ["hello"]]);
});

test("a word with a lone surrogate is not learned (no file could hold it), as in Python", () => {
  const words = new UserWords();
  assert.equal(words.learn("ab\ud800"), null);
  assert.notEqual(words.learn("cd"), null);
  assert.deepEqual(words.words(), ["cd"]);
});

test("create() and session() refuse what they would otherwise ignore: unknown options, non-booleans, a UserWords given bare", { skip: SKIP }, async () => {
  const golden = pick();
  for (const [options, message] of [[{ ort: ortNode, max_chars: 3 }, /unknown option max_chars/],
    [{ ort: ortNode, lexicon: "no" }, /lexicon must be true or false/], [{ ort: ortNode, contextCache: 1 }, /contextCache must be/]]) {
    await assert.rejects(Autocompleter.create(golden.model, options), message);
  }
  assert.throws(() => new UserWords("words.json"), /read a saved document with UserWords.fromJSON/);
  const ac = await Autocompleter.create(golden.model, { ort: ortNode });
  assert.throws(() => ac.session(new UserWords()), /session\(\) takes \{userWords: words\}/);
  // Python's spellings: Python raises a TypeError for them; here they would have been ignored
  assert.throws(() => ac.session({ user_words: new UserWords() }), /unknown option user_words of session\(\); the options are userWords/);
  assert.throws(() => new UserWords({ max_words: 2 }), /unknown option max_words of UserWords; the options are maxWords, halfLife, share/);
  assert.throws(() => UserWords.fromJSON(new UserWords().toJSON(), { half_life: 1 }), /unknown option half_life of UserWords/);
});

test("a mistaken argument says what to pass: a path for user words, a list or a promise to accept(), a Blob, a number to learn()", { skip: SKIP }, async () => {
  const golden = pick();
  assert.throws(() => UserWords.fromJSON("words.json"), /not valid JSON \(a file path\? in Node, await UserWords.open\(path\)\)/);
  assert.throws(() => UserWords.fromJSON("{words"), (error) => !error.message.includes("file path"));
  assert.throws(() => new UserWords().learn(5), /^CompactLMError: learn\(\) takes a word \(a string\), got number$/);
  await assert.rejects(Autocompleter.create(new Blob([fs.readFileSync(golden.model)]), { ort: ortNode }),
    /got a Blob: pass await it.arrayBuffer\(\)/);
  const ac = await Autocompleter.create(golden.model, { ort: ortNode });
  const s = ac.session();
  await s.type("Alice was b");
  const suggestions = s.suggestions(2);
  assert.throws(() => s.accept(suggestions), /accept\(\) takes one suggestion \(a \{text\} or a string\), got a promise: await suggestions\(\) first/);
  const list = await suggestions;
  assert.throws(() => s.accept(list), /got a list: pass one of its entries/);
  assert.equal(s.text, "Alice was b");
});

test("after release() every model call fails in one line, and a second release() waits for the first", { skip: SKIP }, async () => {
  const ac = await Autocompleter.create(pick().model, { ort: ortNode });
  const s = ac.session();
  const first = ac.release();
  assert.equal(ac.release(), first);
  await first;
  await ac.release();
  for (const call of [() => ac.complete("Alice w"), () => ac.nextChars("Al"), () => s.type("A")]) {
    await assert.rejects(call(), (error) => error instanceof CompactLMError
      && error.message === "this Autocompleter was released (release()): create another");
  }
});

test("onnxruntime failing to open a sound file is named as such, and a file without compact-lm metadata never reaches it", { skip: SKIP }, async () => {
  const golden = pick();
  let calls = 0;
  const InferenceSession = { async create() { calls += 1; throw new Error("no available backend found. ERR: [wasm] fetching failed"); } };
  const failing = { InferenceSession, Tensor: ortNode.Tensor, env: ortNode.env };
  await assert.rejects(Autocompleter.create(fs.readFileSync(golden.model), { ort: failing, name: "m.onnx" }),
    new RegExp(`^CompactLMError: onnxruntime ${ortNode.env.versions.common.replaceAll(".", "\\.")} could not open m.onnx: no available backend found`));
  assert.equal(calls, 1);
  const bare = Uint8Array.from([0x3a, 0x00]);   // a ModelProto with an empty graph (field 7) and no metadata
  await assert.rejects(Autocompleter.create(bare, { ort: failing, name: "bare.onnx" }), /bare.onnx is an ONNX model without compact-lm metadata/);
  assert.equal(calls, 1);
});

test("a model call that fails once fails the calls waiting on it, not every later one", { skip: SKIP }, async () => {
  const golden = pick();
  const failNext = { on: false };
  const InferenceSession = {
    async create(...args) {
      const session = await ortNode.InferenceSession.create(...args);
      return new Proxy(session, {
        get(target, prop) {
          if (prop === "run") {
            return (...a) => {
              if (failNext.on) { failNext.on = false; return Promise.reject(new Error("transient failure")); }
              return target.run(...a);
            };
          }
          const value = target[prop];
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
    },
  };
  const ac = await Autocompleter.create(golden.model, { ort: { InferenceSession, Tensor: ortNode.Tensor, env: ortNode.env } });
  const s = ac.session();
  await s.type("Alice was b");
  failNext.on = true;
  await assert.rejects(s.type("e"), /transient failure/);
  await s.type("g");
  const fresh = ac.session();
  await fresh.type("Alice was beg");
  assert.deepEqual(await s.suggestions(3), await fresh.suggestions(3));
});

test("in Node, user words open from a file (none yet if missing) and save back to it, owner-only, as Python's", async () => {
  const folder = fs.mkdtempSync(`${os.tmpdir()}/cl-words-`);
  const path = `${folder}/words.json`;
  const words = await UserWords.open(path, { maxWords: 10 });
  assert.equal(words.size, 0);
  words.learn("Zyzzyx");
  words.learn("Zyzzyx");
  assert.equal(await words.save(), path);
  assert.equal(fs.statSync(path).mode & 0o777, 0o600);
  const again = await UserWords.open(path);
  assert.deepEqual(again.toJSON(), words.toJSON());
  assert.deepEqual(fs.readdirSync(folder), ["words.json"]);   // no temporary file left
  await assert.rejects(UserWords.open(`${folder}/nope/words.json`), /user words .*: the folder .*nope does not exist/);
  await assert.rejects(UserWords.open(folder), /is a folder, not a file/);
  fs.writeFileSync(path, "not json");
  await assert.rejects(UserWords.open(path), /^CompactLMError: user words .*words.json is not valid JSON/);
  await assert.rejects(new UserWords().save(), /these user words have no file: give save\(\) a path/);
});
