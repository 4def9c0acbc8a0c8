"""One recurrent step of each cell as ONNX nodes: the registry ONNX_CELLS, keyed like compact_lm.cells.CELLS.

A cell's `step` receives two gate pre-activation tensors already computed by the caller's products
(export/products.py), gate blocks in PyTorch's order (docs/format.md):
    xg = x W_ih^T + b_ih (+ any part of b_hh folded in)     [B, G*H]  (layer 0: a table row)
    gh = h W_hh^T (+ the rest of b_hh)                      [B, G*H]
and emits the gate arithmetic. The step does not care where an additive bias sits, so the same step
serves the fp32 graphs (biases folded), the Scan body of the sequence graph, and an int8 graph (which
only changes how xg and gh are computed); only GRU's b_hn must be in gh, since it is multiplied by r.
Its sigmoid and tanh come from `act`, the products' activations: Sigmoid/Tanh operators for fp32
(`FloatGraphActivations`), lookup tables for int8 (export/products_int8.py), as compact_lm.cells does.

`split_bias(b_hh, H) -> (additive, recurrent)`: b_hh is folded into the input side wherever it is
simply added to a pre-activation: all of rnn and lstm, the r and z blocks of gru. GRU's n block
is not additive, n = tanh(x_n + r * (W_hn h + b_hn)), so b_hn stays on the recurrent side.

`native_*` describe the same cell as ONNX's own RNN/GRU/LSTM operator: `native_blocks[j]` is the
PyTorch block that goes to ONNX block j (GRU: r,z,n -> z,r,h; LSTM: i,f,g,o -> i,o,f,c).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from compact_lm.cells import LSTM_GATE_ACTIVATIONS

from .graph import GraphBuilder

_OPERATORS = {"sigmoid": "Sigmoid", "tanh": "Tanh"}


class GraphActivations(Protocol):
    """The sigmoid and tanh nodes of a step (`act`) over x [B, width]; each returns the output's name."""

    def sigmoid(self, g: GraphBuilder, x: str, width: int, hint: str) -> str: ...

    def tanh(self, g: GraphBuilder, x: str, width: int, hint: str) -> str: ...

    def gates(self, g: GraphBuilder, x: str, kinds: tuple[str, ...], hidden: int, hint: str) -> list[str]: ...


class FloatGraphActivations:
    """sigmoid and tanh as ONNX's Sigmoid and Tanh operators."""

    def sigmoid(self, g: GraphBuilder, x: str, width: int, hint: str) -> str:
        """Sigmoid(x) of x [B, width]."""
        return g.op("Sigmoid", [x], hint)

    def tanh(self, g: GraphBuilder, x: str, width: int, hint: str) -> str:
        """Tanh(x) of x [B, width]."""
        return g.op("Tanh", [x], hint)

    def gates(self, g: GraphBuilder, x: str, kinds: tuple[str, ...], hidden: int, hint: str) -> list[str]:
        """The blocks of x [.., len(kinds) * hidden], block j through activation kinds[j]."""
        blocks = g.split(x, [hidden] * len(kinds), f"{hint}/a")
        return [g.op(_OPERATORS[kind], [block], f"{hint}/{kind}{j}")
                for j, (kind, block) in enumerate(zip(kinds, blocks))]


FLOAT_GRAPH_ACTIVATIONS = FloatGraphActivations()


# ----------------------------------------------------------------------------------------- rnn
def rnn_step(g: GraphBuilder, xg: str, gh: str, state: tuple[str, ...], hidden: int, hint: str,
             act: GraphActivations = FLOAT_GRAPH_ACTIVATIONS) -> tuple[str, ...]:
    """h' = tanh(xg + gh)."""
    return (act.tanh(g, g.op("Add", [xg, gh], f"{hint}/a"), hidden, f"{hint}/h"),)


def rnn_split_bias(b_hh: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray | None]:
    """All of b_hh is additive."""
    return b_hh, None


# ----------------------------------------------------------------------------------------- gru
def gru_step(g: GraphBuilder, xg: str, gh: str, state: tuple[str, ...], hidden: int, hint: str,
             act: GraphActivations = FLOAT_GRAPH_ACTIVATIONS) -> tuple[str, ...]:
    """[r, z] = sigma(xg_rz + gh_rz), n = tanh(xg_n + r * gh_n), h' = n + z * (h - n) = (1 - z) n + z h."""
    (h,) = state
    xg_rz, xg_n = g.split(xg, [2 * hidden, hidden], f"{hint}/xg")
    gh_rz, gh_n = g.split(gh, [2 * hidden, hidden], f"{hint}/gh")
    rz = act.sigmoid(g, g.op("Add", [xg_rz, gh_rz], f"{hint}/a_rz"), 2 * hidden, f"{hint}/rz")
    r, z = g.split(rz, [hidden, hidden], f"{hint}/rz")
    n = act.tanh(g, g.op("Add", [xg_n, g.op("Mul", [r, gh_n], f"{hint}/r_gh_n")], f"{hint}/a_n"), hidden, f"{hint}/n")
    z_h_minus_n = g.op("Mul", [z, g.op("Sub", [h, n], f"{hint}/h_minus_n")], f"{hint}/z_h_minus_n")
    return (g.op("Add", [n, z_h_minus_n], f"{hint}/h"),)


def gru_split_bias(b_hh: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray | None]:
    """b_hr, b_hz are additive; b_hn sits inside r * (W_hn h + b_hn) and stays on the recurrent side."""
    additive, recurrent = b_hh.copy(), np.zeros_like(b_hh)
    additive[2 * hidden:] = 0
    recurrent[2 * hidden:] = b_hh[2 * hidden:]
    return additive, recurrent


# ---------------------------------------------------------------------------------------- lstm
def lstm_step(g: GraphBuilder, xg: str, gh: str, state: tuple[str, ...], hidden: int, hint: str,
              act: GraphActivations = FLOAT_GRAPH_ACTIVATIONS) -> tuple[str, ...]:
    """i, f, o = sigma(.), g = tanh(.) of xg + gh; c' = f c + i g, h' = o tanh(c')."""
    h, c = state
    i, f, cand, o = act.gates(g, g.op("Add", [xg, gh], f"{hint}/a"), LSTM_GATE_ACTIVATIONS, hidden, f"{hint}/gates")
    c_new = g.op("Add", [g.op("Mul", [f, c], f"{hint}/f_c"), g.op("Mul", [i, cand], f"{hint}/i_g")], f"{hint}/c")
    h_new = g.op("Mul", [o, act.tanh(g, c_new, hidden, f"{hint}/tanh_c")], f"{hint}/h")
    return (h_new, c_new)


def lstm_split_bias(b_hh: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray | None]:
    """All of b_hh is additive."""
    return b_hh, None


@dataclass(frozen=True)
class OnnxCell:
    """How one kind of cell is written as ONNX nodes."""

    step: Callable[..., tuple[str, ...]]   # (g, xg, gh, state, hidden, hint, act) -> new state
    split_bias: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray | None]]
    native_op: str                      # ONNX operator of the same cell
    native_blocks: tuple[int, ...]      # PyTorch gate block for each ONNX gate block
    native_attrs: dict = field(default_factory=dict)


ONNX_CELLS: dict[str, OnnxCell] = {
    "rnn": OnnxCell(rnn_step, rnn_split_bias, "RNN", (0,), {"activations": ["Tanh"]}),
    "gru": OnnxCell(gru_step, gru_split_bias, "GRU", (1, 0, 2), {"linear_before_reset": 1}),
    "lstm": OnnxCell(lstm_step, lstm_split_bias, "LSTM", (0, 3, 1, 2)),
}
