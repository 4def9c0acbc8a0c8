"""The model as plain functions over a dict of arrays: forward, loss and exact BPTT gradients.

Parameter names and layouts are PyTorch's (`nn.Embedding` `embedding`, `nn.GRU/LSTM/RNN` `rnn`
with batch_first, `nn.Linear` `head`). Inside, arrays are time-major: ids [T, B].

Layer 1's input projection is folded into a table: since its input is one token,
x W_ih^T + b_ih = (E W_ih^T + b_ih)[token], a [V, G*H] table gathered by id; its gradient is
scattered back with one one-hot product, which is cheaper than the T*B-row products it replaces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cells import Cell, get_cell
from .config import ModelConfig

LayerState = tuple[np.ndarray, ...]      # (h,) or (h, c), each [B, H_k]
NetState = list[LayerState]              # one per layer


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter, in a fixed order (the order of the flat optimizer buffer)."""
    gates = get_cell(config.cell).gates
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (config.vocab_size, config.embed_size)}
    inputs = config.embed_size
    for k, hidden in enumerate(config.hidden_sizes):
        shapes[f"rnn.weight_ih_l{k}"] = (gates * hidden, inputs)
        shapes[f"rnn.weight_hh_l{k}"] = (gates * hidden, hidden)
        shapes[f"rnn.bias_ih_l{k}"] = (gates * hidden,)
        shapes[f"rnn.bias_hh_l{k}"] = (gates * hidden,)
        inputs = hidden
    shapes["head.weight"] = (config.vocab_size, inputs)
    shapes["head.bias"] = (config.vocab_size,)
    return shapes


