"""The sequence graph in plain operators: `time` characters for `batch` streams, one Scan per layer.

Layer by layer, as the NumPy reference does: only the recurrent product and the gate arithmetic
are inside the loop; the input products of each layer and the head run on all time x batch
positions at once, outside it. Time-major inside (Scan over axis 0: onnx's ReferenceEvaluator
implements no other scan axis, and onnxruntime transposes to axis 0 internally anyway):
    xg_0 = embed(tokens^T)                     [T, B, G*H0]
    for each layer k: Scan over time of xg_k with state_k; body: gh = recurrent(k, h),
                      state' = cell step(xg_t, gh, state); scan output h' -> h_seq_k [T, B, H_k]
    xg_{k+1} = inputs(k + 1, h_seq_k)          [T, B, G*H_{k+1}]
    log_probs = transpose(log_softmax(logits(h_seq_top)))   [B, T, V]
Weights live in the outer graph; the Scan bodies use them from there.
"""
from __future__ import annotations

import onnx

from compact_lm.cells import get_cell
from compact_lm.model_file import ModelFile

from .cells import ONNX_CELLS
from .graph import FLOAT, GraphBuilder, tensor
from .interface import BATCH, LOG_PROBS, TOKENS, graph_inputs, graph_outputs, io_names, out_name, state_names
from .products import GraphProducts, default_products


def build_sequence_graph(model: ModelFile, products: GraphProducts | None = None) -> onnx.GraphProto:
    """The plain-operator sequence graph of `model` (Scan over time; dynamic batch and time; products as in step)."""
    config, cell = model.config, ONNX_CELLS[model.config.cell]
    products = default_products(model) if products is None else products
    gates = get_cell(config.cell).gates
    g = GraphBuilder()
    g.reserve(*io_names(config))
    x_seq = None
    for k, (hidden, state) in enumerate(zip(config.hidden_sizes, state_names(config))):
        if k == 0:
            xg_seq = products.embed(g, g.op("Transpose", [TOKENS], "tokens_tm", perm=[1, 0]))
        else:
            xg_seq = products.inputs(g, k, x_seq)
        body = g.child()   # one step of this layer
        body_state = tuple(body.fresh(f"l{k}/{name}.in") for name in state)
        body_xg = body.fresh(f"l{k}/xg_t")
        new_state = cell.step(body, body_xg, products.recurrent(body, k, body_state[0]), body_state, hidden, f"l{k}",
                              products.activations)
        h_t = body.op("Identity", [new_state[0]], f"l{k}/h_t")
        body_graph = body.graph(
            f"layer{k}_step",
            [*(tensor(n, FLOAT, [BATCH, hidden]) for n in body_state), tensor(body_xg, FLOAT, [BATCH, gates * hidden])],
            [*(tensor(n, FLOAT, [BATCH, hidden]) for n in new_state), tensor(h_t, FLOAT, [BATCH, hidden])])
        x_seq = g.fresh(f"l{k}/h_seq")
        g.op("Scan", [*state, xg_seq], f"l{k}/scan", out_names=[*(out_name(n) for n in state), x_seq],
             body=body_graph, num_scan_inputs=1)
    log_probs = g.op("LogSoftmax", [products.logits(g, x_seq)], "log_probs_tm", axis=-1)
    g.op("Transpose", [log_probs], LOG_PROBS, out_names=[LOG_PROBS], perm=[1, 0, 2])
    return g.graph("compact_lm_sequence", graph_inputs(config, True), graph_outputs(config, True))
