"""One function that opens any model file: float `.npz`, int8 `.npz` or exported `.onnx`.

The kind is read from the file, not guessed by its caller: a zip archive is an `.npz` container whose
metadata says float or int8 (`MODEL_KINDS`); anything else named `.onnx`, or beginning as a serialized ONNX
model does whatever its name, is an ONNX graph.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path

from .config import ModelConfig
from .errors import CompactLMError
from .fileio import load_npz
from .model import Model
from .model_file import FORMAT_VERSION, INFO_KEYS, MODEL_KIND, ModelFile, check_info
from .quantized import QuantizedModel
from .vocab import Vocab

# `quantized` in a .npz file's metadata -> the kind that reads it
MODEL_KINDS = {False: Model, True: QuantizedModel}
ZIP_MAGIC = b"PK\x03\x04"
ONNX_FIRST_BYTE = b"\x08"   # a ModelProto's ir_version (field 1, varint): serialized first


def _first_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(4)
    except OSError:   # missing or unreadable: the loader words the error
        return b""


def is_onnx_file(path: Path) -> bool:
    """Named .onnx and not a zip, or beginning as onnx.save writes a model: field 1 (ir_version, a varint) first."""
    first = _first_bytes(path)
    return first != ZIP_MAGIC and (path.suffix.lower() == ".onnx" or first[:1] == ONNX_FIRST_BYTE)


def open_model(path: str | os.PathLike, *, threads: int = 1,
               sequence: str | os.PathLike | None = None, check_lexicon: bool = True) -> ModelFile:
    """The model in `path` (float or int8 `.npz`, or `.onnx` run by onnxruntime with `threads` threads and
    `sequence`, the same model's sequence graph, for pasted text); one-line CompactLMError if it is not one,
    or if its lexicon is damaged (unless not `check_lexicon`: completion without the lexicon never reads it)."""
    for name, value in (("model", path), ("sequence", sequence)):
        if (value is not None or name == "model") and not (isinstance(value, (str, os.PathLike)) and str(value)):
            raise CompactLMError(f"{name} must be a file path, got {value!r}")
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise CompactLMError(f"threads must be a whole number >= 1, got {threads!r}")   # (0 would mean every core)
    threads = int(threads)
    path = Path(path)
    if is_onnx_file(path):
        from .onnx_model import OnnxModel
        try:
            model = OnnxModel(path, threads=threads, sequence=sequence)
        except CompactLMError as error:   # named .npz or anything else: it may be a damaged .npz as well
            if path.suffix.lower() == ".onnx" or not str(error).startswith(f"{path} is not a valid ONNX model"):
                raise
            raise CompactLMError(f"{path} is not a valid model file (not an .npz, and not a valid ONNX model: "
                                 f"truncated or corrupted?)") from None
    elif sequence is not None:
        raise CompactLMError("a sequence graph goes with an .onnx step graph")
    else:
        model = _load_npz_model(path)
    if check_lexicon:
        model.lexicon   # decoded once and kept; a damaged one names the file
    return model


def _load_npz_model(path: Path) -> ModelFile:
    arrays, meta = load_npz(path, "model")
    if meta.get("kind") != MODEL_KIND:
        raise CompactLMError(f"{path} is not a compact-lm model (kind {meta.get('kind')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CompactLMError(f"{path} has format version {version!r}; this compact-lm reads version {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_json(meta)
        vocab = Vocab.from_json(meta)
        kind = MODEL_KINDS[bool(meta.get("quantized", False))]
        check_info(meta)
    except (KeyError, TypeError, ValueError) as error:
        raise CompactLMError(f"{path} has invalid metadata: {error}") from None
    info = {k: v for k, v in meta.items() if k in INFO_KEYS}
    try:
        model = kind.from_file(config, vocab, arrays, meta, info)
        model.loaded_from = str(path)   # what errors about its metadata (a damaged lexicon, read when used) name
        return model
    except (KeyError, TypeError, ValueError) as error:
        raise CompactLMError(f"{path} has invalid metadata: {error}") from None
    except CompactLMError as error:
        raise CompactLMError(f"{path}: {error}") from None
