"""An exported `.onnx` file as a model: the same surface as the `.npz` kinds, run by onnxruntime."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from .config import ModelConfig
from .errors import CompactLMError
from .fileio import atomic_write
from .lexicon import lexicon_size
from .model_file import INFO_KEYS, ModelFile
from .vocab import Vocab


class OnnxModel(ModelFile):
    """A step or sequence graph (plus optionally its sequence graph) and the metadata it carries.

    Opening reads the metadata from the file's bytes; the onnxruntime session (which runs and checks the
    graph) is made by the first `backend()` call, so `summary` describes a file onnxruntime would refuse.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, sequence: str | os.PathLike | None = None):
        from .onnx_format import read_metadata
        self.path = Path(path)
        self._threads, self._sequence, self._backend = threads, sequence, None
        self._lock = threading.Lock()
        meta = self._metadata = read_metadata(path)
        try:
            self.config, self.vocab = ModelConfig.from_json(meta), Vocab.from_json(meta)
        except (KeyError, TypeError, ValueError, CompactLMError) as error:
            raise CompactLMError(f"{path} has invalid compact-lm metadata: {error}") from None
        self.info = {key: meta[key] for key in INFO_KEYS if key in meta}
        self.precision = "int8" if meta.get("int8") is True else "fp32"
        self.graph = str(meta["graph"])

    format = "onnx"
    runtime = "onnxruntime"

    def _where(self) -> str:
        return str(self.path)

    def _refuse(self, purpose: str | None = None) -> CompactLMError:
        needs = f"{purpose} needs" if purpose else "give"
        return CompactLMError(f"{self.path} is an exported ONNX graph: {needs} the .npz model file it was exported from")

    @property
    def arrays(self) -> dict:
        """Not available: an exported graph's weights are ONNX initializers (`summary` lists them)."""
        raise self._refuse("reading the weights")

    def metadata(self) -> dict:
        """The decoded metadata_props."""
        return dict(self._metadata)

    def save(self, path: str | os.PathLike) -> None:
        """Copy the file atomically."""
        data = self.path.read_bytes()
        atomic_write(path, lambda handle: handle.write(data))

    def backend(self, **options):
        """The onnxruntime Backend opened with the file."""
        if options:
            raise CompactLMError(f"{self.path}: an exported graph runs as exported (no {', '.join(options)})")
        with self._lock:
            if self._backend is None:
                from .ort_backend import OrtBackend
                self._backend = OrtBackend(self.path, threads=self._threads, sequence_path=self._sequence)
                self._backend.lexicon_from = lambda: self.lexicon   # decoded once, by this model (ModelFile.lexicon)
        return self._backend

    def as_float(self, refusal: str):
        """Refused: the float weights are in the .npz the graph was exported from."""
        raise self._refuse()

    def require_arrays(self, purpose: str):
        """Refused: `purpose` needs the .npz model's arrays."""
        raise self._refuse(purpose)

    def summary(self, path: str | os.PathLike) -> dict:
        """Graph kind, opset, the model metadata it carries and per-initializer shape/dtype/bytes (needs onnx)."""
        import numpy as np
        import onnx
        from google.protobuf.message import DecodeError
        from onnx import helper
        from .onnx_format import checked_metadata, read_onnx
        data = read_onnx(path)   # the safety checks of every .onnx load; parsed once, from these bytes
        try:
            proto = onnx.load_model_from_string(data)
            props = {entry.key: entry.value for entry in proto.metadata_props}
        except (DecodeError, ValueError, UnicodeDecodeError) as error:
            raise CompactLMError(f"{path} is not a valid ONNX model (truncated or corrupted?): {error}") from None
        meta = checked_metadata(path, props)
        tensors = {}
        for tensor in proto.graph.initializer:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
            size = int(np.prod(tensor.dims, dtype=np.int64))
            tensors[tensor.name] = {"shape": list(tensor.dims), "dtype": str(dtype), "params": size,
                                    "bytes": size * dtype.itemsize}
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return {"file": str(path), "file_bytes": len(data), "graph": meta["graph"], "opset": opset,
                "ir_version": proto.ir_version, "int8": bool(meta.get("int8")),
                "native_rnn": bool(meta.get("native_rnn")),
                **{k: meta.get(k) for k in ("cell", "layers", "embed_size", "hidden_sizes", "vocab_size")},
                "tensors": tensors, "param_bytes": int(sum(t["bytes"] for t in tensors.values())),
                "steps": meta.get("steps", 0), "metrics": meta.get("metrics", {}), "lexicon": lexicon_size(meta)}
