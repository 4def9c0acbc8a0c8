"""How a weight is stored and applied in the graph: the one place an int8 variant plugs in.

The step and sequence builders never emit a MatMul or a Gather on weights themselves; they call an
`Arithmetic`'s `linear` (y = x @ W_t + b) and `lookup` (y = table[ids]). This module gives the fp32
one: the weight is a float32 initializer, already transposed to [in, out] so each product is one
plain MatMul (onnxruntime fuses MatMul + Add into Gemm where the input is 2-D). An int8 Arithmetic
would store int8 weights + per-output-channel scales and emit integer products instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .graph import GraphBuilder


def float_linear(g: GraphBuilder, x: str, w_t: np.ndarray, bias: np.ndarray | None, hint: str) -> str:
    """y = x @ w_t (+ bias), w_t [in, out] float32; x may have leading batch/time axes."""
    y = g.op("MatMul", [x, g.weight(f"{hint}.w_t", w_t.astype(np.float32))], f"{hint}.mm")
    if bias is None:
        return y
    return g.op("Add", [y, g.weight(f"{hint}.b", bias.astype(np.float32))], hint)


def float_lookup(g: GraphBuilder, ids: str, table: np.ndarray, hint: str) -> str:
    """y = table[ids] (rows of a [V, D] float32 table gathered by token id)."""
    return g.op("Gather", [g.weight(f"{hint}.table", table.astype(np.float32)), ids], hint, axis=0)


@dataclass(frozen=True)
class Arithmetic:
    """A way to store and apply weights: fp32 now; int8 later, with the same two entry points."""

    name: str
    int8: bool
    linear: Callable[[GraphBuilder, str, np.ndarray, np.ndarray | None, str], str]
    lookup: Callable[[GraphBuilder, str, np.ndarray, str], str]


FP32 = Arithmetic("fp32", False, float_linear, float_lookup)
