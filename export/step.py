"""The step graph in plain operators: one character for `batch` streams, state in, state out.

    xg_0 = embed(tokens)                     (Gather of a table row: E W_ih0^T + folded biases)
    xg_k = inputs(k, h_{k-1}')               (k > 0: h W_ih_k^T + b)
    gh_k = recurrent(k, h_k)                 (h W_hh_k^T, + b_hn for GRU)
    state_k' = cell step(xg_k, gh_k, state_k)
    log_probs = log_softmax(logits(h_top'))
"""
from __future__ import annotations

import onnx

from compact_lm.model_file import ModelFile

from .cells import ONNX_CELLS
from .graph import GraphBuilder
from .interface import LOG_PROBS, TOKENS, graph_inputs, graph_outputs, io_names, out_name, state_names
from .products import GraphProducts, default_products


def build_step_graph(model: ModelFile, products: GraphProducts | None = None) -> onnx.GraphProto:
    """The plain-operator step graph of `model` (products: int8 for a quantized model, else fp32, unless given)."""
    config, cell = model.config, ONNX_CELLS[model.config.cell]
    products = default_products(model) if products is None else products
    g = GraphBuilder()
    g.reserve(*io_names(config))
    x = None
    for k, (hidden, state) in enumerate(zip(config.hidden_sizes, state_names(config))):
        xg = products.embed(g, TOKENS) if k == 0 else products.inputs(g, k, x)
        gh = products.recurrent(g, k, state[0])
        new_state = cell.step(g, xg, gh, state, hidden, f"l{k}", products.activations)
        for value, name in zip(new_state, state):
            g.rename(value, out_name(name))
        x = out_name(state[0])
    g.op("LogSoftmax", [products.logits(g, x)], LOG_PROBS, out_names=[LOG_PROBS], axis=-1)
    return g.graph("compact_lm_step", graph_inputs(config, False), graph_outputs(config, False))
