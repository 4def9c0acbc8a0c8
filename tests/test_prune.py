"""Structured pruning: exactness when a unit is silent, smaller dense models that reload and train."""
import numpy as np
import pytest

from compact_lm.backends import NumpyBackend
from compact_lm.errors import CompactLMError
from compact_lm import load
from compact_lm.cells import get_cell
from compact_lm.tools.prune import (calibration_ids_from_corpus, prune_model, prune_once, reconstruction_order,
                                    refit_readers, remove_units, target_sizes, unit_scores, unit_statistics)
from compact_lm.trainer import Trainer, prepare_corpus

from conftest import random_model, tiny_config

TEXT = "the quick brown fox jumps over the lazy dog\n" * 4
RANDOM = dict(text=TEXT, embed=6, scale=2.0)    # this file's random_model settings (seed 0)


def _log_probs(model):
    backend = NumpyBackend(model)
    ids = model.vocab.encode(TEXT)[None, :].astype(np.int64)
    return backend.run(ids, backend.initial_state(1))[0]


def _silence(model, layer, unit):
    """Zero every weight that reads unit `unit` of `layer`: its output then reaches nothing."""
    model.params[f"rnn.weight_hh_l{layer}"][:, unit] = 0.0
    reader = f"rnn.weight_ih_l{layer + 1}" if layer + 1 < model.config.layers else "head.weight"
    model.params[reader][:, unit] = 0.0


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_removing_a_silent_unit_changes_no_output(cell, layer):
    model = random_model(cell, (10, 8), **RANDOM)
    _silence(model, layer, 3)
    keep = [np.arange(h) for h in model.config.hidden_sizes]
    keep[layer] = np.delete(keep[layer], 3)
    pruned = remove_units(model, keep)
    assert pruned.config.hidden_sizes[layer] == model.config.hidden_sizes[layer] - 1
    np.testing.assert_allclose(_log_probs(pruned), _log_probs(model), atol=1e-6)


def test_removing_a_unit_that_matters_changes_outputs():
    model = random_model("gru", (10, 8), **RANDOM)
    keep = [np.arange(1, 10), np.arange(8)]
    assert np.abs(_log_probs(remove_units(model, keep)) - _log_probs(model)).max() > 1e-3


def test_unit_rows_take_the_same_offset_in_every_gate_block():
    from compact_lm.cells import get_cell
    assert get_cell("lstm").unit_rows(5, [1, 3]).tolist() == [1, 3, 6, 8, 11, 13, 16, 18]


@pytest.mark.parametrize("criterion", ["magnitude", "activation", "reconstruction"])
def test_pruned_model_has_the_target_sizes_and_reloads(tmp_path, criterion):
    model = random_model("lstm", (10, 8), **RANDOM)
    pruned = prune_once(model, (5, 3), criterion=criterion, calibration_ids=model.vocab.encode(TEXT))
    pruned.save(tmp_path / "p.npz")
    again = load(tmp_path / "p.npz")
    assert again.config.hidden_sizes == (5, 3)
    assert again.evaluate(TEXT).nats == pytest.approx(pruned.evaluate(TEXT).nats)


def test_mean_folding_keeps_a_constant_unit_for_free():
    """A unit whose output never changes is replaced exactly by the head's bias."""
    model = random_model("rnn", (6,), **RANDOM)
    # unit 2: no weights in, none recurrent out, bias 0.7: h_2 = tanh(0.7) at every step, read by the head
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0"):
        model.params[name][2, :] = 0.0
    model.params["rnn.weight_hh_l0"][:, 2] = 0.0
    model.params["rnn.bias_ih_l0"][2], model.params["rnn.bias_hh_l0"][2] = 0.7, 0.0
    pruned = prune_once(model, (5,), criterion="activation", calibration_ids=model.vocab.encode(TEXT))
    assert pruned.config.hidden_sizes == (5,)
    np.testing.assert_allclose(_log_probs(pruned), _log_probs(model), atol=1e-5)


def test_pruned_model_fine_tunes_with_unequal_layers(tmp_path, small_corpus):
    trained = Trainer(tiny_config(small_corpus, layers=2, steps=10), tmp_path / "a", progress=False).run().model
    pruned = prune_once(trained, (12, 7), criterion="magnitude")
    trainer = Trainer(tiny_config(small_corpus, layers=2, steps=10), tmp_path / "b", progress=False,
                      init_model=pruned)
    result = trainer.run()
    assert result.model.config.hidden_sizes == (12, 7)
    assert trainer.history[-1]["val_bpc"] < pruned.evaluate_ids(trainer.corpus.val).bpc


