"""Autocomplete: exact ranking, one batched step per character, free backspace, one-run paste, backend
parity, thread safety, bad input never crashes, a light import; and the `complete` / `repl` commands."""
import io
import json
import math
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compact_lm.autocomplete import Autocompleter, Suggestion, default_is_boundary
from compact_lm.backends import NumpyBackend
from compact_lm.errors import CompactLMError
from compact_lm import load
from compact_lm.model import Model
from compact_lm.vocab import Vocab
from cli_helpers import assert_one_line_error, run as run_cli
from conftest import random_model, run_together

TINY_TEXT = "ab ba.\n"          # vocabulary: <unk> \n space . a b  (word characters: a, b)


def tiny_model(cell: str = "gru", seed: int = 0) -> Model:
    """Random weights, scaled up so that the distributions are far from uniform (no near-ties)."""
    rng = np.random.default_rng(seed)
    model = random_model(cell, (6,), embed=4, text=TINY_TEXT, seed=rng, scale=2.5)
    model.params["head.bias"] = rng.normal(0, 1, model.vocab.size).astype(np.float32)   # drawn after the weights
    return model


class CountingBackend:
    """Any backend, with every call recorded as (method, batch shape)."""

    def __init__(self, inner):
        self.inner, self.vocab, self.vocab_size = inner, inner.vocab, inner.vocab_size
        self.calls = []

    def initial_state(self, batch):
        return self.inner.initial_state(batch)

    def step(self, token_ids, state):
        self.calls.append(("step", np.shape(token_ids)))
        return self.inner.step(token_ids, state)

    def run(self, token_ids, state):
        self.calls.append(("run", np.shape(token_ids)))
        return self.inner.run(token_ids, state)


class UniformBackend:
    """Every character equally likely, always: every completion of the same length ties."""

    def __init__(self, vocab):
        self.vocab, self.vocab_size = vocab, vocab.size

    def initial_state(self, batch):
        return [(np.zeros((batch, 1), np.float32),)]

    def step(self, token_ids, state):
        batch = len(token_ids)
        return np.full((batch, self.vocab_size), -math.log(self.vocab_size), np.float32), self.initial_state(batch)

    def run(self, token_ids, state):
        batch, steps = np.shape(token_ids)
        return np.full((batch, steps, self.vocab_size), -math.log(self.vocab_size), np.float32), self.initial_state(batch)


def brute_force(backend, vocab, prefix: str, max_chars: int) -> list[tuple[float, str]]:
    """Every completion (1 or more word characters a boundary then ends) of at most max_chars characters, the
    boundary counted, with its exact log p: log sum over boundaries b of p(word + b), from the model's steps."""
    ids = vocab.encode("\n" + prefix).astype(np.int64)
    log_probs, state = backend.run(ids[None, :], backend.initial_state(1))
    chars = vocab.tokens
    boundary = [i for i in range(1, vocab.size) if default_is_boundary(chars[i])]
    word = [i for i in range(1, vocab.size) if not default_is_boundary(chars[i])]
    found = []

    def expand(text, score, state, log_p, depth):
        if depth > 1:
            found.append((math.log(sum(math.exp(score + float(log_p[b])) for b in boundary)), text))
        if depth == max_chars:
            return
        for w in word:
            next_log_p, next_state = backend.step(np.array([w]), state)
            expand(text + chars[w], score + float(log_p[w]), next_state, next_log_p[0], depth + 1)

    expand("", 0.0, state, log_probs[0, -1], 1)
    return sorted(found, key=lambda item: (-item[0], item[1]))


def assert_same_suggestions(got, want, rtol=1e-4):
    """Same probabilities rank by rank; same texts wherever a probability is not tied with a neighbour."""
    assert len(got) == len(want)
    probs = [s.prob for s in want]
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.prob == pytest.approx(b.prob, rel=rtol)
        tied = any(j != i and abs(probs[j] - b.prob) <= 10 * rtol * b.prob for j in range(len(probs)))
        if not tied:
            assert a.text == b.text


def check_valid(suggestions, vocab, k, words=True):
    """Valid suggestions; with `words`, word completions: distinct words, no boundary character in them."""
    texts = [s.text for s in suggestions]
    assert len(suggestions) <= k and len(set(texts)) == len(texts)
    assert all(isinstance(s, Suggestion) and 0.0 < s.prob <= 1.0 + 1e-9 for s in suggestions)
    assert all(a.prob >= b.prob for a, b in zip(suggestions, suggestions[1:]))
    assert all(set(t) <= set(vocab.chars) for t in texts)            # never <unk>
    if words:
        assert not any(default_is_boundary(c) for t in texts for c in t)


