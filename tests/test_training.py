"""The trainer: learning, reproducibility, bit-exact resume, divergence and write failures."""
import errno

import numpy as np
import pytest

import compact_lm.trainer as trainer_module
from compact_lm.errors import CompactLMError, TrainingDiverged
from compact_lm.fileio import load_npz
from compact_lm import load
from compact_lm.trainer import STATE_FILE, Interrupted, Trainer
from compact_lm.config import TrainConfig

from conftest import tiny_config


def _weights(path):
    return load(path).params


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_training_lowers_validation_loss(tmp_path, small_corpus, cell):
    trainer = Trainer(tiny_config(small_corpus, cell=cell, steps=60), tmp_path / "run", progress=False)
    trainer.run()
    val = [row["val_bpc"] for row in trainer.history]
    assert val[-1] < val[0] - 0.3


def test_two_layers_train(tmp_path, small_corpus):
    trainer = Trainer(tiny_config(small_corpus, layers=2, steps=30, dropout=0.1), tmp_path / "run", progress=False)
    result = trainer.run()
    assert result.model.config.hidden_sizes == (16, 16)
    assert trainer.history[-1]["val_bpc"] < trainer.history[0]["val_bpc"]


def test_same_seed_gives_bit_identical_weights(tmp_path, small_corpus):
    config = tiny_config(small_corpus, dropout=0.2)
    a = Trainer(config, tmp_path / "a", progress=False).run().model.params
    b = Trainer(config, tmp_path / "b", progress=False).run().model.params
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_different_seed_gives_different_weights(tmp_path, small_corpus):
    a = Trainer(tiny_config(small_corpus, seed=1), tmp_path / "a", progress=False).run().model.params
    b = Trainer(tiny_config(small_corpus, seed=2), tmp_path / "b", progress=False).run().model.params
    assert not np.array_equal(a["head.weight"], b["head.weight"])


