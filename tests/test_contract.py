"""The .onnx file is the contract: a plain numpy + onnxruntime loop that follows only the file's metadata
(docs/embed_loop.py) suggests exactly what the Autocompleter suggests; old files without the feeding keys
still load and mean what they always meant; a file asking for a feeding compact-lm does not do is refused."""
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from compact_lm.autocomplete import START_TEXT, Autocompleter
from compact_lm.errors import CompactLMError
from compact_lm.export import export_model
from compact_lm.onnx_format import KEYS_KEY
from compact_lm.ort_backend import OrtBackend
from compact_lm.trainer import Trainer
from conftest import tiny_config

EMBED_LOOP = Path(__file__).resolve().parent.parent / "docs" / "embed_loop.py"
# Characters whose per-code-point normalization is not the identity, or that no vocabulary here holds:
# NFC singletons (KELVIN SIGN -> K, ANGSTROM SIGN -> Å), decomposed letters (NFD: e + combining acute),
# İ (lowercases to two code points), an emoji, a control character, a lone surrogate.
ODD = ["\u212a", "\u212b", "e\u0301", "A\u030a", "\u0130", "\U0001f600", "\x07", "\ud800", "Z", "É", "ß"]
# Composed forms in the training text, so that what normalization yields is in the vocabulary
EXTRA_TEXT = "Café, résumé, naïve Ångström; KELVIN and Kelvin. Éclair à la crème.\n" * 20


@pytest.fixture(scope="module")
def models(tmp_path_factory, alice_text):
    """A cased GRU and a lowercasing two-layer LSTM, each exported as a step graph."""
    folder = tmp_path_factory.mktemp("contract")
    corpus = folder / "corpus.txt"
    corpus.write_text(alice_text[:15000] + EXTRA_TEXT, encoding="utf-8")
    paths = {}
    for name, overrides in {"cased-gru": {}, "lowercase-lstm": dict(cell="lstm", layers=2, lowercase=True)}.items():
        model = Trainer(tiny_config(corpus, steps=20, **overrides), folder / name, progress=False).run().model
        paths[name] = folder / f"{name}.onnx"
        export_model(model, paths[name])
    return paths


@pytest.fixture(scope="module")
def embed_loop():
    return runpy.run_path(str(EMBED_LOOP))


def prefixes(alice_text: str, count: int = 320) -> list[str]:
    """Prefixes cut from the bundled corpus at varied positions and lengths, a third with odd characters mixed in."""
    rng = np.random.default_rng(7)
    found = ["", " ", "\n", *ODD, "Alice WAS", "\u212blice", "caf" + "e\u0301", "\u0130stanbul"]
    while len(found) < count:
        start, length = int(rng.integers(0, len(alice_text) - 300)), int(rng.choice([1, 2, 5, 13, 40, 120, 290]))
        text = alice_text[start:start + length]
        kind = len(found) % 3
        if kind == 1:      # odd characters at random places
            for _ in range(int(rng.integers(1, 4))):
                cut = int(rng.integers(0, len(text) + 1))
                text = text[:cut] + ODD[int(rng.integers(len(ODD)))] + text[cut:]
        elif kind == 2:    # shouting: every letter uppercase
            text = text.upper()
        found.append(text)
    return found


@pytest.mark.parametrize("name", ["cased-gru", "lowercase-lstm"])
def test_the_embed_loop_suggests_what_the_autocompleter_suggests(models, embed_loop, alice_text, name):
    session, meta = embed_loop["load"](str(models[name]))
    completer = Autocompleter(models[name])
    cases = prefixes(alice_text)
    assert len(cases) >= 300
    unknown = 0
    for n, prefix in enumerate(cases):
        k = 5 if n % 10 else completer.vocab_size   # now and then every character: the whole order, <unk> left out
        theirs = embed_loop["next_chars"](session, meta, prefix, k)
        ours = completer.next_chars(prefix, k)
        assert [c for c, _ in theirs] == [s.text for s in ours], repr(prefix)
        np.testing.assert_allclose([p for _, p in theirs], [s.prob for s in ours], rtol=0, atol=1e-5, err_msg=repr(prefix))
        unknown += bool((completer.encode(prefix) == 0).any())
    assert unknown >= 50   # the cases really do exercise the <unk> mapping


