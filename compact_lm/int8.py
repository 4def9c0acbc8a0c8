"""The int8 scheme, defined once: the NumPy int8 path runs it and the int8 ONNX graph translates it.

Weights (every matrix a product uses: W_ih of layers 2..L, W_hh, head): symmetric, one float32
scale per output row, w_q = clip(round(w / s_w), -Q, Q), s_w = max|w_row| / Q, with Q = 2^(bits-1)-1.
The default is 7 bits (Q = 63), onnxruntime's "reduce_range": a uint8 x int7 pair of products
sums to at most 2 * 255 * 63 = 32130 < 2^15, so x86 AVX2's saturating 16-bit pair adds
(vpmaddubsw) never saturate and onnxruntime gives the exact integer result on every CPU.

Activations: every product's input is a hidden state, and every cell bounds it to [-1, 1]
(tanh; a convex mix of tanh values for GRU; o * tanh(c) for LSTM). So they are quantized
statically, without calibration, exactly as ONNX QuantizeLinear does:
    x_q = saturate_uint8(round_half_even(x / ACT_SCALE) + ACT_ZERO_POINT),  ACT_SCALE = 1/127, zero point 128
The product is integer with int32 accumulation, then rescaled per output column:
    y = float32(sum_k (x_q[k] - 128) * w_q[j, k]) * (ACT_SCALE * s_w[j]) + b[j]
ONNX: QuantizeLinear -> MatMulInteger(a_zero_point=128) -> Cast(float) -> Mul -> Add.
A static scale needs no per-call min/max, and as a constant it makes NumPy and onnxruntime agree by
construction (dynamic quantization, ONNX DynamicQuantizeLinear, measured level on quality and speed:
docs/experiments.md, "int8 scheme").

Layer 1's folded input table (embedding @ W_ih0^T + b_ih0, [V, G*H]) is gathered, never
multiplied: int8 with one scale per column, Q = 127 (8 bits), dequantized after the gather:
    xg = float32(table_q[id, j]) * s_table[j]        ONNX: Gather -> Cast(float) -> Mul

Activations (sigmoid, tanh) are 256-entry lookup tables over the pre-activation quantized to uint8:
    i = saturate_uint8(round_half_even(a / step) + 128),   f(a) ~ table[i] = float32(f((i - 128) * step))
ONNX: QuantizeLinear(a, step, uint8 128) -> Cast(int64) -> GatherElements (export/products_int8.py).
Why tables: onnxruntime's vectorized tanh/sigmoid and NumPy's differ in the last bit now and then, and
such a difference can move a hidden value across the rounding boundary of the next QuantizeLinear, after
which two free runs over the same text drift apart. With tables every operation of a step is exact or
correctly rounded (the index is exact because the steps are powers of two, then a lookup, and IEEE +, -,
*), so both runtimes compute the same bits. The steps, sigmoid 1/16 (a in [-8, 7.94]) and tanh 1/32
(a in [-4, 3.97]), were chosen by measurement (docs/experiments.md).
Saturation clips a beyond the table's range to its ends.
"""
from __future__ import annotations

import functools

import numpy as np

ACT_SCALE = np.float32(1.0 / 127.0)
ACT_ZERO_POINT = 128
DEFAULT_WEIGHT_BITS = 7
TABLE_BITS = 8
# An integer product computed in float32 BLAS is exact while every partial sum stays below 2^24:
# K * 128 * Q < 2^24. Beyond that, float64 (exact below 2^53).
_FLOAT32_EXACT = 2 ** 24

