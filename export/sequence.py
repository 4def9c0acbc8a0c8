"""The sequence graph in plain operators: `time` characters for `batch` streams, one Scan per layer.

Layer by layer, as the NumPy reference does: only the recurrent product and the gate arithmetic
are inside the loop; the input projection of each layer and the head run on all time x batch
positions at once, outside it. Time-major inside (Scan over axis 0: onnx's ReferenceEvaluator
implements no other scan axis, and onnxruntime transposes to axis 0 internally anyway):
    xg_0 = table[tokens^T]                     [T, B, G*H0]
    for each layer k: Scan over time of xg_k with state_k:  body: gh = h W_hh^T (+ b_hn),
                      state' = cell step(xg_t, gh, state); scan output h' -> h_seq_k [T, B, H_k]
    xg_{k+1} = h_seq_k W_ih^T + b               [T, B, G*H_{k+1}]
    log_probs = transpose(log_softmax(h_seq_top W_head^T + b_head))   [B, T, V]
"""
from __future__ import annotations

import onnx

from compact_lm.model import Model

from .cells import ONNX_CELLS
from .graph import FLOAT, GraphBuilder, tensor
from .interface import io_names, BATCH, LOG_PROBS, TOKENS, graph_inputs, graph_outputs, out_name, state_names
from .linear import FP32, Arithmetic
from .weights import fold_weights


def build_sequence_graph(model: Model, arithmetic: Arithmetic = FP32) -> onnx.GraphProto:
    """The plain-operator sequence graph of `model` (Scan over time, dynamic batch and time)."""
    config, weights, cell = model.config, fold_weights(model), ONNX_CELLS[model.config.cell]
    names = state_names(config)
    g = GraphBuilder()
    g.reserve(*io_names(config))
    x_seq = None
    for k, (layer, state) in enumerate(zip(weights.layers, names)):
        if k == 0:
            tokens_tm = g.op("Transpose", [TOKENS], "tokens_tm", perm=[1, 0])
            xg_seq = arithmetic.lookup(g, tokens_tm, weights.table, "l0/xg")
        else:
            xg_seq = arithmetic.linear(g, x_seq, layer.w_ih_t, layer.input_bias, f"l{k}/xg")
        gates = layer.w_hh_t.shape[1]
        # the body: one step of this layer; weights live in the outer graph and are used from here
        body = g.child()
        body_state = tuple(body.fresh(f"l{k}/{name}.in") for name in state)
        body_xg = body.fresh(f"l{k}/xg_t")
        gh = arithmetic.linear(body, body_state[0], layer.w_hh_t, layer.recurrent_bias, f"l{k}/gh")
        new_state = cell.step(body, body_xg, gh, body_state, layer.hidden, f"l{k}")
        h_t = body.op("Identity", [new_state[0]], f"l{k}/h_t")
        body_graph = body.graph(
            f"layer{k}_step",
            [*(tensor(n, FLOAT, [BATCH, layer.hidden]) for n in body_state), tensor(body_xg, FLOAT, [BATCH, gates])],
            [*(tensor(n, FLOAT, [BATCH, layer.hidden]) for n in new_state), tensor(h_t, FLOAT, [BATCH, layer.hidden])])
        x_seq = g.fresh(f"l{k}/h_seq")
        g.op("Scan", [*state, xg_seq], f"l{k}/scan", out_names=[*(out_name(n) for n in state), x_seq],
             body=body_graph, num_scan_inputs=1)
    logits = arithmetic.linear(g, x_seq, weights.head_t, weights.head_b, "head")
    log_probs = g.op("LogSoftmax", [logits], "log_probs_tm", axis=-1)
    g.op("Transpose", [log_probs], LOG_PROBS, out_names=[LOG_PROBS], perm=[1, 0, 2])
    return g.graph("compact_lm_sequence", graph_inputs(config, True), graph_outputs(config, True))
