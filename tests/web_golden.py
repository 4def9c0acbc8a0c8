"""Golden cases for web/compact_lm.js, written by the Python Autocompleter (tests/test_web_node.py runs them).

    write_goldens(folder, alice_text, tiny_npz)   # -> folder/*.json, the .onnx files beside them

One JSON file per model configuration (`model-*.json`): the step (or sequence) graph's path, the sequence
graph's, the Autocompleter options, Python's decoded metadata, prefix cases (next_chars and complete) and
keystroke sessions (type / backspace / accept / suggestions / next_chars; accept followed by attaching
punctuation, a letter or a backspace), each with what Python returned, the session's unknown count and how
many onnxruntime `session.run` calls it made. Two configurations learn the user's words as they type (a
small, fast-decaying dictionary that starts from words of the training text: mixing, learning, taking back,
eviction, and the dictionary alone for words with unknown characters); their file holds the start document
and the dictionary at the end. `faults.json`: damaged and foreign files with Python's
one-line error; `unicode.json`: Python's word-boundary rule and per-code-point normalization over every
code point, to compare with JavaScript's Unicode property escapes, String.normalize and toLowerCase.
"""
from __future__ import annotations

import base64
import json
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import onnx

from compact_lm.autocomplete import CONTEXT_CHARS, Autocompleter, default_is_boundary, joins_previous
from compact_lm.errors import CompactLMError
from compact_lm.lexicon import NEWER_BOUNDARIES_UNICODE, Lexicon
from compact_lm.complete_eval import word_spans
from compact_lm.onnx_scan import unsafe_onnx_feature
from compact_lm.ort_backend import OrtBackend
from compact_lm.user_words import UserWords
from compact_lm.vocab import Vocab, normalize
from conftest import random_model

# Characters that exercise normalization, unknowns, boundaries and surrogate pairs.
SPECIAL_PREFIXES = [
    "", " ", "\n", "Alice", "Alice ", "Alice,", "don'", "don\u2019", "well-", "o\u2019er", "\u201cWhat",
    "\u65e5\u672c\u8a9e", "na\u00efve", "nai\u0308ve", "Ame\u0301lie", "A\u030a", "\u212b", "\u2126hm", "\u0130stanbul",
    "\u01c5", "\u1e9e", "\u03a3\u0391\u03a3", "\u0344", "cafe\u0301", "x\ttab", "line\r\n", "\U0001f600", "a\U0001f600",
    "\U0001f600 ", "\ufeffBOM", "zero\u200bwidth", "no\u00a0break", "dash\u2014", "Wait\u2026", "\u0000",
    "lone\ud800", "THE QUEEN", "Alice was beginning to get very tired of sitting by her sister on the",
    "ALICE\u2019S", "Hmm!", "(", "[Illustration]\n", "3", "E\u0301", "\u00c5ngstr\u00f6m", "\U0001d400bold",
]
TRICKY_TYPED = ["e\u0301", "\u212b", "\U0001f600", "\u0130", "\u65e5", "\u2019", "-", "'", "\u00a0", "\t", "\u0344", "\ud800"]


class RunCounter:
    """Stands in for an onnxruntime InferenceSession: counts `run` calls (shared count across sessions)."""

    def __init__(self, inner, counts: list):
        self.inner, self.counts = inner, counts

    def run(self, *args, **kwargs):
        self.counts[0] += 1
        return self.inner.run(*args, **kwargs)


def counted(ac: Autocompleter) -> list:
    """Count the session.run calls of an Autocompleter over an OrtBackend from now on: returns [count]."""
    counts = [0]
    backend = ac.backend
    if backend._step is not None:
        backend._step = RunCounter(backend._step, counts)
    if backend._sequence is not None:
        backend._sequence = RunCounter(backend._sequence, counts)
    return counts


def pairs(suggestions) -> list:
    return [[s.text, s.prob] for s in suggestions]


def held_out(alice_text: str) -> str:
    return alice_text[int(0.95 * len(alice_text)):]


