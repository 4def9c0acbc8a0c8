"""Runtime backends: one protocol (initial_state, step, run) over NumPy fp32, NumPy int8, onnxruntime.

Above this line (autocomplete, verification, profiling) code works on any backend and never asks
which one it has. Below it, a NumPy backend is a cell from the registry plus four products, which
a float model computes in float32 and a quantized model in the integer scheme of `int8.py`
(whose `activations`, the cells' sigmoid and tanh, are lookup tables):
    embed(ids)        layer 1's x W_ih^T + b_ih, a row of the folded [V, G*H] table
    inputs(k, x)      layer k's x W_ih^T + b_ih (k >= 1)
    recurrent(k, h)   layer k's h W_hh^T + b_hh
    logits(h)         h head^T + head_b
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .cells import FLOAT_ACTIVATIONS, get_cell
from .network import log_softmax, run_hidden, zero_state


class Backend(Protocol):
    """What autocomplete, verification and profiling need from a model runtime.

    Calls may come from several threads at once (one Autocompleter serving many users): a backend keeps
    nothing between calls but its weights, and never writes into the arrays it is given.
    """

    vocab_size: int

    def initial_state(self, batch: int) -> list: ...

    def step(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]: ...

    def run(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]: ...


class FloatProducts:
    """The four products in float arithmetic, from PyTorch-named arrays plus the folded table."""

    def __init__(self, params: dict[str, np.ndarray], table: np.ndarray, layers: int):
        self.params, self.table, self.layers = params, table, layers
        self.dtype = params["head.bias"].dtype
        self.activations = FLOAT_ACTIVATIONS
        # operands laid out once: W^T contiguous so each product is one plain GEMM
        self._w_ih_t = {k: np.ascontiguousarray(params[f"rnn.weight_ih_l{k}"].T) for k in range(1, layers)}
        self.w_hh_t = [np.ascontiguousarray(params[f"rnn.weight_hh_l{k}"].T) for k in range(layers)]
        self._b_ih = {k: params[f"rnn.bias_ih_l{k}"] for k in range(1, layers)}
        self._b_hh = [params[f"rnn.bias_hh_l{k}"] for k in range(layers)]
        self._head_t = np.ascontiguousarray(params["head.weight"].T)
        self._head_b = params["head.bias"]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Layer 1's input projection: rows of the folded table."""
        return self.table[ids]

    def inputs(self, k: int, x: np.ndarray) -> np.ndarray:
        """Layer k's x W_ih^T + b_ih (k >= 1)."""
        y = x @ self._w_ih_t[k]
        y += self._b_ih[k]
        return y

    def recurrent(self, k: int, h: np.ndarray) -> np.ndarray:
        """Layer k's h W_hh^T + b_hh."""
        y = h @ self.w_hh_t[k]
        y += self._b_hh[k]
        return y

    def logits(self, h: np.ndarray) -> np.ndarray:
        """h head^T + head_b."""
        y = h @ self._head_t
        y += self._head_b
        return y


class NumpyBackend:
    """The reference path. A state is a list with one tuple per layer, (h,) or (h, c), each [batch, H_k].

    Takes a float `Model` (float32 arithmetic) or a `QuantizedModel` (the exact integer scheme, or
    with `arithmetic="float"` its dequantized weights in float arithmetic).
    """

    def __init__(self, model, *, arithmetic: str | None = None):
        self.model = model
        self.config = model.config
        self.vocab = model.vocab
        self.vocab_size = model.config.vocab_size
        self._cell = get_cell(model.config.cell)
        self.products = model.products(arithmetic)
        self._dtype = getattr(self.products, "dtype", np.float32)

    @property
    def lexicon(self):
        """The model's lexicon (compact_lm/lexicon.py), or None."""
        return self.model.lexicon

    def initial_state(self, batch: int) -> list:
        """Zero state for `batch` streams."""
        return zero_state(self.config, batch, self._dtype)

    def step(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, V] of the next character after token_ids [B], and the new state."""
        products = self.products
        xg = products.embed(np.asarray(token_ids, dtype=np.int64))
        new_state = []
        for k in range(self.config.layers):
            if k:
                xg = products.inputs(k, new_state[-1][0])
            new_state.append(self._cell.step(xg, products.recurrent(k, state[k][0]), state[k], products.activations))
        return log_softmax(products.logits(new_state[-1][0])), new_state

    def run(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, T, V] after each of token_ids [B, T], and the final state."""
        ids = np.asarray(token_ids, dtype=np.int64)
        if isinstance(self.products, FloatProducts):
            # float: the whole sequence layer by layer (cell.forward), head for all positions at once
            hidden, new_state = run_hidden(self.products.params, self.config, ids.T, state, self.products.table,
                                           self.products.w_hh_t)
            log_p = log_softmax(self.products.logits(hidden.reshape(-1, hidden.shape[-1])))
            return log_p.reshape(hidden.shape[0], hidden.shape[1], -1).transpose(1, 0, 2), new_state
        outputs = []
        for t in range(ids.shape[1]):
            log_p, state = self.step(ids[:, t], state)
            outputs.append(log_p)
        return np.stack(outputs, axis=1), state
