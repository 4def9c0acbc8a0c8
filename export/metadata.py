"""metadata_props of an exported graph: the model's JSON metadata plus what the graph itself is.

Every value is a string: `kind`, `cell`, `dtype`, `graph` verbatim, everything else JSON (so `int8` is
"false", `hidden_sizes` is "[256, 128]", `vocab` a JSON list). An app needs nothing but the .onnx:
normalize the text (`nfc`, `lowercase`), map each character to its index in `vocab`, anything absent to
`unk_id`; feed `state_inputs`, read `log_probs` and `state_outputs`. `metadata_keys`, written last,
lists every key so a cut-off file is recognised.
"""
from __future__ import annotations

import json

from compact_lm.model import Model
from compact_lm.ort_backend import GRAPH_KINDS, KEYS_KEY, ONNX_FORMAT_VERSION, ONNX_KIND, STRING_KEYS

from .graph import OPSET
from .interface import out_name, state_names


def onnx_metadata(model: Model, *, graph: str, native_rnn: bool, int8: bool) -> dict[str, str]:
    """The metadata_props of `model` exported as a `graph` ("step" or "sequence") graph."""
    if graph not in GRAPH_KINDS:
        raise ValueError(f"graph must be one of {GRAPH_KINDS}, not {graph!r}")
    meta = model.metadata()
    names = state_names(model.config)
    meta.update({
        "format_version": ONNX_FORMAT_VERSION, "kind": ONNX_KIND, "graph": graph, "opset": OPSET,
        "dtype": "float32", "int8": int8, "native_rnn": native_rnn,
        "state_inputs": [list(layer) for layer in names],
        "state_outputs": [[out_name(n) for n in layer] for layer in names],
    })
    props = {key: value if key in STRING_KEYS else json.dumps(value, ensure_ascii=False, allow_nan=False)
             for key, value in meta.items()}
    props[KEYS_KEY] = json.dumps([*props, KEYS_KEY])
    return props
