"""`compact-lm profile`: every figure for every kind of file, the outputs, the turn-taking, and one-line errors."""
import json
import os

import numpy as np
import onnx
import pytest

from compact_lm.autocomplete import default_is_boundary
from compact_lm.export import export_model
from compact_lm import load
from compact_lm.tools.profile import LATENCY_KINDS, ProfileConfig, profile_files
from compact_lm.tools.profile_probe import run_probe
from compact_lm.tools.profile_timing import completion_prefixes, latency_stats, measure_in_turns
from compact_lm.tools.quantize import quantize_model
from compact_lm.vocab import Vocab

from cli_helpers import assert_one_line_error, run
from conftest import random_model

TINY = ProfileConfig(step_calls=40, completions=8, keystrokes=20, turns=2, limit=300, probe_rounds=1)
TINY_ARGS = ["--step-calls", "40", "--completions", "8", "--keystrokes", "20", "--limit", "300", "--rounds", "1"]


@pytest.fixture(scope="module")
def variants(tiny_model_path, tmp_path_factory):
    """The tiny trained GRU as the four files profile compares: NumPy fp32 / int8, onnxruntime fp32 / int8."""
    folder = tmp_path_factory.mktemp("profile")
    model = load(tiny_model_path)
    quantized = quantize_model(model)
    quantized.save(folder / "int8.npz")
    export_model(model, folder / "fp32.onnx")
    export_model(quantized, folder / "int8.onnx")
    return [str(tiny_model_path), str(folder / "int8.npz"), str(folder / "fp32.onnx"), str(folder / "int8.onnx")]


@pytest.fixture(scope="module")
def report(variants, alice_text):
    return profile_files(variants, alice_text[-3000:], text_source="alice tail", config=TINY)


