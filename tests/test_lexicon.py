"""The lexicon: the words of the training split, stored in the model file, that word completion searches first."""
import base64
import json
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_lm import load
from compact_lm.autocomplete import Autocompleter
from compact_lm.backends import NumpyBackend
from compact_lm.errors import CompactLMError
from compact_lm.fileio import save_npz
from compact_lm.lexicon import Lexicon, default_is_boundary, word_spans
from compact_lm.opener import open_model
from cli_helpers import assert_one_line_error, run as run_cli
from test_autocomplete import brute_force, tiny_model

WORDS = ["a", "ab", "abb", "ba", "bab", "bbba"]   # over tiny_model's word characters a and b


def test_words_of_a_text_are_those_a_boundary_ends_away_from_unknowns():
    text = "don't stop, well-known x\ufffdy zz\ufffd \ufffdqq ok! last"
    assert Lexicon.from_text(text).words == sorted({"don't", "stop", "well-known", "ok"})


def test_words_of_a_long_text_match_word_spans(alice_text):
    spans = {alice_text[s:e] for s, e in word_spans(alice_text, default_is_boundary) if e - s <= 40}
    assert set(Lexicon.from_text(alice_text).words) == spans


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab\u00e9\ud7ff\ue000\U0001f600z\U0010ffff", min_size=1, max_size=5), max_size=25),
       st.text(alphabet="ab\u00e9\ud7ff\U0001f600z\U0010ffff", max_size=4))
def test_prefix_queries_agree_with_a_scan(words, prefix):
    lexicon = Lexicon(words)
    assert lexicon.starts_word(prefix) == any(w.startswith(prefix) for w in words)
    assert lexicon.next_chars(prefix) == {w[len(prefix)] for w in words if w.startswith(prefix) and len(w) > len(prefix)}
    assert Lexicon.from_json(json.loads(json.dumps(lexicon.to_json())), "f").words == sorted(set(words))


def _damaged(data: bytes, words: int) -> dict:
    return {"encoding": "front-zlib-base64", "words": words, "data": base64.b64encode(data).decode()}


@pytest.mark.parametrize("value, why", [
    ({"encoding": "gzip", "words": 1, "data": ""}, "expected encoding"),
    ({"encoding": "front-zlib-base64", "words": 1, "data": "!!"}, "damaged lexicon"),
    (_damaged(b"not zlib", 1), "damaged lexicon"),
    (_damaged(zlib.compress(b"0b\n0a"), 2), "not 2 sorted distinct words"),
    (_damaged(zlib.compress(b"0a\n0b"), 3), "not 3 sorted distinct words"),
    (_damaged(zlib.compress(b"0a\n2b"), 2), "not 2 sorted distinct words"),   # shares 2 of "a"'s 1 code point
    (_damaged(zlib.compress(b"0a\n1"), 2), "not 2 sorted distinct words"),    # nothing after what it shares
    (_damaged(zlib.compress(b"0a\n\n0b"), 3), "not 3 sorted distinct words"),
    (_damaged(zlib.compress(("0" + "a" * 50 + "\n" + chr(0x30 + 41) + "b").encode()), 2), "not 2 sorted"),   # shares 41
    (_damaged(zlib.compress(b"0a\n0b")[:-3], 2), "not the base64 of a zlib stream"),
    (_damaged(zlib.compress(b"0a\n0b") + b"junk!!", 2), "not the base64 of a zlib stream"),
    (_damaged(zlib.compress(b"0a\n0b"), -0.0), "not 0 sorted distinct words"),
    ({"encoding": "front-zlib-base64", "words": 2.5, "data": ""}, "expected encoding"),
    ({"encoding": "front-zlib-base64", "words": 3_000_000, "data": ""}, "words from 0 to 2,000,000"),
    (_damaged(zlib.compress(b"\xff\xfe"), 1), "damaged lexicon"),
])
def test_a_damaged_lexicon_is_one_line_naming_the_file(value, why):
    with pytest.raises(CompactLMError, match=why) as error:
        Lexicon.from_json(value, "model.onnx")
    assert str(error.value).startswith("model.onnx has a damaged lexicon") and "\n" not in str(error.value)


