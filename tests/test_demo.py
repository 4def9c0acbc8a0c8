"""`compact-lm demo` end to end with tiny sizes, and its refusal to overwrite a folder."""
import functools
import json

import pytest

import compact_lm.tools.demo as demo
from compact_lm import load
from compact_lm.quantized import QuantizedModel
from compact_lm.tools.profile import ProfileConfig

from cli_helpers import assert_one_line_error, run

TINY_DEMO = dict(steps=20, embed=8, hidden=16, batch=4, seq_len=16, eval_every=10, verify_chars=200, examples=2,
                 profile=ProfileConfig(step_calls=40, completions=8, keystrokes=20, turns=2, limit=200, probe_rounds=1))


@pytest.fixture
def tiny_demo(monkeypatch):
    """`compact-lm demo` with the sizes and budgets of TINY_DEMO (the command builds its config from DemoConfig)."""
    monkeypatch.setattr(demo, "DemoConfig", functools.partial(demo.DemoConfig, **TINY_DEMO))


def test_demo_end_to_end_then_refuse_then_force(tiny_demo, tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "demo", "--out", out, "--quiet")
    assert code == 0, err
    for stem in demo.MODELS:
        for suffix in (".npz", ".onnx", "-seq.onnx"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0
    assert isinstance(load(out / "pruned-int8.npz"), QuantizedModel)
    assert load(out / "pruned.npz").config.hidden_sizes == (8,)
    summary = json.loads((out / "demo.json").read_text())
    # 20 % of the characters of 20 steps of 4 streams, in fine-tuning steps of 64 streams: at least 1
    assert summary["status"] == "done" and summary["train_steps"] == 20 and summary["finetune_steps"] == 1
    assert [c["ok"] for c in summary["verify"]] == [True] * 4
    assert all(c["max_abs_diff"] <= c["tolerance"] for c in summary["verify"])
    rows = summary["results"]["rows"]
    assert [r[0] for r in rows[:8]] == [f"{s}{x}" for x in (".npz", ".onnx") for s in demo.MODELS]
    assert rows[8][0].startswith("baseline: 7-gram") and rows[9][0].startswith("size-matched baseline: ")
    assert int(rows[9][4].replace(",", "")) <= min(int(r[4].replace(",", "")) for r in rows[:8])
    assert len(summary["examples"]) == 2 and set(summary["examples"][0]["suggestions"]) == {"model.onnx", "pruned-int8.onnx"}
    assert len(json.loads((out / "profile.json").read_text())["variants"]) == 8
    for name in ("demo.md", "profile.md", "verify.json", "train/model.npz", "train/history.json"):
        assert (out / name).exists(), name
    assert not list(out.glob("compact-lm-finetune-*"))   # the fine-tuning run's temporary folder is gone
    assert "| variant |" in (out / "demo.md").read_text()
    # printed: the verification and results tables and the examples; stage lines with elapsed time on stderr
    assert "verification against NumPy" in stdout and "baseline: 7-gram" in stdout and "example completions" in stdout
    for stage in ("train a GRU", "evaluate:", "prune to keep 0.5", "export ONNX", "verify each export", "profile the 8"):
        assert stage in err
    assert "s] demo: done" in err

    marker = (out / "demo.json").read_text()
    code, _, err = run(capsys, "demo", "--out", out, "--quiet")
    assert_one_line_error(code, err, "already holds a demo", "--force")
    assert (out / "demo.json").read_text() == marker

    (out / "notes.txt").write_text("mine")   # --force replaces the demo's own files only
    code, _, err = run(capsys, "demo", "--out", out, "--quiet", "--force")
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "demo.json").read_text())["status"] == "done"


def test_demo_refuses_a_folder_with_other_files(tiny_demo, tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    for extra in ([], ["--force"]):
        code, _, err = run(capsys, "demo", "--out", tmp_path, *extra)
        assert_one_line_error(code, err, "not empty and holds no demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_demo_refuses_bad_settings_before_touching_the_folder(tmp_path, capsys):
    code, _, err = run(capsys, "demo", "--out", tmp_path / "d", "--minutes", "0")
    assert_one_line_error(code, err, "--minutes must be a positive number")
    assert not (tmp_path / "d").exists()
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "demo", "--out", tmp_path / "file")
    assert_one_line_error(code, err, "is a file, not a folder")


def test_demo_runs_on_the_users_corpus(tiny_demo, tmp_path, capsys):
    corpus = tmp_path / "mine.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog; the dog sleeps.\n" * 300, encoding="utf-8")
    code, stdout, err = run(capsys, "demo", "--corpus", corpus, "--out", tmp_path / "demo", "--quiet")
    assert code == 0, err
    assert "on mine.txt for 20 steps" in err
    model = load(tmp_path / "demo" / "pruned-int8.npz")
    assert model.info["train_config"]["corpus"] == [str(corpus)]
    assert set(model.vocab.chars) == set("the quick brown fox jumps over the lazy dog; the dog sleeps.\n")
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["config"]["corpus"] == [str(corpus)]


def test_a_large_corpus_is_scored_on_the_start_of_its_splits(tiny_demo, tmp_path, capsys, monkeypatch):
    import compact_lm.trainer as trainer
    monkeypatch.setattr(trainer, "EVAL_CHARS", 400)
    code, _, err = run(capsys, "demo", "--out", tmp_path / "demo", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert "val bpc on the validation split's first 400 characters, test text 401 characters" in summary["results"]["title"]
    assert summary["profile"]["text_chars"] == 401


def test_demo_refuses_a_missing_corpus_before_touching_the_folder(tmp_path, capsys):
    code, _, err = run(capsys, "demo", "--corpus", tmp_path / "nope.txt", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "nope.txt does not exist")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("content, message", [
    (b"ten chars\n", "has 10 characters; the demo trains 64 streams of 128 on the first 90 % and needs about 9,245"),
    (b"caf\xe9 " * 3000, "is not valid UTF-8 at byte 3 (line 1); save it as UTF-8"),
])
def test_demo_refuses_a_corpus_it_cannot_train_on_before_touching_the_folder(tmp_path, capsys, content, message):
    (tmp_path / "mine.txt").write_bytes(content)
    code, _, err = run(capsys, "demo", "--corpus", tmp_path / "mine.txt", "--out", tmp_path / "d")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "d").exists()


def test_examples_say_so_when_the_test_split_has_no_word_long_enough(tiny_model_path, tmp_path):
    from compact_lm.export import export_model
    from compact_lm.tools.demo_report import example_completions, example_lines
    export_model(load(tiny_model_path), tmp_path / "m.onnx")
    examples = example_completions([tmp_path / "m.onnx"], "a b. c d, e f! ", 4, k=3, beam=2)
    assert examples == [] and "(none: the test split has no word of more than 3 characters" in example_lines(examples)[1]