# ------------------------------------------------------------------------------ ranking
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("prefix", ["", "a", "ab", "ab ", "ba.", "b\n", "xyz "])
def test_completions_are_the_exact_top_k(cell, prefix):
    model = tiny_model(cell)
    backend = NumpyBackend(model)
    max_chars = 5
    # a beam as wide as every unfinished word (2 word characters, 4 deep) makes the search exhaustive
    completer = Autocompleter(backend, beam=2 ** (max_chars - 1), max_chars=max_chars)
    want = brute_force(backend, model.vocab, prefix, max_chars)[:6]
    got = completer.complete(prefix, k=6)
    assert [s.text for s in got] == [text for _, text in want]
    np.testing.assert_allclose([s.prob for s in got], [math.exp(lp) for lp, _ in want], rtol=1e-5)
    assert all(len(s.text) >= 1 for s in got)   # never the word as typed: the space bar's, it saves nothing
    assert len({s.text for s in got}) == len(got) == 6


def test_a_narrow_beam_still_reports_exact_probabilities():
    model = tiny_model("gru", seed=3)
    backend = NumpyBackend(model)
    every = dict((text, lp) for lp, text in brute_force(backend, model.vocab, "ab", 6))
    got = Autocompleter(backend, beam=1, max_chars=6).complete("ab", k=4)
    assert got
    for s in got:
        assert s.prob == pytest.approx(math.exp(every[s.text]), rel=1e-5)


def test_ties_are_ordered_alphabetically_without_duplicates():
    vocab = Vocab.build(TINY_TEXT)
    completer = Autocompleter(UniformBackend(vocab))
    p = 1 / vocab.size
    # a word's probability sums its three boundaries (\n, space, .): "a" ends here with 3p, "a" + "b" with 3p^2
    inside = completer.complete("a", k=5)     # one-letter completions tied, then two-letter ones (never "")
    assert [s.text for s in inside] == ["a", "b", "aa", "ab", "ba"]
    np.testing.assert_allclose([s.prob for s in inside], [3 * p ** 2, 3 * p ** 2, 3 * p ** 3, 3 * p ** 3, 3 * p ** 3])
    at_boundary = completer.complete("ab ", k=6)   # the next word: at least one letter
    assert [s.text for s in at_boundary] == ["a", "b", "aa", "ab", "ba", "bb"]
    short = completer.complete("a", k=50, max_chars=2)   # every word of at most two characters, boundary counted
    assert short == inside[:2]


@pytest.fixture(scope="module")
def varied_backends():
    return [NumpyBackend(tiny_model(cell, seed)) for cell in ("rnn", "gru", "lstm") for seed in (0, 7)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 5), prefix=st.text(alphabet=list(TINY_TEXT), max_size=12), k=st.integers(1, 8),
       beam=st.integers(2, 5))
def test_k_suggestions_are_k_distinct_words_with_their_exact_probability(varied_backends, index, prefix, k, beam):
    backend = varied_backends[index]
    got = Autocompleter(backend, beam=beam, max_chars=6).complete(prefix, k)
    assert len(got) == k and len({s.text for s in got}) == k   # more than k words of <= 5 letters exist
    check_valid(got, backend.vocab, k)
    assert [(-math.log(s.prob), s.text) for s in got] == sorted((-math.log(s.prob), s.text) for s in got)
    every = {text: lp for lp, text in brute_force(backend, backend.vocab, prefix, 6)}
    for s in got:   # the probability mass of the word over every boundary, whatever the beam kept
        assert s.prob == pytest.approx(math.exp(every[s.text]), rel=1e-5)