def test_a_lexicon_that_inflates_past_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr("compact_lm.lexicon.MAX_LEXICON_BYTES", 1000)
    with pytest.raises(CompactLMError, match="over 1,000 bytes inflated"):
        Lexicon.from_json(_damaged(zlib.compress(b"a" * 5000), 1), "f")


def _completer(words, **options):
    model = tiny_model("gru")
    backend = NumpyBackend(model)
    # a beam as wide as every unfinished word makes the search exhaustive (as in test_autocomplete)
    return model, backend, Autocompleter(backend, beam=16, max_chars=5, lexicon=Lexicon(words), **options)


@pytest.mark.parametrize("prefix", ["", "a", "b", "ab ", "ba. b"])
def test_lexicon_words_are_chosen_first_then_the_other_words_and_shown_most_likely_first(prefix):
    model, backend, completer = _completer(WORDS)
    typed = prefix.split(" ")[-1].split(".")[-1]
    every = brute_force(backend, model.vocab, prefix, 5)   # most likely first
    inside = [text for _, text in every if typed + text in WORDS]
    outside = [text for _, text in every if typed + text not in WORDS]
    chosen = set((inside + outside)[:4])
    got = [s.text for s in completer.complete(prefix, k=4)]
    assert got == [text for _, text in every if text in chosen]


def test_a_word_typed_outside_the_lexicon_is_completed_by_the_model_alone():
    _, backend, completer = _completer(WORDS)
    plain = Autocompleter(backend, beam=16, max_chars=5, lexicon=False)
    assert completer.complete("aa", k=3) == plain.complete("aa", k=3)   # no lexicon word starts with "aa"
    assert [s.text for s in completer.complete("b", k=3)] == ["a", "ab", "bba"] != [s.text for s in plain.complete("b", k=3)]


def test_sessions_search_the_lexicon_as_complete_does():
    _, _, completer = _completer(WORDS)
    session = completer.session()
    for prefix in ["b", "ba", "ba ", "ba a"]:
        session.backspace(len(session.text))
        session.type(prefix)
        assert session.suggestions(3) == completer.complete(prefix, k=3)


def test_other_boundaries_go_without_the_models_lexicon(tiny_model_path):
    assert Autocompleter(tiny_model_path).lexicon is not None
    assert Autocompleter(tiny_model_path, boundaries=" \n").lexicon is None


def test_training_saves_the_words_of_the_training_split(tiny_model_path):
    model = load(tiny_model_path)
    train = model.vocab.decode(model.vocab.encode(open(model.info["train_config"]["corpus"][0], encoding="utf-8").read()))
    train = train[:int(round(len(train) * model.info["train_config"]["split"][0]))]
    assert model.lexicon.words == Lexicon.from_text(train).words and len(model.lexicon) > 100


def test_quantize_and_export_carry_the_lexicon(tiny_model_path, tiny_onnx_path, tmp_path):
    from compact_lm.tools.quantize import quantize_model
    words = load(tiny_model_path).lexicon.words
    quantized = quantize_model(load(tiny_model_path))
    quantized.save(tmp_path / "q.npz")
    assert open_model(tmp_path / "q.npz").lexicon.words == words
    assert open_model(tiny_onnx_path).lexicon.words == words


def test_dropping_characters_drops_the_words_that_hold_them(tiny_model_path, alice_text):
    from compact_lm.tools.prune_vocab import character_counts, drop_rare_characters
    model = load(tiny_model_path)
    counts = character_counts(model, model.vocab.encode(alice_text))
    smaller, dropped = drop_rare_characters(model, counts, 40, np.zeros(0, np.int64))
    assert dropped and len(smaller.lexicon) < len(model.lexicon)
    assert all(set(w).isdisjoint(dropped) for w in smaller.lexicon.words)
    assert set(smaller.lexicon.words) == {w for w in model.lexicon.words if set(w).isdisjoint(dropped)}


