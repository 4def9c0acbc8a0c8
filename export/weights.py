"""The model's arrays rearranged for inference graphs: transposed, gate biases folded, layer 0 as a table.

Per layer k, with PyTorch's W_ih [G*H, I], W_hh [G*H, H] and b_hh split by the cell into an
additive part and a recurrent part (export/cells.py):
    xg = x W_ih^T + (b_ih + b_hh_additive)      (layer 0: x is an embedding row, so xg is a row of
                                                 table = E W_ih0^T + b_ih0 + b_hh0_additive, [V, G*H0])
    gh = h W_hh^T (+ b_hh_recurrent)
Folding is computed in float64 and rounded once to float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compact_lm.model import Model

from .cells import ONNX_CELLS


@dataclass(frozen=True)
class LayerWeights:
    """One recurrent layer's float32 operands for FloatGraphProducts."""

    hidden: int
    w_ih_t: np.ndarray | None            # [I, G*H]; None for layer 0 (its input side is the table)
    input_bias: np.ndarray | None        # [G*H] b_ih + additive b_hh; None for layer 0 (in the table)
    w_hh_t: np.ndarray                   # [H, G*H]
    recurrent_bias: np.ndarray | None    # [G*H] (zeros except GRU's n block) or None


@dataclass(frozen=True)
class FoldedWeights:
    """Everything the plain-operator graphs multiply by."""

    table: np.ndarray                    # [V, G*H0]
    layers: list[LayerWeights]
    head_t: np.ndarray                   # [H_last, V]
    head_b: np.ndarray                   # [V]


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def fold_weights(model: Model) -> FoldedWeights:
    """Transpose every weight to [in, out] and fold the additive biases into the input side."""
    p = {name: a.astype(np.float64) for name, a in model.params.items()}
    cell = ONNX_CELLS[model.config.cell]
    layers, table = [], None
    for k, hidden in enumerate(model.config.hidden_sizes):
        additive, recurrent = cell.split_bias(p[f"rnn.bias_hh_l{k}"], hidden)
        input_bias = p[f"rnn.bias_ih_l{k}"] + additive
        w_hh_t = _f32(p[f"rnn.weight_hh_l{k}"].T)
        recurrent = None if recurrent is None else _f32(recurrent)
        if k == 0:
            table = _f32(p["embedding.weight"] @ p["rnn.weight_ih_l0"].T + input_bias)
            layers.append(LayerWeights(hidden, None, None, w_hh_t, recurrent))
        else:
            layers.append(LayerWeights(hidden, _f32(p[f"rnn.weight_ih_l{k}"].T), _f32(input_bias), w_hh_t, recurrent))
    return FoldedWeights(table, layers, _f32(p["head.weight"].T), _f32(p["head.bias"]))