def _explicit_greedy(outputs, reader, count):
    """The reconstruction criterion done the slow way: refit by np.linalg.lstsq for every candidate."""
    targets = outputs @ reader.T
    chosen = []
    for _ in range(count):
        def error(units):
            design = np.hstack([outputs[:, units], np.ones((len(outputs), 1))])
            return ((design @ np.linalg.lstsq(design, targets, rcond=None)[0] - targets) ** 2).sum()
        candidates = [j for j in range(outputs.shape[1]) if j not in chosen]
        chosen.append(min(candidates, key=lambda j: error(chosen + [j])))
    return chosen


@pytest.mark.parametrize("seed", range(5))
def test_reconstruction_order_is_the_greedy_least_squares_choice(seed):
    rng = np.random.default_rng(seed)
    outputs = np.tanh(rng.normal(size=(300, 5)) @ rng.normal(size=(5, 9)) + 0.3 * rng.normal(size=(300, 9)))
    reader = rng.normal(size=(6, 9))
    assert reconstruction_order(outputs, reader)[:7].tolist() == _explicit_greedy(outputs, reader, 7)


def test_reconstruction_puts_constant_and_duplicate_units_last():
    rng = np.random.default_rng(0)
    outputs = np.tanh(rng.normal(size=(200, 5)))
    outputs[:, 1] = 0.4                     # constant: the fit's own constant term covers it
    outputs[:, 3] = outputs[:, 0]           # a copy of unit 0
    order = reconstruction_order(outputs, rng.normal(size=(4, 5)))
    assert sorted(order[:3].tolist()) == [0, 2, 4] and order[3:].tolist() == [1, 3]


@pytest.mark.parametrize("cell, criterion", [("gru", "reconstruction"), ("lstm", "activation"), ("rnn", "activation")])
def test_the_default_criterion_is_the_cells_own(cell, criterion):
    model = random_model(cell, (12,), **RANDOM)
    ids = model.vocab.encode(TEXT * 2)
    chosen = prune_once(model, (6,), calibration_ids=ids)
    same = {c: all(np.array_equal(chosen.params[n], prune_once(model, (6,), criterion=c, calibration_ids=ids).params[n])
                   for n in chosen.params) for c in ("activation", "reconstruction")}
    assert same == {c: c == criterion for c in same}      # the other criterion keeps other units here


def test_data_driven_criteria_need_calibration_text():
    for criterion in ("reconstruction", "activation"):
        with pytest.raises(CompactLMError, match="needs calibration text"):
            unit_scores(random_model("gru", (10, 8), **RANDOM), criterion, None)


def test_reconstruction_removes_a_duplicated_unit_for_free():
    """Unit 5 computes exactly what unit 2 does; the readers' refit gives its weights to unit 2."""
    model = random_model("gru", (8,), **RANDOM)
    _duplicate_unit(model, 0, source=2, copy=5)
    pruned = prune_once(model, (7,), criterion="reconstruction", calibration_ids=model.vocab.encode(TEXT * 2))
    np.testing.assert_allclose(_log_probs(pruned), _log_probs(model), atol=1e-5)


def test_fine_tuning_reports_val_bpc_before_and_after(tmp_path, small_corpus):
    trained = Trainer(tiny_config(small_corpus, steps=10), tmp_path / "a", progress=False).run().model
    config = tiny_config(small_corpus, steps=10)
    ids = calibration_ids_from_corpus(trained, config)
    lines = []
    pruned = prune_model(trained, (8,), criterion="activation", finetune_steps=6, train_config=config,
                         calibration_ids=ids, work_dir=tmp_path, log=lines.append)
    entry = pruned.info["pruning"][-1]
    val = prepare_corpus(config, trained.vocab).val
    before = prune_once(trained, (8,), criterion="activation", calibration_ids=ids).evaluate_ids(val).bpc
    assert entry["val_bpc_before_finetune"] == pytest.approx(before)
    assert entry["val_bpc_after_finetune"] == pytest.approx(pruned.evaluate_ids(val).bpc, abs=1e-4)
    assert f"{trained.evaluate_ids(val).bpc:.4f}" in lines[0] and f"{before:.4f}" in lines[1]


