"""The four products of a step as ONNX nodes: the one place where an int8 graph differs from the fp32 one.

The graph builders never put a weight into the graph themselves; they ask a `GraphProducts` for the
same four products the NumPy backends compute (compact_lm/backends.py):
    embed(ids)        layer 1's input pre-activations, a row of the folded [V, G*H0] table
    inputs(k, x)      layer k's x W_ih^T + b (k >= 1)
    recurrent(k, h)   layer k's h W_hh^T (+ whatever part of b_hh is not folded into the input side)
    logits(h)         h head^T + head_b
and leave the gate arithmetic to the cell (export/cells.py), which works whether a bias is folded into
the input side or not. `FloatGraphProducts` stores float32 weights, pre-transposed to [in, out] so each
product is one plain MatMul (+ Add, which onnxruntime fuses into a Gemm for 2-D inputs). The int8
variant (export/products_int8.py) implements the same four methods over a QuantizedModel
(QuantizeLinear -> MatMulInteger -> Cast -> Mul -> Add, mirroring compact_lm.int8) and sets `int8 = True`.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from compact_lm.model import Model
from compact_lm.model_file import ModelFile

from .cells import FLOAT_GRAPH_ACTIVATIONS, GraphActivations
from .graph import OPSET, GraphBuilder
from .products_int8 import Int8GraphProducts
from .weights import fold_weights


class GraphProducts(Protocol):
    """What the step and sequence builders need to turn values into gate pre-activations and logits."""

    name: str      # shown in the model's doc string ("fp32")
    int8: bool     # recorded in the metadata
    opset: int     # default-domain opset of the model (every operator used needs an onnxruntime kernel at it)
    activations: GraphActivations   # the cells' sigmoid and tanh

    def embed(self, g: GraphBuilder, ids: str) -> str: ...

    def inputs(self, g: GraphBuilder, k: int, x: str) -> str: ...

    def recurrent(self, g: GraphBuilder, k: int, h: str) -> str: ...

    def logits(self, g: GraphBuilder, h: str) -> str: ...


def matmul_add(g: GraphBuilder, x: str, w_t: np.ndarray, bias: np.ndarray | None, hint: str) -> str:
    """y = x @ w_t (+ bias) with float32 initializers; x may have leading batch/time axes."""
    y = g.op("MatMul", [x, g.weight(f"{hint}.w_t", np.asarray(w_t, dtype=np.float32))], f"{hint}.mm")
    if bias is None:
        return y
    return g.op("Add", [y, g.weight(f"{hint}.b", np.asarray(bias, dtype=np.float32))], hint)


class FloatGraphProducts:
    """fp32 products over the folded weights (export/weights.py): additive b_hh parts live on the input side."""

    name = "fp32"
    int8 = False
    opset = OPSET
    activations = FLOAT_GRAPH_ACTIVATIONS

    def __init__(self, model: Model):
        self.weights = fold_weights(model)

    def embed(self, g: GraphBuilder, ids: str) -> str:
        """table[ids] (Gather), table = E W_ih0^T + b_ih0 + additive b_hh0."""
        return g.op("Gather", [g.weight("l0/xg.table", self.weights.table), ids], "l0/xg", axis=0)

    def inputs(self, g: GraphBuilder, k: int, x: str) -> str:
        """x W_ih_k^T + b_ih_k + additive b_hh_k."""
        layer = self.weights.layers[k]
        return matmul_add(g, x, layer.w_ih_t, layer.input_bias, f"l{k}/xg")

    def recurrent(self, g: GraphBuilder, k: int, h: str) -> str:
        """h W_hh_k^T (+ GRU's b_hn block)."""
        layer = self.weights.layers[k]
        return matmul_add(g, h, layer.w_hh_t, layer.recurrent_bias, f"l{k}/gh")

    def logits(self, g: GraphBuilder, h: str) -> str:
        """h head^T + head_b."""
        return matmul_add(g, h, self.weights.head_t, self.weights.head_b, "head")


# a model's precision -> the products that store and multiply its weights in a graph
GRAPH_PRODUCTS = {"fp32": FloatGraphProducts, "int8": Int8GraphProducts}


def default_products(model: ModelFile) -> GraphProducts:
    """The products of the model's precision: int8 for a quantized model, fp32 for a float one."""
    return GRAPH_PRODUCTS[model.precision](model)
