"""Runtime backends: one protocol (initial_state, step, run); the NumPy fp32 model is the reference."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .cells import get_cell
from .model import Model
from .network import head_log_probs, log_softmax, run_hidden, zero_state


class Backend(Protocol):
    """What autocomplete, verification and profiling need from a model runtime."""

    vocab_size: int

    def initial_state(self, batch: int) -> list: ...

    def step(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]: ...

    def run(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]: ...


class NumpyBackend:
    """The reference path: float arithmetic on the model's own arrays.

    A state is a list with one tuple per layer: (h,) or (h, c), each [batch, hidden_k].
    """

    def __init__(self, model: Model):
        self.model = model
        self.config = model.config
        self.vocab_size = model.config.vocab_size
        self._cell = get_cell(model.config.cell)
        self._table = model.table()
        self._dtype = model.params["head.weight"].dtype
        p = model.params
        layers = range(model.config.layers)
        # per-step operands laid out once: W^T contiguous so each product is one plain GEMM
        self._w_ih_t = [None] + [np.ascontiguousarray(p[f"rnn.weight_ih_l{k}"].T) for k in layers if k > 0]
        self._b_ih = [None] + [p[f"rnn.bias_ih_l{k}"] for k in layers if k > 0]
        self._w_hh_t = [np.ascontiguousarray(p[f"rnn.weight_hh_l{k}"].T) for k in layers]
        self._b_hh = [p[f"rnn.bias_hh_l{k}"] for k in layers]
        self._head_t = np.ascontiguousarray(p["head.weight"].T)
        self._head_b = p["head.bias"]

    def initial_state(self, batch: int) -> list:
        """Zero state for `batch` streams."""
        return zero_state(self.config, batch, self._dtype)

    def step(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, V] of the next character after token_ids [B], and the new state."""
        xg = self._table[np.asarray(token_ids, dtype=np.int64)]
        new_state = []
        for k in range(self.config.layers):
            if k:
                xg = new_state[-1][0] @ self._w_ih_t[k]
                xg += self._b_ih[k]
            new_state.append(self._cell.step(xg, state[k], self._w_hh_t[k], self._b_hh[k]))
        logits = new_state[-1][0] @ self._head_t
        logits += self._head_b
        return log_softmax(logits), new_state

    def run(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, T, V] after each of token_ids [B, T], and the final state."""
        ids = np.asarray(token_ids, dtype=np.int64).T        # time-major inside
        hidden, new_state = run_hidden(self.model.params, self.config, ids, state, self._table)
        return head_log_probs(self.model.params, hidden).transpose(1, 0, 2), new_state
