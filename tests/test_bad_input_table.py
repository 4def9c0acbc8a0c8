"""docs/cli.md's "Bad input" table is true: every row runs through the CLI with the exit code and message it shows.

docs/cli.md is the source of the expected values (exit code, message excerpt); this file only knows how
to build each row's input, keyed by the row's first column, and fails if a row and a builder disagree.
"""
import re
from pathlib import Path

import onnx
import pytest

from compact_lm.export import export_model
from compact_lm.fileio import load_npz, save_npz
from compact_lm.tools.quantize import quantize_model
from cli_helpers import assert_one_line_error, run
from conftest import random_model

README = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
TEXT = "the quick brown fox jumps over the lazy dog\n" * 4


def readme_rows() -> list[tuple[str, int, str]]:
    """(bad input, exit code, message excerpt) of each row of the table under '## Bad input'."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("bad input", "") or set(cells[0]) <= set("-"):
            continue
        message = re.fullmatch(r"`(.*)`", cells[3])
        assert message, f"docs/cli.md row {cells[0]!r}: the message column must be one `code` span"
        rows.append((cells[0], int(cells[2]), message.group(1)))
    return rows


def _npy_header(descr: str, shape: tuple) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _replace_member(path: Path, name: str, data: bytes) -> None:
    import zipfile
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A small float model, its int8 version, its step graph and a text, in one folder."""
    folder = tmp_path_factory.mktemp("bad_input")
    model = random_model("gru", (8,), embed=4, text=TEXT)
    model.save(folder / "model.npz")
    quantize_model(model).save(folder / "int8.npz")
    export_model(model, folder / "model.onnx")
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    return folder


def _onnx_variant(files: Path, tmp: Path, name: str, change) -> Path:
    proto = onnx.load(files / "model.onnx")
    change(proto)
    (tmp / name).write_bytes(proto.SerializeToString())
    return tmp / name


def _external(proto: onnx.ModelProto) -> None:
    entry = proto.graph.initializer[0].external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"


def _custom_domain(proto: onnx.ModelProto) -> None:
    proto.graph.node[0].domain = "com.example"


def _copy(files: Path, tmp: Path, name: str) -> Path:
    (tmp / name).write_bytes((files / "model.npz").read_bytes())
    return tmp / name


def _terabyte(files: Path, tmp: Path) -> Path:
    path = _copy(files, tmp, "huge.npz")
    _replace_member(path, "head.bias.npy", _npy_header("<f4", (2 ** 38,)))
    return path


def _object_array(files: Path, tmp: Path) -> Path:
    path = _copy(files, tmp, "pickled.npz")
    _replace_member(path, "evil.npy", _npy_header("|O", (1,)) + b"\0" * 8)
    return path


