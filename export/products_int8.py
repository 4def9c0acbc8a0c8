"""The four products of a step in the int8 scheme of compact_lm/int8.py, as ONNX nodes (Int8GraphProducts).

Each matrix product, for W [out, in] stored as int8 w_q and float32 per-row scales s_w (int8.Int8Product):
    x_q = QuantizeLinear(x, ACT_SCALE, uint8 128)           uint8: round_half_even(x / ACT_SCALE) + 128, saturated
    acc = MatMulInteger(x_q, w_q^T, a_zero_point=128)       int32: sum_k (x_q[k] - 128) w_q[j, k], exact
    y   = Cast(acc, float) * column_scale + b               column_scale = float32(ACT_SCALE * s_w)
in that order, as the NumPy int8 path computes it, so every value matches it bit for bit.
Layer 1's input side is its int8 table, gathered and dequantized per column: Cast(table_q[ids]) * scale.
The cells' sigmoid and tanh are the scheme's lookup tables (`Int8GraphActivations`):
    i = Cast(QuantizeLinear(a, step, uint8 128), int64);  f(a) = GatherElements(table [1, 256], i, axis=1)
with i reshaped to one row [1, B*W] and the result back to [B, W]: GatherElements wants the indices no
larger than the table in the other axes (GatherElements, reshapes included, measured faster than Gather
from a [256] table: docs/experiments.md).
An LSTM's four gate blocks go through one joined table: a per-column (axis -1) step, plus a per-column
index offset that selects each block's part of the table. Only the final LogSoftmax is a float function,
so an int8 graph and the NumPy int8 path carry the same state bit for bit, step after step.

Unlike the fp32 graph, no part of b_hh moves to the input side: the NumPy int8 path adds all of b_hh
to the recurrent product (gh = acc * scale + b_hh), and a float sum taken in another order would
round differently.

Weights are int8 initializers stored transposed ([in, out], MatMulInteger's B), scales and biases float32,
so the file is about a quarter of the fp32 file. Why the table is gathered before it is dequantized rather
than dequantized whole and then gathered: onnxruntime would fold the latter into a float32 table at
session start (one Gather per step, a little faster), but its offline ORT-format conversion would then
store that float table too, and without graph optimizations every step would dequantize the whole table.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from compact_lm.int8 import (ACT_SCALE, ACT_ZERO_POINT, ACTIVATION_STEPS, ACTIVATION_TABLES, TABLE_ZERO_POINT,
                             Int8Product, gate_tables)
from compact_lm.quantized import QuantizedModel

from .graph import OPSET, GraphBuilder

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class Int8GraphActivations:
    """sigmoid and tanh as compact_lm.int8's lookup tables (a GraphActivations, export/cells.py)."""

    def sigmoid(self, g: GraphBuilder, x: str, width: int, hint: str) -> str:
        """sigmoid table[QuantizeLinear(x, sigmoid step, 128)] of x [B, width]."""
        return self._lookup(g, x, "sigmoid", width, hint)

    def tanh(self, g: GraphBuilder, x: str, width: int, hint: str) -> str:
        """tanh table[QuantizeLinear(x, tanh step, 128)] of x [B, width]."""
        return self._lookup(g, x, "tanh", width, hint)

    def gates(self, g: GraphBuilder, x: str, kinds: tuple[str, ...], hidden: int, hint: str) -> list[str]:
        """All blocks of x [.., len(kinds) * hidden] in one lookup of the joined table, then split."""
        steps, _, offsets, table = gate_tables(kinds, hidden)
        key = f"lut.{'+'.join(kinds)}.{hidden}"
        zero_points = np.full(steps.shape, TABLE_ZERO_POINT, dtype=np.uint8)
        index_q = g.op("QuantizeLinear", [x, g.shared(f"{key}.steps", steps), g.shared(f"{key}.zp", zero_points)],
                       f"{hint}/index_q", axis=-1)
        index = g.op("Add", [g.op("Cast", [index_q], f"{hint}/index_u", to=INT64), g.shared(f"{key}.offsets", offsets)],
                     f"{hint}/index")
        values = _gather(g, index, f"lut.{'+'.join(dict.fromkeys(kinds))}", table, len(kinds) * hidden, f"{hint}/act")
        return g.split(values, [hidden] * len(kinds), hint)

    def _lookup(self, g: GraphBuilder, x: str, kind: str, width: int, hint: str) -> str:
        step = g.shared(f"lut.{kind}.step", np.asarray(ACTIVATION_STEPS[kind], dtype=np.float32))
        zero_point = g.shared("lut.zero_point", np.asarray(TABLE_ZERO_POINT, dtype=np.uint8))
        index_q = g.op("QuantizeLinear", [x, step, zero_point], f"{hint}.index_q")
        index = g.op("Cast", [index_q], f"{hint}.index", to=INT64)
        return _gather(g, index, f"lut.{kind}", ACTIVATION_TABLES[kind], width, hint)