def test_every_variant_gets_every_figure(report, variants):
    kinds = [(v.runtime, v.precision) for v in report.variants]
    assert kinds == [("numpy", "fp32"), ("numpy", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    for v, path in zip(report.variants, variants):
        assert v.file_bytes == os.path.getsize(path)
        assert set(v.latency_ms) == set(LATENCY_KINDS)
        for stats in v.latency_ms.values():
            assert 0 < stats.p50 <= stats.p90 <= stats.p99
        calls = {kind: stats.calls for kind, stats in v.latency_ms.items()}
        assert calls == {"step_1": TINY.step_calls, "step_beam": TINY.step_calls, "complete": TINY.completions,
                         "keystroke": TINY.keystrokes}
        startup = v.startup
        assert startup["import_ms"] > 0 and 0 < startup["load_ms"] < startup["first_suggestion_ms"]
        assert startup["peak_rss_kb"] >= startup["runtime_rss_kb"] > 0
        assert set(v.speedup) == {*LATENCY_KINDS, "first_suggestion"} and all(s > 0 for s in v.speedup.values())
        assert 0 < v.bpc < 10 and v.typing["chars"] == 300
        assert 0 <= v.typing["keystroke_savings"] < 1
    assert report.reference == "model.npz" and all(s == 1.0 for s in report.variants[0].speedup.values())
    # the same weights in both runtimes score the same text alike (to float rounding, int8 included)
    assert report.variants[2].bpc == pytest.approx(report.variants[0].bpc, abs=1e-4)
    assert report.variants[3].bpc == pytest.approx(report.variants[1].bpc, abs=1e-4)
    assert report.baseline is not None and report.baseline["bpc"] > 0
    assert 0 <= report.baseline["typing"]["keystroke_savings"] < 1
    matched, smallest = report.baseline["matched"], min(report.variants, key=lambda v: v.file_bytes)
    assert report.baseline["bytes"] == 10 * report.baseline["contexts"] + 3 * report.baseline["ngrams"]
    assert matched["bytes"] <= smallest.file_bytes == matched["fit"]["budget_bytes"] and matched["matched_to"] == smallest.label
    assert matched["bpc"] > 0 and 0 <= matched["typing"]["keystroke_savings"] < 1


def test_speedup_is_the_ratio_of_medians(report):
    reference = report.variants[0]
    for v in report.variants:
        for kind in LATENCY_KINDS:
            assert v.speedup[kind] == pytest.approx(reference.latency_ms[kind].p50 / v.latency_ms[kind].p50)


def test_json_markdown_text_and_files(variants, tmp_path, capsys):
    code, out, err = run(capsys, "profile", *variants[:3], *TINY_ARGS, "--json", "--out", tmp_path / "out")
    assert code == 0, err
    result = json.loads(out)
    assert [v["label"] for v in result["variants"]] == ["model.npz", "int8.npz", "fp32.onnx"]
    assert result["text"].startswith("alice.txt") and result["reference"] == "model.npz"
    first = result["variants"][0]
    assert {"p50", "p90", "p99", "mean", "calls"} <= set(first["latency_ms"]["keystroke"])
    assert json.loads((tmp_path / "out" / "profile.json").read_text())["variants"][2]["runtime"] == "onnxruntime"
    assert {"bytes", "contexts", "ngrams", "order", "cutoff"} <= set(result["baseline"]["matched"]) <= set(result["baseline"]) | {"matched_to", "fit"}
    assert "| variant |" in (tmp_path / "out" / "profile.md").read_text()
    try:
        import matplotlib  # noqa: F401
        has_matplotlib = True
    except ImportError:
        has_matplotlib = False
    assert (tmp_path / "out" / "profile.png").exists() == has_matplotlib
    assert "profile: quality" in err   # progress lines go to stderr

    code, out, _ = run(capsys, "profile", variants[0], variants[2], *TINY_ARGS, "--markdown", "--no-baseline", "--quiet")
    assert code == 0 and "| fp32.onnx | onnxruntime | fp32 |" in out and "baseline" not in out
    code, out, err = run(capsys, "profile", variants[0], variants[3], *TINY_ARGS, "--quiet")
    assert code == 0 and err == ""
    assert "speed-up over model.npz" in out and "peak RSS MiB" in out and "7-gram" in out
    assert "size-matched baseline: " in out


def test_runners_take_turns_in_blocks():
    order = []

    def runner(name):
        def run(count):
            order.extend([name] * count)
            return [0.001] * count
        return run

    stats = measure_in_turns({"a": runner("a"), "b": runner("b")}, calls=6, turns=3)
    # one warm-up block each, then three rounds of one block each, alternating
    assert "".join(order) == "aa" + "bb" + "aabb" * 3
    assert stats["a"].calls == 6 and stats["b"].p50 == pytest.approx(1.0)


def test_latency_percentiles_are_ordered():
    stats = latency_stats(np.random.default_rng(0).exponential(1e-3, 500))
    assert stats.p50 <= stats.p90 <= stats.p99 and stats.calls == 500
    with pytest.raises(ValueError):
        latency_stats([])


def test_prefixes_end_inside_words_and_at_boundaries():
    text = "the cat sat on the mat. a dog ran off.\n"
    pairs = completion_prefixes(text, default_is_boundary, 6, context=10)
    kinds = [kind for _, kind in pairs]
    assert kinds.count("inside") == 3 and kinds.count("boundary") == 3
    for prefix, kind in pairs:
        assert 0 < len(prefix) <= 10 and text.find(prefix) >= 0
        assert default_is_boundary(prefix[-1]) == (kind == "boundary")


def test_start_up_probe_does_not_inherit_the_parents_memory(tiny_model_path):
    ballast = np.ones(40_000_000)   # 320 MB touched in this process: a child must not report it as its own peak
    result = run_probe(str(tiny_model_path), prefix="Alice was b")
    assert ballast[-1] == 1.0
    assert 0 < result["runtime_rss_kb"] <= result["peak_rss_kb"] < 200_000
    assert len(result["suggestions"]) == 3


def test_missing_and_unreadable_inputs(variants, tmp_path, capsys):
    code, _, err = run(capsys, "profile", variants[0], tmp_path / "nope.onnx", *TINY_ARGS)
    assert_one_line_error(code, err, "nope.onnx does not exist")
    code, _, err = run(capsys, "profile", tmp_path, *TINY_ARGS)
    assert_one_line_error(code, err, "is a folder")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    code, _, err = run(capsys, "profile", tmp_path / "junk.npz", *TINY_ARGS)
    assert_one_line_error(code, err, "junk.npz")
    code, _, err = run(capsys, "profile", variants[0], variants[0], *TINY_ARGS)
    assert_one_line_error(code, err, "is given twice")
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run(capsys, "profile", variants[0], "--text", tmp_path / "empty.txt", *TINY_ARGS)
    assert_one_line_error(code, err, "empty")
    code, _, err = run(capsys, "profile", variants[0], "--text", tmp_path / "none.txt", *TINY_ARGS)
    assert_one_line_error(code, err, "none.txt does not exist")


def test_onnx_without_compact_lm_metadata(variants, tmp_path, capsys):
    proto = onnx.load(variants[2])
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    code, _, err = run(capsys, "profile", variants[0], tmp_path / "bare.onnx", *TINY_ARGS)
    assert_one_line_error(code, err, "bare.onnx", "without compact-lm metadata")


def test_mixed_vocabularies_name_both_files(variants, tmp_path, capsys):
    vocab = Vocab(tuple(" .abcdefghijklmnopqrstuvwxyz"))
    random_model("gru", (8,), embed=4, vocab=vocab).save(tmp_path / "other.npz")
    code, _, err = run(capsys, "profile", variants[0], variants[2], tmp_path / "other.npz", *TINY_ARGS)
    assert_one_line_error(code, err, "other.npz has another vocabulary than", "model.npz", "entries")


def test_a_text_without_words(variants, tmp_path, capsys):
    (tmp_path / "dots.txt").write_text("..... ,,,, !!!")
    code, _, err = run(capsys, "profile", variants[0], "--text", tmp_path / "dots.txt", *TINY_ARGS)
    assert_one_line_error(code, err, "no word to complete")


def test_a_model_of_another_script_on_the_default_text_gets_a_note(tmp_path, capsys):
    random_model("gru", (8,), embed=4, text="Καλημέρα κόσμε, η θάλασσα. ").save(tmp_path / "greek.npz")
    code, _, err = run(capsys, "profile", tmp_path / "greek.npz", *TINY_ARGS, "--no-baseline")
    assert code == 0 and "are outside the model's vocabulary; give --text FILE" in err


def test_a_long_text_is_measured_on_its_start(variants, tmp_path, capsys, monkeypatch):
    import compact_lm.trainer as trainer
    monkeypatch.setattr(trainer, "EVAL_CHARS", 999)
    (tmp_path / "long.txt").write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    code, out, err = run(capsys, "profile", variants[0], "--text", tmp_path / "long.txt", *TINY_ARGS, "--no-baseline", "--json")
    report = json.loads(out)
    assert code == 0 and report["text_chars"] == 1000 and report["text"].startswith("the first 1,000 characters of ")
