"""Saved weights load into PyTorch modules unchanged and give the same log-probabilities.

Runs when torch is installed (the bench extra; CI installs it); skipped otherwise.
"""
import numpy as np
import pytest

from compact_lm.backends import NumpyBackend
from conftest import random_model

torch = pytest.importorskip("torch")


class TorchCharModel(torch.nn.Module):
    """The PyTorch model docs/format.md describes."""

    def __init__(self, cell: str, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        kind = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
        self.embedding = torch.nn.Embedding(vocab, embed)
        self.rnn = kind(embed, hidden, layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, ids):
        out, _ = self.rnn(self.embedding(ids))
        return torch.log_softmax(self.head(out), dim=-1)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_pytorch_load_state_dict_gives_same_log_probs(cell, layers, alice_text):
    text = alice_text[5000:5400]
    model = random_model(cell, (32,) * layers, embed=16, text=alice_text, scale=1.5)
    vocab, params = model.vocab, model.params
    ids = vocab.encode(text)[None, :].astype(np.int64)
    ours, _ = NumpyBackend(model).run(ids, NumpyBackend(model).initial_state(1))
    reference = TorchCharModel(cell, vocab.size, 16, 32, layers)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=True)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
