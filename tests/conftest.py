"""Shared fixtures: small corpora and a tiny trained model, all made on the fly."""
import pytest

from compact_lm.config import TrainConfig
from compact_lm.data import default_corpus_path

TINY = dict(embed=8, hidden=16, batch=4, seq_len=16, eval_every=10, warmup_steps=2, lr=1e-2)


@pytest.fixture(scope="session")
def alice_text() -> str:
    return default_corpus_path().read_text(encoding="utf-8")


@pytest.fixture
def small_corpus(tmp_path, alice_text):
    path = tmp_path / "small.txt"
    path.write_text(alice_text[:20000], encoding="utf-8")
    return path


def tiny_config(corpus, **overrides) -> TrainConfig:
    """A model and budget small enough to train in well under a second."""
    settings = dict(TINY, corpus=(str(corpus),), steps=20)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, alice_text):
    """A tiny GRU trained for 30 steps on part of the bundled corpus."""
    from compact_lm.trainer import Trainer
    folder = tmp_path_factory.mktemp("tiny")
    corpus = folder / "corpus.txt"
    corpus.write_text(alice_text[:20000], encoding="utf-8")
    Trainer(tiny_config(corpus, steps=30), folder / "run", progress=False).run()
    return folder / "run" / "model.npz"


@pytest.fixture(scope="session")
def tiny_onnx_path(tiny_model_path, tmp_path_factory):
    """The tiny trained GRU exported as a step graph."""
    from compact_lm import load
    from compact_lm.export import export_model
    path = tmp_path_factory.mktemp("tiny_onnx") / "model.onnx"
    export_model(load(tiny_model_path), path)
    return path