def test_a_model_file_with_a_damaged_lexicon_is_refused_in_one_line(tiny_model_path, tmp_path, capsys):
    model = load(tiny_model_path)
    model.info["lexicon"] = {**model.info["lexicon"], "words": 1}
    save_npz(tmp_path / "bad.npz", model.arrays, model.metadata())   # (save refuses a damaged lexicon)
    code, _, err = run_cli(capsys, "complete", tmp_path / "bad.npz", "Alice was b")
    assert_one_line_error(code, err, str(tmp_path / "bad.npz"), "has a damaged lexicon")


def test_the_last_code_point_ends_the_scan():
    import signal
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("next_chars does not end"))
    signal.alarm(5)
    try:
        lexicon = Lexicon(["x\U0010ffff", "x\U0010ffffa", "xa", "y"])
        assert lexicon.next_chars("x") == {"a", "\U0010ffff"} and lexicon.next_chars("") == {"x", "y"}
    finally:
        signal.alarm(0)


def test_a_damaged_lexicon_is_read_only_when_used(tiny_model_path, tmp_path, capsys):
    model = load(tiny_model_path)
    model.info["lexicon"] = {**model.info["lexicon"], "words": 1}
    save_npz(tmp_path / "bad.npz", model.arrays, model.metadata())   # (save refuses a damaged lexicon)
    code, out, _ = run_cli(capsys, "complete", tmp_path / "bad.npz", "Alice was b", "--no-lexicon")
    assert code == 0 and out


def test_a_null_lexicon_is_none(tiny_model_path):
    model = load(tiny_model_path)
    model.info["lexicon"] = None
    assert model.lexicon is None and Autocompleter(model).lexicon is None


def test_the_users_words_keep_the_lexicon_words_before_the_fill():
    from compact_lm.user_words import UserWords
    _, _, completer = _completer(["ba", "zz"], user_words=UserWords())
    alone = [s.text for s in completer.complete("b", k=3)]
    completer.user_words.learn("bbbbb")
    mixed = [s.text for s in completer.complete("b", k=3)]
    assert "a" in alone and len(alone) == 3   # the one lexicon word and two of the fill
    fill = set(alone) - {"a"}
    assert {"a", "bbbb"} <= set(mixed) and len(set(mixed) & fill) == 1   # the user's word is chosen before the fill


def test_setting_another_lexicon_forgets_the_old_ones_prefixes():
    _, backend, completer = _completer(["ba"])
    completer.complete("b", k=2)
    completer.lexicon = Lexicon(["bb"])
    fresh = Autocompleter(backend, beam=16, max_chars=5, lexicon=Lexicon(["bb"]))
    assert completer.complete("b", k=2) == fresh.complete("b", k=2)


def test_a_run_resumed_from_a_state_without_a_lexicon_saves_one(tmp_path, small_corpus):
    from compact_lm.fileio import load_npz, save_npz
    from compact_lm.trainer import STATE_FILE, Trainer
    from conftest import tiny_config
    config = tiny_config(small_corpus, steps=20, eval_every=10)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    for _ in range(10):
        trainer.train_step()
    trainer.evaluate()
    arrays, meta = load_npz(tmp_path / "run" / STATE_FILE, "state")
    meta["best_info"].pop("lexicon", None)   # (states no longer hold it; one saved before lexicons never did)
    save_npz(tmp_path / "run" / STATE_FILE, arrays, meta)
    Trainer(config, tmp_path / "run", resume=True, progress=False)   # rewrites model.npz from the state's best
    assert load(tmp_path / "run" / "model.npz").lexicon.words == trainer.current_model().lexicon.words


def test_a_damaged_lexicon_is_not_copied_into_new_files(tiny_model_path, tmp_path, capsys):
    model = load(tiny_model_path)
    model.info["lexicon"] = {**model.info["lexicon"], "words": 1}
    save_npz(tmp_path / "bad.npz", model.arrays, model.metadata())   # as a hand-edited file would be
    for argv in (["quantize", tmp_path / "bad.npz", "--out", tmp_path / "q.npz"],
                 ["export", tmp_path / "bad.npz", "--out", tmp_path / "bad.onnx"]):
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, "bad.npz has a damaged lexicon")
    assert not (tmp_path / "q.npz").exists() and not (tmp_path / "bad.onnx").exists()