def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, small_corpus, monkeypatch):
    config = tiny_config(small_corpus, steps=40, dropout=0.2, eval_every=10)
    Trainer(config, tmp_path / "straight", progress=False).run()
    # stop after step 25 as Ctrl-C would: the state is saved mid-way between evaluations
    original = Trainer.train_step

    def stop_at_25(self):
        loss = original(self)
        if self.step == 25:
            raise KeyboardInterrupt
        return loss

    monkeypatch.setattr(Trainer, "train_step", stop_at_25)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "split", progress=False).run()
    monkeypatch.setattr(Trainer, "train_step", original)
    saved_step = load_npz(tmp_path / "split" / STATE_FILE, "state")[1]["step"]
    assert saved_step == 20                              # the last checkpoint, at the last evaluation
    Trainer(config, tmp_path / "split", resume=True, progress=False).run()
    straight = _weights(tmp_path / "straight" / "model.npz")
    resumed = _weights(tmp_path / "split" / "model.npz")
    assert all(np.array_equal(straight[n], resumed[n]) for n in straight)
    a = load_npz(tmp_path / "straight" / STATE_FILE, "state")[0]
    b = load_npz(tmp_path / "split" / STATE_FILE, "state")[0]
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_ctrl_c_saves_state_and_resumes_exactly(tmp_path, small_corpus, monkeypatch):
    config = tiny_config(small_corpus, steps=30, eval_every=10)
    Trainer(config, tmp_path / "straight", progress=False).run()
    original = Trainer.train_step

    def ctrl_c_at_13(self):
        loss = original(self)
        if self.step == 13:
            trainer_module.signal.raise_signal(trainer_module.signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", ctrl_c_at_13)
    with pytest.raises(Interrupted, match="interrupted at step 13.*--resume"):
        Trainer(config, tmp_path / "split", progress=False).run()
    monkeypatch.setattr(Trainer, "train_step", original)
    assert load_npz(tmp_path / "split" / STATE_FILE, "state")[1]["step"] == 13
    Trainer(config, tmp_path / "split", resume=True, progress=False).run()
    straight = _weights(tmp_path / "straight" / "model.npz")
    resumed = _weights(tmp_path / "split" / "model.npz")
    assert all(np.array_equal(straight[n], resumed[n]) for n in straight)


def test_resume_with_other_config_is_refused(tmp_path, small_corpus):
    Trainer(tiny_config(small_corpus, steps=10), tmp_path / "run", progress=False).run()
    with pytest.raises(CompactLMError, match=r"does not match.*hidden: saved 16 vs given 32"):
        Trainer(tiny_config(small_corpus, steps=10, hidden=32), tmp_path / "run", resume=True, progress=False)


def test_new_run_into_used_folder_is_refused(tmp_path, small_corpus):
    Trainer(tiny_config(small_corpus, steps=10), tmp_path / "run", progress=False).run()
    with pytest.raises(CompactLMError, match="already holds a run"):
        Trainer(tiny_config(small_corpus, steps=10), tmp_path / "run", progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, small_corpus, monkeypatch):
    config = tiny_config(small_corpus, steps=40, eval_every=10)
    original = trainer_module.loss_and_grads
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        result = original(*args, **kwargs)
        if calls["n"] == 15:
            result.loss = float("nan")
        return result

    monkeypatch.setattr(trainer_module, "loss_and_grads", poisoned)
    with pytest.raises(TrainingDiverged, match="diverged at step 15"):
        Trainer(config, tmp_path / "run", progress=False).run()
    model = load(tmp_path / "run" / "model.npz")
    assert model.info["steps"] == 10
    assert all(np.isfinite(p).all() for p in model.params.values())


def test_nan_gradient_stops_training(tmp_path, small_corpus, monkeypatch):
    original = trainer_module.loss_and_grads

    def poisoned(*args, **kwargs):
        result = original(*args, **kwargs)
        result.grads["head.bias"][0] = np.inf
        return result

    monkeypatch.setattr(trainer_module, "loss_and_grads", poisoned)
    with pytest.raises(TrainingDiverged, match="gradient norm"):
        Trainer(tiny_config(small_corpus), tmp_path / "run", progress=False).run()


def test_disk_full_while_saving_keeps_previous_checkpoint(tmp_path, small_corpus, monkeypatch):
    trainer = Trainer(tiny_config(small_corpus, steps=20, eval_every=10), tmp_path / "run", progress=False)
    for _ in range(10):
        trainer.train_step()
    trainer.evaluate()
    before = (tmp_path / "run" / "model.npz").read_bytes()
    state_before = (tmp_path / "run" / STATE_FILE).read_bytes()

    def full_disk(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    for _ in range(10):
        trainer.train_step()
    with pytest.raises(CompactLMError, match="cannot write .*No space left on device"):
        trainer.evaluate()
    assert (tmp_path / "run" / "model.npz").read_bytes() == before
    assert (tmp_path / "run" / STATE_FILE).read_bytes() == state_before
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []


def test_float64_training_runs(tmp_path, small_corpus):
    result = Trainer(tiny_config(small_corpus, dtype="float64", steps=10), tmp_path / "run", progress=False).run()
    assert result.model.params["head.weight"].dtype == np.float64


def test_sgd_optimizer_trains(tmp_path, small_corpus):
    trainer = Trainer(tiny_config(small_corpus, optimizer="sgd", lr=0.5, steps=60), tmp_path / "run", progress=False)
    trainer.run()
    assert trainer.history[-1]["val_bpc"] < trainer.history[0]["val_bpc"]


def test_history_files_and_test_metrics_are_written(tmp_path, small_corpus):
    result = Trainer(tiny_config(small_corpus), tmp_path / "run", progress=False).run()
    assert (tmp_path / "run" / "history.json").exists() and (tmp_path / "run" / "history.csv").exists()
    metrics = result.model.info["metrics"]
    assert {"val", "test", "chars_per_second"} <= set(metrics)
    assert metrics["test"]["bpc"] == pytest.approx(metrics["test"]["nats"] / np.log(2))


def test_validation_bpc_equals_eval_of_the_validation_text(tmp_path, small_corpus):
    config = tiny_config(small_corpus)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    result = trainer.run()
    text = small_corpus.read_text(encoding="utf-8")
    n_train, n_val = int(round(len(text) * 0.9)), int(round(len(text) * 0.05))
    again = result.model.evaluate(text[n_train:n_train + n_val])
    assert again.bpc == pytest.approx(result.model.info["metrics"]["val"]["bpc"], rel=1e-6)


def test_checkpoints_are_chosen_on_the_validation_splits_start_and_scored_on_all_of_it(tmp_path, small_corpus,
                                                                                        monkeypatch):
    monkeypatch.setattr(trainer_module, "EVAL_CHARS", 300)
    result = Trainer(tiny_config(small_corpus), tmp_path / "run", progress=False).run()
    val = result.model.info["metrics"]["val"]
    assert val["chars"] == len(Trainer(tiny_config(small_corpus), tmp_path / "other", progress=False).corpus.val) - 1 > 300
    assert result.history[-1]["val_bpc"] != pytest.approx(val["bpc"], rel=1e-6)   # the rows: the first 300 only


def test_the_speed_leaves_out_the_evaluations(tmp_path, small_corpus, monkeypatch):
    import time
    evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self: (time.sleep(0.3), evaluate(self))[1])
    result = Trainer(tiny_config(small_corpus, steps=4, eval_every=2), tmp_path / "run", progress=False).run()
    metrics = result.model.info["metrics"]
    assert metrics["elapsed_s"] >= metrics["train_s"] + 0.6
    assert metrics["chars_per_second"] == pytest.approx(4 * 4 * 16 / metrics["train_s"], rel=1e-9)   # steps x batch x seq-len


def _rows(val, train):
    return [{"step": 10 * (i + 1), "val_bpc": v, "train_bpc": t} for i, (v, t) in enumerate(zip(val, train))]


def test_memorizing_note_needs_a_sustained_rise_while_training_improves():
    from compact_lm.trainer import memorizing_note
    falling = [3.0, 2.95, 2.9, 2.8, 2.7, 2.65, 2.6]   # (validation stays within 0.5 of it: the steep rule is out)
    note = memorizing_note(_rows([2.5, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9], falling))
    assert note is not None and "2.400 at step 20" in note and "now 2.900" in note and "2.950 to 2.600" in note
    assert memorizing_note(_rows([2.5, 2.4, 2.5, 2.6, 2.44, 2.8, 2.9], falling)) is None   # one came back near the best
    assert memorizing_note(_rows([2.5, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9], [2.0] * 7)) is None   # training did not improve
    assert memorizing_note(_rows([2.5, 2.4, 2.6, 2.7, 2.8, 2.9], falling[:6])) is None     # the best is one of the last 5


def test_memorizing_note_takes_a_steep_rise_after_few_evaluations():
    from compact_lm.trainer import memorizing_note
    # Alice at the trainer's defaults, 4 minutes: the best at the second of five evaluations
    val, train = [2.08, 1.98, 1.98, 2.17, 2.26], [2.40, 1.84, 1.51, 1.13, 0.81]
    assert memorizing_note(_rows(val[:4], train[:4])) is None          # one evaluation far above: not yet
    assert "for 3 evaluations" in memorizing_note(_rows(val, train))
    assert memorizing_note(_rows(val, [2.40, 1.84, 1.80, 1.79, 1.78])) is None   # validation not far over training


def test_a_run_that_learns_its_text_by_heart_is_told_once(tmp_path):
    import random
    rng = random.Random(0)
    corpus = tmp_path / "random.txt"
    corpus.write_text("".join(rng.choice("abcdefgh ") for _ in range(1000)), encoding="utf-8")   # nothing to generalize
    logs = []
    config = tiny_config(corpus, steps=150, hidden=64, lr=0.03, dropout=0.0)
    history = Trainer(config, tmp_path / "run", progress=False, log=logs.append).run().history
    assert history[-1]["val_bpc"] > min(row["val_bpc"] for row in history) + 0.5   # it did memorize
    notes = [line for line in logs if "by heart" in line]
    assert len(notes) == 1 and "model.npz keeps the best weights" in notes[0]


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_diverging_run_is_reported_without_numpy_warnings(tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    config = TrainConfig(corpus=(str(tmp_path / "t.txt"),), hidden=8, embed=4, seq_len=8, batch=2, lr=1e308, steps=3)
    with pytest.raises(TrainingDiverged, match="training diverged at step"):
        Trainer(config, tmp_path / "run", progress=False).run()


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_no_empty_folder(tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    config = TrainConfig(corpus=(str(tmp_path / "t.txt"),), hidden=8, embed=4, seq_len=8, batch=2, lr=1e308, steps=3)
    with pytest.raises(TrainingDiverged):
        Trainer(config, tmp_path / "new", progress=False).run()
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()   # a folder the user made stays
    with pytest.raises(TrainingDiverged):
        Trainer(config, tmp_path / "mine", progress=False).run()
    assert (tmp_path / "mine").is_dir()