def init_params(config: ModelConfig, rng: np.random.Generator, dtype=np.float32, scale: float = 1.0) -> dict[str, np.ndarray]:
    """PyTorch-style initialisation: weights U(-1/sqrt(n), 1/sqrt(n)) with n their input size (H for
    W_hh and the head, E or H_{k-1} for W_ih), biases U(-1/sqrt(H), 1/sqrt(H)), embedding N(0, 1).

    LSTM forget-gate biases start at 1 (b_ih + b_hh = 1) so early gradients flow through the cell state.
    """
    params = {}
    for name, shape in param_shapes(config).items():
        if name == "embedding.weight":
            value = rng.standard_normal(shape)
        elif name == "head.bias":
            value = np.zeros(shape)
        else:
            bound = scale / np.sqrt(shape[-1] if len(shape) == 2 else shape[0] // get_cell(config.cell).gates)
            value = rng.uniform(-bound, bound, size=shape)
        params[name] = value.astype(dtype)
    gate = get_cell(config.cell).forget_gate
    if gate is not None:
        for k, hidden in enumerate(config.hidden_sizes):
            params[f"rnn.bias_ih_l{k}"][gate * hidden:(gate + 1) * hidden] = 0.5
            params[f"rnn.bias_hh_l{k}"][gate * hidden:(gate + 1) * hidden] = 0.5
    return params


def zero_state(config: ModelConfig, batch: int, dtype=np.float32) -> NetState:
    """All-zero state for every layer."""
    cell = get_cell(config.cell)
    return [cell.zero_state(batch, hidden, dtype) for hidden in config.hidden_sizes]


def input_table(params: dict[str, np.ndarray]) -> np.ndarray:
    """Layer 1's input projection for every token: E W_ih0^T + b_ih0, [V, G*H0]."""
    return params["embedding.weight"] @ params["rnn.weight_ih_l0"].T + params["rnn.bias_ih_l0"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p = z - max z - log sum exp(z - max z), along the last axis (in place on `logits`)."""
    logits -= logits.max(axis=-1, keepdims=True)
    logits -= np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return logits


def run_layers(params: dict, config: ModelConfig, ids: np.ndarray, state: NetState, table: np.ndarray | None = None,
               w_hh_t: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], NetState]:
    """Every layer's outputs [T, B, H_k] for ids [T, B], and the final state (inference: no dropout).

    `table` and `w_hh_t` (each layer's W_hh^T, contiguous) may be passed in when the caller keeps them.
    """
    cell = get_cell(config.cell)
    table = input_table(params) if table is None else table
    outputs, new_state = [], []
    for k in range(config.layers):
        if k == 0:
            xg = table[ids]
        else:
            x = outputs[-1]
            steps, batch, width = x.shape
            xg = (x.reshape(-1, width) @ params[f"rnn.weight_ih_l{k}"].T + params[f"rnn.bias_ih_l{k}"]).reshape(steps, batch, -1)
        recurrent_t = w_hh_t[k] if w_hh_t is not None else np.ascontiguousarray(params[f"rnn.weight_hh_l{k}"].T)
        out, final, _ = cell.forward(xg, state[k], recurrent_t, params[f"rnn.bias_hh_l{k}"])
        outputs.append(out)
        new_state.append(tuple(np.array(s, copy=True) for s in final))
    return outputs, new_state


def run_hidden(params: dict, config: ModelConfig, ids: np.ndarray, state: NetState, table: np.ndarray | None = None,
               w_hh_t: list[np.ndarray] | None = None) -> tuple[np.ndarray, NetState]:
    """Top-layer outputs [T, B, H] for ids [T, B] and the final state (inference: no dropout)."""
    outputs, new_state = run_layers(params, config, ids, state, table, w_hh_t)
    return outputs[-1], new_state


def head_log_probs(params: dict, hidden: np.ndarray) -> np.ndarray:
    """Log-probabilities over the vocabulary from top-layer outputs [..., H]."""
    return log_softmax(hidden @ params["head.weight"].T + params["head.bias"])


@dataclass
class WindowResult:
    """What one training window gives back."""

    loss: float                        # the optimised loss (label smoothing included), nats / char
    nll: float                         # plain negative log-likelihood, nats / char
    grads: dict[str, np.ndarray]
    state: NetState                    # final state, to carry into the next window
    d_state: NetState                  # gradient of the loss w.r.t. the carried-in state


def loss_and_grads(params: dict, config: ModelConfig, inputs: np.ndarray, targets: np.ndarray, state: NetState, *,
                   dropout: float = 0.0, weight_drop: float = 0.0, label_smoothing: float = 0.0,
                   rng: np.random.Generator | None = None, teacher_probs: np.ndarray | None = None,
                   distill: float = 0.0) -> WindowResult:
    """Forward a window ids [T, B] from `state`, then exact backpropagation through time inside it.

    Loss per position: cross-entropy against q = (1 - eps - a) onehot(target) + eps / V + a * teacher,
    i.e. (1 - eps - a)(-log p[target]) + eps mean_v(-log p[v]) + a sum_v teacher[v](-log p[v]), averaged
    over T*B: label smoothing eps, distillation weight a with teacher_probs [T*B, V]. dL/dlogits = p - q.
    Dropout (inverted) masks each layer's output, i.e. between layers and before the head.
    Weight drop (DropConnect on W_hh, as in AWD-LSTM) masks recurrent weights with one mask for the
    whole window: W_eff = W_hh * M / (1 - p), so dL/dW_hh = dL/dW_eff * M / (1 - p).
    """
    cell: Cell = get_cell(config.cell)
    steps, batch = inputs.shape
    dtype = params["head.weight"].dtype
    keep = 1.0 - dropout
    table = input_table(params)
    layer_inputs, caches, masks, w_hh_eff, weight_masks, final_state = [], [], [], [], [], []
    x = None
    for k in range(config.layers):
        if k == 0:
            xg = table[inputs]
        else:
            layer_inputs.append(x)
            xg = x.reshape(steps * batch, -1) @ params[f"rnn.weight_ih_l{k}"].T
            xg += params[f"rnn.bias_ih_l{k}"]
            xg = xg.reshape(steps, batch, -1)
        w_hh = params[f"rnn.weight_hh_l{k}"]
        if weight_drop > 0.0:
            weight_mask = (rng.random(w_hh.shape, dtype=dtype) >= weight_drop).astype(dtype)
            weight_mask *= 1.0 / (1.0 - weight_drop)
            w_hh = w_hh * weight_mask
            weight_masks.append(weight_mask)
        w_hh_eff.append(w_hh)
        out, final, cache = cell.forward(xg, state[k], np.ascontiguousarray(w_hh.T), params[f"rnn.bias_hh_l{k}"])
        caches.append(cache)
        final_state.append(tuple(np.array(s, copy=True) for s in final))
        if dropout > 0.0:
            mask = (rng.random(out.shape, dtype=dtype) < keep).astype(dtype)
            mask *= 1.0 / keep
            masks.append(mask)
            x = out * mask
        else:
            masks.append(None)
            x = out
    top = x.reshape(steps * batch, -1)
    log_p = head_log_probs(params, top)
    rows = np.arange(steps * batch)
    flat_targets = targets.reshape(-1)
    target_log_p = log_p[rows, flat_targets]
    count = steps * batch
    nll = -float(target_log_p.sum(dtype=np.float64)) / count
    eps = label_smoothing
    alpha = distill if teacher_probs is not None else 0.0
    loss = (1.0 - eps - alpha) * nll - eps * float(log_p.sum(dtype=np.float64)) / (count * config.vocab_size)
    if alpha:
        loss -= alpha * float((teacher_probs * log_p).sum(dtype=np.float64)) / count

    # d loss / d logits = softmax - q, averaged over positions
    d_logits = np.exp(log_p)
    d_logits -= eps / config.vocab_size
    d_logits[rows, flat_targets] -= 1.0 - eps - alpha
    if alpha:
        d_logits -= alpha * teacher_probs
    d_logits *= 1.0 / count
    grads = {"head.weight": d_logits.T @ top, "head.bias": d_logits.sum(axis=0)}
    d_x = (d_logits @ params["head.weight"]).reshape(steps, batch, -1)
    d_state: NetState = [None] * config.layers
    for k in range(config.layers - 1, -1, -1):
        if masks[k] is not None:
            d_x *= masks[k]
        d_xg, d_w_hh, d_b_hh, d_state[k] = cell.backward(d_x, None, caches[k], w_hh_eff[k])
        if weight_drop > 0.0:
            d_w_hh *= weight_masks[k]
        grads[f"rnn.weight_hh_l{k}"] = d_w_hh
        grads[f"rnn.bias_hh_l{k}"] = d_b_hh
        flat_d_xg = d_xg.reshape(steps * batch, -1)
        if k == 0:
            # scatter d_xg back onto the table rows: one-hot [T*B, V]^T @ d_xg
            onehot = np.zeros((steps * batch, config.vocab_size), dtype=dtype)
            onehot[rows, inputs.reshape(-1)] = 1.0
            d_table = onehot.T @ flat_d_xg
            grads["embedding.weight"] = d_table @ params["rnn.weight_ih_l0"]
            grads["rnn.weight_ih_l0"] = d_table.T @ params["embedding.weight"]
            grads["rnn.bias_ih_l0"] = d_table.sum(axis=0)
        else:
            below = layer_inputs[k - 1]
            grads[f"rnn.weight_ih_l{k}"] = flat_d_xg.T @ below.reshape(steps * batch, -1)
            grads[f"rnn.bias_ih_l{k}"] = flat_d_xg.sum(axis=0)
            d_x = (flat_d_xg @ params[f"rnn.weight_ih_l{k}"]).reshape(steps, batch, -1)
    return WindowResult(loss=loss, nll=nll, grads=grads, state=final_state, d_state=d_state)