def test_fine_tuning_that_makes_things_worse_keeps_the_pruned_model(tmp_path, small_corpus):
    trained = Trainer(tiny_config(small_corpus, steps=30), tmp_path / "a", progress=False).run().model
    config = tiny_config(small_corpus, steps=30, lr=5.0, warmup_steps=0)    # a step size that wrecks the model
    ids = calibration_ids_from_corpus(trained, config)
    pruned = prune_model(trained, (8,), criterion="activation", finetune_steps=2, train_config=config,
                         calibration_ids=ids, work_dir=tmp_path)
    entry = pruned.info["pruning"][-1]
    assert entry["kept_the_pruned_model"] and entry["val_bpc_after_finetune"] > entry["val_bpc_before_finetune"]
    expected = prune_once(trained, (8,), criterion="activation", calibration_ids=ids)
    assert all(np.array_equal(pruned.params[n], expected.params[n]) for n in expected.params)
    # it carries its validation metrics, as a fine-tuned model does (the demo prints them)
    assert pruned.info["metrics"]["val"]["bpc"] == pytest.approx(entry["val_bpc_before_finetune"])


def test_target_sizes():
    assert target_sizes((256, 128), keep=0.5) == (128, 64)
    assert target_sizes((256, 128), hidden=[100]) == (100, 100)
    assert target_sizes((256, 128), hidden=[200, 50]) == (200, 50)


@pytest.mark.parametrize("kwargs, message", [
    (dict(keep=0.0), "keep must be in"),
    (dict(keep=1.5), "keep must be in"),
    (dict(hidden=[300]), "hidden 300 for layer 0"),
    (dict(hidden=[0]), "hidden 0 for layer 0"),
    (dict(hidden=[1, 2, 3]), "one per layer"),
])
def test_bad_target_sizes_are_refused(kwargs, message):
    with pytest.raises(CompactLMError, match=message):
        target_sizes((256, 128), **kwargs)


def test_unknown_criterion_is_refused():
    with pytest.raises(CompactLMError, match="unknown criterion 'random'"):
        unit_scores(random_model("gru", (10, 8), **RANDOM), "random", None)


def _duplicate_unit(model, layer, source, copy):
    """Make unit `copy` of `layer` compute exactly what unit `source` computes (same rows in every gate)."""
    rows = get_cell(model.config.cell).unit_rows
    hidden = model.config.hidden_sizes[layer]
    for name in (f"rnn.weight_ih_l{layer}", f"rnn.weight_hh_l{layer}", f"rnn.bias_ih_l{layer}", f"rnn.bias_hh_l{layer}"):
        model.params[name][rows(hidden, [copy])] = model.params[name][rows(hidden, [source])]


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_refitting_the_readers_replaces_a_duplicate_unit_exactly(cell, layer):
    """A removed unit whose output the kept units reproduce costs nothing: its readers move to the copy it had."""
    model = random_model(cell, (10, 8), **RANDOM)
    _duplicate_unit(model, layer, source=2, copy=5)
    sizes = list(model.config.hidden_sizes)
    stats = unit_statistics(model, model.vocab.encode(TEXT))
    keep = [np.arange(h) for h in sizes]
    keep[layer] = np.delete(keep[layer], 5)
    refit = refit_readers(model, remove_units(model, keep, stats.mean), keep, stats.outputs)
    np.testing.assert_allclose(_log_probs(refit), _log_probs(model), atol=1e-4)
    assert np.abs(_log_probs(remove_units(model, keep, stats.mean)) - _log_probs(model)).max() > 1e-2


def test_refitting_the_readers_brings_a_pruned_model_closer_to_the_original():
    model = random_model("gru", (16,), **RANDOM)
    stats = unit_statistics(model, model.vocab.encode(TEXT))
    keep = [np.arange(0, 16, 2)]
    folded = remove_units(model, keep, stats.mean)
    refit = refit_readers(model, folded, keep, stats.outputs)
    error = {name: np.abs(_log_probs(m) - _log_probs(model)).mean() for name, m in (("folded", folded), ("refit", refit))}
    assert error["refit"] < 0.75 * error["folded"]      # measured: 0.15 vs 0.28


def test_prune_once_refits_the_readers_from_its_calibration_text():
    model = random_model("gru", (16,), **RANDOM)
    ids = model.vocab.encode(TEXT * 2)
    stats = unit_statistics(model, ids)
    pruned = prune_once(model, (8,), criterion="activation", calibration_ids=ids)
    keep = [np.sort(np.argsort(-unit_scores(model, "activation", stats)[0], kind="stable")[:8])]
    want = refit_readers(model, remove_units(model, keep, stats.mean), keep, stats.outputs)
    assert all(np.array_equal(pruned.params[n], want.params[n]) for n in want.params)
    assert not np.array_equal(want.params["head.weight"], remove_units(model, keep, stats.mean).params["head.weight"])


