"""metadata_props of an exported graph: the model's JSON metadata plus what the graph itself is.

Every value is a string: `kind`, `cell`, `dtype`, `graph` verbatim, everything else JSON (so `int8` is
"false", `hidden_sizes` is "[256, 128]", `vocab` a JSON list). `dtype` is that of the graph's inputs and
outputs (float32). An int8 graph has `int8` "true", `quantized` "true" and `int8_scheme`, the scheme's
parameters from the quantized model (weight_bits, table_bits, activation_scale, activation_zero_point, ...).
An app needs nothing but the .onnx (docs/embed_loop.py does this in numpy + onnxruntime): start from zero
states, take `start_text` followed by the typed text, normalize it as `normalization` says (each code point
on its own: `{"unit": "code_point", "steps": ["NFC", "lowercase"]}`, the steps the `nfc` / `lowercase` flags
switch on, in that order; a code point may become several), map each resulting character to its index in
`vocab`, anything absent to `unk_id`; feed `tokens` and `state_inputs`, read `log_probs` and `state_outputs`.
`metadata_keys`, written last, lists every key so a cut-off file is recognised.
"""
from __future__ import annotations

import json

from compact_lm.model_file import ModelFile
from compact_lm.onnx_format import GRAPH_KINDS, KEYS_KEY, ONNX_FORMAT_VERSION, ONNX_KIND, STRING_KEYS, feeding_metadata

from .graph import OPSET
from .interface import out_name, state_names


def onnx_metadata(model: ModelFile, *, graph: str, native_rnn: bool, int8: bool,
                  opset: int = OPSET) -> dict[str, str]:
    """The metadata_props of `model` exported as a `graph` ("step" or "sequence") graph."""
    if graph not in GRAPH_KINDS:
        raise ValueError(f"graph must be one of {GRAPH_KINDS}, not {graph!r}")
    meta = model.metadata()
    quantized = bool(meta.get("quantized"))
    if int8 != quantized:   # int8 graphs come from quantized models and only from them
        raise ValueError(f"int8={int8} does not fit a {'quantized' if quantized else 'float'} model")
    if int8:   # the quantized model's "int8" object: kept under its own key, "int8" becomes the flag
        meta["int8_scheme"] = meta.pop("int8")
    names = state_names(model.config)
    meta.update({
        "format_version": ONNX_FORMAT_VERSION, "kind": ONNX_KIND, "graph": graph, "opset": opset,
        "dtype": "float32", "int8": int8, "native_rnn": native_rnn,
        "state_inputs": [list(layer) for layer in names],
        "state_outputs": [[out_name(n) for n in layer] for layer in names],
        **feeding_metadata(model.vocab.nfc, model.vocab.lowercase),
    })
    props = {key: value if key in STRING_KEYS else json.dumps(value, ensure_ascii=False, allow_nan=False)
             for key, value in meta.items()}
    props[KEYS_KEY] = json.dumps([*props, KEYS_KEY])
    return props
