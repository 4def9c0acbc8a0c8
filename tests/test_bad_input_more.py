"""More bad input, each a one-line error (or a right figure), never a traceback: model metadata of the wrong
type, numbers too large for a float, non-finite weights, n-gram orders out of range, texts without words,
and web/compact_lm.js refusing the same files in the same words."""
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from compact_lm.errors import CompactLMError
from compact_lm.export import export_model
from compact_lm.fileio import load_npz
from cli_helpers import assert_one_line_error, run
from conftest import WEB, node_with_runtime, random_model

TEXT = "the quick brown fox jumps over the lazy dog\n" * 4
BIG = 10 ** 400   # a whole number no float holds


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A small float model, its step graph and a text, in one folder."""
    folder = tmp_path_factory.mktemp("bad_input_more")
    model = random_model("gru", (8,), embed=4, text=TEXT)
    model.save(folder / "model.npz")
    export_model(model, folder / "model.onnx")
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    return folder


def _npz_variant(files: Path, path: Path, metadata_text: str | None = None, change=None, arrays=None) -> Path:
    """model.npz with its metadata changed by `change(meta)` or replaced by `metadata_text`, arrays by `arrays`."""
    loaded, meta = load_npz(files / "model.npz")
    if change is not None:
        change(meta)
    text = metadata_text if metadata_text is not None else json.dumps(meta)
    np.savez(path, **(arrays or loaded), metadata=np.frombuffer(text.encode("utf-8"), dtype=np.uint8))
    return path


def _onnx_variant(files: Path, path: Path, **props: str) -> Path:
    """model.onnx with metadata_props replaced or added (each value a JSON text; metadata_keys lists them all)."""
    proto = onnx.load(files / "model.onnx")
    values = {p.key: p.value for p in proto.metadata_props}
    values.update(props)
    values["metadata_keys"] = json.dumps(sorted(set(json.loads(values["metadata_keys"])) | set(props)))
    del proto.metadata_props[:]
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    path.write_bytes(proto.SerializeToString())
    return path


def _python_errors(read, paths: list[Path]) -> list[str]:
    """The one-line CompactLMError that read(path) raises for each file."""
    errors = []
    for path in paths:
        with pytest.raises(CompactLMError) as caught:
            read(path)
        errors.append(str(caught.value))
    return errors


def _javascript_errors(script: str, paths: list[Path]) -> list[str]:
    """What web/compact_lm.js says of each file: `script` (a module body, may await) gets `path`, prints one line."""
    body = ("import { readFileSync } from 'node:fs';\n"
            "import * as ort from 'onnxruntime-node';\n"
            "import { Autocompleter, UserWords, checkedMetadata, readMetadataProps } from './compact_lm.js';\n"
            "for (const path of process.argv.slice(1)) {\n"
            f"  try {{ {script}; console.log('accepted'); }} catch (error) {{ console.log(error.message); }}\n"
            "}\n")
    done = subprocess.run([node_with_runtime(), "--input-type=module", "-e", body, *map(str, paths)], cwd=WEB,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# ------------------------------------------------------------------------------------- A: metadata types
WRONG_INFO = [("steps", "many"), ("steps", -1), ("steps", 1.5), ("chars_seen", "x"), ("metrics", []),
              ("metrics", None), ("metrics", {"val": {"bpc": "x"}}), ("metrics", {"val": {"bpc": 10 ** 400}}),
              ("quantization", []),
              ("quantization", {"source_params": "x"}), ("pruning", 3), ("train_config", "gru")]


@pytest.mark.parametrize("key, value", WRONG_INFO, ids=lambda v: json.dumps(v))
def test_info_names_the_npz_and_a_metadata_key_of_the_wrong_type(files, tmp_path, capsys, key, value):
    path = _npz_variant(files, tmp_path / "m.npz", change=lambda meta: meta.update({key: value}))
    code, _, err = run(capsys, "info", path)
    assert_one_line_error(code, err, f"{path} has invalid metadata", f"'{key}'")


def test_info_json_refuses_a_quantization_that_is_no_object(files, tmp_path, capsys):
    path = _npz_variant(files, tmp_path / "m.npz", change=lambda meta: meta.update(quantization=[]))
    code, _, err = run(capsys, "info", "--json", path)
    assert_one_line_error(code, err, str(path), "'quantization' must be an object")


@pytest.mark.parametrize("key, value", WRONG_INFO, ids=lambda v: json.dumps(v))
def test_info_names_the_onnx_and_a_metadata_key_of_the_wrong_type(files, tmp_path, capsys, key, value):
    path = _onnx_variant(files, tmp_path / "m.onnx", **{key: json.dumps(value)})
    code, _, err = run(capsys, "info", path)
    assert_one_line_error(code, err, f"{path} has invalid compact-lm metadata", f"'{key}'")


def test_metadata_of_the_right_types_still_opens(files, tmp_path, capsys):
    info = {"steps": 3.0, "metrics": {"val": {"bpc": 2.5}, "elapsed_s": 1.0, "calibration": {"text": "t.txt"}},
            "quantization": {"source_params": 10}, "pruning": [], "train_config": {"cell": "gru"}}
    path = _npz_variant(files, tmp_path / "m.npz", change=lambda meta: meta.update(info))
    code, out, _ = run(capsys, "info", path)
    assert code == 0 and "val: 2.5000 bpc" in out


# ------------------------------------------------------------------------------- B: huge and deep numbers
def test_an_npz_whose_metadata_holds_a_5000_digit_integer_is_one_line(files, tmp_path, capsys):
    meta_text = json.dumps(load_npz(files / "model.npz")[1]).replace('"steps": 0', '"steps": 1' + "0" * 5000)
    path = _npz_variant(files, tmp_path / "m.npz", metadata_text=meta_text)
    code, _, err = run(capsys, "info", path)
    assert_one_line_error(code, err, str(path), "not valid JSON")


def test_an_onnx_whose_metadata_holds_a_5000_digit_integer_names_the_key(files, tmp_path, capsys):
    path = _onnx_variant(files, tmp_path / "m.onnx", steps="1" + "0" * 5000)
    code, _, err = run(capsys, "info", path)
    assert_one_line_error(code, err, str(path), "'steps' must be a whole number from 0 to 2^53")


def test_an_onnx_whose_lexicon_is_nested_100000_deep_is_one_line(files, tmp_path, capsys):
    path = _onnx_variant(files, tmp_path / "m.onnx", lexicon="[" * 100_000 + "]" * 100_000)
    code, _, err = run(capsys, "eval", path, "--text", files / "text.txt")
    assert_one_line_error(code, err, str(path), "nested too deeply")


# ------------------------------------------------------------------------------------ C: user-words numbers
def _user_words(path: Path, clock=10, **entry) -> Path:
    """A user-words file holding "quokka"; `entry` overrides its count, last or weight; the numbers written as
    Python spells them (so a huge int stays an integer in the JSON text)."""
    fields = {"count": 1, "last": 1, "weight": 1, **entry}
    words = ", ".join(f'"{name}": {value}' for name, value in fields.items())
    path.write_text('{"format": "compact-lm-user-words", "version": 1, "clock": %s, "words": {"quokka": {%s}}}'
                    % (clock, words), encoding="utf-8")
    return path


HUGE_USER_WORDS = {"clock": dict(clock=BIG), "count": dict(count=BIG), "last": dict(last=BIG),
                   "weight": dict(weight=BIG), "weight-float": dict(weight=1e308)}


@pytest.mark.parametrize("name", HUGE_USER_WORDS)
def test_complete_refuses_user_words_with_a_number_too_large(files, tmp_path, capsys, name):
    path = _user_words(tmp_path / "words.json", **HUGE_USER_WORDS[name])
    code, _, err = run(capsys, "complete", files / "model.npz", "the qu", "--user-words", path)
    assert_one_line_error(code, err, f"user words {path} is damaged", "clock" if name == "clock" else "quokka")


def test_javascript_refuses_user_words_with_numbers_too_large_in_pythons_words(tmp_path):
    from compact_lm.user_words import UserWords
    paths = [_user_words(tmp_path / f"{name}.json", **change) for name, change in HUGE_USER_WORDS.items()]
    python = _python_errors(UserWords, paths)
    script = "UserWords.fromJSON(readFileSync(path, 'utf8'), {}, `user words ${path}`)"
    assert _javascript_errors(script, paths) == python


# ------------------------------------------------------------------------------- D: non-finite weights
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_an_npz_with_non_finite_weights_is_refused_naming_the_array(files, tmp_path, capsys, value):
    arrays = dict(load_npz(files / "model.npz")[0])
    arrays["head.bias"] = arrays["head.bias"].copy()
    arrays["head.bias"][1] = value
    path = _npz_variant(files, tmp_path / "m.npz", arrays=arrays)
    code, _, err = run(capsys, "eval", path, "--text", files / "text.txt")
    assert_one_line_error(code, err, str(path), "head.bias holds NaN or infinite values")


# ------------------------------------------------------------------------------------ E: n-gram order
def test_eval_complete_refuses_an_order_too_high_before_typing(files, capsys):
    code, _, err = run(capsys, "eval-complete", files / "model.npz", "--text", files / "text.txt", "--order", "200")
    assert_one_line_error(code, err, "--order 200 is too high", "(at most")


def test_an_ngram_order_too_high_for_a_float_is_a_clear_error():
    from compact_lm.ngram import NgramBackend
    from compact_lm.vocab import Vocab
    with pytest.raises(CompactLMError, match="order 1000 is too high"):
        NgramBackend(np.arange(2000) % 5, Vocab.build("abcd"), order=1000)


# ---------------------------------------------------------------------------- F: .onnx vocabulary length
def test_an_onnx_whose_vocab_is_shorter_than_vocab_size_is_refused(files, tmp_path, capsys):
    vocab = json.loads({p.key: p.value for p in onnx.load(files / "model.onnx").metadata_props}["vocab"])
    path = _onnx_variant(files, tmp_path / "m.onnx", vocab=json.dumps(vocab[:-3]))
    code, _, err = run(capsys, "eval", path, "--text", files / "text.txt")
    assert_one_line_error(code, err, str(path), f"vocabulary has {len(vocab) - 3} entries, the config says {len(vocab)}")


def test_javascript_refuses_the_onnx_metadata_python_refuses_in_its_words(files, tmp_path):
    from compact_lm.onnx_format import read_metadata
    vocab = json.loads({p.key: p.value for p in onnx.load(files / "model.onnx").metadata_props}["vocab"])
    cases = {"short-vocab": {"vocab": json.dumps(vocab[:-3])}, "huge-steps": {"steps": "1" + "0" * 5000},
             **{f"{key}-{i}": {key: json.dumps(value)} for i, (key, value) in enumerate(WRONG_INFO)}}
    paths = [_onnx_variant(files, tmp_path / f"{name}.onnx", **props) for name, props in cases.items()]
    python = _python_errors(read_metadata, paths)
    script = "checkedMetadata(path, readMetadataProps(new Uint8Array(readFileSync(path)), path))"
    assert _javascript_errors(script, paths) == python


# ------------------------------------------------------------------------------ G: a text without words
@pytest.mark.parametrize("content", ["!!!", "   \n\n"], ids=["punctuation", "spaces"])
def test_eval_complete_refuses_a_text_without_words_naming_it(files, tmp_path, capsys, content):
    text = tmp_path / "typed.txt"
    text.write_text(content, encoding="utf-8")
    code, _, err = run(capsys, "eval-complete", files / "model.npz", "--text", text)
    assert_one_line_error(code, err, f"--text {text} has no word to complete")


# ------------------------------------------------------------------------- H: unknown characters counted
def test_eval_counts_only_the_unknown_characters_it_scores(files, tmp_path, capsys):
    text = tmp_path / "snow.txt"
    text.write_text("\u2603\u2603\u2603", encoding="utf-8")
    code, out, _ = run(capsys, "eval", files / "model.npz", "--text", text, "--json")
    result = json.loads(out)
    assert code == 0 and (result["chars"], result["unknown"]) == (2, 2)


# ------------------------------------------------------------------- sizes and cell, Python and JavaScript
DAMAGED_CONFIG = {"bogus-cell": {"cell": '"bogus"'}, "text-embed": {"embed_size": '"x"'},
                  "text-hidden": {"hidden_sizes": '["8"]'}, "half-hidden": {"hidden_sizes": "[8.5]"},
                  "half-vocab": {"vocab_size": "76.9"}}


def test_both_runtimes_refuse_sizes_that_are_not_whole_numbers_and_an_unknown_cell(files, tmp_path):
    from compact_lm.opener import open_model
    paths = [_onnx_variant(files, tmp_path / f"{name}.onnx", **props) for name, props in DAMAGED_CONFIG.items()]
    python = _python_errors(open_model, paths)
    javascript = _javascript_errors("await Autocompleter.create(path, { ort })", paths)
    assert all("invalid compact-lm metadata" in message for message in python + javascript), (python, javascript)
    assert python[0] == javascript[0]   # the unknown cell, in the same words
