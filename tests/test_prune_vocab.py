"""Dropping rare characters: exact where the fold is exact, and wired through `compact-lm prune`."""
import numpy as np
import pytest

from compact_lm.backends import NumpyBackend
from compact_lm.errors import CompactLMError
from compact_lm import load
from compact_lm.model import Model
from compact_lm.tools.prune_vocab import drop_rare_characters

from cli_helpers import assert_one_line_error, run
from conftest import random_model

TEXT = "the cat sat on the mat; a rat ran at the cat!"
RARE = ";!"
RANDOM = dict(text=TEXT, embed=6, seed=3, scale=2.0, dtype=np.float64)   # this file's random_model settings


def _foldable() -> Model:
    """Random weights, but the rare characters read like <unk> and share its output row (not its bias):
    the fold is then exact."""
    model = random_model("gru", (10,), **RANDOM)
    params = model.params
    merged = [0, *(model.vocab.tokens.index(c) for c in RARE)]
    params["embedding.weight"][merged] = params["embedding.weight"][0]
    params["head.weight"][merged] = params["head.weight"][0]
    params["head.bias"][merged] = [0.3, -1.0, 0.7]
    return model


def _counts(model: Model) -> np.ndarray:
    """Every character 10 times but the rare ones, once; <unk> never."""
    counts = np.full(model.vocab.size, 10)
    counts[0] = 0
    counts[[model.vocab.tokens.index(c) for c in RARE]] = 1
    return counts


def _log_probs(model: Model, text: str) -> np.ndarray:
    backend = NumpyBackend(model)
    return backend.run(model.vocab.encode(text)[None].astype(np.int64), backend.initial_state(1))[0][0]


def test_dropped_characters_read_as_unk_and_give_it_their_probability():
    model = _foldable()
    smaller, dropped = drop_rare_characters(model, _counts(model), 5, model.vocab.encode(TEXT * 3))
    assert sorted(dropped) == sorted(RARE) and smaller.vocab.size == model.vocab.size - len(RARE)
    old, new = _log_probs(model, TEXT), _log_probs(smaller, TEXT)
    for token in smaller.vocab.chars:
        assert np.allclose(new[:, smaller.vocab.tokens.index(token)], old[:, model.vocab.tokens.index(token)], atol=1e-9)
    merged = [0, *(model.vocab.tokens.index(c) for c in RARE)]
    assert np.allclose(np.exp(new[:, 0]), np.exp(old[:, merged]).sum(axis=1), atol=1e-9)


def test_unk_reads_as_the_count_weighted_mean_of_what_it_stands_for():
    model = random_model("gru", (10,), **RANDOM)
    counts = _counts(model)
    counts[0] = 2
    smaller, _ = drop_rare_characters(model, counts, 5, model.vocab.encode(TEXT))
    merged = [0, *(model.vocab.tokens.index(c) for c in RARE)]
    expected = counts[merged] @ model.params["embedding.weight"][merged] / counts[merged].sum()
    assert np.allclose(smaller.params["embedding.weight"][0], expected, atol=1e-12)


def test_unk_output_row_fits_the_merged_probability_on_calibration_text():
    """Distinct output rows: the fold is a least-squares fit, close on the text it was fit on."""
    model = random_model("gru", (10,), **RANDOM)
    calibration = (TEXT * 40)[:1500]
    smaller, _ = drop_rare_characters(model, _counts(model), 5, model.vocab.encode(calibration))
    old, new = _log_probs(model, calibration), _log_probs(smaller, calibration)
    merged = [0, *(model.vocab.tokens.index(c) for c in RARE)]
    merged_old = np.log(np.exp(old[:, merged]).sum(axis=1))
    assert np.abs(new[:, 0] - merged_old).mean() < 0.05 < np.abs(old[:, 0] - merged_old).mean()


def test_nothing_to_drop_returns_the_model_and_dropping_everything_is_refused():
    model = _foldable()
    assert drop_rare_characters(model, _counts(model), 1, model.vocab.encode(TEXT)) == (model, [])
    with pytest.raises(CompactLMError, match="would drop every character"):
        drop_rare_characters(model, _counts(model), 1000, model.vocab.encode(TEXT))


def test_prune_drops_rare_characters_and_fine_tunes(tmp_path, tiny_model_path, capsys):
    code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--min-char-count", "20",
                       "--finetune-steps", "2", "--quiet", "--out", tmp_path / "small.npz")
    assert code == 0, err
    before, after = load(tiny_model_path), load(tmp_path / "small.npz")
    dropped = after.info["pruning"][0]["dropped_characters"]
    assert dropped and set(after.vocab.chars) == set(before.vocab.chars) - set(dropped)
    assert after.params["head.weight"].shape[0] == after.vocab.size
    assert f"dropped {len(dropped)} characters seen fewer than 20 times, " in err and "<unk> from now on" in err


def test_a_long_list_of_dropped_characters_is_cut(tmp_path, capsys):
    from compact_lm.tools.commands import DROPPED_SHOWN
    from compact_lm.trainer import Trainer
    from conftest import tiny_config
    corpus = tmp_path / "corpus.txt"   # 300 ideographs seen once each, then an English text
    corpus.write_text("".join(chr(0x4E00 + i) for i in range(300)) + TEXT * 40, encoding="utf-8")
    Trainer(tiny_config(corpus, steps=2), tmp_path / "run", progress=False).run()
    code, _, err = run(capsys, "prune", tmp_path / "run" / "model.npz", "--keep", "1.0", "--min-char-count", "2",
                       "--finetune-steps", "0", "--quiet", "--out", tmp_path / "small.npz")
    assert code == 0, err
    line = next(line for line in err.splitlines() if line.startswith("dropped "))
    assert line.startswith("dropped 300 characters") and line.endswith("...'") and len(line) < 250
    assert chr(0x4E00 + DROPPED_SHOWN - 1) in line and chr(0x4E00 + DROPPED_SHOWN) not in line


def test_a_negative_character_count_is_refused(tmp_path, tiny_model_path, capsys):
    code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--min-char-count", "-1",
                       "--out", tmp_path / "small.npz")
    assert_one_line_error(code, err, "--min-char-count: must be >= 0, got -1")
    assert not (tmp_path / "small.npz").exists()