def prefixes(alice_text: str, rng: np.random.Generator, count: int, long_ones: bool = True) -> list[str]:
    """`count` prefixes: the special ones, long pastes around CONTEXT_CHARS, and windows of held-out text
    (mostly short; some ending at a boundary, some mid-word, some mid-line). Without `long_ones` (for a
    model without a sequence graph, which Node runs one step per character) two long pastes and shorter windows."""
    text = held_out(alice_text)
    out = list(SPECIAL_PREFIXES)
    lengths = (CONTEXT_CHARS - 1, CONTEXT_CHARS, CONTEXT_CHARS + 1, 1500, 3000) if long_ones else (CONTEXT_CHARS + 1,)
    for length in lengths:
        end = int(rng.integers(length, len(alice_text)))
        out.append(alice_text[end - length:end])
    out.append("e\u0301" * 700)   # 1400 code points in NFD pairs: the context's edge falls between the two
    if long_ones:
        out.append("\u00e9" * 1100)   # 1100 code points: more than the context
    longest = 200 if long_ones else 80
    while len(out) < count:
        length = int(rng.integers(1, 41)) if rng.random() < 0.6 else int(rng.integers(41, longest + 1))
        end = int(rng.integers(length, len(text)))
        if rng.random() < 0.3:   # end right after a boundary
            while end < len(text) and not default_is_boundary(text[end - 1]):
                end += 1
        out.append(text[max(end - length, 0):end])
    return out[:max(count, len(SPECIAL_PREFIXES))]


def prefix_cases(ac: Autocompleter, counts: list, texts: list[str], rng: np.random.Generator) -> list[dict]:
    cases = []
    for prefix in texts:
        k = int(rng.choice([1, 2, 3, 3, 3, 4, 5, 8])) if rng.random() > 0.02 else 500
        max_chars = int(rng.integers(1, 21)) if rng.random() < 0.15 else None
        before = counts[0]
        next_chars = ac.next_chars(prefix, k)
        middle = counts[0]
        completions = ac.complete(prefix, k, max_chars)
        cases.append({"prefix": prefix, "k": k, "maxChars": max_chars, "next": pairs(next_chars),
                      "complete": pairs(completions), "runsNext": middle - before, "runsComplete": counts[0] - middle})
    return cases


def session_cases(ac: Autocompleter, counts: list, alice_text: str, rng: np.random.Generator,
                  sessions: int, actions: int) -> list[list[dict]]:
    """Keystroke sessions: type chunks of held-out text (mostly one character, some pastes, some tricky
    characters), backspace 0..n (some past the start, some into pasted text), and after each action
    suggestions or next_chars; after some suggestions, accept one of them, then type attaching punctuation
    (the automatic space goes), a letter (it stays) or backspace once."""
    text = held_out(alice_text)
    out = []
    for number in range(sessions):
        session = ac.session()
        cursor = int(rng.integers(0, len(text) - 2000))
        log = []
        for index in range(actions):
            roll = rng.random()
            if index == actions // 2 and number % 2 == 0:   # a paste longer than the context
                chunk = alice_text[:int(rng.integers(CONTEXT_CHARS + 1, 1600))]
                action = {"op": "type", "text": chunk}
            elif roll < 0.55:
                size = 1 if rng.random() < 0.7 else int(rng.integers(2, 9)) if rng.random() < 0.7 else int(rng.integers(9, 80))
                chunk = text[cursor:cursor + size]
                cursor += size
                action = {"op": "type", "text": chunk}
            elif roll < 0.62:
                action = {"op": "type", "text": str(rng.choice(TRICKY_TYPED))}
            else:
                n = int(rng.integers(0, 4)) if rng.random() < 0.6 else int(rng.integers(4, 40))
                if rng.random() < 0.05:
                    n = len(session.text) + 3
                action = {"op": "backspace", "n": n}
            _act(session, counts, action, log)
            for op in ("suggestions", "nextChars") if rng.random() < 0.3 else \
                    (("suggestions",) if rng.random() < 0.6 else ("nextChars",)):
                k = int(rng.choice([1, 3, 3, 4, 6]))
                before = counts[0]
                if op == "suggestions":
                    max_chars = int(rng.integers(1, 12)) if rng.random() < 0.1 else None
                    got = session.suggestions(k, max_chars)
                    entry = {"op": op, "k": k, "maxChars": max_chars}
                else:
                    got = session.next_chars(k)
                    entry = {"op": op, "k": k}
                entry.update(expected=pairs(got), runs=counts[0] - before, text=session.text, unknown=session.unknown)
                log.append(entry)
                if op == "suggestions" and got and rng.random() < 0.3:
                    chosen = got[int(rng.integers(len(got)))]
                    _act(session, counts, {"op": "accept", "text": chosen.text}, log)
                    roll = rng.random()
                    if roll < 0.45:      # attaching punctuation (alone or starting a paste) replaces the space
                        punct = str(rng.choice([",", ".", "!", "?", ";", ")", "\u201d", "'"]))
                        follow = {"op": "type", "text": punct if rng.random() < 0.8 else punct + " and"}
                    elif roll < 0.8:     # a letter (or a newline) keeps it
                        follow = {"op": "type", "text": str(rng.choice(["a", "t", "\n", "-", "("]))}
                    else:                # backspace takes it back
                        follow = {"op": "backspace", "n": 1}
                    _act(session, counts, follow, log)
                    before = counts[0]
                    got = session.suggestions(3)
                    log.append({"op": "suggestions", "k": 3, "maxChars": None, "expected": pairs(got),
                                "runs": counts[0] - before, "text": session.text, "unknown": session.unknown})
        out.append(log)
    out.append(scripted_session(ac, counts))
    return out


