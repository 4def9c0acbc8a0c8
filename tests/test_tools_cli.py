"""prune / quantize / sweep / info from the command line, and their one-line refusals."""
import json

import pytest

from compact_lm import load
from compact_lm.quantized import QuantizedModel

from cli_helpers import assert_one_line_error, run


def test_quantize_writes_a_smaller_int8_model(tmp_path, tiny_model_path, capsys):
    code, out, _ = run(capsys, "quantize", tiny_model_path, "--out", tmp_path / "q.npz")
    assert code == 0 and "int8 (7-bit weights)" in out
    assert isinstance(load(tmp_path / "q.npz"), QuantizedModel)
    info = json.loads(run(capsys, "info", tmp_path / "q.npz", "--json")[1])
    # a 16-unit model is mostly scales and float biases; the ratio for real sizes is in test_quantize.py
    assert info["quantized"] and info["param_bytes"] < 0.6 * info["fp32_bytes"]


def test_quantize_with_calibration_reports_both_bpc(tmp_path, tiny_model_path, small_corpus, capsys):
    code, out, _ = run(capsys, "quantize", tiny_model_path, "--calibration", small_corpus, "--out", tmp_path / "q.npz")
    assert code == 0 and "fp32" in out and "int8 weights with float arithmetic" in out


def test_prune_with_fine_tuning(tmp_path, tiny_model_path, small_corpus, capsys):
    code, out, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--finetune-steps", "10",
                         "--corpus", small_corpus, "--quiet", "--out", tmp_path / "p.npz")
    assert code == 0, err
    pruned = load(tmp_path / "p.npz")
    assert pruned.config.hidden_sizes == (8,) and "val" in pruned.info["metrics"]
    assert pruned.info["pruning"][0]["finetune_steps"] == 10


def test_prune_then_quantize_then_evaluate(tmp_path, tiny_model_path, small_corpus, capsys):
    assert run(capsys, "prune", tiny_model_path, "--hidden", "5", "--criterion", "magnitude", "--quiet",
               "--out", tmp_path / "p.npz")[0] == 0
    assert run(capsys, "quantize", tmp_path / "p.npz", "--out", tmp_path / "pq.npz")[0] == 0
    code, out, _ = run(capsys, "eval", tmp_path / "pq.npz", "--text", small_corpus, "--json")
    assert code == 0 and json.loads(out)["bpc"] > 0


def test_sweep_writes_table_and_json(tmp_path, tiny_model_path, capsys):
    code, out, err = run(capsys, "sweep", tiny_model_path, "--keeps", "1.0", "0.5", "--finetune-steps", "4",
                         "--quiet", "--out", tmp_path / "sweep")
    assert code == 0, err
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    assert [(r["keep"], r["precision"]) for r in rows] == [(1.0, "fp32"), (1.0, "int8"), (0.5, "fp32"), (0.5, "int8")]
    assert rows[3]["file_bytes"] < rows[0]["file_bytes"] and "| keep |" in out


def test_sweep_reports_the_held_out_test_split(tmp_path, tiny_model_path, capsys):
    """Fine-tuning picks checkpoints by val bpc, so the table also scores the test split, as training did."""
    code, _, err = run(capsys, "sweep", tiny_model_path, "--keeps", "1.0", "--quiet", "--out", tmp_path / "sweep")
    assert code == 0, err
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    assert rows[0]["test_bpc"] == pytest.approx(load(tiny_model_path).info["metrics"]["test"]["bpc"], rel=1e-9)


@pytest.mark.parametrize("args, fragment", [
    (["--keep", "0"], "--keep must be in (0, 1]"),
    (["--keep", "1.5"], "--keep must be in (0, 1]"),
    (["--hidden", "999"], "--hidden 999 for layer 0"),
    (["--hidden", "0"], "--hidden 0 for layer 0"),
    (["--keep", "0.5", "--criterion", "random"], "unknown criterion 'random'"),
])
def test_prune_refuses(tmp_path, tiny_model_path, capsys, args, fragment):
    code, _, err = run(capsys, "prune", tiny_model_path, *args, "--out", tmp_path / "p.npz")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "p.npz").exists()


def test_prune_refuses_missing_and_empty_calibration(tmp_path, tiny_model_path, capsys):
    code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--calibration", tmp_path / "none.txt",
                       "--out", tmp_path / "p.npz")
    assert_one_line_error(code, err, "--calibration", "none.txt does not exist")
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--calibration", tmp_path / "empty.txt",
                       "--out", tmp_path / "p.npz")
    assert_one_line_error(code, err, "--calibration", "empty")