def test_a_training_text_with_too_many_words_gives_a_model_without_a_lexicon(tmp_path, small_corpus, monkeypatch):
    from compact_lm.trainer import Trainer
    from conftest import tiny_config
    monkeypatch.setattr("compact_lm.lexicon.MAX_LEXICON_WORDS", 10)
    notes = []
    result = Trainer(tiny_config(small_corpus, steps=5), tmp_path / "run", progress=False, log=notes.append).run()
    assert result.model.lexicon is None and load(tmp_path / "run" / "model.npz").lexicon is None
    assert any("more than a lexicon holds" in note for note in notes)


def test_a_search_keeps_the_lexicon_it_started_with():
    model, backend, completer = _completer(WORDS)
    want = completer.complete("b", k=3)

    class Swapping:   # drops the lexicon while the search steps (as another thread may)
        vocab, vocab_size = backend.vocab, backend.vocab_size
        initial_state, run = backend.initial_state, backend.run

        def step(self, ids, state):
            if len(ids) > 1:   # a search's step (the prefix's own is one id)
                completer.lexicon = None
            return backend.step(ids, state)
    completer.backend = Swapping()
    completer.lexicon = Lexicon(WORDS)
    assert completer.complete("b", k=3) == want and completer.lexicon is None


def test_long_words_share_at_most_forty_code_points_and_come_back():
    words = ["a" * 60, "a" * 60 + "b", "a" * 45 + "c", "b"]
    value = Lexicon(words).to_json()
    assert Lexicon.from_json(value, "f").words == sorted(words)
    front = zlib.decompress(base64.b64decode(value["data"])).decode().split("\n")
    assert max(ord(line[0]) - 0x30 for line in front) == 40


def test_fits_measures_what_the_reader_inflates(monkeypatch):
    monkeypatch.setattr("compact_lm.lexicon.MAX_LEXICON_BYTES", 1000)
    lexicon = Lexicon([chr(0x4E00 + i) + "abcdef" for i in range(100)])   # nothing shared: a byte more per word
    assert not lexicon.fits()
    with pytest.raises(CompactLMError, match="over 1,000 bytes"):
        Lexicon.from_json(lexicon.to_json(), "f")
    assert Lexicon(lexicon.words[:90]).fits() and Lexicon.from_json(Lexicon(lexicon.words[:90]).to_json(), "f")


@pytest.mark.parametrize("words", [[""], ["a", "b\nc"]])
def test_a_lexicon_refuses_words_no_file_could_hold(words):
    with pytest.raises(CompactLMError, match="non-empty and hold no newline"):
        Lexicon(words)


def test_the_boundary_answers_stay_right_and_bounded_past_the_remembered_characters():
    import unicodedata
    from compact_lm import lexicon
    chars = [chr(c) for c in range(0x20, 0x20 + 2 * lexicon.CACHED_BOUNDARY_CHARS)]
    for _ in range(2):   # asked twice: the second time from the table where remembered
        for char in chars:
            expected = char not in "'\u2019-" and (char.isspace() or unicodedata.category(char)[0] in "PSZ"
                                                   or unicodedata.category(char) == "Cc"
                                                   or (unicodedata.category(char) == "Cn" and lexicon._newer_boundary(char)))
            assert lexicon.default_is_boundary(char) == expected, repr(char)
    assert len(lexicon._BOUNDARY) <= lexicon.CACHED_BOUNDARY_CHARS


def test_an_emoji_newer_than_this_python_ends_a_word():
    # U+1FA77 (pink heart, Unicode 15) is unassigned in Python 3.11's unicodedata; JavaScript's tables know it
    assert word_spans("love you\U0001FA77 so", default_is_boundary) == [(0, 4), (5, 8)]


def test_a_dash_typed_as_hyphens_makes_no_lexicon_word():
    text = "Darcy--that mad-- see- -and rock-'n'-roll well-known don't 'tis goin' end "
    assert Lexicon.from_text(text).words == ["'tis", "don't", "end", "goin'", "rock-'n'-roll", "well-known"]