def scripted_session(ac: Autocompleter, counts: list) -> list[dict]:
    """One session that accepts in every way: then punctuation (the space goes), a letter or a newline (it
    stays), a backspace, nothing then punctuation, a paste that starts with punctuation; and unknown
    characters typed and backspaced (\u65e5 is in no golden vocabulary)."""
    session, log = ac.session(), []

    def look():
        before = counts[0]
        got = session.suggestions(3)
        log.append({"op": "suggestions", "k": 3, "maxChars": None, "expected": pairs(got), "runs": counts[0] - before,
                    "text": session.text, "unknown": session.unknown})
        return got

    def typed(text):
        return {"op": "type", "text": text}

    for follows in [[typed(",")], [typed("a")], [{"op": "backspace", "n": 1}, typed(",")], [typed(""), typed(".")],
                    [typed("\n")], [typed("\u201d and")], [typed("\u65e5")], [typed(" ")], [{"op": "backspace", "n": 2}]]:
        got = look()
        _act(session, counts, {"op": "accept", "text": got[0].text if got else "x"}, log)
        for follow in follows:
            _act(session, counts, follow, log)
    look()
    # a word of unknown characters typed to a boundary, then begun again: with user words, theirs alone
    for text in [" \u65e5\u672c\u8a9e ", "\u65e5", "\u672c", " \u65e5\u672c ", "\u65e5"]:
        _act(session, counts, typed(text), log)
        look()
    # decomposed (NFD) letters key by key: each mark composes with the letter before it (the model reads again from
    # before it), NFC reorders U+0323 before U+0303 across two pastes, Hangul jamo compose, and backspaces split them
    for action in [typed(" caf"), typed("e"), typed("\u0301"), typed(" na"), typed("i"), typed("\u0308"), typed("ve"),
                   {"op": "backspace", "n": 3}, typed(" xa\u0303"), typed("\u0323a"), typed("\u0323a\u1100"),
                   typed("\u1161"), typed("\u11a8"), {"op": "backspace", "n": 1}, {"op": "backspace", "n": 4},
                   typed("e\u0323"), typed("\u0302"), {"op": "backspace", "n": 1}, typed("\u0301 "),
                   typed("\u095b"), typed("\u094d"), typed("x\u0f73"), typed("\u0323"), {"op": "backspace", "n": 4},
                   typed(" a"), typed("\u0334" * 40 + "\u0301"), typed("\u0302 "),
                   # a word of 38 letters typed decomposed (114 code points) is learned as composed; 20 of them typed
                   typed(unicodedata.normalize("NFD", "\u1ec7" * 38) + " "), typed(unicodedata.normalize("NFD", "\u1ec7" * 20))]:
        _act(session, counts, action, log)
        look()
    return log


def _act(session, counts: list, action: dict, log: list) -> None:
    """Apply one type / backspace / accept action to `session` and log it with its run count and unknown count."""
    before = counts[0]
    if action["op"] == "type":
        session.type(action["text"])
    elif action["op"] == "accept":
        session.accept(action["text"])
    else:
        session.backspace(action["n"])
    action.update(runs=counts[0] - before, unknown=session.unknown, after=session.text)
    log.append(action)


# ------------------------------------------------------------------------------------------- models
def _wordy(model, seed: int):
    """`model` made to look trained: peaky next-character distributions (head weights x5) and words of a few
    letters (output bias: word characters N(0, 1.5), space and newline +0.5, other boundaries -5), so that
    beam searches go several characters deep."""
    rng = np.random.default_rng(seed)
    bias = rng.normal(0.0, 1.5, model.vocab.size)
    for i, char in enumerate(model.vocab.tokens):
        if i and default_is_boundary(char):
            bias[i] = 0.5 if char in " \n" else -5.0
    model.params["head.bias"] = bias.astype(model.params["head.bias"].dtype)
    model.params["head.weight"] = model.params["head.weight"] * 5
    return model


def _with_lexicon(model, text: str):
    """`model` carrying the lexicon of `text` (as the trainer saves it: the words of the normalized, encoded text)."""
    vocab = model.vocab
    model.info["lexicon"] = Lexicon.from_text(vocab.decode(vocab.encode(text))).to_json()
    return model


