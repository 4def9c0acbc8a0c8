"""`compact-lm export` and `compact-lm verify`: they work, and each bad input gets one line and a non-zero exit."""
import json

import onnx
import pytest

from compact_lm.cli import main
from compact_lm import load
from compact_lm.vocab import Vocab
from cli_helpers import assert_one_line_error, run
from conftest import random_model


@pytest.fixture(scope="module")
def exported_tiny(tiny_model_path, tmp_path_factory):
    """The tiny trained GRU exported as step and sequence graphs (through the CLI)."""
    folder = tmp_path_factory.mktemp("cli_export")
    code = main(["export", str(tiny_model_path), "--out", str(folder / "step.onnx"),
                 "--sequence", str(folder / "sequence.onnx")])
    assert code == 0
    return folder


def variant(tiny_model_path, tmp_path, **changes):
    """A model file like the tiny model but with other weights, sizes or vocabulary."""
    model = load(tiny_model_path)
    vocab = Vocab(changes.pop("chars")) if "chars" in changes else model.vocab
    sizes = {"cell": model.config.cell, "embed_size": model.config.embed_size,
             "hidden_sizes": model.config.hidden_sizes, **changes}
    other = random_model(sizes["cell"], sizes["hidden_sizes"], embed=sizes["embed_size"], vocab=vocab, seed=9)
    path = tmp_path / "other.npz"
    other.save(path)
    return path


def test_export_writes_step_and_sequence_graphs(exported_tiny, capsys):
    for name in ("step.onnx", "sequence.onnx"):
        onnx.checker.check_model(onnx.load(exported_tiny / name), full_check=True)


