"""Model files: exact round trip, safe loading, and scoring that agrees with the backends."""
import json

import numpy as np
import pytest

import compact_lm
from compact_lm.backends import NumpyBackend
from compact_lm.errors import CompactLMError
from compact_lm import load
from compact_lm.model_file import FORMAT_VERSION
from conftest import random_model

MODEL = dict(hidden=(12, 8), embed=6, info={"steps": 3})     # this file's random_model settings (pangram, seed 0)


def test_save_load_round_trip_is_exact(tmp_path):
    model = random_model("lstm", **MODEL)
    model.save(tmp_path / "m.npz")
    again = load(tmp_path / "m.npz")
    assert again.config == model.config and again.vocab == model.vocab
    assert all(np.array_equal(again.params[n], model.params[n]) for n in model.params)


def test_metadata_is_utf8_json_bytes_without_pickle(tmp_path):
    random_model(**MODEL).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        meta = json.loads(archive["metadata"].tobytes().decode("utf-8"))
        assert archive["metadata"].ndim == 1 and archive["metadata"].dtype == np.uint8
    for key in ("format_version", "cell", "vocab_size", "embed_size", "hidden_sizes", "vocab", "unk_id", "steps"):
        assert key in meta
    assert meta["format_version"] == FORMAT_VERSION and meta["vocab"][0] == "<unk>"


def test_metadata_takes_a_byte_per_ascii_character(tmp_path):
    model = random_model(**MODEL)
    model.info["metrics"] = {"note": "x" * 100_000}   # (only known keys are saved)
    model.save(tmp_path / "m.npz")
    assert (tmp_path / "m.npz").stat().st_size < 100_000 + 20_000   # 4 bytes a character as a unicode array


def test_metadata_written_as_a_unicode_string_still_loads(tmp_path):
    from compact_lm.fileio import load_npz
    arrays, meta = load_npz(_save_unicode_metadata(tmp_path / "old.npz", {"format": "x", "word": "café"}))
    assert meta == {"format": "x", "word": "café"} and set(arrays) == {"w"}


def test_metadata_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    from compact_lm.fileio import load_npz
    path = tmp_path / "bad.npz"
    np.savez(path, w=np.zeros(2, np.float32), metadata=np.frombuffer(b'{"a": "\xff"}', np.uint8))
    with pytest.raises(CompactLMError, match="metadata that is not UTF-8 text"):
        load_npz(path)


def test_metadata_with_a_lone_surrogate_saves_and_reads_back(tmp_path):
    from compact_lm.fileio import load_npz, save_npz
    meta = {"corpus": ["caf\udce9.txt"], "word": "café"}   # a file name that was not UTF-8, as Python decodes it
    save_npz(tmp_path / "m.npz", {"w": np.zeros(2, np.float32)}, meta)
    assert load_npz(tmp_path / "m.npz")[1] == meta


def test_metadata_nested_too_deeply_is_refused_in_one_line(tmp_path):
    from compact_lm.fileio import load_npz
    path = tmp_path / "deep.npz"
    np.savez(path, w=np.zeros(2, np.float32), metadata=np.frombuffer(b"[" * 200_000 + b"]" * 200_000, np.uint8))
    with pytest.raises(CompactLMError, match="nested too deeply"):
        load_npz(path)


def _save_unicode_metadata(path, meta):
    """An .npz as save_npz wrote them before 2026-12-06: the metadata a 0-d unicode string."""
    np.savez(path, w=np.zeros(2, np.float32), metadata=np.array(json.dumps(meta, ensure_ascii=False)))
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated or not an .npz"),
    (lambda p: p.write_text("just some text"), "truncated or not an .npz"),
])
def test_damaged_files_give_one_line_errors(tmp_path, damage, message):
    path = tmp_path / "m.npz"
    random_model(**MODEL).save(path)
    damage(path)
    with pytest.raises(CompactLMError, match=message):
        load(path)


def test_wrong_format_version_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    model = random_model(**MODEL)
    meta = model.metadata()
    meta["format_version"] = 99
    np.savez(path, metadata=np.array(json.dumps(meta)), **model.params)
    with pytest.raises(CompactLMError, match="format version 99"):
        load(path)


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "m.npz"
    model = random_model(**MODEL)
    np.savez(path, metadata=np.array(json.dumps(model.metadata())), evil=np.array([{"a": 1}], dtype=object),
             **model.params)
    with pytest.raises(CompactLMError, match="object arrays"):
        load(path)


def test_wrong_array_shape_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    model = random_model(**MODEL)
    params = dict(model.params)
    params["head.bias"] = np.zeros(3, np.float32)
    np.savez(path, metadata=np.array(json.dumps(model.metadata())), **params)
    with pytest.raises(CompactLMError, match="head.bias has shape"):
        load(path)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_step_by_step_equals_whole_sequence(cell):
    model = random_model(cell, **MODEL)
    backend = NumpyBackend(model)
    ids = model.vocab.encode("the lazy dog jumps")
    batch = np.stack([ids, ids[::-1]])
    whole, whole_state = backend.run(batch, backend.initial_state(2))
    state = backend.initial_state(2)
    steps = []
    for t in range(batch.shape[1]):
        log_p, state = backend.step(batch[:, t], state)
        steps.append(log_p)
    np.testing.assert_allclose(np.stack(steps, axis=1), whole, atol=1e-5)
    for a, b in zip(state, whole_state):
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)


def test_evaluate_scores_every_character_after_the_first():
    model = random_model(**MODEL)
    text = "the quick brown fox"
    backend = NumpyBackend(model)
    ids = model.vocab.encode(text)
    log_p, _ = backend.run(ids[None, :-1], backend.initial_state(1))
    expected = -np.mean(log_p[0, np.arange(len(ids) - 1), ids[1:]])
    metrics = model.evaluate(text)
    assert metrics.chars == len(text) - 1
    assert metrics.nats == pytest.approx(expected, rel=1e-5)
    assert metrics.bpc == pytest.approx(expected / np.log(2), rel=1e-5)


def test_long_text_scoring_carries_state_across_chunks(monkeypatch):
    model = random_model(**MODEL)
    text = "the quick brown fox jumps over the lazy dog\n" * 8
    whole = model.evaluate(text).nats
    monkeypatch.setattr(compact_lm.metrics, "EVAL_CHUNK", 7)
    assert model.evaluate(text).nats == pytest.approx(whole, rel=1e-6)