def _models(alice_text: str, tiny_npz: Path | None) -> list[dict]:
    """The model configurations: name, model, whether to export a sequence graph, which graph is the source
    ("step", or "sequence" for a sequence graph alone), Autocompleter options (JavaScript's names), how many
    prefix cases, (sessions, actions per session), and metadata keys to drop (an older file)."""
    from compact_lm import load
    from compact_lm.tools.quantize import quantize_model
    train = alice_text[:int(0.9 * len(alice_text))]
    full = Vocab.build(train)
    lower = Vocab.build(train, lowercase=True)
    front = Vocab.build(alice_text[:3000])   # missing many characters: unknowns in every held-out prefix
    configs = []
    if tiny_npz is not None:
        configs.append(dict(name="tiny-gru-fp32-seq", model=load(tiny_npz), sequence=True, source="step",
                            options={"beam": 4, "maxChars": 16}, prefixes=500, sessions=(6, 40)))
    configs += [
        dict(name="gru-fp32-step",
             model=_with_lexicon(_wordy(random_model("gru", (32,), embed=12, vocab=full, seed=1, scale=2.5), 1), train),
             sequence=False, source="step", options={"beam": 4, "maxChars": 16}, prefixes=500, sessions=(4, 30)),
        dict(name="lstm-int8-2layer-seq",
             model=quantize_model(_wordy(random_model("lstm", (16, 9), embed=10, vocab=full, seed=2, scale=2.5), 2)),
             sequence=True, source="step", options={"beam": 3, "maxChars": 10, "contextCache": True}, prefixes=500,
             sessions=(6, 40), user_words={"maxWords": 300, "halfLife": 100, "share": 0.25}),   # h of the 2nd layer
        dict(name="rnn-fp32-2layer-lower-seq",
             model=_wordy(random_model("rnn", (16, 9), embed=8, vocab=lower, seed=3, scale=2.5), 3),
             sequence=True, source="step", options={"beam": 5, "maxChars": 12}, prefixes=500, sessions=(6, 40)),
        dict(name="gru-int8-lower-step",
             model=quantize_model(_with_lexicon(_wordy(random_model("gru", (20,), embed=8, vocab=lower, seed=4, scale=2.5), 4), train)),
             sequence=False, source="step", options={"beam": 1, "maxChars": 8, "contextCache": True}, prefixes=300,
             sessions=(3, 30), user_words={"maxWords": 60, "halfLife": 30, "share": 0.3}),
        dict(name="lstm-fp32-unknowns-seqonly",
             model=_wordy(random_model("lstm", (12,), embed=8, vocab=front, seed=5, scale=2.5), 5),
             sequence=True, source="sequence", options={"beam": 4, "maxChars": 16, "boundaries": " \n.,;:!?", "contextChars": 48},
             prefixes=200, sessions=(4, 40), user_words={"maxWords": 200, "halfLife": 80, "share": 0.5}),
        # a file from before `start_text` and `normalization` were written: the defaults apply
        dict(name="gru-fp32-lower-old-format",
             model=_wordy(random_model("gru", (10,), embed=6, vocab=lower, seed=6, scale=2.5), 6),
             sequence=False, source="step", options={"beam": 4, "maxChars": 16}, prefixes=80, sessions=(1, 30),
             drop_keys=("start_text", "normalization")),
    ]
    return configs


def write_goldens(folder: Path, alice_text: str, tiny_npz: Path | None = None, seed: int = 0) -> dict:
    """Write every golden file into `folder`; returns {name: number of cases} for the test's report."""
    from compact_lm.export import export_model
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {}
    step_paths = {}
    for config in _models(alice_text, tiny_npz):
        rng = np.random.default_rng([seed, len(summary)])
        name, options = config["name"], config["options"]
        step, sequence = folder / f"{name}.onnx", folder / f"{name}.seq.onnx"
        export_model(config["model"], step)
        if config.get("drop_keys"):
            _with_props(step, step, lambda props: _drop(props, config["drop_keys"]))
        if config["sequence"]:
            export_model(config["model"], sequence, sequence=True)
        step_paths[name] = step
        source = sequence if config["source"] == "sequence" else step
        seq_arg = sequence if config["sequence"] and config["source"] == "step" else None
        ac = Autocompleter(str(source), beam=options["beam"], max_chars=options["maxChars"],
                           boundaries=options.get("boundaries"), context_chars=options.get("contextChars", CONTEXT_CHARS),
                           sequence=str(seq_arg) if seq_arg else None, context_cache=options.get("contextCache", False))
        start_words = None
        if config.get("user_words"):
            start_words = _start_words(ac, alice_text, folder / f"userwords-{name}.json", config["user_words"])
            ac.user_words = start_words
        assert not set(config.get("drop_keys", ())) & set(ac.backend.metadata)
        counts = counted(ac)
        texts = prefixes(alice_text, rng, config["prefixes"], long_ones=config["sequence"])
        cases = prefix_cases(ac, counts, texts, rng)
        sessions = session_cases(ac, counts, alice_text, rng, *config["sessions"])
        golden = {"name": name, "model": str(source), "sequence": str(seq_arg) if seq_arg else None,
                  "options": options, "metadata": ac.backend.metadata, "prefixes": cases, "sessions": sessions}
        if start_words is not None:
            golden.update(userWords=json.loads((folder / f"userwords-{name}.json").read_text(encoding="utf-8")),
                          userWordsOptions=config["user_words"], finalUserWords=start_words.to_json())
        (folder / f"model-{name}.json").write_text(json.dumps(golden, ensure_ascii=True), encoding="utf-8")
        summary[name] = {"prefixes": len(cases), "session_actions": sum(len(s) for s in sessions)}
    write_faults(folder, step_paths)
    write_unicode(folder)
    write_ties(folder)
    write_context_cache(folder)
    return summary