def test_a_word_holding_an_unknown_character_has_no_completion():
    counting = CountingBackend(NumpyBackend(tiny_model()))
    completer = Autocompleter(counting)
    counting.calls.clear()
    assert completer.complete("ab bxa", 3) == [] and completer.complete("x", 3) == []
    assert counting.calls == []                              # no model call for them
    assert completer.next_chars("ab bxa", 3)                 # next characters still come
    assert len(completer.complete("ab x ", 3)) == 3          # the unknown is in an earlier word
    assert len(completer.complete("x.", 3)) == 3             # a boundary ended the word
    session = completer.session()
    session.type("a\u00e9b")                                # one unknown (\u00e9), in the word being typed
    assert session.unknown == 1 and session.suggestions(3) == [] and session.next_chars(3)
    session.type(" xyz")                                     # a paste: three more, the word holds them
    assert session.unknown == 4 and session.suggestions(3) == []
    session.type(" ")
    assert session.unknown == 4 and len(session.suggestions(3)) == 3
    session.backspace(3)                                     # " ", "z", "y": one unknown left behind the cursor
    assert session.unknown == 2 and session.text == "a\u00e9b x" and session.suggestions(3) == []
    session.backspace(1)
    assert session.unknown == 1 and session.text == "a\u00e9b " and len(session.suggestions(3)) == 3
    session.backspace(100)
    assert session.unknown == 0 and len(session.suggestions(3)) == 3
    session.type("\u2014a")                                  # an unknown boundary: it ends the word before "a"
    assert session.unknown == 1 and len(session.suggestions(3)) == 3


def _state_after(completer, text):
    fresh = completer.session()
    fresh.type(text)
    return fresh.state()[1]


@pytest.mark.parametrize("quote", ["'", '"'])
def test_a_straight_quote_after_an_accepted_word_keeps_the_space(quote):
    session = Autocompleter(NumpyBackend(tiny_model())).session()
    session.accept("welcome")                # it may open a quotation: "welcome 'mongst", 'said "no'
    session.type(quote + "ab")
    assert session.text == f"welcome {quote}ab"


def test_keep_space_after_an_accept_keeps_it_before_punctuation():
    session = Autocompleter(NumpyBackend(tiny_model())).session()
    session.accept("welcome")
    session.keep_space()                     # an editor whose text kept the space: so does the session
    session.type(",")
    assert session.text == "welcome ,"


def test_accept_appends_the_word_and_a_space_that_attaching_punctuation_replaces():
    counting = CountingBackend(NumpyBackend(tiny_model()))
    completer = Autocompleter(counting)
    session = completer.session()
    session.type("ab b")
    counting.calls.clear()
    session.accept(Suggestion("a", 0.5))
    assert session.text == "ab ba " and counting.calls == [("step", (1,)), ("step", (1,))]
    counting.calls.clear()
    session.suggestions(2)                                   # looking does not end the automatic space
    counting.calls.clear()
    session.type(".")                                        # the space goes, at no model call for it
    assert session.text == "ab ba." and counting.calls == [("step", (1,))]
    np.testing.assert_allclose(session.state()[1], _state_after(completer, "ab ba."), atol=1e-6)
    session.accept("ab")                                     # a string works too; a paste is one run
    assert session.text == "ab ba.ab "
    session.type("a")                                        # any other text keeps the space
    assert session.text == "ab ba.ab a"
    session.accept("")                                       # the word as typed: only the space
    session.type("\n")                                       # a newline is not attaching: the space stays
    assert session.text == "ab ba.ab a \n"
    session.accept("b")
    session.backspace()                                      # backspace removes the automatic space
    assert session.text == "ab ba.ab a \nb"
    session.type(",")                                        # ... and a comma after it is just typed
    assert session.text == "ab ba.ab a \nb,"
    session.accept("ba")
    session.type("!) ab")                                    # typed text that starts with attaching punctuation
    assert session.text == "ab ba.ab a \nb,ba!) ab"
    np.testing.assert_allclose(session.state()[1], _state_after(completer, session.text), atol=1e-6)
    session.accept("a")
    session.type("")                                         # nothing typed: the space stays replaceable
    session.type("\u201d")
    assert session.text.endswith("aba\u201d")
    assert session.unknown == 4   # ",", "!", ")" and "\u201d" are not in this vocabulary (only \\n space . a b)
    with pytest.raises(CompactLMError, match="suggestion must be a string"):
        session.accept(None)


def test_next_chars_are_sorted_and_never_unknown():
    model = tiny_model()
    completer = Autocompleter(model)
    every = completer.next_chars("ab", k=100)
    assert len(every) == model.vocab.size - 1 and "" not in [s.text for s in every]
    check_valid(every, model.vocab, 100, words=False)
    log_p, _ = NumpyBackend(model).run(model.vocab.encode("\nab")[None, :], NumpyBackend(model).initial_state(1))
    assert sum(s.prob for s in every) == pytest.approx(1 - math.exp(log_p[0, -1, 0]), rel=1e-5)
    assert completer.next_chars("ab", k=2) == every[:2]


