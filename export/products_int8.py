"""The four products of a step in the int8 scheme of compact_lm/int8.py, as ONNX nodes (Int8GraphProducts).

Each matrix product, for W [out, in] stored as int8 w_q and float32 per-row scales s_w (int8.Int8Product):
    x_q = QuantizeLinear(x, ACT_SCALE, uint8 128)           uint8: round_half_even(x / ACT_SCALE) + 128, saturated
    acc = MatMulInteger(x_q, w_q^T, a_zero_point=128)       int32: sum_k (x_q[k] - 128) w_q[j, k], exact
    y   = Cast(acc, float) * column_scale + b               column_scale = float32(ACT_SCALE * s_w)
in that order, as the NumPy int8 path computes it, so every value matches it bit for bit up to the
float functions of the cells (tanh, sigmoid, exp), which onnxruntime and NumPy round differently.
Layer 1's input side is its int8 table, gathered and dequantized per row: Cast(table_q[ids]) * scale[ids].

Unlike the fp32 graph, no part of b_hh moves to the input side: the NumPy int8 path adds all of b_hh
to the recurrent product (gh = acc * scale + b_hh), and a float sum taken in another order would
round differently.

Weights are int8 initializers stored transposed ([in, out], MatMulInteger's B), scales and biases float32,
so the file is about a quarter of the fp32 file. Why the table is gathered before it is dequantized rather
than dequantized whole and then gathered: onnxruntime would fold the latter into a float32 table at
session start (one Gather per step, ~0.5 us faster for a GRU with H=256), but its offline ORT-format
conversion would then store that float table too, and without graph optimizations every step would
dequantize the whole table.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from compact_lm.int8 import ACT_SCALE, ACT_ZERO_POINT, Int8Product
from compact_lm.quantized import QuantizedModel

from .graph import INT8_OPSET, GraphBuilder

FLOAT = TensorProto.FLOAT


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
    opset = INT8_OPSET

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
        """float(table_q[ids]) * table_scale[ids] (the scale stored as a [V, 1] column, so it broadcasts per row)."""
        rows = g.op("Gather", [g.weight("l0/xg.table_q", self.table_q), ids], "l0/xg.rows_q", axis=0)
        rows_f = g.op("Cast", [rows], "l0/xg.rows_f", to=FLOAT)
        scale = g.op("Gather", [g.weight("l0/xg.table_scale", self.table_scale[:, None]), ids], "l0/xg.scale", axis=0)
        return g.op("Mul", [rows_f, scale], "l0/xg")

    def inputs(self, g: GraphBuilder, k: int, x: str) -> str:
        """x W_ih_k^T + b_ih_k in the int8 scheme."""
        return int8_matmul(g, x, self._inputs[k], f"l{k}/xg")

    def recurrent(self, g: GraphBuilder, k: int, h: str) -> str:
        """h W_hh_k^T + b_hh_k (all of b_hh) in the int8 scheme."""
        return int8_matmul(g, h, self._recurrent[k], f"l{k}/gh")

    def logits(self, g: GraphBuilder, h: str) -> str:
        """h head^T + head_b in the int8 scheme."""
        return int8_matmul(g, h, self._head, "head")
