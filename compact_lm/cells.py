"""The recurrent cells. Each kind plugs its math into one registry, `CELLS`.

A cell sees the input projection already done for every time step (xg = x W_ih^T + b_ih,
computed for all T*B positions at once, or gathered from a [V, G*H] table for layer 1) and owns
the recurrence: one matrix product per step, `gh = h W_hh^T + b_hh`, then its gate arithmetic.
`step` takes gh from its caller, so a runtime may compute that product in any arithmetic (float
or integer); `forward`/`backward` (training) do the float product inside their loop.

Weights follow PyTorch's layout: W_ih [G*H, input], W_hh [G*H, H], gate blocks stacked in rows.
Arrays here are time-major: xg [T, B, G*H], hidden outputs [T, B, H]. A state is a tuple of
[B, H] arrays: (h,) for rnn and gru, (h, c) for lstm.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

State = tuple[np.ndarray, ...]  # (h,) or (h, c), each [B, H]


def sigmoid_(x: np.ndarray) -> np.ndarray:
    """In-place logistic sigmoid, as sigma(x) = (1 + tanh(x / 2)) / 2 (no overflow for any x)."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


# A step takes its activation functions from the runtime: float functions by default, the int8
# scheme's lookup tables for a quantized model (int8.TableActivations), so that the NumPy int8
# path and an int8 ONNX graph compute the same bits. Every method works in place on a view.
LSTM_GATE_ACTIVATIONS = ("sigmoid", "sigmoid", "tanh", "sigmoid")   # blocks i, f, g, o


