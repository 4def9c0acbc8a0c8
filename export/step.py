"""The step graph in plain operators: one character for `batch` streams, state in, state out.

    xg_0 = table[tokens]                     (Gather; table = E W_ih0^T + folded biases)
    xg_k = h_{k-1}' W_ih_k^T + b_k           (k > 0)
    gh_k = h_k W_hh_k^T (+ b_hn for GRU)
    state_k' = cell step(xg_k, gh_k, state_k)
    log_probs = log_softmax(h_top' W_head^T + b_head)
"""
from __future__ import annotations

import onnx

from compact_lm.model import Model

from .cells import ONNX_CELLS
from .graph import GraphBuilder
from .interface import io_names, LOG_PROBS, TOKENS, graph_inputs, graph_outputs, out_name, state_names
from .linear import FP32, Arithmetic
from .weights import fold_weights


def build_step_graph(model: Model, arithmetic: Arithmetic = FP32) -> onnx.GraphProto:
    """The plain-operator step graph of `model` (weights stored and applied as `arithmetic` says)."""
    config, weights, cell = model.config, fold_weights(model), ONNX_CELLS[model.config.cell]
    names = state_names(config)
    g = GraphBuilder()
    g.reserve(*io_names(config))
    x = None
    for k, (layer, state) in enumerate(zip(weights.layers, names)):
        if k == 0:
            xg = arithmetic.lookup(g, TOKENS, weights.table, "l0/xg")
        else:
            xg = arithmetic.linear(g, x, layer.w_ih_t, layer.input_bias, f"l{k}/xg")
        gh = arithmetic.linear(g, state[0], layer.w_hh_t, layer.recurrent_bias, f"l{k}/gh")
        new_state = cell.step(g, xg, gh, state, layer.hidden, f"l{k}")
        for value, name in zip(new_state, state):
            g.rename(value, out_name(name))
        x = out_name(state[0])
    logits = arithmetic.linear(g, x, weights.head_t, weights.head_b, "head")
    g.op("LogSoftmax", [logits], LOG_PROBS, out_names=[LOG_PROBS], axis=-1)
    return g.graph("compact_lm_step", graph_inputs(config, False), graph_outputs(config, False))
