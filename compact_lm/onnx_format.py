"""The compact-lm .onnx file format: metadata keys and their decoding, and reading a file safely (no onnx, no onnxruntime).

metadata_props values are strings: `kind`, `cell`, `dtype` and `graph` verbatim, every other key a JSON
document (numbers, booleans, lists, objects). Besides the model's sizes and vocabulary they say how a
runtime feeds text to the model (written by export/metadata.py):

- `start_text`: fed from the zero state before the typed text (a newline: the start of a line);
- `normalization`: `{"unit": "code_point", "steps": [...]}`, the steps "NFC" (over the text: a letter and the
  marks typed after it compose) then "lowercase" (code point by code point), docs/format.md;
- `unk_id`: the id of every character (after normalization) that is not in `vocab`.

Files written before `start_text` and `normalization` existed lack them and mean exactly this (with the
steps their `nfc` / `lowercase` flags name); a file asking for anything else is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CompactLMError
from .fileio import check_file
from .model_file import check_info
from .onnx_scan import metadata_props, unsafe_onnx_feature
from .vocab import START_TEXT

ONNX_KIND = "compact-lm-onnx"
ONNX_FORMAT_VERSION = 1
STRING_KEYS = frozenset({"kind", "cell", "dtype", "graph"})   # stored verbatim; all other values are JSON
KEYS_KEY = "metadata_keys"   # the list of every key written, so an entry lost from a cut-off file is noticed
TOKENS, LOG_PROBS = "tokens", "log_probs"
GRAPH_KINDS = ("step", "sequence")
NORMALIZATION_UNIT = "code_point"


def normalization(nfc: bool, lowercase: bool) -> dict:
    """The `normalization` metadata value for a vocabulary's `nfc` / `lowercase` flags."""
    steps = [name for name, on in (("NFC", nfc), ("lowercase", lowercase)) if on]
    return {"unit": NORMALIZATION_UNIT, "steps": steps}


def feeding_metadata(nfc: bool, lowercase: bool) -> dict:
    """The metadata keys that say what a runtime does to text before the model sees it (unk_id comes with the vocab)."""
    return {"start_text": START_TEXT, "normalization": normalization(nfc, lowercase)}


def _json_int(text: str) -> int | float:
    """A JSON integer, exact; past Python's 4,300 digits the nearest float (inf), as JavaScript reads it, so that
    such a number is refused by the check of its key, in web/compact_lm.js's words."""
    return int(text) if len(text) <= 4300 else float(text)


def decode_metadata(props: dict[str, str]) -> dict:
    """metadata_props strings -> values (JSON-decoded except STRING_KEYS); raises ValueError if damaged."""
    meta = {}
    for key, text in props.items():
        meta[key] = text if key in STRING_KEYS else json.loads(text, parse_int=_json_int)
    listed = meta.get(KEYS_KEY)
    if not isinstance(listed, list):
        raise ValueError(f"no {KEYS_KEY!r} entry")
    missing = [key for key in listed if key not in meta]
    if missing:
        raise ValueError(f"missing keys {missing}")
    return meta


def read_onnx(path: str | os.PathLike) -> bytes:
    """The bytes of an .onnx file, refused with a one-line error if missing or if it uses what compact-lm never loads."""
    path = Path(path)
    check_file(path, "ONNX file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CompactLMError(f"cannot read ONNX file {path}: {error.strerror or error}") from None
    try:
        unsafe = unsafe_onnx_feature(data)
    except ValueError as error:
        raise CompactLMError(f"{path} is not a valid ONNX model (truncated or corrupted?): {error}") from None
    if unsafe:
        raise CompactLMError(f"{path} is refused: it uses {unsafe}, which compact-lm never loads")
    return data


def read_metadata(path: str | os.PathLike) -> dict:
    """The decoded compact-lm metadata of an .onnx file, read from its bytes (no onnxruntime session)."""
    return metadata_of(path, read_onnx(path))


def metadata_of(path: str | os.PathLike, data: bytes) -> dict:
    """The decoded compact-lm metadata of an .onnx file's bytes (one-line errors naming `path`)."""
    try:
        props = metadata_props(data)
    except UnicodeDecodeError:
        raise CompactLMError(f"{path} has damaged metadata (not valid UTF-8)") from None
    except ValueError as error:
        raise CompactLMError(f"{path} is not a valid ONNX model (truncated or corrupted?): {error}") from None
    return checked_metadata(path, props)


def checked_metadata(path: str | os.PathLike, props: dict[str, str]) -> dict:
    """The decoded compact-lm metadata of an .onnx file's metadata_props (one-line errors)."""
    if props.get("kind") != ONNX_KIND:
        raise CompactLMError(f"{path} is an ONNX model without compact-lm metadata (not a compact-lm export, or cut off)")
    try:
        meta = decode_metadata(props)
    except ValueError as error:
        raise CompactLMError(f"{path} has damaged compact-lm metadata (truncated file?): {error}") from None
    except RecursionError:
        raise CompactLMError(f"{path} has metadata nested too deeply to read") from None
    if meta.get("format_version") != ONNX_FORMAT_VERSION:
        raise CompactLMError(f"{path} has ONNX format version {meta.get('format_version')!r}; "
                             f"this compact-lm reads version {ONNX_FORMAT_VERSION}")
    if meta.get("graph") not in GRAPH_KINDS:
        raise CompactLMError(f"{path} has an unknown graph kind {meta.get('graph')!r}")
    # The Autocompleter feeds text one way only; a file that asks for another would give wrong suggestions
    # silently, so it is refused. The defaults are what files from before these keys meant.
    expected = feeding_metadata(meta.get("nfc", True), meta.get("lowercase", False))
    for key, value in expected.items():
        if meta.get(key, value) != value:
            raise CompactLMError(f"{path} asks for {key} {meta[key]!r}, this compact-lm feeds text with {value!r}")
    try:
        check_info(meta)
    except ValueError as error:
        raise CompactLMError(f"{path} has invalid compact-lm metadata: {error}") from None
    # (as ModelFile._check_vocab words it for an .npz; a vocab that is no list is refused when it is read)
    tokens, size = meta.get("vocab"), meta.get("vocab_size")
    if isinstance(tokens, list) and len(tokens) != size:
        raise CompactLMError(f"{path} has invalid compact-lm metadata: vocabulary has {len(tokens)} entries, "
                             f"the config says {size!r}")
    return meta


def metadata_differences(a: dict, b: dict) -> list[str]:
    """What differs in the model-defining metadata of two files: cell, sizes, vocabulary, normalization, int8 or not."""
    differences = []
    for key in ("cell", "embed_size", "hidden_sizes", "vocab_size", "vocab", "nfc", "lowercase", "quantized"):
        if a.get(key) != b.get(key):
            shown = "entries differ" if key == "vocab" else f"{a.get(key)!r} vs {b.get(key)!r}"
            differences.append(f"{key}: {shown}")
    return differences