# --------------------------------------------------------------------------- model calls
def test_all_beams_advance_in_one_batched_step_per_character():
    counting = CountingBackend(NumpyBackend(tiny_model()))
    completer = Autocompleter(counting, beam=3, max_chars=5)
    session = completer.session()
    session.type("a")
    counting.calls.clear()
    everything = session.suggestions(k=1000)   # so many wanted that nothing is cut early: every depth runs
    assert counting.calls == [("step", (2,)), ("step", (3,)), ("step", (3,)), ("step", (3,))]
    assert max(len(s.text) for s in everything) == 4   # and its boundary: max_chars
    counting.calls.clear()
    session.suggestions(k=1)
    assert counting.calls and all(kind == "step" and shape[0] <= 3 for kind, shape in counting.calls)
    assert len(counting.calls) <= 4


def test_backspace_makes_no_model_call_and_restores_the_state_exactly():
    counting = CountingBackend(NumpyBackend(tiny_model()))
    session = Autocompleter(counting).session()
    states = []
    for char in "ab ba":
        session.type(char)
        states.append(session.state())
    assert [kind for kind, _ in counting.calls] == ["step"] * 6    # the start newline, then one per character
    suggestions_before = session.suggestions(3)
    session.type("b")
    counting.calls.clear()
    session.backspace()
    assert counting.calls == []
    assert session.text == "ab ba" and session.state()[0] is states[-1][0] and session.state()[1] is states[-1][1]
    assert session.suggestions(3) == suggestions_before
    counting.calls.clear()
    session.backspace(3)
    assert counting.calls == [] and session.text == "ab" and session.state()[0] is states[1][0]
    session.backspace(0)
    session.backspace(100)
    assert counting.calls == [] and session.text == ""


def test_paste_is_one_run_and_backspace_into_it_recomputes_once():
    counting = CountingBackend(NumpyBackend(tiny_model()))
    completer = Autocompleter(counting)
    session = completer.session()
    counting.calls.clear()
    session.type("ab ba.ab")
    assert counting.calls == [("run", (1, 8))]
    counting.calls.clear()
    session.backspace(2)
    assert counting.calls == [("run", (1, 6))] and session.text == "ab ba."
    fresh = completer.session()
    fresh.type("ab ba.")
    np.testing.assert_array_equal(session.state()[0][0][0], fresh.state()[0][0][0])
    counting.calls.clear()
    session.type("b")
    assert counting.calls == [("step", (1,))]


def test_long_text_is_cut_to_the_context_length():
    counting = CountingBackend(NumpyBackend(tiny_model()))
    completer = Autocompleter(counting, context_chars=8)
    text = "ab ba." * 20
    session = completer.session()
    counting.calls.clear()
    session.type(text)
    assert counting.calls == [("run", (1, 8))]
    fresh = completer.session()
    fresh.type(text[-8:])
    np.testing.assert_array_equal(session.state()[1], fresh.state()[1])


def test_checkpoints_are_bounded_and_deep_backspace_still_works(monkeypatch):
    import compact_lm.autocomplete as autocomplete
    monkeypatch.setattr(autocomplete, "MAX_CHECKPOINTS", 4)
    model = tiny_model()
    completer = Autocompleter(model, context_chars=64)
    session = completer.session()
    for char in "ab ba.ab ba.ab":
        session.type(char)
    assert len(session._stack) <= 2 * 4
    session.backspace(11)
    fresh = completer.session()
    fresh.type("ab ")
    assert session.text == "ab "
    np.testing.assert_allclose(session.state()[1], fresh.state()[1], atol=1e-6)


# ------------------------------------------------------------------------ backends, threads
@pytest.fixture(scope="module")
def onnx_paths(tiny_model_path, tmp_path_factory):
    from compact_lm.export import export_model
    folder = tmp_path_factory.mktemp("onnx")
    model = load(tiny_model_path)
    export_model(model, folder / "step.onnx")
    export_model(model, folder / "sequence.onnx", sequence=True)
    return folder / "step.onnx", folder / "sequence.onnx"


PREFIXES = ["", "Alice", "Alice was b", "the Rabbit ", "said the", "\ud800", "x\x00\x07 q", "\U0001f600 down th"]