class Activations(Protocol):
    """The sigmoid and tanh of a step (`act`), each in place on a float array or view; returns it."""

    def sigmoid_(self, x: np.ndarray) -> np.ndarray: ...

    def tanh_(self, x: np.ndarray) -> np.ndarray: ...

    def gates_(self, x: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray: ...


class FloatActivations:
    """sigmoid and tanh in float arithmetic."""

    def sigmoid_(self, x: np.ndarray) -> np.ndarray:
        """In-place sigmoid."""
        return sigmoid_(x)

    def tanh_(self, x: np.ndarray) -> np.ndarray:
        """In-place tanh."""
        return np.tanh(x, out=x)

    def gates_(self, x: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
        """In place on [B, len(kinds) * H]: block j gets activation kinds[j], all in one pass (see lstm below)."""
        k, m = _block_coefficients(kinds, x.shape[-1] // len(kinds), np.dtype(x.dtype))[:2]
        x *= k
        np.tanh(x, out=x)
        x *= k
        x += m
        return x


FLOAT_ACTIVATIONS = FloatActivations()


# ----------------------------------------------------------------------------------------- rnn
# h' = tanh(xg + h W_hh^T + b_hh)

def rnn_step(xg: np.ndarray, gh: np.ndarray, state: State, act: Activations = FLOAT_ACTIVATIONS) -> State:
    """One step for a batch from xg [B, H] and gh = h W_hh^T + b_hh [B, H] (gh is overwritten)."""
    gh += xg
    return (act.tanh_(gh),)


def rnn_forward(xg: np.ndarray, state: State, w_hh_t: np.ndarray, b_hh: np.ndarray):
    """Run T steps, keeping what backward needs; returns (outputs [T,B,H], final state, cache)."""
    steps, batch, hidden = xg.shape
    hs = np.empty((steps + 1, batch, hidden), dtype=xg.dtype)
    hs[0] = state[0]
    for t in range(steps):
        a = hs[t + 1]
        np.matmul(hs[t], w_hh_t, out=a)
        a += b_hh
        a += xg[t]
        np.tanh(a, out=a)
    return hs[1:], (hs[steps],), hs


def rnn_backward(d_out: np.ndarray, d_final: State | None, cache, w_hh: np.ndarray):
    """Gradients from d(outputs) [T,B,H] and d(final state): (d_xg, dW_hh, db_hh, d_initial_state).

    With a = pre-activation: da_t = (dh_t) (1 - h_t^2), dh_{t-1} += da_t W_hh.
    """
    hs = cache
    steps = d_out.shape[0]
    da = np.empty_like(d_out)
    dh = np.zeros_like(hs[0]) if d_final is None else d_final[0].copy()
    for t in range(steps - 1, -1, -1):
        dh += d_out[t]
        h = hs[t + 1]
        np.multiply(h, h, out=da[t])
        np.subtract(1.0, da[t], out=da[t])
        da[t] *= dh
        dh = da[t] @ w_hh
    flat = da.reshape(-1, da.shape[-1])
    d_w_hh = flat.T @ hs[:-1].reshape(-1, hs.shape[-1])
    return da, d_w_hh, flat.sum(axis=0), (dh,)


# ----------------------------------------------------------------------------------------- gru
# PyTorch gate order r, z, n:
#   r = sigma(xg_r + h W_hr^T + b_hr),  z = sigma(xg_z + h W_hz^T + b_hz)
#   n = tanh(xg_n + r * (h W_hn^T + b_hn)),  h' = (1 - z) * n + z * h = n + z * (h - n)

def gru_step(xg: np.ndarray, gh: np.ndarray, state: State, act: Activations = FLOAT_ACTIVATIONS) -> State:
    """One step for a batch from xg [B, 3H] and gh = h W_hh^T + b_hh [B, 3H] (gh is overwritten)."""
    h = state[0]
    hidden = h.shape[-1]
    rz = gh[:, :2 * hidden]
    rz += xg[:, :2 * hidden]
    act.sigmoid_(rz)
    n = gh[:, 2 * hidden:]
    n *= rz[:, :hidden]
    n += xg[:, 2 * hidden:]
    act.tanh_(n)
    out = h - n
    out *= rz[:, hidden:]
    out += n
    return (out,)


def gru_forward(xg: np.ndarray, state: State, w_hh_t: np.ndarray, b_hh: np.ndarray):
    """Run T steps, keeping what backward needs; returns (outputs [T,B,H], final state, cache)."""
    steps, batch, gates_hidden = xg.shape
    hidden = gates_hidden // 3
    hs = np.empty((steps + 1, batch, hidden), dtype=xg.dtype)
    gh = np.empty((steps, batch, gates_hidden), dtype=xg.dtype)   # h W_hh^T + b_hh
    rz = np.empty((steps, batch, 2 * hidden), dtype=xg.dtype)
    n = np.empty((steps, batch, hidden), dtype=xg.dtype)
    hs[0] = state[0]
    for t in range(steps):
        np.matmul(hs[t], w_hh_t, out=gh[t])
        gh[t] += b_hh
        np.add(xg[t, :, :2 * hidden], gh[t, :, :2 * hidden], out=rz[t])
        sigmoid_(rz[t])
        np.multiply(rz[t, :, :hidden], gh[t, :, 2 * hidden:], out=n[t])
        n[t] += xg[t, :, 2 * hidden:]
        np.tanh(n[t], out=n[t])
        np.subtract(hs[t], n[t], out=hs[t + 1])
        hs[t + 1] *= rz[t, :, hidden:]
        hs[t + 1] += n[t]
    return hs[1:], (hs[steps],), (hs, gh, rz, n)


def gru_backward(d_out: np.ndarray, d_final: State | None, cache, w_hh: np.ndarray):
    """Gradients from d(outputs) and d(final state): (d_xg, dW_hh, db_hh, d_initial_state).

    dn = dh (1 - z), dz = dh (h - n), da_n = dn (1 - n^2), dr = da_n (h W_hn^T + b_hn),
    pre-activations: da_r = dr r (1 - r), da_z = dz z (1 - z);
    the recurrent side sees [da_r, da_z, da_n * r]; dh_prev = dh z + that W_hh.
    """
    hs, gh, rz, n = cache
    steps, batch, hidden = d_out.shape
    d_xg = np.empty((steps, batch, 3 * hidden), dtype=d_out.dtype)
    d_gh = np.empty_like(d_xg)
    tmp = np.empty((batch, hidden), dtype=d_out.dtype)
    dh = np.zeros_like(hs[0]) if d_final is None else d_final[0].copy()
    for t in range(steps - 1, -1, -1):
        dh += d_out[t]
        r, z, nt = rz[t, :, :hidden], rz[t, :, hidden:], n[t]
        d_r, d_z, d_n = d_xg[t, :, :hidden], d_xg[t, :, hidden:2 * hidden], d_xg[t, :, 2 * hidden:]
        # d_n: dh (1 - z) (1 - n^2)
        np.multiply(nt, nt, out=d_n)
        np.subtract(1.0, d_n, out=d_n)
        np.subtract(1.0, z, out=tmp)
        d_n *= tmp
        d_n *= dh
        # d_z: dh (h - n) z (1 - z)
        np.subtract(hs[t], nt, out=d_z)
        d_z *= dh
        d_z *= z
        d_z *= tmp
        # d_r: d_n (h W_hn^T + b_hn) r (1 - r)
        np.multiply(d_n, gh[t, :, 2 * hidden:], out=d_r)
        d_r *= r
        np.subtract(1.0, r, out=tmp)
        d_r *= tmp
        d_gh[t, :, :2 * hidden] = d_xg[t, :, :2 * hidden]
        np.multiply(d_n, r, out=d_gh[t, :, 2 * hidden:])
        dh *= z
        dh += d_gh[t] @ w_hh
    flat = d_gh.reshape(-1, 3 * hidden)
    d_w_hh = flat.T @ hs[:-1].reshape(-1, hidden)
    return d_xg, d_w_hh, flat.sum(axis=0), (dh,)


# ---------------------------------------------------------------------------------------- lstm
# PyTorch gate order i, f, g, o:
#   [i, f, o] = sigma(.), g = tanh(.) of xg + h W_hh^T + b_hh;  c' = f c + i g,  h' = o tanh(c')
#
# All four activations in one pass over the [B, 4H] block: sigma(x) = (1 + tanh(x / 2)) / 2, so
# act = tanh(x * k) * k + m with k = 1/2, m = 1/2 on the sigmoid blocks and k = 1, m = 0 on g.
# Their derivatives likewise: s (1 - s) and 1 - g^2 are both act * (d - act) + e with
# (d, e) = (1, 0) on sigmoid blocks and (0, 1) on g.
_COEFFICIENTS = {"sigmoid": (.5, .5, 1., 0.), "tanh": (1., 0., 0., 1.)}   # (k, m, d, e)


@functools.lru_cache(maxsize=64)
def _block_coefficients(kinds: tuple[str, ...], hidden: int, dtype) -> tuple[np.ndarray, ...]:
    """Per-column (k, m, d, e) of the comment above, for blocks of `hidden` columns with activations `kinds`."""
    table = np.array([_COEFFICIENTS[kind] for kind in kinds], dtype=dtype)    # [blocks, 4]
    return tuple(np.repeat(table[:, j], hidden) for j in range(4))


def _lstm_coefficients(hidden: int, dtype) -> tuple[np.ndarray, ...]:
    """(k, m, d, e) for blocks i, f, g, o."""
    return _block_coefficients(LSTM_GATE_ACTIVATIONS, hidden, dtype)


def lstm_step(xg: np.ndarray, gh: np.ndarray, state: State, act: Activations = FLOAT_ACTIVATIONS) -> State:
    """One step for a batch from xg [B, 4H] and gh = h W_hh^T + b_hh [B, 4H] (gh is overwritten)."""
    h, c = state
    hidden = h.shape[-1]
    g = gh
    g += xg
    act.gates_(g, LSTM_GATE_ACTIVATIONS)
    c_new = c * g[:, hidden:2 * hidden]
    c_new += g[:, :hidden] * g[:, 2 * hidden:3 * hidden]
    h_new = act.tanh_(c_new.copy())
    h_new *= g[:, 3 * hidden:]
    return (h_new, c_new)


def lstm_forward(xg: np.ndarray, state: State, w_hh_t: np.ndarray, b_hh: np.ndarray):
    """Run T steps, keeping what backward needs; returns (outputs [T,B,H], final state, cache)."""
    steps, batch, gates_hidden = xg.shape
    hidden = gates_hidden // 4
    hs = np.empty((steps + 1, batch, hidden), dtype=xg.dtype)
    cs = np.empty_like(hs)
    acts = np.empty((steps, batch, gates_hidden), dtype=xg.dtype)
    tanh_c = np.empty((steps, batch, hidden), dtype=xg.dtype)
    tmp = np.empty((batch, hidden), dtype=xg.dtype)
    hs[0], cs[0] = state
    for t in range(steps):
        g = acts[t]
        np.matmul(hs[t], w_hh_t, out=g)
        g += b_hh
        g += xg[t]
        FLOAT_ACTIVATIONS.gates_(g, LSTM_GATE_ACTIVATIONS)
        np.multiply(cs[t], g[:, hidden:2 * hidden], out=cs[t + 1])
        np.multiply(g[:, :hidden], g[:, 2 * hidden:3 * hidden], out=tmp)
        cs[t + 1] += tmp
        np.tanh(cs[t + 1], out=tanh_c[t])
        np.multiply(g[:, 3 * hidden:], tanh_c[t], out=hs[t + 1])
    return hs[1:], (hs[steps], cs[steps]), (hs, cs, acts, tanh_c)


def lstm_backward(d_out: np.ndarray, d_final: State | None, cache, w_hh: np.ndarray):
    """Gradients from d(outputs) and d(final state): (d_xg, dW_hh, db_hh, d_initial_state).

    dc += dh o (1 - tanh(c)^2); w.r.t. the activations: di = dc g, df = dc c_prev, dg = dc i,
    do = dh tanh(c); then times each activation's derivative; dc_prev = dc f.
    """
    hs, cs, acts, tanh_c = cache
    steps, batch, hidden = d_out.shape
    _, _, d_coef, e_coef = _lstm_coefficients(hidden, np.dtype(d_out.dtype))
    d_g = np.empty((steps, batch, 4 * hidden), dtype=d_out.dtype)
    tmp = np.empty((batch, hidden), dtype=d_out.dtype)
    slope = np.empty((batch, 4 * hidden), dtype=d_out.dtype)
    if d_final is None:
        dh, dc = np.zeros_like(hs[0]), np.zeros_like(cs[0])
    else:
        dh, dc = d_final[0].copy(), d_final[1].copy()
    for t in range(steps - 1, -1, -1):
        dh += d_out[t]
        a = acts[t]
        i, f, g, o = a[:, :hidden], a[:, hidden:2 * hidden], a[:, 2 * hidden:3 * hidden], a[:, 3 * hidden:]
        tc = tanh_c[t]
        np.multiply(tc, tc, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp
        grad = d_g[t]
        np.multiply(dc, g, out=grad[:, :hidden])
        np.multiply(dc, cs[t], out=grad[:, hidden:2 * hidden])
        np.multiply(dc, i, out=grad[:, 2 * hidden:3 * hidden])
        np.multiply(dh, tc, out=grad[:, 3 * hidden:])
        np.subtract(d_coef, a, out=slope)
        slope *= a
        slope += e_coef
        grad *= slope
        dc *= f
        dh = grad @ w_hh
    flat = d_g.reshape(-1, 4 * hidden)
    d_w_hh = flat.T @ hs[:-1].reshape(-1, hidden)
    return d_g, d_w_hh, flat.sum(axis=0), (dh, dc)


@dataclass(frozen=True)
class Cell:
    """What one kind of recurrent cell plugs into compact-lm."""

    name: str
    gates: int                       # gate blocks stacked in the rows of W_ih / W_hh
    state_names: tuple[str, ...]     # ("h",) or ("h", "c")
    gate_names: tuple[str, ...]      # PyTorch's gate order within the rows
    forget_gate: int | None          # block of the forget gate, whose bias starts at 1 (LSTM)
    step: Callable                   # (xg [B,GH], gh = h W_hh^T + b_hh [B,GH], state, act) -> state
    forward: Callable                # (xg [T,B,GH], state, W_hh^T, b_hh) -> (outputs, state, cache)
    backward: Callable               # (d_out, d_final_state, cache, W_hh) -> (d_xg, dW_hh, db_hh, d_state)
    prune_criterion: str             # unit importance pruning uses unless told (measured in tools/prune.py)

    def unit_rows(self, hidden: int, units: np.ndarray) -> np.ndarray:
        """Rows of W_ih / W_hh / biases that belong to hidden units `units`: the same offset in every gate block."""
        units = np.asarray(units, dtype=np.int64)
        return np.concatenate([gate * hidden + units for gate in range(self.gates)])

    def zero_state(self, batch: int, hidden: int, dtype=np.float32) -> State:
        """The all-zero state of one layer."""
        return tuple(np.zeros((batch, hidden), dtype=dtype) for _ in self.state_names)


CELLS: dict[str, Cell] = {
    "rnn": Cell("rnn", 1, ("h",), ("h",), None, rnn_step, rnn_forward, rnn_backward, "activation"),
    "gru": Cell("gru", 3, ("h",), ("r", "z", "n"), None, gru_step, gru_forward, gru_backward, "reconstruction"),
    "lstm": Cell("lstm", 4, ("h", "c"), ("i", "f", "g", "o"), 1, lstm_step, lstm_forward, lstm_backward,
                 "activation"),
}


def get_cell(name: str) -> Cell:
    """The registered cell called `name` (rnn, gru or lstm)."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)}") from None
