"""Step and sequence graphs built on ONNX's own RNN / GRU / LSTM operators (the `native_rnn` option).

Each layer is one operator node with W [1, G*H, I], R [1, G*H, H], B [1, 2*G*H] = [W_b, R_b], gate
blocks reordered from PyTorch's to ONNX's order (ONNX_CELLS[cell].native_blocks). GRU needs
linear_before_reset=1 for PyTorch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). Layer 0's input is
the embedding row (the operator multiplies by W_ih itself, so there is no table here).
Sequence axis first (layout 0): X [T, B, I], initial_h [1, B, H]; Y [T, 1, B, H], Y_h [1, B, H].
Onnxruntime's reduced mobile builds have no kernels for these operators; the plain graphs run everywhere.
"""
from __future__ import annotations

import numpy as np
import onnx

from compact_lm.model import Model

from .cells import ONNX_CELLS
from .graph import GraphBuilder
from .interface import LOG_PROBS, TOKENS, graph_inputs, graph_outputs, io_names, out_name, state_names
from .products import matmul_add


def reorder_blocks(array: np.ndarray, blocks: tuple[int, ...], hidden: int) -> np.ndarray:
    """Stack row blocks of height `hidden` of a [G*H, ...] array in the order `blocks`."""
    return np.concatenate([array[b * hidden:(b + 1) * hidden] for b in blocks], axis=0)


def native_weights(model: Model, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [1, G*H, I], R [1, G*H, H], B [1, 2*G*H] of layer k in ONNX's gate order (float32)."""
    p, hidden = model.params, model.config.hidden_sizes[k]
    blocks = ONNX_CELLS[model.config.cell].native_blocks
    w, r = (reorder_blocks(p[f"rnn.weight_{kind}_l{k}"], blocks, hidden) for kind in ("ih", "hh"))
    b = np.concatenate([reorder_blocks(p[f"rnn.bias_{kind}_l{k}"], blocks, hidden) for kind in ("ih", "hh")])
    return tuple(np.ascontiguousarray(a[None], dtype=np.float32) for a in (w, r, b))


def build_native_graph(model: Model, sequence: bool) -> onnx.GraphProto:
    """Step (sequence=False) or sequence graph with one native recurrent node per layer (fp32 only)."""
    config, cell = model.config, ONNX_CELLS[model.config.cell]
    names = state_names(config)
    g = GraphBuilder()
    g.reserve(*io_names(config))
    axis0 = g.ints("axes0", [0])
    embedding = g.weight("embedding", model.params["embedding.weight"].astype(np.float32))
    if sequence:   # time-major inside: X [T, B, E]
        x = g.op("Gather", [embedding, g.op("Transpose", [TOKENS], "tokens_tm", perm=[1, 0])], "x", axis=0)
    else:          # a sequence of length 1: X [1, B, E]
        x = g.op("Unsqueeze", [g.op("Gather", [embedding, TOKENS], "x", axis=0), axis0], "x_seq")
    for k, (hidden, state) in enumerate(zip(config.hidden_sizes, names)):
        w, r, b = native_weights(model, k)
        initial = [g.op("Unsqueeze", [name, axis0], f"l{k}/{name}.0") for name in state]
        inputs = [x, g.weight(f"l{k}/W", w), g.weight(f"l{k}/R", r), g.weight(f"l{k}/B", b), "", initial[0]]
        if len(state) == 2:
            inputs.append(initial[1])
        # outputs Y (all steps; left out ("") for one step), Y_h, and LSTM's Y_c
        y = g.fresh(f"l{k}/Y") if sequence else ""
        finals = [g.fresh(f"l{k}/Y_{kind}") for kind in ("h", "c")[:len(state)]]
        g.op(cell.native_op, inputs, f"l{k}/{cell.native_op}", out_names=[y, *finals], hidden_size=hidden,
             **cell.native_attrs)
        for final, name in zip(finals, state):
            g.op("Squeeze", [final, axis0], out_name(name), out_names=[out_name(name)])
        # next layer's input: all time steps [T, B, H] (Y without its direction axis), or Y_h for one step
        x = g.op("Squeeze", [y, g.ints(f"l{k}/axes1", [1])], f"l{k}/y") if sequence else finals[0]
    top = x if sequence else out_name(names[-1][0])
    logits = matmul_add(g, top, model.params["head.weight"].T, model.params["head.bias"], "head")
    if sequence:   # [T, B, V] -> [B, T, V]
        log_probs = g.op("LogSoftmax", [logits], "log_probs_tm", axis=-1)
        g.op("Transpose", [log_probs], LOG_PROBS, out_names=[LOG_PROBS], perm=[1, 0, 2])
    else:
        g.op("LogSoftmax", [logits], LOG_PROBS, out_names=[LOG_PROBS], axis=-1)
    kind = "sequence" if sequence else "step"
    return g.graph(f"compact_lm_native_{kind}", graph_inputs(config, sequence), graph_outputs(config, sequence))