def test_numpy_and_onnxruntime_give_the_same_suggestions(tiny_model_path, onnx_paths):
    from compact_lm.ort_backend import OrtBackend
    numpy_completer = Autocompleter(tiny_model_path)
    for onnx in (Autocompleter(onnx_paths[0]), Autocompleter(OrtBackend(onnx_paths[0], sequence_path=onnx_paths[1]))):
        for prefix in PREFIXES:
            assert_same_suggestions(onnx.complete(prefix, 4), numpy_completer.complete(prefix, 4))
            assert_same_suggestions(onnx.next_chars(prefix, 4), numpy_completer.next_chars(prefix, 4))
        a, b = numpy_completer.session(), onnx.session()
        for session in (a, b):
            session.type("Alice was beginning")
            session.backspace(5)
            session.type("n")
        assert_same_suggestions(b.suggestions(3), a.suggestions(3))


def _typing_transcript(completer, text):
    """What one user sees: suggestions and next characters after each keystroke, a paste and backspaces."""
    session = completer.session()
    seen = []
    for char in text:
        session.type(char)
        seen.append((session.suggestions(3), session.next_chars(2)))
    session.backspace(4)
    seen.append(session.suggestions(3))
    session.type(text)
    seen.append((session.text, session.suggestions(3)))
    return seen


@pytest.mark.parametrize("kind", ["numpy", "onnxruntime"])
def test_eight_threads_see_what_they_would_see_alone(tiny_model_path, onnx_paths, alice_text, kind):
    completer = Autocompleter(tiny_model_path if kind == "numpy" else onnx_paths[0])
    # 334 keystrokes, each followed by suggestions and next characters: over 1,000 operations per thread
    texts = [alice_text[1000 + 397 * i: 1000 + 397 * i + 334] for i in range(8)]
    alone = [_typing_transcript(completer, text) for text in texts]
    assert run_together(lambda i: _typing_transcript(completer, texts[i]), 8) == alone


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_k_must_be_a_positive_whole_number(k):
    completer = Autocompleter(tiny_model())
    session = completer.session()
    for call in (lambda: completer.complete("ab", k), lambda: completer.next_chars("ab", k),
                 lambda: session.suggestions(k), lambda: session.next_chars(k)):
        with pytest.raises(CompactLMError, match="k must be a whole number >= 1"):
            call()


@pytest.mark.parametrize("call, message", [
    (lambda c: c.complete(None), "prefix must be a string"),
    (lambda c: c.complete(b"ab"), "prefix must be a string"),
    (lambda c: c.complete("ab", 3, max_chars=0), "max_chars must be"),
    (lambda c: c.session().type(7), "text must be a string"),
    (lambda c: c.session().backspace(-1), "backspace count"),
    (lambda c: Autocompleter(tiny_model(), beam=0), "beam must be"),
    (lambda c: Autocompleter(tiny_model(), boundaries="xyz"), "no word-boundary character"),
    (lambda c: Autocompleter(object()), "expected a model path"),
    (lambda c: Autocompleter("no/such/model.onnx"), "does not exist"),
    (lambda c: Autocompleter("no/such/model.npz"), "does not exist"),
])
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(CompactLMError, match=message):
        call(Autocompleter(tiny_model()))


def test_a_megabyte_of_text_is_one_capped_run():
    counting = CountingBackend(NumpyBackend(tiny_model()))
    completer = Autocompleter(counting)
    text = ("ab \U0001f600\ud800\x00 ba." * 120_000)[:1_000_000]
    counting.calls.clear()
    check_valid(completer.complete(text, 3), completer.vocab, 3)
    assert counting.calls[0] == ("run", (1, completer.context_chars))


chars = st.one_of(st.sampled_from(list(TINY_TEXT) + ["\t", "\u00e9", "\u0301", "\u212b", "\u0130"]),
                  st.characters(exclude_categories=()))   # anything, lone surrogates included
ops = st.lists(st.one_of(st.tuples(st.just("type"), st.text(alphabet=chars, max_size=5)),
                         st.tuples(st.just("backspace"), st.integers(0, 4))), max_size=10)


@pytest.fixture(scope="module")
def hypothesis_completer():
    return Autocompleter(tiny_model("lstm", seed=1), max_chars=6)


# ---------------------------------------------------------------------------- decomposed (NFD) typing
COMPOSED_TEXT = "Th\u1ec7 r\u00e1bb\u0129t w\u1eb9nt str\u1ea1ight \u1ea1\u0301 caf\u00e9s \uac00\uac01 e " * 3   # NFC