def write_context_cache(folder: Path, trials: int = 120) -> None:
    """context_cache.json: random runs of ContextCache (small sizes, so the ring wraps) beside a small UserWords
    (so words are evicted and forgotten): adds with their states, removes, take-backs of the last learned word,
    forgets, clears, switches to a second dictionary and back, and after most steps a query for 1 to 20 words with
    Python's answer."""
    import random
    from compact_lm.context_cache import ContextCache
    rng = random.Random(2)
    vocab = ["aa", "ab", "abc", "bb", "ba", "\U0010ffff\U0010ffff", "\U0010ffffa", "cc", "dd", "ee"]
    cases = []
    for _ in range(trials):
        size = rng.randint(1, 6)
        cache, ops, slots = ContextCache(size=size, half_life=5.0), [], []
        dictionaries = [UserWords(max_words=5), UserWords(max_words=5)]   # a session's, and another it switches to
        held = dictionaries[0]
        units = rng.choice([3, 64, 200])   # more than context_cache.POOLED (64): pooled, 200 not a multiple of it
        taken = []   # (dictionary, undo, use) of the adds, for take-backs
        for _ in range(40):
            roll = rng.random()
            if roll < 0.55:
                word, state = rng.choice(vocab), [rng.gauss(0, 1) for _ in range(units)]
                undo = held.learn(word)
                if undo is not None:
                    slots.append(cache.add(np.array(state, np.float32), word, undo.arrival, held))
                    taken.append((held, undo, slots[-1]))
                    ops.append({"op": "add", "word": word, "state": state})
            elif roll < 0.6 and taken:   # a backspace over the last learned word's boundary, as a session does
                owner, undo, use = taken.pop()
                owner.unlearn(undo)
                cache.remove(use)
                ops.append({"op": "takeback"})
            elif roll < 0.8 and slots:
                use = rng.choice(slots)   # (slot, added): an older use's slot may hold a newer one by now
                cache.remove(use)
                ops.append({"op": "remove", "use": list(use)})
            elif roll < 0.9:
                word = rng.choice(vocab)
                held.forget(word)
                ops.append({"op": "forget", "word": word})
            elif roll < 0.93:
                held.clear()
                ops.append({"op": "clear"})
            elif roll < 0.97:   # Session.user_words replaced by the other dictionary (or back)
                held = dictionaries[1] if held is dictionaries[0] else dictionaries[0]
                ops.append({"op": "swap"})
            if rng.random() < 0.3:   # no completion after every change: a forget and a learn can come together
                continue
            state, prefix = [rng.gauss(0, 1) for _ in range(units)], rng.choice(["", "a", "ab", "b", "\U0010ffff", "z"])
            k = rng.choice([1, 2, 3, 5, 20])
            found = cache.continuing(np.array(state, np.float32), prefix, k, held)
            ops.append({"op": "query", "state": state, "prefix": prefix, "k": k,
                        "expected": [[w, float(p)] for w, p in found]})
        cases.append({"size": size, "ops": ops})
    cases += [_pooled_in_float64_case(), _many_words_case(rng), _swap_case()]
    (folder / "context_cache.json").write_text(json.dumps(cases), encoding="utf-8")


def _replay_case(size: int, max_words: int, adds: list[tuple[str, list[float]]], queries: list[tuple[list[float], str]]) -> dict:
    """A context_cache.json case: `adds` (word, state) learned and kept in order, then `queries` with Python's answers."""
    from compact_lm.context_cache import ContextCache
    cache, held, ops = ContextCache(size=size, half_life=5.0), UserWords(max_words=max_words), []
    for word, state in adds:
        undo = held.learn(word)
        if undo is not None:
            cache.add(np.array(state, np.float32), word, undo.arrival, held)
            ops.append({"op": "add", "word": word, "state": state})
    for state, prefix in queries:
        found = cache.continuing(np.array(state, np.float32), prefix, 3, held)
        ops.append({"op": "query", "state": state, "prefix": prefix, "expected": [[w, float(p)] for w, p in found]})
    return {"size": size, "maxWords": max_words, "ops": ops}


