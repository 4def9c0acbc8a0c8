"""Shared fixtures and builders: small corpora, a tiny trained model, random-weight models and their exports,
all made on the fly. Tests import the plain functions with `from conftest import ...`."""
import copy
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compact_lm.cells import CELLS
from compact_lm.config import ModelConfig, TrainConfig
from compact_lm.data import default_corpus_path
from compact_lm.model import Model
from compact_lm.network import init_params
from compact_lm.vocab import Vocab

TINY = dict(embed=8, hidden=16, batch=4, seq_len=16, eval_every=10, warmup_steps=2, lr=1e-2)
PANGRAM = "the quick brown fox jumps over the lazy dog\n"


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


# ------------------------------------------------------------------------------ random-weight models
def random_model(cell: str = "gru", hidden: tuple = (8,), embed: int = 6, text: str = PANGRAM, seed=0,
                 scale: float = 1.0, info: dict | None = None, vocab: Vocab | None = None,
                 dtype=np.float32) -> Model:
    """A model with init_params' PyTorch-style random weights (bounds times `scale`), untrained.

    The vocabulary is `text`'s characters, or `vocab` if given. `seed` is an int or a numpy Generator
    (a test that goes on drawing from it after the weights passes its own). `info` is copied.
    """
    vocab = Vocab.build(text) if vocab is None else vocab
    config = ModelConfig(cell=cell, vocab_size=vocab.size, embed_size=embed, hidden_sizes=tuple(hidden))
    params = init_params(config, np.random.default_rng(seed), dtype=dtype, scale=scale)
    return Model(config, vocab, params, copy.deepcopy(info) if info else {})


def export_float_model(alice_text: str, cell: str, hidden: tuple, seed: int = 0) -> Model:
    """The export tests' float model: alice's characters, E=12, random weights scaled up (1.5) so that the
    gates leave their linear range, and training info for the metadata to carry."""
    info = {"steps": 7, "train_config": {"cell": cell, "lr": 0.003, "corpus": ["alice.txt"]},
            "metrics": {"val": {"bpc": 2.5, "chars": 100}}}
    return random_model(cell, hidden, embed=12, text=alice_text, seed=seed, scale=1.5, info=info)


def export_int8_model(alice_text: str, cell: str, hidden: tuple, seed: int = 0, embed: int = 12, **options):
    """The export tests' quantized model: as export_float_model (other training info), then quantize_model."""
    from compact_lm.tools.quantize import quantize_model
    info = {"steps": 3, "train_config": {"cell": cell}, "metrics": {"val": {"bpc": 2.5}}}
    return quantize_model(random_model(cell, hidden, embed=embed, text=alice_text, seed=seed, scale=1.5, info=info),
                          **options)


# (cell, hidden sizes) of the `exported` fixture: unequal layer sizes, as pruning makes them
EXPORT_CASES = [(cell, sizes) for cell in CELLS for sizes in ((20,), (20, 13))]
EXPORT_FORMS = {
    "fp32": {"step": {}, "native_step": {"native_rnn": True},
             "sequence": {"sequence": True}, "native_sequence": {"sequence": True, "native_rnn": True}},
    "int8": {"step": {}, "sequence": {"sequence": True}},
}


@pytest.fixture(scope="module")
def export_precision() -> str:
    """What `exported` exports: "fp32"; a test module that wants int8 graphs overrides this fixture."""
    return "fp32"


@pytest.fixture(scope="module", params=EXPORT_CASES, ids=lambda p: f"{p[0]}-{len(p[1])}layer")
def exported(request, export_precision, tmp_path_factory, alice_text):
    """One model per (cell, layers), exported in every graph form of its precision, plus real text as ids.

    fp32: export_float_model as step, sequence, native_step and native_sequence graphs, ids from
    alice_text[20000:20240]; int8: export_int8_model as step and sequence graphs, ids from alice_text[30000:30240].
    Returns model, paths (form -> .onnx), ids and reference (the model's NumpyBackend).
    """
    from compact_lm.backends import NumpyBackend
    from compact_lm.export import export_model
    cell, sizes = request.param
    if export_precision == "int8":
        model, prefix, start = export_int8_model(alice_text, cell, sizes), "int8_", 30000
    else:
        model, prefix, start = export_float_model(alice_text, cell, sizes), "", 20000
    folder = tmp_path_factory.mktemp(f"{prefix}{cell}{len(sizes)}")
    paths = {}
    for form, options in EXPORT_FORMS[export_precision].items():
        paths[form] = folder / f"{form}.onnx"
        export_model(model, paths[form], **options)
    ids = model.vocab.encode(alice_text[start:start + 240]).astype(np.int64)
    return SimpleNamespace(model=model, paths=paths, ids=ids, reference=NumpyBackend(model))


def run_together(function, count: int) -> list:
    """function(i) for i < count, each on its own thread, started at once, switching as often as possible."""
    results = [None] * count
    barrier = threading.Barrier(count)

    def worker(i):
        barrier.wait()
        results[i] = function(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # so that any shared buffer would be overwritten mid-call
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    return results


WEB = Path(__file__).resolve().parents[1] / "web"


def node_with_runtime() -> str:
    """The node executable (20+) with web/node_modules installed; else the test is skipped, saying what to run.

    Nothing is installed here: `.ci/run` runs `npm ci --ignore-scripts` in web/ (449 MB), as the README says.
    """
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: web/compact_lm.js's tests need Node 20+")
    major = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 20:
        pytest.skip(f"node {major} is too old: web/compact_lm.js's tests need Node 20+")
    if not (WEB / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("web/node_modules is not installed: run `cd web && npm ci --ignore-scripts` for the JavaScript tests")
    return node
