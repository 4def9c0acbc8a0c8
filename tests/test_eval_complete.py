"""`eval-complete`: the keystroke accounting on a model that knows the text, and the command's output and errors."""
import json

import numpy as np
import pytest

from compact_lm.autocomplete import Autocompleter, Suggestion, default_is_boundary
from compact_lm.complete_eval import ACCEPT_KEYSTROKES, simulate_typing, simulate_typing_side_by_side, word_spans
from compact_lm.vocab import Vocab
from cli_helpers import assert_one_line_error, run
from conftest import random_model


class OracleBackend:
    """Knows the text: after n characters (the start newline not counted) it gives text[n] probability 0.9."""

    def __init__(self, text, vocab):
        self.vocab, self.vocab_size = vocab, vocab.size
        self.ids = np.append(vocab.encode(text), 0)

    def initial_state(self, batch):
        return [(np.full((batch, 1), -1, dtype=np.int64),)]

    def step(self, token_ids, state):
        position = state[0][0] + 1
        log_probs = np.full((len(token_ids), self.vocab_size), np.log(0.1 / (self.vocab_size - 1)), np.float32)
        log_probs[np.arange(len(token_ids)), self.ids[np.minimum(position[:, 0], len(self.ids) - 1)]] = np.log(0.9)
        return log_probs, [(position,)]

    def run(self, token_ids, state):
        token_ids = np.asarray(token_ids)
        out = np.empty((*token_ids.shape, self.vocab_size), np.float32)
        for t in range(token_ids.shape[1]):
            out[:, t], state = self.step(token_ids[:, t], state)
        return out, state


def test_word_spans_need_a_boundary_after_them():
    assert word_spans("it's a well-known cat", default_is_boundary) == [(0, 4), (5, 6), (7, 17)]
    assert word_spans("  hi,  you. ", default_is_boundary) == [(2, 4), (7, 10)]
    assert word_spans("", default_is_boundary) == []


def test_a_model_that_knows_the_text_types_each_word_with_one_keystroke():
    text = "the cat sat, on it.\nend"
    vocab = Vocab.build(text)
    report = simulate_typing(Autocompleter(OracleBackend(text, vocab)), text, k=3)
    # five words accepted before their first letter (one keystroke each, which types the word and a space):
    # "the ", "cat ", "on " in one; "sat" and "it" in one, then "," and "." each typed over the automatic
    # space; the space after "sat,", the newline and the last word "end" (no boundary after it: not
    # completable) are typed
    assert report.words == 5 and report.chars == len(text)
    assert report.keystrokes == 5 * ACCEPT_KEYSTROKES + 2 + 1 + 1 + 3
    assert report.keystroke_savings == pytest.approx(1 - report.keystrokes / len(text))
    assert report.top1_accuracy == {"1": 1.0, "2": 1.0, "3": None}   # only "the", "cat", "sat" are > 1, 2 long
    assert report.topk_accuracy == {"1": 1.0, "2": 1.0, "3": None}
    assert set(report.latency_ms) == {"p50", "p90", "p99", "mean"}


class ScriptedCompleter:
    """A fake Autocompleter: after each typed text, the suggestions its script lists (probability 0.5 each)."""

    def __init__(self, script):
        self.script = script
        self.is_boundary = default_is_boundary

    def normalize(self, text):
        return text

    def session(self):
        completer = self

        class Session:
            text = ""

            def type(self, char):
                self.text += char

            def suggestions(self, k):
                return [Suggestion(t, 0.5) for t in completer.script.get(self.text, [])][:k]
        return Session()


def test_the_cost_model_on_a_scripted_completer():
    text = "hello world, ab\nxyzw/abc qq.\nend"
    script = {
        "": ["hello"],                         # accept: "hello " for 1 keystroke
        "hello w": ["x", "orld"],              # accept, then "," typed over the automatic space: 3 for "world,"
        "hello world, ": ["ab"],               # before a newline: 1 + 1 (delete the space) saves nothing: typed
        "hello world, a": ["b"],               # saves less than nothing: typed
        "hello world, ab\n": ["xyzw"],         # before "/": accept, delete the space, type "/": 3 for "xyzw/"
        "hello world, ab\nxyzw/a": ["bc"],     # "a" typed, then accept: 2 for "abc "
        "hello world, ab\nxyzw/abc ": ["x", "y", "qq"],   # "qq" is third: not among the top 2
        "hello world, ab\nxyzw/abc q": ["q"],  # accept + "." saves nothing: typed
        "hello world, ab\nxyzw/abc qq.\n": ["end"],   # the last word has no boundary after it: typed
    }
    report = simulate_typing(ScriptedCompleter(script), text, k=2)
    assert report.chars == 32 and report.words == 6
    # hello_ 1, world, 3, space 1, ab\n 3, xyzw/ 3, abc_ 2, qq. 3, \n 1, end 3
    assert report.keystrokes == 1 + 3 + 1 + 3 + 3 + 2 + 3 + 1 + 3 == 20
    assert report.keystroke_savings == pytest.approx(1 - 20 / 32)