def _swap_case() -> dict:
    """A word learned into the other dictionary with no completion in between, then the first one back: its use must
    not count there (add() takes the dictionary it learned into)."""
    from compact_lm.context_cache import ContextCache
    cache, dictionaries, ops = ContextCache(size=4, half_life=5.0), [UserWords(max_words=5), UserWords(max_words=5)], []
    state = [1.0, 0.0, 0.0]

    def add(held: UserWords, word: str) -> None:
        cache.add(np.array(state, np.float32), word, held.learn(word).arrival, held)
        ops.append({"op": "add", "word": word, "state": state})

    def query(held: UserWords) -> None:
        found = cache.continuing(np.array(state, np.float32), "a", 3, held)
        ops.append({"op": "query", "state": state, "prefix": "a", "k": 3, "expected": [[w, float(p)] for w, p in found]})

    add(dictionaries[0], "aa")
    query(dictionaries[0])
    ops.append({"op": "swap"})
    add(dictionaries[1], "ab")
    ops.append({"op": "swap"})
    query(dictionaries[0])
    assert ops[-1]["expected"] == [["aa", 1.0]]
    return {"size": 4, "maxWords": 5, "ops": ops}


def _pooled_in_float64_case() -> dict:
    """Units 0, 64 and 128 pool into one sum: 1e8 + 1 - 1e8 is 1 in float64 and 0 in float32, which moves the
    cosine with the query from 0.71 to 1 and the shares by 1e-3 (the golden tolerance is 1e-5)."""
    cancelling, first, second = [0.0] * 192, [0.0] * 192, [0.0] * 192
    cancelling[0], cancelling[64], cancelling[128], cancelling[1] = 1e8, 1.0, -1e8, 1.0
    first[0], second[1] = 1.0, 1.0
    return _replay_case(4, 5, [("aa", cancelling), ("bb", first)], [(second, "")])


def _many_words_case(rng) -> dict:
    """60 words under one prefix (more than 8 k: the cache's NumPy path), 70-unit states (pooled), a ring that wraps."""
    words = ["a" + chr(98 + i % 20) + chr(98 + i // 20) for i in range(60)]
    adds = [(rng.choice(words), [rng.gauss(0, 1) for _ in range(70)]) for _ in range(150)]
    queries = [([rng.gauss(0, 1) for _ in range(70)], prefix) for prefix in ("", "a", "ab", "", "a")]
    return _replay_case(100, 100, adds, queries)


def _start_words(ac: Autocompleter, alice_text: str, path: Path, options: dict) -> UserWords:
    """A dictionary of the words of a slice of the training text (as the completer's boundaries and normalization
    cut and store them), saved to `path` and read back: Python and JavaScript start from the same document."""
    words = UserWords(max_words=options["maxWords"], half_life=options["halfLife"], share=options["share"])
    text = alice_text[20000:26000]
    for start, end in word_spans(text, ac.is_boundary):
        words.learn(ac.normalize(text[start:end]))
    for _ in range(3):   # as a hand-edited file may hold: entries that span a boundary (never proposed)
        for entry in ("the queen", "said, Alice"):
            words.learn(ac.normalize(entry))
    words.save(path)
    return UserWords(path, max_words=options["maxWords"], half_life=options["halfLife"], share=options["share"])


def write_ties(folder: Path) -> None:
    """ties.json: a model whose every character is equally likely everywhere (all weights zero), so that
    every word of a length ties exactly and Python's order is the text's, in code point order: U+FF41 before
    U+1D400 (UTF-16 code units would put the latter first). Two letters and two boundaries (V = 5): inside a
    word or at a boundary, 2 + 4 completions of one and two letters tie by length and the search stops
    there for k <= 6. No beam cut (beam 4) falls inside a tie, which Python leaves to numpy's argpartition."""
    from compact_lm.export import export_model
    a, bold = "\uff41", "\U0001d400"
    model = random_model("gru", (4,), embed=3, text=f"{a}{bold} !")
    for name, array in model.params.items():
        model.params[name] = np.zeros_like(array)
    path = folder / "ties.onnx"
    export_model(model, path)
    ac = Autocompleter(str(path))
    cases = [{"prefix": prefix, "k": k, "complete": pairs(ac.complete(prefix, k))}
             for prefix in (a, bold, a + bold, bold + a, " ", f"{a} ") for k in range(1, 7)]
    assert [s.text for s in ac.complete(a, 6)] == [a, bold, a + a, a + bold, bold + a, bold + bold]
    assert [s.text for s in ac.complete(" ", 6)] == [a, bold, a + a, a + bold, bold + a, bold + bold]
    (folder / "ties.json").write_text(json.dumps({"model": str(path), "cases": cases}), encoding="utf-8")


# ------------------------------------------------------------------------------------------- faults
def _python_error(path: Path, sequence: Path | None = None) -> str:
    try:
        OrtBackend(path, sequence_path=sequence)
    except CompactLMError as error:
        return str(error)
    raise AssertionError(f"{path} loads in Python")


def _python_completer_error(path: Path) -> str:
    """What Python's Autocompleter says of a file whose lexicon it refuses (read when completion first needs it)."""
    try:
        Autocompleter(str(path))
    except CompactLMError as error:
        return str(error)
    raise AssertionError(f"{path} loads in Python")


def _with_props(source: Path, target: Path, change) -> Path:
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    change(props)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))
    return target