def test_quantize_refuses_empty_calibration(tmp_path, tiny_model_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run(capsys, "quantize", tiny_model_path, "--calibration", tmp_path / "empty.txt",
                       "--out", tmp_path / "q.npz")
    assert_one_line_error(code, err, "--calibration", "empty")
    assert not (tmp_path / "q.npz").exists()


@pytest.mark.parametrize("command", [["prune", "--keep", "0.5"], ["quantize"]])
def test_output_equal_to_input_is_refused(tiny_model_path, capsys, command):
    before = tiny_model_path.read_bytes()
    code, _, err = run(capsys, command[0], tiny_model_path, *command[1:], "--out", tiny_model_path)
    assert_one_line_error(code, err, "--out must differ from the input")
    assert tiny_model_path.read_bytes() == before


@pytest.mark.parametrize("bad, message", [(["--criterion", "bogus"], "unknown criterion"),
                                          (["--keeps", "1.0", "0"], "--keeps: every fraction must be in (0, 1]")])
def test_a_refused_sweep_touches_no_file(tmp_path, tiny_model_path, capsys, bad, message):
    earlier = tmp_path / "sweep" / "keep1.0-fp32.npz"
    earlier.parent.mkdir()
    earlier.write_bytes(b"an earlier sweep's model")
    code, _, err = run(capsys, "sweep", tiny_model_path, *bad, "--quiet", "--out", tmp_path / "sweep")
    assert code != 0 and message in err and "Traceback" not in err
    assert earlier.read_bytes() == b"an earlier sweep's model"
    assert [p.name for p in earlier.parent.iterdir()] == ["keep1.0-fp32.npz"]


def test_a_refused_sweep_creates_no_folder(tmp_path, tiny_model_path, capsys):
    code, _, err = run(capsys, "sweep", tiny_model_path, "--criterion", "bogus", "--quiet", "--out", tmp_path / "new")
    assert_one_line_error(code, err, "unknown criterion")
    assert not (tmp_path / "new").exists()


def test_invalid_utf8_calibration_names_a_fix_that_quantize_has(tmp_path, tiny_model_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xffdef\n")
    code, _, err = run(capsys, "quantize", tiny_model_path, "--calibration", bad, "--out", tmp_path / "q.npz")
    assert_one_line_error(code, err, "bad.txt is not valid UTF-8 at byte 3", "save it as UTF-8")
    assert "--encoding-errors" not in err


def test_sweep_with_zero_rounds_touches_no_file(tmp_path, tiny_model_path):
    from compact_lm.errors import CompactLMError
    from compact_lm.tools.sweep import sweep
    with pytest.raises(CompactLMError, match="rounds must be >= 1"):
        sweep(tiny_model_path, tmp_path / "sweep", rounds=0, log=lambda message: None)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("command", [["prune", "--keep", "0.5", "--finetune-steps", "2"], ["sweep", "--keeps", "1.0"]])
def test_invalid_utf8_corpus_for_fine_tuning_names_a_real_fix(tmp_path, tiny_model_path, capsys, command):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xffdef\n" * 100)
    code, _, err = run(capsys, command[0], tiny_model_path, *command[1:], "--corpus", bad, "--quiet",
                       "--out", tmp_path / ("p.npz" if command[0] == "prune" else "sweep"))
    assert_one_line_error(code, err, "bad.txt is not valid UTF-8 at byte 3", "save it as UTF-8")
    assert not (tmp_path / "p.npz").exists() and not (tmp_path / "sweep").exists()


def test_prune_refuses_an_unknown_criterion_before_any_work(tmp_path, tiny_model_path, capsys):
    code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--criterion", "bogus",
                       "--min-char-count", "2", "--out", tmp_path / "p.npz")
    assert_one_line_error(code, err, "unknown criterion 'bogus'")


def test_sweep_refuses_a_repeated_keep(tmp_path, tiny_model_path, capsys):
    code, _, err = run(capsys, "sweep", tiny_model_path, "--keeps", "0.5", "0.5", "--quiet", "--out", tmp_path / "s")
    assert_one_line_error(code, err, "--keeps: 0.5 is given twice")


def test_an_int8_file_keeps_the_figures_quantize_measured(tmp_path, tiny_model_path, small_corpus, capsys):
    out = tmp_path / "q.npz"
    code, printed, _ = run(capsys, "quantize", tiny_model_path, "--calibration", small_corpus, "--out", out)
    assert code == 0
    info = json.loads(run(capsys, "info", out, "--json")[1])
    calibration = info["metrics"]["calibration"]
    assert f"int8 {calibration['bpc']:.4f} bpc" in printed and f"fp32 {calibration['fp32_bpc']:.4f} bpc" in printed
    assert calibration["text"] == str(small_corpus)
    assert f"calibration: {calibration['bpc']:.4f} bpc" in run(capsys, "info", out)[1]


def test_prune_caps_blas_threads_with_threads(tmp_path, tiny_model_path, capsys, monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits
    import compact_lm.tools.prune as prune
    seen = []
    original = prune.prune_model

    def record(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        return original(*args, **kwargs)
    monkeypatch.setattr(prune, "prune_model", record)
    with threadpool_limits(2):   # (not 1 already, whatever the machine: the command must set it)
        code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--threads", "1", "--quiet",
                           "--out", tmp_path / "p.npz")
        assert code == 0, err
        assert seen == [{1}] and {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == {2}


def test_a_training_text_recorded_relative_to_another_folder_asks_for_corpus(tmp_path, small_corpus, capsys, monkeypatch):
    """train records --corpus as given: from another folder, prune and profile say to give --corpus."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "text.txt").write_text(small_corpus.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "a")
    assert run(capsys, "train", "--corpus", "text.txt", "--steps", "1", "--hidden", "8", "--embed", "4",
               "--seq-len", "16", "--out", "r", "--quiet")[0] == 0
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "prune", "a/r/model.npz", "--keep", "0.5", "--out", "p.npz")
    assert_one_line_error(code, err, "trained on text.txt, which is not found here", "give --corpus FILE")
    code, _, err = run(capsys, "profile", "a/r/model.npz", "--limit", "50", "--step-calls", "10", "--completions", "5",
                       "--keystrokes", "10", "--rounds", "1")
    assert code == 0 and "note: no n-gram baseline (the model was trained on text.txt" in err and "give --corpus FILE" in err


def test_prune_into_a_folder_is_refused_before_any_work(tmp_path, tiny_model_path, capsys, monkeypatch):
    import compact_lm.tools.prune as prune
    monkeypatch.setattr(prune, "prune_model", lambda *a, **k: pytest.fail("pruned before checking --out"))
    (tmp_path / "runs").mkdir()
    code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--finetune-steps", "5", "--out", tmp_path / "runs")
    assert_one_line_error(code, err, "runs: it is a folder")
