"""An int8 model: the same container as a float model, holding int8 arrays and their float32 scales.

Arrays (names end in `.q` for int8 values, `.scale` for their float32 scales, per row but the table's per column):
    table.q [V, G*H_0], table.scale [G*H_0]      layer 1's folded input table, one scale per column
    rnn.weight_ih_l{k}.q [G*H_k, H_{k-1}], .scale [G*H_k], rnn.bias_ih_l{k} [G*H_k]   (k >= 1)
    rnn.weight_hh_l{k}.q [G*H_k, H_k], .scale [G*H_k], rnn.bias_hh_l{k} [G*H_k]
    head.weight.q [V, H_last], head.weight.scale [V], head.bias [V]
The arithmetic is in int8.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backends import FloatProducts
from .cells import get_cell
from .config import ModelConfig
from .errors import CompactLMError
from .int8 import ACT_SCALE, ACT_ZERO_POINT, ACTIVATION_STEPS, TABLE_BITS, Int8Products, dequantize_rows
from .model_file import ModelFile, check_arrays
from .vocab import Vocab

QUANTIZED_MATRICES_DOC = "symmetric int8 per output row"
# What this version's int8 arithmetic depends on beyond the arrays; a file that says otherwise was
# quantized by an earlier scheme (per-token table scales, float sigmoid/tanh) and is refused.
SCHEME = {"table_scales": "one per column", "sigmoid_step": float(ACTIVATION_STEPS["sigmoid"]),
          "tanh_step": float(ACTIVATION_STEPS["tanh"])}


def check_scheme(scheme: dict) -> None:
    """Refuse an int8 file's `int8` metadata unless it describes this version's scheme."""
    if not isinstance(scheme, dict):
        raise CompactLMError("int8 model metadata: `int8` is not an object")
    differences = [key for key, value in SCHEME.items() if scheme.get(key) != value]
    if differences:
        raise CompactLMError(f"int8 model of an earlier int8 scheme ({', '.join(differences)} differ): "
                             "quantize the float model again with this compact-lm")


def quantized_shapes(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype kind) of every array of a quantized model."""
    gates = get_cell(config.cell).gates
    shapes = {"table.q": ((config.vocab_size, gates * config.hidden_sizes[0]), "i"),
              "table.scale": ((gates * config.hidden_sizes[0],), "f")}
    inputs = config.embed_size
    for k, hidden in enumerate(config.hidden_sizes):
        if k:
            shapes[f"rnn.weight_ih_l{k}.q"] = ((gates * hidden, inputs), "i")
            shapes[f"rnn.weight_ih_l{k}.scale"] = ((gates * hidden,), "f")
            shapes[f"rnn.bias_ih_l{k}"] = ((gates * hidden,), "f")
        shapes[f"rnn.weight_hh_l{k}.q"] = ((gates * hidden, hidden), "i")
        shapes[f"rnn.weight_hh_l{k}.scale"] = ((gates * hidden,), "f")
        shapes[f"rnn.bias_hh_l{k}"] = ((gates * hidden,), "f")
        inputs = hidden
    shapes["head.weight.q"] = ((config.vocab_size, inputs), "i")
    shapes["head.weight.scale"] = ((config.vocab_size,), "f")
    shapes["head.bias"] = ((config.vocab_size,), "f")
    return shapes


@dataclass
class QuantizedModel(ModelFile):
    """Config, vocabulary, int8 arrays + scales; runs the integer scheme or its dequantized floats."""

    config: ModelConfig
    vocab: Vocab
    arrays: dict[str, np.ndarray]
    weight_bits: int
    info: dict = field(default_factory=dict)

    precision = "int8"

    def __post_init__(self) -> None:
        check_arrays(self.arrays, {name: (shape, np.dtype(np.int8 if kind == "i" else np.float32))
                                        for name, (shape, kind) in quantized_shapes(self.config).items()}, "int8 model")
        self._check_vocab()
        if not 2 <= self.weight_bits <= 8:
            raise CompactLMError(f"weight_bits must be between 2 and 8, got {self.weight_bits}")
        for name, array in self.arrays.items():
            if array.dtype == np.float32 and not np.isfinite(array).all():
                raise CompactLMError(f"int8 model array {name} holds NaN or infinite values")

    @classmethod
    def from_file(cls, config: ModelConfig, vocab: Vocab, arrays: dict[str, np.ndarray], meta: dict,
                  info: dict) -> "QuantizedModel":
        """The model of a loaded file's arrays, refused unless its metadata describes this version's scheme."""
        weight_bits = int(meta["int8"]["weight_bits"])   # KeyError / TypeError / ValueError: invalid metadata
        check_scheme(meta["int8"])
        return cls(config, vocab, arrays, weight_bits, info)

    def metadata_fields(self) -> dict:
        """dtype int8, quantized, and the scheme's parameters."""
        scheme = {"weight_bits": self.weight_bits, "table_bits": TABLE_BITS, "weights": QUANTIZED_MATRICES_DOC,
                  "activation_scale": float(ACT_SCALE), "activation_zero_point": ACT_ZERO_POINT,
                  "activations": "static uint8: round_half_even(x / scale) + zero_point, saturated",
                  "sigmoid_tanh": "256-entry tables over saturate_uint8(round_half_even(a / step) + 128)", **SCHEME}
        return {"dtype": "int8", "quantized": True, "int8": scheme}

    def warnings(self) -> list[str]:
        """8-bit weights can saturate onnxruntime's AVX2 pair sums; 7-bit ones cannot."""
        if self.weight_bits <= 7:
            return []
        return [f"the model has {self.weight_bits}-bit weights; onnxruntime's AVX2 kernels without VNNI can "
                "saturate their uint8 x int8 pair sums, so there the graph may not match the NumPy int8 path "
                "(7-bit weights are exact on every CPU)"]

    def dequantized_params(self) -> dict[str, np.ndarray]:
        """Float32 weights w_q * scale under the float names (layer 1 as its table, key `table`)."""
        a = self.arrays
        params = {"table": dequantize_rows(a["table.q"].T, a["table.scale"]).T,
                  "head.weight": dequantize_rows(a["head.weight.q"], a["head.weight.scale"]),
                  "head.bias": a["head.bias"]}
        for k in range(self.config.layers):
            params[f"rnn.weight_hh_l{k}"] = dequantize_rows(a[f"rnn.weight_hh_l{k}.q"], a[f"rnn.weight_hh_l{k}.scale"])
            params[f"rnn.bias_hh_l{k}"] = a[f"rnn.bias_hh_l{k}"]
            if k:
                params[f"rnn.weight_ih_l{k}"] = dequantize_rows(a[f"rnn.weight_ih_l{k}.q"], a[f"rnn.weight_ih_l{k}.scale"])
                params[f"rnn.bias_ih_l{k}"] = a[f"rnn.bias_ih_l{k}"]
        return params

    def products(self, arithmetic: str | None = None):
        """Integer arithmetic (default, what the int8 ONNX graph runs) or 'float' on dequantized weights."""
        if arithmetic in (None, "int8"):
            return Int8Products(self.arrays, self.config.layers)
        if arithmetic == "float":
            params = self.dequantized_params()
            return FloatProducts(params, params["table"], self.config.layers)
        raise CompactLMError(f"unknown arithmetic {arithmetic!r}; use 'int8' or 'float'")