def _drop(props: dict, keys) -> None:
    """Remove `keys` from metadata_props and from the metadata_keys list."""
    for key in keys:
        del props[key]
    props["metadata_keys"] = json.dumps([key for key in json.loads(props["metadata_keys"]) if key not in keys])


def write_faults(folder: Path, step_paths: dict[str, Path]) -> None:
    """faults.json: files Python refuses, with its one-line message; "exact" unless the message carries
    onnxruntime's own words (then only the part before them must match)."""
    faults = folder / "faults"
    faults.mkdir(exist_ok=True)
    good = step_paths["gru-fp32-step"]
    data = good.read_bytes()
    cases = []

    def add(name: str, path: Path, what: str, sequence: Path | None = None) -> None:
        message = _python_error(path, sequence) if what != "lexicon" else _python_completer_error(path)
        exact = True
        if path.exists() and path.is_file():
            try:
                unsafe_onnx_feature(path.read_bytes())
                exact = not message.startswith("onnxruntime ")   # else onnxruntime's version and words follow
            except ValueError:
                pass
        cases.append({"name": name, "file": str(path), "sequence": str(sequence) if sequence else None, "what": what,
                      "message": message, "exact": exact})

    def damaged(name: str, content: bytes, what: str) -> None:
        path = faults / f"{name}.onnx"
        path.write_bytes(content)
        add(name, path, what)

    damaged("truncated-half", data[:len(data) // 2], "truncated")
    damaged("truncated-3", data[:-3], "truncated")
    damaged("text", b"just some text, not a protobuf", "not onnx")
    damaged("empty", b"", "not onnx")
    damaged("garbage-head", bytes(range(256)) * 4 + data[1024:], "not onnx")
    for cut in range(len(data) - 400, len(data), 37):   # the metadata_props are serialized last
        damaged(f"cut-{cut}", data[:cut], "truncated")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Tanh", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    other = faults / "no-metadata.onnx"
    # IR version 8 as compact-lm writes: onnxruntime-node, one release behind, may not read the newest IR
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), str(other))
    add("no-metadata", other, "no metadata")
    add("stripped-metadata", _with_props(good, faults / "stripped.onnx", lambda p: p.clear()), "no metadata")
    add("format-version-2", _with_props(good, faults / "v2.onnx", lambda p: p.update(format_version="2")), "format version")
    add("format-version-missing", _with_props(good, faults / "v-none.onnx", lambda p: p.pop("format_version")),
        "format version")
    add("missing-key", _with_props(good, faults / "missing.onnx", lambda p: p.pop("vocab")), "damaged metadata")
    add("no-keys-entry", _with_props(good, faults / "nokeys.onnx", lambda p: p.pop("metadata_keys")), "damaged metadata")
    add("graph-kind", _with_props(good, faults / "kind.onnx", lambda p: p.update(graph="tree")), "graph kind")
    add("normalization", _with_props(good, faults / "norm.onnx", lambda p: p.update(
        normalization=json.dumps({"unit": "code_point", "steps": ["NFC", "lowercase"]}))), "normalization")
    add("start-text", _with_props(good, faults / "start.onnx", lambda p: p.update(start_text=json.dumps("\n\n"))),
        "start text")
    lexicon = json.loads(onnx.load(str(good)).metadata_props[[p.key for p in onnx.load(str(good)).metadata_props].index("lexicon")].value)
    packed = zlib.compress(Lexicon.from_json(lexicon, "golden")._front_coded())

    def coded(text: str) -> str:
        return base64.b64encode(zlib.compress(text.encode("utf-8"))).decode()
    for name, value in [("count", {**lexicon, "words": 1}), ("words-float", {**lexicon, "words": 2.5}),
                        ("encoding", {**lexicon, "encoding": "gzip"}), ("too-many", {**lexicon, "words": 3_000_000}),
                        ("not-base64", {**lexicon, "data": "!!" + lexicon["data"]}),
                        ("base64-newline", {**lexicon, "data": lexicon["data"][:8] + "\n" + lexicon["data"][8:]}),
                        ("base64-unpadded", {**lexicon, "data": base64.b64encode(packed + b"xy").decode().rstrip("=")}),
                        ("zlib-cut", {**lexicon, "data": base64.b64encode(packed[:-5]).decode()}),
                        ("zlib-junk", {**lexicon, "data": base64.b64encode(packed + b"junk!!").decode()}),
                        ("words-minus-zero", {**lexicon, "words": -0.0}),
                        ("front-too-long", {**lexicon, "words": 2, "data": coded("0ab\n3c")}),
                        ("front-over-40", {**lexicon, "words": 2, "data": coded("0" + "a" * 50 + "\n" + chr(0x30 + 41) + "b")}),
                        ("front-only", {**lexicon, "words": 2, "data": coded("0ab\n1")}),
                        ("front-first-shares", {**lexicon, "words": 1, "data": coded("1ab")}),
                        ("front-astral", {**lexicon, "words": 2, "data": coded("0ab\n\U0001f600c")}),
                        ("not-a-dict", [1, 2])]:
        add(f"lexicon-{name}", _with_props(good, faults / f"lexicon-{name}.onnx",
                                           lambda p, v=value: p.update(lexicon=json.dumps(v))), "lexicon")
    future = onnx.load(str(good))
    future.ir_version = 99   # sound bytes and metadata that onnxruntime itself refuses
    onnx.save(future, str(faults / "ir-99.onnx"))
    add("ir-version-99", faults / "ir-99.onnx", "onnxruntime")
    add("missing-file", faults / "nope.onnx", "missing")
    add("folder", faults, "folder")
    add("step-as-sequence", good, "wrong sequence", sequence=step_paths["gru-int8-lower-step"])
    add("other-model-sequence", step_paths["lstm-int8-2layer-seq"], "wrong sequence",
        sequence=folder / "rnn-fp32-2layer-lower-seq.seq.onnx")
    (folder / "faults.json").write_text(json.dumps(cases, ensure_ascii=True), encoding="utf-8")