def test_normalization_composes_the_text_and_the_flags_agree(models, embed_loop):
    """The cases above matter: skipping NFC or lowercasing, or skipping the start text would differ."""
    session, meta = embed_loop["load"](str(models["lowercase-lstm"]))
    assert meta["start_text"] == START_TEXT == "\n" and meta["unk_id"] == 0
    assert meta["normalization"] == {"unit": "code_point", "steps": ["NFC", "lowercase"]}
    assert meta["nfc"] is True and meta["lowercase"] is True
    completer = Autocompleter(models["lowercase-lstm"])
    # NFC over the text: e + U+0301 is "é", as the training text has it (per code point it stayed two characters)
    assert completer.encode("e\u0301").tolist() == completer.encode("\u00e9").tolist()
    assert completer.encode("\u212b").tolist() == completer.encode("\u00e5").tolist()   # singleton, then lowercase
    cased = embed_loop["load"](str(models["cased-gru"]))[1]
    assert cased["normalization"] == {"unit": "code_point", "steps": ["NFC"]} and cased["lowercase"] is False


def test_the_embed_loop_runs_as_a_script(models):
    done = subprocess.run([sys.executable, str(EMBED_LOOP), str(models["cased-gru"]), "Alice was", "3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = Autocompleter(models["cased-gru"]).next_chars("Alice was", 3)
    assert [line.split(None, 1)[1] for line in lines] == [repr(s.text) for s in expected]
    assert [float(line.split("%")[0]) for line in lines] == pytest.approx([100 * s.prob for s in expected], abs=0.006)


def _rewrite_metadata(source: Path, target: Path, change) -> None:
    """Copy an .onnx with its metadata_props edited by `change(dict)` and the key list rewritten to match."""
    proto = onnx.load(source)
    props = {p.key: p.value for p in proto.metadata_props}
    change(props)
    props.pop(KEYS_KEY, None)
    props[KEYS_KEY] = json.dumps([*props, KEYS_KEY])
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, target)


def _drop_feeding_keys(props: dict) -> None:
    del props["start_text"], props["normalization"]


def test_a_file_without_the_feeding_keys_loads_and_means_what_it_always_meant(models, tmp_path, alice_text):
    for name in models:
        old = tmp_path / f"{name}-old.onnx"
        _rewrite_metadata(models[name], old, _drop_feeding_keys)
        assert "start_text" not in OrtBackend(old).metadata
        new_completer, old_completer = Autocompleter(models[name]), Autocompleter(old)
        for prefix in prefixes(alice_text, 40):
            assert old_completer.next_chars(prefix, 4) == new_completer.next_chars(prefix, 4)
            assert old_completer.complete(prefix, 3) == new_completer.complete(prefix, 3)


def test_the_loop_feeds_a_file_without_the_feeding_keys_as_the_autocompleter_does(models, tmp_path, alice_text,
                                                                                 embed_loop):
    for name in models:
        old = tmp_path / f"{name}-old.onnx"
        _rewrite_metadata(models[name], old, _drop_feeding_keys)
        session, meta = embed_loop["load"](str(old))
        completer = Autocompleter(old)
        for prefix in prefixes(alice_text, 40):
            got = embed_loop["next_chars"](session, meta, prefix, 4)
            want = completer.next_chars(prefix, 4)
            assert [char for char, _ in got] == [s.text for s in want]
            assert [p for _, p in got] == pytest.approx([s.prob for s in want], rel=1e-5)


@pytest.mark.parametrize("key, value, shown", [
    ("start_text", json.dumps("\t"), "start_text '\\t'"),
    ("normalization", json.dumps({"unit": "code_point", "steps": ["NFKC"]}), "normalization"),
    ("normalization", json.dumps({"unit": "text", "steps": ["NFC"]}), "normalization"),
])
def test_a_file_asking_for_another_feeding_is_refused_in_one_line(models, tmp_path, key, value, shown):
    path = tmp_path / "other.onnx"
    _rewrite_metadata(models["cased-gru"], path, lambda props: props.update({key: value}))
    with pytest.raises(CompactLMError, match=re.escape(f"other.onnx asks for {shown}")) as error:
        OrtBackend(path)
    assert "\n" not in str(error.value)


def test_the_npz_and_the_onnx_file_suggest_alike(models):
    """The contract also holds against the NumPy reference the file was exported from (float rounding apart)."""
    model_npz = models["cased-gru"].parent / "cased-gru" / "model.npz"
    numpy_completer, onnx_completer = Autocompleter(model_npz), Autocompleter(models["cased-gru"])
    for prefix in ["", "Alice was", "\u212bngstr\u00f6m", "THE RABBIT"]:
        ours, theirs = numpy_completer.next_chars(prefix, 3), onnx_completer.next_chars(prefix, 3)
        assert [s.text for s in ours] == [s.text for s in theirs]
        np.testing.assert_allclose([s.prob for s in ours], [s.prob for s in theirs], atol=1e-5)