def test_verify_passes_and_reports_every_mode(tiny_model_path, exported_tiny, capsys):
    code, out, err = run(capsys, "verify", tiny_model_path, exported_tiny / "step.onnx",
                         "--sequence", exported_tiny / "sequence.onnx", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["ok"] and report["max_abs_diff"] <= 1e-4
    assert [(r["mode"], r["batch"]) for r in report["results"]] == [("step", 1), ("step", 4), ("sequence", 1)]
    assert all(r["top1_agreement"] == 1.0 and abs(r["bpc_difference"]) < 1e-4 for r in report["results"])


def test_verify_text_output_with_native_rnn(tiny_model_path, tmp_path, small_corpus, capsys):
    code, _, err = run(capsys, "export", tiny_model_path, "--out", tmp_path / "native.onnx", "--native-rnn")
    assert code == 0, err
    code, out, err = run(capsys, "verify", tiny_model_path, tmp_path / "native.onnx", "--text", small_corpus,
                         "--chars", 500)
    assert code == 0, err
    assert "500 characters" in out and "ok: max |delta log-prob|" in out


def test_verify_fails_when_the_weights_differ(tiny_model_path, exported_tiny, tmp_path, capsys):
    other = variant(tiny_model_path, tmp_path)
    assert run(capsys, "export", other, "--out", tmp_path / "other.onnx")[0] == 0
    code, out, err = run(capsys, "verify", tiny_model_path, tmp_path / "other.onnx")
    assert_one_line_error(code, err, "exceeds 0.0001", "does not match")
    assert "step" in out


@pytest.mark.parametrize("changes, fragment", [
    ({"hidden_sizes": (24,)}, "hidden_sizes: [16] vs [24]"),
    ({"chars": tuple("abcdefghij")}, "vocab"),
])
def test_verify_with_an_onnx_of_another_model(tiny_model_path, tmp_path, capsys, changes, fragment):
    other = variant(tiny_model_path, tmp_path, **changes)
    assert run(capsys, "export", other, "--out", tmp_path / "other.onnx")[0] == 0
    code, _, err = run(capsys, "verify", tiny_model_path, tmp_path / "other.onnx")
    assert_one_line_error(code, err, "exported from another model", fragment)


def test_export_of_a_file_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    code, _, err = run(capsys, "export", tmp_path / "notes.txt", "--out", tmp_path / "m.onnx")
    assert_one_line_error(code, err, "notes.txt", "not a valid model file")
    assert not (tmp_path / "m.onnx").exists()


def test_export_to_a_path_that_cannot_be_written(tiny_model_path, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    code, _, err = run(capsys, "export", tiny_model_path, "--out", tmp_path / "a_file" / "m.onnx")
    assert_one_line_error(code, err, "cannot write", "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_export_with_a_sequence_path_in_a_missing_folder_writes_nothing(tiny_model_path, tmp_path, capsys):
    code, _, err = run(capsys, "export", tiny_model_path, "--out", tmp_path / "step.onnx",
                       "--sequence", tmp_path / "missing" / "sequence.onnx")
    assert_one_line_error(code, err, "cannot write", "sequence.onnx")
    assert list(tmp_path.iterdir()) == []


def test_info_reads_an_exported_graph(exported_tiny, capsys):
    code, out, err = run(capsys, "info", exported_tiny / "step.onnx", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["graph"] == "step" and summary["opset"] == 17
    assert summary["tensors"]["l0/xg.table"]["shape"] == [summary["vocab_size"], 3 * summary["hidden_sizes"][0]]


@pytest.mark.parametrize("command", [["export", "--out", "again.onnx"], ["prune", "--keep", "0.5", "--out", "p.npz"],
                                     ["quantize", "--out", "q.npz"], ["sweep", "--out", "sweep"]])
def test_commands_that_need_the_npz_name_it_for_an_onnx_file(exported_tiny, tmp_path, capsys, command):
    name, *options = command
    options = [str(tmp_path / o) if o.startswith(("again", "p.", "q.", "sweep")) else o for o in options]
    code, _, err = run(capsys, name, exported_tiny / "step.onnx", *options)
    assert_one_line_error(code, err, "step.onnx is an exported ONNX graph", ".npz model file")
    assert list(tmp_path.iterdir()) == []


def test_eval_and_sample_run_an_exported_graph_as_its_npz(exported_tiny, tiny_model_path, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Alice was beginning to get very tired\n", encoding="utf-8")
    scores = []
    for model in (tiny_model_path, exported_tiny / "step.onnx"):
        code, out, err = run(capsys, "eval", model, "--text", text, "--json")
        assert code == 0, err
        scores.append(json.loads(out)["nats"])
    assert scores[1] == pytest.approx(scores[0], abs=1e-5)
    samples = [run(capsys, "sample", model, "--length", "20", "--seed", "3", "--temperature", "0.5")[1]
               for model in (tiny_model_path, exported_tiny / "step.onnx")]
    assert samples[0] == samples[1] and len(samples[0]) == 21


@pytest.mark.parametrize("damage, fragment", [
    (lambda data: data[: len(data) // 3], "not a valid ONNX model"),
    (lambda data: data[:-2], "truncated"),
    (lambda data: data[:100] + b"\xff" * 64 + data[164:], "not a valid ONNX model"),
    (lambda data: b"", "not a valid ONNX model"),
])
def test_verify_with_a_damaged_onnx(tiny_model_path, exported_tiny, tmp_path, capsys, damage, fragment):
    path = tmp_path / "damaged.onnx"
    path.write_bytes(damage((exported_tiny / "step.onnx").read_bytes()))
    code, _, err = run(capsys, "verify", tiny_model_path, path)
    assert_one_line_error(code, err, "damaged.onnx", fragment)


def test_verify_with_a_missing_onnx(tiny_model_path, tmp_path, capsys):
    code, _, err = run(capsys, "verify", tiny_model_path, tmp_path / "nope.onnx")
    assert_one_line_error(code, err, "nope.onnx does not exist")


def test_verify_with_a_text_too_short(tiny_model_path, exported_tiny, tmp_path, capsys):
    (tmp_path / "short.txt").write_text("abc")
    code, _, err = run(capsys, "verify", tiny_model_path, exported_tiny / "step.onnx", "--text", tmp_path / "short.txt")
    assert_one_line_error(code, err, "at least 8 characters")


def test_sequence_option_must_hold_a_sequence_graph(tiny_model_path, exported_tiny, capsys):
    code, _, err = run(capsys, "verify", tiny_model_path, exported_tiny / "step.onnx",
                       "--sequence", exported_tiny / "step.onnx")
    assert_one_line_error(code, err, "not a sequence graph")


def test_native_rnn_export_of_a_quantized_model_is_refused(tiny_model_path, tmp_path, capsys):
    from compact_lm.tools.quantize import quantize_model
    quantize_model(load(tiny_model_path)).save(tmp_path / "int8.npz")
    code, _, err = run(capsys, "export", tmp_path / "int8.npz", "--out", tmp_path / "m.onnx", "--native-rnn")
    assert_one_line_error(code, err, "int8.npz is a quantized model", "--native-rnn", "no integer variant")
    assert not (tmp_path / "m.onnx").exists()


def test_export_never_overwrites_the_input_model(tmp_path, capsys):
    path = tmp_path / "m.npz"
    random_model("gru", (6,), embed=4, text="abc de").save(path)
    before = path.read_bytes()
    for flags in (["--out", path], ["--out", tmp_path / "a.onnx", "--sequence", path]):
        code, _, err = run(capsys, "export", path, *flags)
        assert_one_line_error(code, err, "must differ from the input model")
    assert path.read_bytes() == before


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    """mkstemp makes 0600 files; a written model gets what open() would give it: 0666 & ~umask."""
    import stat
    from compact_lm.fileio import _UMASK, atomic_write
    atomic_write(tmp_path / "f.bin", lambda f: f.write(b"x"))
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o666 & ~_UMASK


def test_open_model_opens_every_kind_with_one_surface(tiny_model_path, exported_tiny, tmp_path):
    from compact_lm import open_model
    from compact_lm.tools.quantize import quantize_model
    quantize_model(open_model(tiny_model_path)).save(tmp_path / "q.npz")
    text = "Alice was beginning to get very tired"
    kinds = {path.name: open_model(path) for path in (tiny_model_path, tmp_path / "q.npz", exported_tiny / "step.onnx")}
    assert [(m.format, m.precision) for m in kinds.values()] == [("npz", "fp32"), ("npz", "int8"), ("onnx", "fp32")]
    assert len({m.vocab.size for m in kinds.values()}) == 1
    float_bpc, int8_bpc, onnx_bpc = (m.evaluate(text).bpc for m in kinds.values())
    assert onnx_bpc == pytest.approx(float_bpc, abs=1e-4) and int8_bpc == pytest.approx(float_bpc, abs=0.05)


def test_verify_names_an_npz_given_as_the_export(tiny_model_path, capsys):
    code, _, err = run(capsys, "verify", tiny_model_path, tiny_model_path)
    assert_one_line_error(code, err, "is an .npz model file, not an exported .onnx graph", "compact-lm export")


def test_info_describes_a_file_that_onnxruntime_refuses_to_run(exported_tiny, tmp_path, capsys):
    import numpy as np
    import onnx
    from onnx import numpy_helper
    proto = onnx.load(exported_tiny / "step.onnx")
    tensor = proto.graph.initializer[0]
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(proto, tmp_path / "nan.onnx")
    code, out, err = run(capsys, "info", tmp_path / "nan.onnx", "--json")
    assert code == 0 and json.loads(out)["tensors"][tensor.name]["shape"] == list(values.shape), err
    code, _, err = run(capsys, "complete", tmp_path / "nan.onnx", "Alice")
    assert_one_line_error(code, err, "nan.onnx", "NaN or infinite")


def test_verify_says_when_the_bundled_text_is_outside_the_vocabulary(tiny_model_path, exported_tiny, tmp_path, capsys):
    from compact_lm.export import export_model
    greek = random_model("gru", (8,), embed=4, text="αβγδεζηθικλμνξοπρστυφχψω ")
    greek.save(tmp_path / "greek.npz")
    export_model(greek, tmp_path / "greek.onnx")
    code, _, err = run(capsys, "verify", tmp_path / "greek.npz", tmp_path / "greek.onnx")
    assert code == 0 and "are outside" in err and "give --text FILE" in err
    code, _, err = run(capsys, "verify", tiny_model_path, exported_tiny / "step.onnx")   # an English model: no note
    assert code == 0 and "outside" not in err


@pytest.mark.parametrize("name", ["model.npz", "model.bin", "model"])
def test_an_onnx_file_opens_whatever_its_name(exported_tiny, tmp_path, capsys, name):
    from compact_lm.opener import open_model
    (tmp_path / name).write_bytes((exported_tiny / "step.onnx").read_bytes())
    opened = open_model(tmp_path / name)
    assert opened.vocab == open_model(exported_tiny / "step.onnx").vocab
    code, out, err = run(capsys, "complete", tmp_path / name, "Alice w")
    assert code == 0, err


@pytest.mark.parametrize("content", [b"\x08", b"\x08\xff\xfe garbage", b"\x08\x08\x12"])
def test_junk_that_begins_like_onnx_is_named_as_neither_model_kind(tmp_path, capsys, content):
    (tmp_path / "model.npz").write_bytes(content)
    code, _, err = run(capsys, "info", tmp_path / "model.npz")
    assert_one_line_error(code, err, "model.npz is not a valid model file (not an .npz, and not a valid ONNX model")