# ------------------------------------------------------------------------------------------ unicode
def _ranges(flags) -> list[list[int]]:
    """[first, last] runs of the code points for which flags is true."""
    out, start = [], None
    for cp, flag in enumerate(flags):
        if flag and start is None:
            start = cp
        elif not flag and start is not None:
            out.append([start, cp - 1])
            start = None
    if start is not None:
        out.append([start, len(flags) - 1])
    return out


def write_unicode(folder: Path) -> None:
    """unicode.json: Python's boundary rule, per-code-point normalization (NFC; NFC then lowercase) and joiners
    (autocomplete.joins_previous) over every code point but surrogates, as ranges and exceptions; and which code points Python's Unicode
    version leaves unassigned (category Cn), where a newer JavaScript engine may know more (the boundary rule
    knows Unicode NEWER_BOUNDARIES_UNICODE's boundaries there)."""
    boundary, unassigned, joins = [], [], []
    nfc, nfc_lower = {}, {}
    for cp in range(0x110000):
        char = chr(cp)
        boundary.append(default_is_boundary(char))
        joins.append(cp >= 0x300 and joins_previous(char))
        unassigned.append(unicodedata.category(char) == "Cn")
        if 0xD800 <= cp <= 0xDFFF:
            continue
        a = normalize(char, nfc=True)
        b = normalize(char, nfc=True, lowercase=True)
        if a != char:
            nfc[cp] = a
        if b != char:
            nfc_lower[cp] = b
    data = {"unidata_version": unicodedata.unidata_version, "newer_boundaries_unicode": NEWER_BOUNDARIES_UNICODE,
            "boundary": _ranges(boundary),
            "unassigned": _ranges(unassigned), "joins": _ranges(joins), "nfc": nfc, "nfc_lower": nfc_lower}
    (folder / "unicode.json").write_text(json.dumps(data, ensure_ascii=True), encoding="utf-8")


if __name__ == "__main__":   # python tests/web_golden.py FOLDER: write the cases without pytest
    import sys
    from compact_lm.data import default_corpus_path
    print(write_goldens(Path(sys.argv[1]), default_corpus_path().read_text(encoding="utf-8")))
