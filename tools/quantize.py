"""int8 quantization of a float model into the scheme of compact_lm/int8.py (weights only: the
activation scales are fixed by the scheme, so no calibration pass is needed)."""
from __future__ import annotations

import numpy as np

from compact_lm.errors import CompactLMError, SettingError
from compact_lm.int8 import DEFAULT_WEIGHT_BITS, TABLE_BITS, quantize_rows
from compact_lm.network import input_table
from compact_lm.quantized import QuantizedModel


def quantize_model(model, *, weight_bits: int = DEFAULT_WEIGHT_BITS) -> QuantizedModel:
    """Quantize every matrix of a float model to int8 (per-row scales, the input table's per column)."""
    if not callable(getattr(model, "as_float", None)):
        raise CompactLMError(f"expected a compact-lm model, got {type(model).__name__}")
    model = model.as_float("the model is already quantized (quantizing twice would only add error)")
    if not 2 <= weight_bits <= 8:
        raise SettingError("weight_bits", "{weight_bits} must be between 2 and 8 (got {got})", got=weight_bits)
    p = {name: np.asarray(value, dtype=np.float32) for name, value in model.params.items()}
    arrays: dict[str, np.ndarray] = {}
    # one scale per column (gate unit) of the folded [V, G*H] table, so that a gathered row is dequantized by one
    # Mul with a constant. The table is folded in float64: in float32 the BLAS thread count decides the order of the
    # sums, and last-bit differences would move int8 roundings, so the file would depend on the thread count; in
    # float64 every product of two float32 values is exact and the order of the sums moves the result far below
    # float32's rounding step. (Measurements of both choices: docs/experiments.md, "int8 scheme".)
    table = input_table({name: p[name].astype(np.float64) for name in ("embedding.weight", "rnn.weight_ih_l0",
                                                                      "rnn.bias_ih_l0")}).astype(np.float32)
    table_q, arrays["table.scale"] = quantize_rows(table.T, TABLE_BITS)
    arrays["table.q"] = np.ascontiguousarray(table_q.T)
    for k in range(model.config.layers):
        if k:
            arrays[f"rnn.weight_ih_l{k}.q"], arrays[f"rnn.weight_ih_l{k}.scale"] = quantize_rows(
                p[f"rnn.weight_ih_l{k}"], weight_bits)
            arrays[f"rnn.bias_ih_l{k}"] = p[f"rnn.bias_ih_l{k}"]
        arrays[f"rnn.weight_hh_l{k}.q"], arrays[f"rnn.weight_hh_l{k}.scale"] = quantize_rows(
            p[f"rnn.weight_hh_l{k}"], weight_bits)
        arrays[f"rnn.bias_hh_l{k}"] = p[f"rnn.bias_hh_l{k}"]
    arrays["head.weight.q"], arrays["head.weight.scale"] = quantize_rows(p["head.weight"], weight_bits)
    arrays["head.bias"] = p["head.bias"]
    info = {k: v for k, v in model.info.items() if k != "metrics"}   # the float model's metrics no longer hold
    info["quantization"] = {"weight_bits": weight_bits, "source_params": model.num_params,
                            "source_metrics": model.info.get("metrics", {})}
    return QuantizedModel(model.config, model.vocab, arrays, weight_bits, info)