def check_report(report):
    assert 0.0 <= report["keystroke_savings"] < 1.0
    for n in ("1", "2", "3"):
        assert 0.0 <= report["top1_accuracy"][n] <= report["topk_accuracy"][n] <= 1.0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p90"] <= report["latency_ms"]["p99"]


def test_eval_complete_json(tiny_model_path, alice_text, tmp_path, capsys):
    text = tmp_path / "typed.txt"
    text.write_text(alice_text[-3000:], encoding="utf-8")
    code, out, err = run(capsys, "eval-complete", tiny_model_path, "--text", text, "--limit", "400", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["chars"] == 400 and result["k"] == 3 and result["words"] > 40
    check_report(result)
    check_report(result["baseline"])
    assert result["baseline"]["chars"] == 400 and "Kneser-Ney" in result["baseline"]["name"]
    # two baselines with their sizes: the full 7-gram and the best n-gram within the model file's bytes
    assert result["model_bytes"] == tiny_model_path.stat().st_size
    full, matched = result["baseline"], result["matched_baseline"]
    check_report(matched)
    for baseline in (full, matched):
        assert {"order", "cutoff", "contexts", "ngrams", "bytes", "encoding"} <= set(baseline)
        assert baseline["bytes"] == 10 * baseline["contexts"] + 3 * baseline["ngrams"]
    assert full["order"] == 7 and full["cutoff"] == 1 and full["bytes"] > result["model_bytes"]
    assert matched["bytes"] <= result["model_bytes"] == matched["fit"]["budget_bytes"]
    assert matched["name"].startswith(f"{matched['order']}-gram")
    code, out, _ = run(capsys, "eval-complete", tiny_model_path, "--text", text, "--limit", "200", "--k", "1")
    assert code == 0 and "savings" in out and "full: 7-gram" in out and "size-matched: " in out


def test_eval_complete_needs_the_training_text_or_corpus(tmp_path, alice_text, capsys):
    random_model("gru", (8,), embed=4, text=alice_text[:5000]).save(tmp_path / "m.npz")
    (tmp_path / "typed.txt").write_text(alice_text[:300], encoding="utf-8")
    code, _, err = run(capsys, "eval-complete", tmp_path / "m.npz", "--text", tmp_path / "typed.txt")
    assert code == 1 and err.count("\n") == 1 and "give --corpus" in err
    (tmp_path / "corpus.txt").write_text(alice_text[:5000], encoding="utf-8")
    code, out, err = run(capsys, "eval-complete", tmp_path / "m.npz", "--text", tmp_path / "typed.txt",
                         "--corpus", tmp_path / "corpus.txt", "--json", "--order", "4")
    assert code == 0, err
    assert json.loads(out)["baseline"]["name"].startswith("4-gram")


def test_eval_complete_finds_the_training_text_missing_before_any_typing(tmp_path, alice_text, capsys, monkeypatch):
    import compact_lm.complete_eval as complete_eval
    monkeypatch.setattr(complete_eval, "simulate_typing", lambda *a, **k: pytest.fail("typed before finding the corpus"))
    model = random_model("gru", (8,), embed=4, text=alice_text[:5000], info={"train_config": {"corpus": ["gone.txt"]}})
    model.save(tmp_path / "m.npz")
    (tmp_path / "typed.txt").write_text(alice_text[:300], encoding="utf-8")
    code, _, err = run(capsys, "eval-complete", tmp_path / "m.npz", "--text", tmp_path / "typed.txt")
    assert_one_line_error(code, err, "the model was trained on gone.txt, which is not found here", "give --corpus FILE")


def test_eval_complete_without_baselines_needs_no_training_text(tmp_path, alice_text, capsys):
    random_model("gru", (8,), embed=4, text=alice_text[:5000]).save(tmp_path / "m.npz")
    (tmp_path / "typed.txt").write_text(alice_text[:300], encoding="utf-8")
    code, out, err = run(capsys, "eval-complete", tmp_path / "m.npz", "--text", tmp_path / "typed.txt", "--no-baseline",
                         "--json", "--quiet")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["chars"] == 300 and "baseline" not in result and "matched_baseline" not in result


@pytest.mark.parametrize("argv, fragment", [
    (["--text", "{tmp}/missing.txt"], "missing.txt does not exist"),
    (["--text", "{tmp}/empty.txt"], "empty"),
    (["--text", "{tmp}/empty.txt", "--k", "0"], "--k: must be >= 1"),
    (["--text", "{tmp}/empty.txt", "--limit", "-3"], "--limit: must be >= 1"),
])
def test_eval_complete_errors_are_one_line(tiny_model_path, tmp_path, capsys, argv, fragment):
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run(capsys, "eval-complete", tiny_model_path, *[a.format(tmp=tmp_path) for a in argv])
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err and fragment in err, err


@pytest.mark.parametrize("k", [3, 8])
def test_the_simulation_counts_what_a_real_session_takes(tiny_model_path, alice_text, k):
    """Replay the simulated person on a real Session: accept where it accepted, then the next character as
    the interface needs it (the accept's space, a free swap for attaching punctuation, else a backspace)."""
    from compact_lm.autocomplete import ATTACHING_PUNCTUATION
    completer = Autocompleter(str(tiny_model_path))
    text = completer.normalize(alice_text[5000:7000] + " Alice said 'tis (so), \"no\" said the Queen.\n")
    report = simulate_typing(completer, text, k)
    assert report.accepts, "the simulated person accepted nothing: the replay would check nothing"
    accept_at, session, keystrokes, position = dict(report.accepts), completer.session(), 0, 0
    while position < len(text):
        if position in accept_at:
            end = accept_at[position]
            assert text[position:end] in [s.text for s in session.suggestions(k)]   # only what was shown
            session.accept(text[position:end])
            keystrokes, position = keystrokes + 1, end
            if text[position] == " ":                    # the accept typed it
                position += 1
            elif text[position] not in ATTACHING_PUNCTUATION:
                session.backspace(1)                     # a newline or a quote: the automatic space goes
                keystrokes += 1
            continue
        session.type(text[position])
        keystrokes, position = keystrokes + 1, position + 1
    assert session.text == text
    assert keystrokes == report.keystrokes


def test_side_by_side_typing_reports_what_typing_alone_does(tiny_model_path, alice_text):
    from compact_lm.user_words import UserWords
    backend, text = Autocompleter(str(tiny_model_path)).backend, alice_text[5000:5400]
    alone = [simulate_typing(Autocompleter(backend, user_words=words), text) for words in (None, UserWords())]
    together = simulate_typing_side_by_side([Autocompleter(backend, user_words=words) for words in (None, UserWords())],
                                            text, block=7)
    for one, other in zip(alone, together):
        assert {**one.to_json(), "latency_ms": None} == {**other.to_json(), "latency_ms": None}
        assert one.accepts == other.accepts
    assert together[1].keystrokes != together[0].keystrokes   # learning changed something: the two were not mixed up


def test_side_by_side_typing_takes_turns_in_blocks_each_starting_a_turn_in_turn(tiny_model_path):
    typed = []

    class Recording(Autocompleter):
        def session(self, *args):
            session = super().session(*args)
            type_text = session.type
            session.type = lambda text: (typed.append(self.name), type_text(text))
            return session

    completers = [Recording(str(tiny_model_path)) for _ in range(2)]
    completers[0].name, completers[1].name = "a", "b"
    simulate_typing_side_by_side(completers, "the cat sat on the mat", block=5)   # 22 keys: positions 1-22 type
    assert "".join(typed) == "aaaa" + "bbbb" + "bbbbb" + "aaaaa" + "aaaaa" + "bbbbb" + "bbbbb" + "aaaaa" + "aaa" + "bbb"


def test_side_by_side_typing_types_each_completers_whole_text():
    """Normalization may change a text's length (lowercasing "İ" gives two code points): each typist types its own."""
    text = "İstanbul is big. İzmir is big too. "
    plain_vocab, lower_vocab = Vocab.build(text), Vocab.build(text, lowercase=True)
    completers = [Autocompleter(OracleBackend(text, plain_vocab)),
                  Autocompleter(OracleBackend(lower_vocab.normalize(text), lower_vocab))]
    for order in (completers, completers[::-1]):
        reports = simulate_typing_side_by_side(order, text, block=4)
        assert [r.chars for r in reports] == [simulate_typing(c, text).chars for c in order]
        assert [r.keystrokes for r in reports] == [simulate_typing(c, text).keystrokes for c in order]


@pytest.mark.parametrize("block", [0, -3, 1.5, True])
def test_side_by_side_typing_refuses_a_bad_block(tiny_model_path, block):
    from compact_lm.errors import CompactLMError
    with pytest.raises(CompactLMError, match="block must be a whole number >= 1"):
        simulate_typing_side_by_side([Autocompleter(str(tiny_model_path))], "the cat ", block=block)
