"""Serving: threads share one Autocompleter (and its backend) with no lock, and each sees exactly what it
would see calling alone, for every backend kind: NumPy fp32 and int8, onnxruntime step graphs with and
without a sequence graph, one- and two-state cells. No timing here (benchmarks/serving.py measures)."""

import numpy as np
import pytest

from compact_lm.autocomplete import Autocompleter
from compact_lm.config import ModelConfig
from compact_lm.export import export_model
from compact_lm.model import Model
from compact_lm.network import init_params
from compact_lm.ort_backend import OrtBackend
from compact_lm.tools.quantize import quantize_model
from compact_lm.vocab import Vocab
from conftest import run_together

THREADS = 8


def _lstm(alice_text: str) -> Model:
    """Two LSTM layers of different widths (four state tensors), random weights far from uniform."""
    vocab = Vocab.build(alice_text[:5000])
    config = ModelConfig(cell="lstm", vocab_size=vocab.size, embed_size=6, hidden_sizes=(12, 8))
    return Model(config, vocab, init_params(config, np.random.default_rng(3), scale=2.0))


@pytest.fixture(scope="module")
def served(tiny_model_path, tmp_path_factory, alice_text):
    """name -> what Autocompleter is given: .npz paths, .onnx backends (step graph, with or without a sequence graph)."""
    from compact_lm import load
    folder = tmp_path_factory.mktemp("serving")
    gru, lstm = load(tiny_model_path), _lstm(alice_text)
    int8 = quantize_model(gru)
    int8.save(folder / "int8.npz")
    for name, model in {"gru": gru, "lstm": lstm, "int8": int8}.items():
        export_model(model, folder / f"{name}.onnx")
        export_model(model, folder / f"{name}-seq.onnx", sequence=True)
    return {
        "numpy-fp32": tiny_model_path,
        "numpy-int8": folder / "int8.npz",
        "onnx-gru-step": folder / "gru.onnx",
        "onnx-gru-step+sequence": OrtBackend(folder / "gru.onnx", sequence_path=folder / "gru-seq.onnx"),
        "onnx-lstm-step+sequence": OrtBackend(folder / "lstm.onnx", sequence_path=folder / "lstm-seq.onnx"),
        "onnx-int8-step": folder / "int8.onnx",
    }


def _workload(completer: Autocompleter, text: str) -> list:
    """One user's requests: one-shot completions and next characters, then a session with typing, a paste
    and backspaces (into the paste too), with suggestions after every change."""
    seen = []
    for cut in range(0, len(text), 9):
        prefix = text[:cut]
        seen.append((completer.complete(prefix, 3), completer.next_chars(prefix, 4)))
    session = completer.session()
    for char in text[:40]:
        session.type(char)
        seen.append((session.suggestions(3), session.next_chars(2)))
    session.type(text[40:])                  # a paste: one run (the sequence graph, if there is one)
    seen.append(session.suggestions(3))
    session.backspace(len(text) - 60)        # into the paste: recomputed
    seen.append((session.text, session.suggestions(3), session.next_chars(3)))
    return seen


@pytest.mark.parametrize("kind", ["numpy-fp32", "numpy-int8", "onnx-gru-step", "onnx-gru-step+sequence",
                                  "onnx-lstm-step+sequence", "onnx-int8-step"])
def test_threads_sharing_one_autocompleter_see_what_serial_calls_see(served, alice_text, kind):
    completer = Autocompleter(served[kind])
    texts = [alice_text[2000 + 611 * i: 2000 + 611 * i + 150] for i in range(THREADS)]
    serial = [_workload(completer, text) for text in texts]
    assert run_together(lambda i: _workload(completer, texts[i]), THREADS) == serial
    assert len({repr(s) for s in serial}) == THREADS   # the threads really asked different things


def test_one_onnx_backend_steps_for_many_threads_at_once(served):
    """The backend alone, at several batch sizes: every thread's calls return what they return serially."""
    backend = served["onnx-lstm-step+sequence"]
    rng = np.random.default_rng(0)
    calls = [[(rng.integers(0, backend.vocab_size, size=batch), batch) for batch in (1, 3, 1, 4, 2) * 20]
             for _ in range(THREADS)]

    def replay(i):
        out = []
        for ids, batch in calls[i]:
            state = [tuple(np.full_like(a, 0.1 * (i + 1)) for a in layer) for layer in backend.initial_state(batch)]
            log_probs, state = backend.step(ids, state)
            out.append((log_probs, state))
        return out

    serial = [replay(i) for i in range(THREADS)]
    for got, want in zip(run_together(replay, THREADS), serial):
        for (log_probs, state), (want_log_probs, want_state) in zip(got, want):
            assert np.array_equal(log_probs, want_log_probs)
            assert all(np.array_equal(a, b) for layer, wanted in zip(state, want_state) for a, b in zip(layer, wanted))