def _truncated(files: Path, tmp: Path) -> Path:
    data = (files / "model.npz").read_bytes()
    (tmp / "cut.npz").write_bytes(data[: len(data) // 2])
    return tmp / "cut.npz"


def _earlier_int8_scheme(files: Path, tmp: Path) -> Path:
    """int8.npz as the scheme before activation tables wrote it: no table_scales / sigmoid_step / tanh_step."""
    arrays, meta = load_npz(files / "int8.npz")
    meta["int8"] = {k: v for k, v in meta["int8"].items() if k not in ("table_scales", "sigmoid_step", "tanh_step")}
    save_npz(tmp / "old-int8.npz", arrays, meta)
    return tmp / "old-int8.npz"


def _damaged_lexicon(files: Path, tmp: Path) -> Path:
    """model.npz whose lexicon claims one word where it holds many."""
    from compact_lm import load
    model = load(files / "model.npz")
    from compact_lm.lexicon import Lexicon
    from compact_lm.fileio import save_npz
    model.info["lexicon"] = {**Lexicon(["quick", "the"]).to_json(), "words": 1}
    save_npz(tmp / "lex.npz", model.arrays, model.metadata())   # (save refuses a damaged lexicon)
    return tmp / "lex.npz"


def _folder(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


# row -> argv builder (files: the module's good files; tmp: this test's folder)
BUILDERS = {
    "missing corpus": lambda f, t: ["train", "--corpus", t / "nope.txt", "--out", t / "run"],
    "empty corpus": lambda f, t: ["train", "--corpus", _write(t, "empty.txt", b""), "--out", t / "run"],
    "invalid UTF-8 corpus": lambda f, t: ["train", "--corpus", _write(t, "bad.txt", b"abc\xfe\xff"), "--out", t / "run"],
    "unknown cell": lambda f, t: ["train", "--corpus", f / "text.txt", "--cell", "transformer", "--out", t / "run"],
    "negative learning rate": lambda f, t: ["train", "--corpus", f / "text.txt", "--lr", "-1", "--out", t / "run"],
    "dropout above 1": lambda f, t: ["train", "--corpus", f / "text.txt", "--dropout", "1.5", "--out", t / "run"],
    "two budgets": lambda f, t: ["train", "--corpus", f / "text.txt", "--steps", "5", "--minutes", "1",
                                 "--out", t / "run"],
    "a model too large for a model file": lambda f, t: ["train", "--corpus", f / "text.txt", "--hidden", "100000000",
                                                        "--out", t / "run"],
    "a minimum count no character reaches": lambda f, t: ["train", "--corpus", f / "text.txt", "--min-count", "1000000",
                                                          "--out", t / "run"],
    "a learning rate that diverges": lambda f, t: ["train", "--corpus", f / "text.txt", "--lr", "1e308", "--steps", "3",
                                                   "--hidden", "8", "--embed", "4", "--seq-len", "8", "--batch", "2",
                                                   "--quiet", "--out", t / "run"],
    "missing model": lambda f, t: ["eval", t / "nope.npz", "--text", f / "text.txt"],
    "model that is not a zip": lambda f, t: ["eval", _write(t, "notes.npz", b"plain text"), "--text", f / "text.txt"],
    "truncated model": lambda f, t: ["eval", _truncated(f, t), "--text", f / "text.txt"],
    "array header declaring 1 TiB": lambda f, t: ["eval", _terabyte(f, t), "--text", f / "text.txt"],
    "pickled object array": lambda f, t: ["eval", _object_array(f, t), "--text", f / "text.txt"],
    "quantize twice": lambda f, t: ["quantize", f / "int8.npz", "--out", t / "qq.npz"],
    "more pruning rounds than units to remove": lambda f, t: ["prune", f / "model.npz", "--keep", "0.5", "--rounds",
                                                              "1000", "--calibration", f / "text.txt", "--out", t / "p.npz"],
    "prune a quantized model": lambda f, t: ["prune", f / "int8.npz", "--keep", "0.5", "--out", t / "p.npz"],
    "int8 model of an earlier scheme": lambda f, t: ["eval", _earlier_int8_scheme(f, t), "--text", f / "text.txt"],
    "model whose lexicon is damaged": lambda f, t: ["complete", _damaged_lexicon(f, t), "the qu"],
    "prune into a folder (refused before any work)": lambda f, t: [
        "prune", f / "model.npz", "--keep", "0.5", "--finetune-steps", "500", "--out", _folder(t, "runs")],
    "export over its input": lambda f, t: ["export", _copy(f, t, "same.npz"), "--out", t / "same.npz"],
    "export into a missing folder (writes neither file)": lambda f, t: ["export", f / "model.npz", "--out", t / "m.onnx",
                                                  "--sequence", t / "missing" / "seq.onnx"],
    "an .onnx where the .npz is needed": lambda f, t: ["quantize", f / "model.onnx", "--out", t / "q.npz"],
    ".onnx without metadata": lambda f, t: ["verify", f / "model.npz", _onnx_variant(
        f, t, "bare.onnx", lambda p: p.ClearField("metadata_props"))],
    "truncated .onnx": lambda f, t: ["verify", f / "model.npz", _write(
        t, "cut.onnx", (f / "model.onnx").read_bytes()[:300])],
    ".onnx with external data": lambda f, t: ["verify", f / "model.npz", _onnx_variant(f, t, "ext.onnx", _external)],
    ".onnx with a custom operator": lambda f, t: ["verify", f / "model.npz",
                                                  _onnx_variant(f, t, "custom.onnx", _custom_domain)],
    "export whose second file cannot be written (writes neither)": lambda f, t: [
        "export", f / "model.npz", "--out", t / "m.onnx", "--sequence", _folder(t, "folder")],
    "output that is not a regular file": lambda f, t: ["export", f / "model.npz", "--out", "/dev/null"],
    "empty output path": lambda f, t: ["export", f / "model.npz", "--out", ""],
    "quantize over its calibration text": lambda f, t: ["quantize", f / "model.npz", "--calibration",
                                                        _write(t, "t.txt", TEXT.encode()), "--out", t / "t.txt"],
    "sweep over its input model": lambda f, t: ["sweep", _copy(f, _folder(t, "runs"), "keep0.5-fp32.npz"),
                                                "--keeps", "0.5", "--corpus", f / "text.txt", "--out", t / "runs"],
    "train into a folder holding a model but no run": lambda f, t: [
        "train", "--corpus", f / "text.txt", "--steps", "1", "--out", _copy(f, _folder(t, "copied"), "model.npz").parent],
    "a site folder whose site.json is damaged": lambda f, t: [
        "web", f / "model.onnx", "--out", _write(_folder(t, "site"), "site.json",
                                                 b'{"kind": "compact-lm-site", "files": "ab"}').parent],
    "k <= 0": lambda f, t: ["complete", f / "model.onnx", "the qu", "-k", "0"],
    "user words that are not a user-words file": lambda f, t: ["repl", f / "model.onnx", "--user-words",
                                                               _write(t, "notes.json", b'{"notes": []}')],
}


def test_every_readme_row_has_a_builder_and_back():
    assert sorted(name for name, _, _ in readme_rows()) == sorted(BUILDERS)


@pytest.mark.parametrize("name, code, message", readme_rows(), ids=[row[0] for row in readme_rows()])
def test_readme_bad_input_row(name, code, message, files, tmp_path, capsys):
    got, _, err = run(capsys, *BUILDERS[name](files, tmp_path))
    assert got == code, err
    assert_one_line_error(got, err, message)