@pytest.fixture(scope="module")
def composing_completer():
    return Autocompleter(random_model("gru", (16,), embed=8, text=COMPOSED_TEXT), lexicon=None)


def test_joining_starters_are_the_second_halves_of_canonical_compositions():
    import unicodedata
    from compact_lm.autocomplete import JOINING_STARTERS
    second = {chr(0x1161 + i) for i in range(21)} | {chr(0x11A8 + i) for i in range(27)}   # Hangul, not in the table
    for point in range(0x110000):
        parts = unicodedata.decomposition(chr(point)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            pair = "".join(chr(int(p, 16)) for p in parts)
            if unicodedata.normalize("NFC", pair) == chr(point) and unicodedata.combining(pair[1]) == 0:
                second.add(pair[1])
    assert JOINING_STARTERS == second


def test_joiners_are_the_marks_of_a_nonzero_class_and_the_joining_starters(composing_completer):
    import unicodedata
    from compact_lm.autocomplete import JOINING_STARTERS
    # Tibetan U+0F73, U+0F75, U+0F81 are of class 0 but decompose to marks that are not: they join too
    tibetan = {"\u0f73", "\u0f75", "\u0f81"}
    for point in range(0x20000):
        char = chr(point)
        expected = unicodedata.combining(char) != 0 or char in JOINING_STARTERS or char in tibetan
        assert composing_completer._joins(char) == expected, hex(point)


def test_decomposed_text_typed_key_by_key_is_read_composed(composing_completer):
    import unicodedata
    composed = "Th\u1ec7 r\u00e1bb\u0129t w\u1eb9nt st\u1ea1\u0301"
    decomposed = unicodedata.normalize("NFD", composed)   # e + U+0323 + U+0302, ...: 26 code points for 20
    typed, pasted = composing_completer.session(), composing_completer.session()
    for char in decomposed:
        typed.type(char)
    pasted.type(composed)
    np.testing.assert_allclose(typed.state()[1], pasted.state()[1], atol=1e-6)
    assert typed.unknown == 0 and typed.suggestions(3) == pasted.suggestions(3)
    assert composing_completer.complete(decomposed, 3) == composing_completer.complete(composed, 3)
    typed.backspace(1)   # the acute goes: "...st\u1ea1"
    pasted = composing_completer.session()
    pasted.type(composed[:-1])
    np.testing.assert_allclose(typed.state()[1], pasted.state()[1], atol=1e-6)


def test_a_mark_after_a_paste_composes_with_the_letter_inside_it(composing_completer):
    # "a" U+0303 | U+0323 "a" | U+0323: each paste ends inside the group of a base and its marks, and NFC
    # reorders U+0323 before U+0303, so the last mark must go back before the first paste's "a"
    session = composing_completer.session()
    for paste in ("xa\u0303", "\u0323a", "\u0323a\u1100"):
        session.type(paste)
    fresh = composing_completer.session()
    fresh.type(session.text)
    np.testing.assert_allclose(session.state()[1], fresh.state()[1], atol=1e-6)


def test_a_code_point_that_nfc_splits_in_two_counts_once(composing_completer):
    # U+095B (a composition exclusion) is U+091C U+093C in NFC: two <unk> ids for one typed code point
    session = composing_completer.session()
    session.type("\u095b")
    session.type("\u094d")
    assert session.unknown == 2 and session.in_unknown_word()
    session.backspace(2)
    assert (session.text, session.unknown, session.in_unknown_word()) == ("", 0, False)
    assert session.suggestions(3) == composing_completer.complete("", 3)


def test_a_mark_after_a_long_run_of_marks_still_composes(composing_completer):
    # NFC moves U+0301 (class 230) past 40 marks of class 1 and composes it with the "a"
    session = composing_completer.session()
    session.type("a")
    session.type("\u0334" * 40 + "\u0301")
    fresh = composing_completer.session()
    fresh.type(session.text)
    np.testing.assert_allclose(session.state()[1], fresh.state()[1], atol=1e-6)
    assert session.unknown == fresh.unknown


def test_a_long_word_typed_decomposed_is_learned_as_composed(composing_completer):
    import unicodedata
    from compact_lm.user_words import UserWords
    word = "\u1ec7" * 38   # 38 characters composed, 114 code points decomposed (e, U+0323, U+0302 each)
    for text in (word, unicodedata.normalize("NFD", word)):
        words = UserWords()
        session = composing_completer.session(words)
        session.type("x ")
        for char in text:
            session.type(char)
        assert session.suggestions(1) is not None
        session.type(" ")
        assert word in words and len(words) == 1, len(text)   # ("x": one letter is no word)


def apply_op(session, op: str, arg, expected: str) -> str:
    """Apply one ("type", text) or ("backspace", n) to `session`; returns the text it should then hold."""
    if op == "type":
        session.type(arg)
        return expected + arg
    session.backspace(arg)
    return expected[:max(len(expected) - arg, 0)]


composing_ops = st.lists(st.one_of(
    st.tuples(st.just("type"), st.text(alphabet=list("a e\u0130\u0298x\u1100\u1161\u11a8\u0301\u0302\u0303\u0323"
                                                       "\u00e1\uac00\u095b\u094d\u0f73\u0334"), max_size=4)),
    st.tuples(st.just("backspace"), st.integers(0, 4))), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=composing_ops)
def test_any_typing_of_combining_marks_matches_pasting_the_final_text(composing_completer, ops):
    session, expected = composing_completer.session(), ""
    for op, arg in ops:
        expected = apply_op(session, op, arg, expected)
        fresh = composing_completer.session()
        fresh.type(expected)
        np.testing.assert_allclose(session.state()[1], fresh.state()[1], atol=1e-5)
        assert (session.unknown, session.in_unknown_word()) == (fresh.unknown, fresh.in_unknown_word())
        assert_same_suggestions(session.suggestions(2), fresh.suggestions(2))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_any_typing_matches_typing_the_final_text_afresh(hypothesis_completer, ops):
    completer = hypothesis_completer
    session, expected = completer.session(), ""
    for op, arg in ops:
        expected = apply_op(session, op, arg, expected)
        assert session.text == expected
        fresh = completer.session()
        for char in expected:
            fresh.type(char)
        for mine, theirs in zip(session.state()[0], fresh.state()[0]):
            for a, b in zip(mine, theirs):
                np.testing.assert_allclose(a, b, atol=1e-5)
        got = session.suggestions(3)
        check_valid(got, completer.vocab, 3)
        assert_same_suggestions(got, fresh.suggestions(3))
        check_valid(session.next_chars(3), completer.vocab, 3, words=False)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.text(alphabet=chars, max_size=30))