def test_short_calibration_text_keeps_the_mean_folding_only():
    """Fewer than 10 positions per fitted weight: a fit would follow the text, not the model."""
    model = random_model("gru", (16,), **RANDOM)
    ids = model.vocab.encode(TEXT)[:40]          # 40 < 10 * (8 + 1)
    stats = unit_statistics(model, ids)
    keep = [np.arange(0, 16, 2)]
    folded = remove_units(model, keep, stats.mean)
    refit = refit_readers(model, folded, keep, stats.outputs)
    assert all(np.array_equal(refit.params[n], folded.params[n]) for n in folded.params)


def test_a_layer_that_keeps_every_unit_is_not_refit():
    model = random_model("lstm", (10, 8), **RANDOM)
    stats = unit_statistics(model, model.vocab.encode(TEXT * 3))
    keep = [np.arange(10), np.arange(0, 8, 2)]     # layer 0 whole: its W_hh and layer 1's W_ih columns stay
    folded = remove_units(model, keep, stats.mean)
    refit = refit_readers(model, folded, keep, stats.outputs)
    for name in ("rnn.weight_hh_l0", "rnn.bias_hh_l0", "rnn.weight_ih_l1", "rnn.bias_ih_l1"):
        assert np.array_equal(refit.params[name], folded.params[name])
    assert not np.array_equal(refit.params["head.weight"], folded.params["head.weight"])


def test_fine_tuning_uses_the_measured_settings():
    from compact_lm.tools.prune import FINETUNE_LR, finetune_config
    model = random_model("gru", (10, 8), **RANDOM)
    model.info["train_config"] = {"corpus": ["text.txt"], "lr": 5e-3, "dropout": 0.2, "min_lr_ratio": 0.05}
    config = finetune_config(model, 560, train_chars=100_000)
    assert (config.steps, config.lr, config.dropout, config.distill) == (560, FINETUNE_LR, 0.0, 0.5)
    assert config.min_lr_ratio == 0.0 and config.warmup_steps == 11


@pytest.mark.parametrize("trained_batch, train_chars, streams", [
    (16, 100_000, 64), (64, 100_000, 64), (128, 100_000, 128),
    (16, 5_000, 38),      # (5,000 - 128) // 128: as many streams as have a window each
    (16, 1_000, 16),      # fewer than the model's own: its own (which the batcher then refuses with its message)
])
def test_fine_tuning_takes_up_to_64_streams_a_step_as_the_corpus_allows(trained_batch, train_chars, streams):
    from compact_lm.tools.prune import finetune_config
    model = random_model("gru", (10, 8), **RANDOM)
    model.info["train_config"] = {"corpus": ["text.txt"], "batch": trained_batch, "seq_len": 128}
    assert finetune_config(model, 100, train_chars=train_chars).batch == streams


def test_the_fine_tuning_budget_is_a_fraction_of_the_characters_trained_on():
    from compact_lm.tools.prune import finetune_budget
    assert finetune_budget(10_400, 16, 0.2, 64) == 520     # the batch-16 quality model: 2,080 steps' characters
    assert finetune_budget(1_280, 64, 0.2, 64) == 256      # a batch-64 run: 20 % of its steps
    assert finetune_budget(100, 16, 0.2, 38) == 8          # a short corpus's fewer streams: more steps
    assert finetune_budget(20, 4, 0.2, 64) == 1            # at least one step
    assert finetune_budget(10_400, 16, 0.0, 64) == 0       # no fine-tuning asked for (search's --finetune-fraction 0)


def test_a_model_trained_with_16_streams_on_a_short_corpus_prunes_and_fine_tunes(tmp_path, alice_text, capsys):
    from compact_lm.trainer import Trainer
    from cli_helpers import run
    corpus = tmp_path / "short.txt"
    corpus.write_text(alice_text[:4000], encoding="utf-8")   # room for 16 streams of 128, not 64
    Trainer(tiny_config(corpus, batch=16, seq_len=128, steps=4, eval_every=2), tmp_path / "run", progress=False).run()
    code, out, err = run(capsys, "prune", tmp_path / "run" / "model.npz", "--keep", "0.5", "--finetune-steps", "2",
                         "--out", tmp_path / "pruned.npz", "--quiet")
    assert code == 0, err
    assert load(tmp_path / "pruned.npz").info["pruning"][-1]["finetune_steps"] == 2
