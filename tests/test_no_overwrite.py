"""Nothing is lost: what a command does not own is never written over, and a failed write changes nothing."""
import os

import pytest

from compact_lm.errors import CompactLMError, Interrupted
from compact_lm.fileio import atomic_write, atomic_write_all
from cli_helpers import assert_one_line_error, run
from conftest import random_model

TEXT = "the quick brown fox jumps over the lazy dog\n" * 40


def test_atomic_write_writes_through_a_symbolic_link(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "target")
    atomic_write(tmp_path / "link", lambda handle: handle.write(b"new"))
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target").read_bytes() == b"new"


def test_atomic_write_all_replaces_none_when_one_fails(tmp_path):
    (tmp_path / "first").write_bytes(b"old")
    with pytest.raises(CompactLMError, match="missing"):
        atomic_write_all([(tmp_path / "first", lambda h: h.write(b"new")),
                          (tmp_path / "missing" / "second", lambda h: h.write(b"new"))])
    assert (tmp_path / "first").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["first"]   # no temporary file left


def test_export_keeps_out_when_the_sequence_cannot_be_written(tmp_path, capsys):
    random_model(text=TEXT).save(tmp_path / "model.npz")
    (tmp_path / "m.onnx").write_bytes(b"earlier")
    (tmp_path / "folder").mkdir()
    code, _, err = run(capsys, "export", tmp_path / "model.npz", "--out", tmp_path / "m.onnx",
                       "--sequence", tmp_path / "folder")
    assert_one_line_error(code, err, "it is a folder")
    assert (tmp_path / "m.onnx").read_bytes() == b"earlier"


def test_train_prints_its_summary_without_a_validation_split(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    code, out, err = run(capsys, "train", "--corpus", tmp_path / "t.txt", "--split", "1", "0", "0", "--steps", "2",
                         "--hidden", "8", "--embed", "4", "--seq-len", "16", "--quiet", "--out", tmp_path / "run")
    assert code == 0, err
    assert "model:" in out and "val:" not in out


def test_interrupted_fine_tuning_says_nothing_was_written(tmp_path, monkeypatch):
    from compact_lm.tools import prune

    def interrupted(*args, **kwargs):
        raise Interrupted("interrupted at step 3; state saved in a folder that is then deleted")
    monkeypatch.setattr(prune, "finetune", interrupted)
    model = random_model(hidden=(8,), text=TEXT)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    config = prune.finetune_config(model, 4, corpus=(str(tmp_path / "t.txt"),), train_chars=len(TEXT))
    with pytest.raises(Interrupted, match="no pruned model was written") as caught:
        prune.prune_model(model, (4,), finetune_steps=4, train_config=config,
                          calibration_ids=model.vocab.encode(TEXT), work_dir=tmp_path)
    assert "--resume" not in str(caught.value)


def test_demo_interrupted_while_training_names_force_not_resume(tmp_path, monkeypatch):
    from compact_lm import trainer
    from compact_lm.tools import demo

    def interrupted(self):
        raise Interrupted("interrupted at step 3; state saved in x; run the same command with --resume to continue")
    monkeypatch.setattr(trainer.Trainer, "run", interrupted)
    config = demo.DemoConfig(steps=2, hidden=8, embed=4)
    with pytest.raises(Interrupted, match="--force") as caught:
        demo.train(config, tmp_path, progress=False, log=lambda message: None)
    assert "--resume" not in str(caught.value)


def test_profile_checks_its_out_folder_before_measuring(tmp_path, capsys, monkeypatch):
    from compact_lm.tools import profile

    def measured(*args, **kwargs):
        raise AssertionError("measured before checking --out")
    monkeypatch.setattr(profile, "profile_files", measured)
    (tmp_path / "afile").write_bytes(b"")
    random_model(text=TEXT).save(tmp_path / "model.npz")
    code, _, err = run(capsys, "profile", tmp_path / "model.npz", "--out", tmp_path / "afile")
    assert_one_line_error(code, err, "afile is a file, not a folder")


@pytest.fixture
def trained(tmp_path):
    """A tiny model trained for 2 steps on t.txt (its train_config names that file)."""
    from compact_lm.config import TrainConfig
    from compact_lm.trainer import Trainer
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    config = TrainConfig(corpus=(str(tmp_path / "t.txt"),), hidden=16, embed=4, seq_len=16, batch=2, steps=2)
    Trainer(config, tmp_path / "run", progress=False).run()
    return tmp_path / "run" / "model.npz"


def test_prune_refuses_to_write_over_the_text_the_model_was_trained_on(trained, capsys):
    corpus = trained.parent.parent / "t.txt"
    code, _, err = run(capsys, "prune", trained, "--keep", "0.5", "--finetune-steps", "1", "--out", corpus, "--quiet")
    assert_one_line_error(code, err, "--out must differ from the training text")
    assert corpus.read_text(encoding="utf-8") == TEXT


def test_sweep_checks_every_keeps_rounds_before_pruning_any(trained, tmp_path, capsys):
    code, _, err = run(capsys, "sweep", trained, "--keeps", "0.5", "0.9", "--rounds", "3", "--finetune-steps", "0",
                       "--out", tmp_path / "sweep", "--quiet")
    assert_one_line_error(code, err, "--rounds 3: a round would remove no unit")
    assert not (tmp_path / "sweep" / "keep0.5-fp32.npz").exists()