def test_any_prefix_gives_valid_suggestions(hypothesis_completer, prefix):
    check_valid(hypothesis_completer.complete(prefix, 4), hypothesis_completer.vocab, 4)
    check_valid(hypothesis_completer.next_chars(prefix, 4), hypothesis_completer.vocab, 4, words=False)


# ---------------------------------------------------------------------------- import footprint
def test_importing_autocomplete_pulls_in_nothing_heavy(onnx_paths):
    code = (
        "import sys\n"
        "import compact_lm.autocomplete as a\n"
        f"a.Autocompleter({str(onnx_paths[0])!r}).complete('Alice w', 3)\n"
        "heavy = ('onnx', 'torch', 'matplotlib', 'compact_lm.export', 'compact_lm.tools', 'compact_lm.trainer')\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- command line


def test_complete_command_prints_suggestions(tiny_model_path, onnx_paths, capsys):
    for model in (tiny_model_path, onnx_paths[0]):
        code, out, _ = run_cli(capsys, "complete", model, "Alice was b", "-k", "4", "--next")
        lines = out.strip().splitlines()
        assert code == 0 and len(lines) == 5 and lines[-1].startswith("next characters: ")
        want = Autocompleter(model).complete("Alice was b", 4)
        assert [line.split(None, 1)[1] for line in lines[:4]] == [json.dumps(s.text) for s in want]
        assert [float(line.split("%")[0]) for line in lines[:4]] == pytest.approx([100 * s.prob for s in want], abs=0.006)


def test_repl_without_a_terminal_prints_one_line_per_input_line(tiny_model_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Alice was b\n\nthe \ud800 \nthe \ud800\n"))
    code, out, _ = run_cli(capsys, "repl", tiny_model_path, "-k", "2")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].startswith('"Alice was b" -> ') and lines[1].startswith('"" -> ') and lines[2].count("%") == 2
    assert lines[3] == '"the \\ud800" -> (no suggestion)'   # the word holds an unknown character


def test_repl_tab_accepts_the_first_word_and_punctuation_replaces_its_space(tiny_model_path):
    from compact_lm.repl import apply_keys, render
    completer = Autocompleter(tiny_model_path)
    session = completer.session()
    assert apply_keys(session, "Alice was b", 3)
    first = session.suggestions(3)[0].text
    assert apply_keys(session, "\t", 3) and session.text == "Alice was b" + first + " "
    assert apply_keys(session, ",", 3) and session.text == "Alice was b" + first + ","
    before, word = session.text, session.suggestions(1)[0].text
    assert apply_keys(session, "\t", 3) and session.text == before + word + " "
    assert apply_keys(session, "\x7f", 3) and session.text == before + word   # Backspace takes the space back
    assert apply_keys(session, " \u65e5", 3) and session.unknown == 1 and session.suggestions(3) == []
    assert "outside the vocabulary" in render(session, [], 120)


def test_repl_in_a_terminal_updates_per_keystroke(tiny_model_path):
    import pty
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "compact_lm", "repl", str(tiny_model_path)],
                               stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    output = b""

    def read_for(seconds):
        nonlocal output
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([controller], [], [], 0.05)
            if ready:
                try:
                    output += os.read(controller, 65536)
                except OSError:
                    return

    deadline = time.monotonic() + 60
    while b"Ctrl-D quits" not in output and time.monotonic() < deadline:
        read_for(0.2)
    for keys in (b"Al", b"i", b"\x1b[A", b"\x7f", b"\t", "\u00e9".encode(), b"\x04"):
        os.write(controller, keys)
        read_for(0.3)
    assert process.wait(timeout=30) == 0
    read_for(0.2)
    os.close(controller)
    text = output.decode("utf-8", "replace")
    assert "Ctrl-D quits" in text and "Traceback" not in text
    assert text.count("\x1b[K") >= 6 and "%" in text and "Al" in text