def _gather(g: GraphBuilder, index: str, key: str, table: np.ndarray, width: int, hint: str) -> str:
    """table[index] for int64 index [B, width]: GatherElements over one row, reshaped back to [B, width]."""
    row = g.op("Reshape", [index, g.shared("lut.one_row", np.array([1, -1], dtype=np.int64))], f"{hint}.row")
    values = g.op("GatherElements", [g.shared(key, table[None, :]), row], f"{hint}.values", axis=1)
    return g.op("Reshape", [values, g.shared(f"lut.rows_of{width}", np.array([-1, width], dtype=np.int64))], hint)


def int8_matmul(g: GraphBuilder, x: str, product: Int8Product, hint: str) -> str:
    """y = float(sum_k (x_q[k] - 128) w_q[j, k]) * column_scale[j] + b[j] of x [..., in] (any leading axes)."""
    act_scale = g.shared("act_scale", np.asarray(ACT_SCALE, dtype=np.float32))
    act_zero_point = g.shared("act_zero_point", np.asarray(ACT_ZERO_POINT, dtype=np.uint8))
    x_q = g.op("QuantizeLinear", [x, act_scale, act_zero_point], f"{hint}.x_q")
    w_q_t = g.weight(f"{hint}.w_q_t", np.ascontiguousarray(product.weight_q.T))
    acc = g.op("MatMulInteger", [x_q, w_q_t, act_zero_point], f"{hint}.acc")
    acc_f = g.op("Cast", [acc], f"{hint}.acc_f", to=FLOAT)
    scaled = g.op("Mul", [acc_f, g.weight(f"{hint}.column_scale", product.column_scale)], f"{hint}.scaled")
    return g.op("Add", [scaled, g.weight(f"{hint}.b", product.bias)], hint)


class Int8GraphProducts:
    """Int8 products over a QuantizedModel's arrays (names in compact_lm/quantized.py)."""

    name = "int8"
    int8 = True
    opset = OPSET
    activations = Int8GraphActivations()

    def __init__(self, model: QuantizedModel):
        a = model.arrays

        def product(weight: str, bias: str) -> Int8Product:
            # the NumPy path's own object, so column_scale is computed by the same code
            return Int8Product(a[f"{weight}.q"], a[f"{weight}.scale"], a[bias])

        self.table_q = a["table.q"]
        self.table_scale = a["table.scale"]
        self._inputs = {k: product(f"rnn.weight_ih_l{k}", f"rnn.bias_ih_l{k}") for k in range(1, model.config.layers)}
        self._recurrent = [product(f"rnn.weight_hh_l{k}", f"rnn.bias_hh_l{k}") for k in range(model.config.layers)]
        self._head = product("head.weight", "head.bias")

    def embed(self, g: GraphBuilder, ids: str) -> str:
        """float(table_q[ids]) * table_scale (per column)."""
        rows = g.op("Gather", [g.weight("l0/xg.table_q", self.table_q), ids], "l0/xg.rows_q", axis=0)
        rows_f = g.op("Cast", [rows], "l0/xg.rows_f", to=FLOAT)
        return g.op("Mul", [rows_f, g.weight("l0/xg.table_scale", self.table_scale)], "l0/xg")

    def inputs(self, g: GraphBuilder, k: int, x: str) -> str:
        """x W_ih_k^T + b_ih_k in the int8 scheme."""
        return int8_matmul(g, x, self._inputs[k], f"l{k}/xg")

    def recurrent(self, g: GraphBuilder, k: int, h: str) -> str:
        """h W_hh_k^T + b_hh_k (all of b_hh) in the int8 scheme."""
        return int8_matmul(g, h, self._recurrent[k], f"l{k}/gh")

    def logits(self, g: GraphBuilder, h: str) -> str:
        """h head^T + head_b in the int8 scheme."""
        return int8_matmul(g, h, self._head, "head")