TABLE_ZERO_POINT = 128
ACTIVATION_STEPS = {"sigmoid": np.float32(2.0 ** -4), "tanh": np.float32(2.0 ** -5)}
_FUNCTIONS = {"sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)), "tanh": np.tanh}
# table[i] = f((i - 128) * step), computed in float64 and rounded once to float32
ACTIVATION_TABLES = {
    kind: _FUNCTIONS[kind]((np.arange(256, dtype=np.float64) - TABLE_ZERO_POINT) * float(step)).astype(np.float32)
    for kind, step in ACTIVATION_STEPS.items()}


def quantize_rows(matrix: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: (w_q int8, scale float32 [rows]) with w ~ w_q * scale[:, None]."""
    limit = 2 ** (bits - 1) - 1
    matrix = np.asarray(matrix, dtype=np.float32)
    peak = np.abs(matrix).max(axis=1)
    scale = np.where(peak > 0, peak / limit, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(matrix / scale[:, None]), -limit, limit).astype(np.int8)
    return quantized, scale


def dequantize_rows(quantized: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """w_q * scale, float32."""
    return quantized.astype(np.float32) * scale[:, None]


def table_index(a: np.ndarray, inverse_step: np.ndarray | np.float32) -> np.ndarray:
    """QuantizeLinear(a, step, uint8 128) as int64 indices; a * (1 / step) equals a / step since step = 2^-k."""
    q = np.rint(a * inverse_step)
    np.clip(q, -TABLE_ZERO_POINT, 255 - TABLE_ZERO_POINT, out=q)
    return q.astype(np.int64) + TABLE_ZERO_POINT


@functools.lru_cache(maxsize=64)
def gate_tables(kinds: tuple[str, ...], hidden: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For blocks of `hidden` columns with activations `kinds`: per-column step, 1 / step and index offset, and
    one joined table, in which each distinct kind's table sits once, at 256 * (its position among the kinds)."""
    distinct = list(dict.fromkeys(kinds))
    steps = np.repeat(np.array([ACTIVATION_STEPS[kind] for kind in kinds], dtype=np.float32), hidden)
    offsets = np.repeat(np.array([256 * distinct.index(kind) for kind in kinds], dtype=np.int64), hidden)
    return steps, 1 / steps, offsets, np.concatenate([ACTIVATION_TABLES[kind] for kind in distinct])


class TableActivations:
    """The cells' activations (a compact_lm.cells.Activations) as the lookup tables above."""

    def sigmoid_(self, x: np.ndarray) -> np.ndarray:
        """In place: sigmoid table[index(x)]."""
        return self._lookup_(x, "sigmoid")

    def tanh_(self, x: np.ndarray) -> np.ndarray:
        """In place: tanh table[index(x)]."""
        return self._lookup_(x, "tanh")

    def gates_(self, x: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
        """In place on [B, len(kinds) * H]: block j through the table of kinds[j], one joined lookup."""
        _, inverse_steps, offsets, table = gate_tables(kinds, x.shape[-1] // len(kinds))
        x[...] = table[table_index(x, inverse_steps) + offsets]
        return x

    @staticmethod
    def _lookup_(x: np.ndarray, kind: str) -> np.ndarray:
        x[...] = ACTIVATION_TABLES[kind][table_index(x, _INVERSE_STEPS[kind])]
        return x


_INVERSE_STEPS = {kind: np.float32(1) / step for kind, step in ACTIVATION_STEPS.items()}
TABLE_ACTIVATIONS = TableActivations()


class Int8Product:
    """y = x W^T + b in the scheme above, for one weight matrix W [out, in] given as (w_q, s_w)."""

    def __init__(self, weight_q: np.ndarray, weight_scale: np.ndarray, bias: np.ndarray):
        self.weight_q = weight_q
        self.weight_scale = weight_scale
        self.bias = bias.astype(np.float32)
        # per output column: ACT_SCALE * s_w, in float32 as the graph's Mul initializer holds it
        self.column_scale = (ACT_SCALE * weight_scale).astype(np.float32)
        inputs = weight_q.shape[1]
        peak = int(np.abs(weight_q.astype(np.int32)).max(initial=0))
        exact_dtype = np.float32 if inputs * 128 * max(peak, 1) < _FLOAT32_EXACT else np.float64
        # integer-valued weights in a float type: BLAS then returns the exact integer sums
        self._weight_t = np.ascontiguousarray(weight_q.T.astype(exact_dtype))
        self._dtype = exact_dtype

    def _exact_sums(self, x: np.ndarray) -> np.ndarray:
        """sum_k (x_q - 128) w_q as integer-valued floats; x_q - 128 = clip(round(x / s), -128, 127)."""
        centered = np.rint(np.asarray(x, dtype=np.float32) / ACT_SCALE).astype(self._dtype, copy=False)
        np.clip(centered, -ACT_ZERO_POINT, 255 - ACT_ZERO_POINT, out=centered)
        return centered @ self._weight_t

    def integer_accumulate(self, x: np.ndarray) -> np.ndarray:
        """int32 sum_k (x_q - 128) w_q of float inputs x [B, in] (exact)."""
        return self._exact_sums(x).astype(np.int32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 y [B, out]: the exact sums (integers below 2^24 convert to float32 exactly) rescaled."""
        y = self._exact_sums(x).astype(np.float32, copy=False)
        y *= self.column_scale
        y += self.bias
        return y


class Int8Products:
    """The four products of a NumpyBackend (see backends.py) in this integer scheme, and its activations."""

    def __init__(self, arrays: dict[str, np.ndarray], layers: int):
        self.dtype = np.float32
        self.activations = TABLE_ACTIVATIONS
        self._table_q = arrays["table.q"]
        self._table_scale = arrays["table.scale"]
        self._inputs = {k: Int8Product(arrays[f"rnn.weight_ih_l{k}.q"], arrays[f"rnn.weight_ih_l{k}.scale"],
                                       arrays[f"rnn.bias_ih_l{k}"]) for k in range(1, layers)}
        self._recurrent = [Int8Product(arrays[f"rnn.weight_hh_l{k}.q"], arrays[f"rnn.weight_hh_l{k}.scale"],
                                       arrays[f"rnn.bias_hh_l{k}"]) for k in range(layers)]
        self._head = Int8Product(arrays["head.weight.q"], arrays["head.weight.scale"], arrays["head.bias"])

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Gathered table rows, dequantized per column: table_q[id] * scale."""
        rows = self._table_q[ids].astype(np.float32)
        rows *= self._table_scale
        return rows

    def inputs(self, k: int, x: np.ndarray) -> np.ndarray:
        """Layer k's x W_ih^T + b_ih (k >= 1), in integers."""
        return self._inputs[k](x)

    def recurrent(self, k: int, h: np.ndarray) -> np.ndarray:
        """Layer k's h W_hh^T + b_hh, in integers."""
        return self._recurrent[k](h)

    def logits(self, h: np.ndarray) -> np.ndarray:
        """h head^T + head_b, in integers."""
        return self._head(h)