@pytest.mark.parametrize("setup, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b"not a model"), "not a valid ONNX model"),
    ("plain-onnx", "without compact-lm metadata"),
])
def test_complete_and_repl_refuse_bad_onnx_files_in_one_line(tmp_path, capsys, setup, fragment):
    path = tmp_path / "model.onnx"
    if setup == "plain-onnx":
        import onnx
        from onnx import TensorProto, helper
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(graph), path)
    else:
        setup(path)
    for command in (["complete", path, "ab"], ["repl", path]):
        code, _, err = run_cli(capsys, *command)
        assert_one_line_error(code, err, "model.onnx", fragment)


@pytest.mark.parametrize("argv, fragment", [    # -k 0: test_bad_input_table's "k <= 0" row
    (["-k", "many"], "expected a whole number"),
    (["--beam", "0"], "--beam: must be >= 1"),
])
def test_complete_refuses_bad_numbers_in_one_line(tiny_model_path, capsys, argv, fragment):
    code, _, err = run_cli(capsys, "complete", tiny_model_path, "ab", *argv)
    assert_one_line_error(code, err, fragment)


def test_complete_refuses_a_damaged_npz_in_one_line(tmp_path, capsys):
    (tmp_path / "model.npz").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "complete", tmp_path / "model.npz", "ab")
    assert_one_line_error(code, err, "model.npz", "truncated or not an .npz")


def test_keys_after_an_escape_sequence_in_the_same_read_are_kept():
    from compact_lm.repl import without_escape_sequences
    assert without_escape_sequences("ab\x1b[Acd") == "abcd"
    assert without_escape_sequences("\x1b[1;5C\x04") == "\x04"
    assert without_escape_sequences("x\x1bOPy\x1bz") == "xy"


def test_a_sequence_graph_given_by_path_takes_a_paste_in_one_call(onnx_paths, alice_text, capsys):
    from cli_helpers import run
    step_path, sequence_path = onnx_paths[0], onnx_paths[1]
    with_sequence = Autocompleter(step_path, sequence=sequence_path)
    assert with_sequence.backend.has_sequence_graph
    text = alice_text[2000:2300]
    assert_same_suggestions(with_sequence.complete(text, 3), Autocompleter(step_path).complete(text, 3))
    code, out, err = run(capsys, "complete", step_path, "Alice was beg", "--sequence", sequence_path)
    assert code == 0 and out.strip(), err
    with pytest.raises(CompactLMError, match="sequence graph goes with an .onnx step graph"):
        Autocompleter(tiny_model(), sequence=sequence_path)
