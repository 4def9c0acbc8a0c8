"""What every model kind shares: the `.npz` container, its metadata, and the surface callers use.

A model kind (float `Model`, int8 `QuantizedModel`, exported `OnnxModel`) presents the same surface:
    config, vocab, info, precision ("fp32" or "int8"), arrays (named arrays, as saved)
    metadata(), save(path), backend(), evaluate(text), evaluate_ids(ids), summary(path)
    format ("npz" or "onnx"), runtime ("numpy" or "onnxruntime"), graph, warnings()
    as_float(refusal)     the float Model itself, or a CompactLMError with `refusal` as its text
    require_arrays(purpose)   the model, if its arrays can be read (not an exported graph's)
so that no caller asks which kind it holds. `compact_lm.opener.open_model` picks the kind of a file.
"""
from __future__ import annotations

import os

import numpy as np

from .config import ModelConfig
from .errors import CompactLMError
from .fileio import save_npz
from .lexicon import Lexicon, lexicon_size, model_lexicon
from .metrics import Metrics, evaluate_ids
from .vocab import Vocab

FORMAT_VERSION = 1
MODEL_KIND = "compact-lm-model"
# metadata carried from file to file (a pruned or quantized model keeps its history)
INFO_KEYS = ("steps", "train_config", "metrics", "chars_seen", "source", "pruning", "quantization", "lexicon")
MAX_COUNT = 2 ** 53   # steps and other counts in metadata: whole numbers JavaScript holds exactly


def _number(value) -> bool:
    """A JSON number (not true or false)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value) -> bool:
    """A JSON number that is a finite float (a 400-digit integer is not: float() of it overflows)."""
    return _number(value) and value == value and -1.7e308 <= value <= 1.7e308


def _count(value) -> bool:
    """A JSON whole number (3 or 3.0) from 0 to MAX_COUNT (compared as is: a huge int never becomes a float)."""
    return _number(value) and (isinstance(value, int) or value.is_integer()) and 0 <= value <= MAX_COUNT


def check_info(meta: dict) -> None:
    """Raise ValueError naming the first INFO_KEYS entry of `meta` of the wrong type.

    These are what `info` and the tools read; web/compact_lm.js's checkInfo refuses the same, in the same words.
    The lexicon is checked when decoded."""
    for key in ("steps", "chars_seen"):
        if key in meta and not _count(meta[key]):
            raise ValueError(f"'{key}' must be a whole number from 0 to 2^53")
    if "train_config" in meta and not isinstance(meta["train_config"], dict):
        raise ValueError("'train_config' must be an object")
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ValueError("'metrics' must be an object")
    if not all(_finite(figures["bpc"]) for figures in metrics.values() if isinstance(figures, dict) and "bpc" in figures):
        raise ValueError("'metrics' must give every 'bpc' as a finite number")
    if not isinstance(meta.get("pruning", []), list):
        raise ValueError("'pruning' must be a list")
    quantization = meta.get("quantization", {})
    if not isinstance(quantization, dict):
        raise ValueError("'quantization' must be an object")
    if "source_params" in quantization and not _count(quantization["source_params"]):
        raise ValueError("'quantization' must give 'source_params' as a whole number from 0 to 2^53")


def model_metadata(config: ModelConfig, vocab: Vocab, info: dict, **fields) -> dict:
    """A model file's metadata: format, `fields` (dtype, quantized, ...), sizes, vocabulary, then `info`."""
    meta = {"format_version": FORMAT_VERSION, "kind": MODEL_KIND, **fields}
    meta.update(config.to_json())
    meta.update(vocab.to_json())
    meta.update({k: v for k, v in info.items() if k not in meta})
    meta.setdefault("steps", 0)
    return meta


def check_arrays(arrays: dict[str, np.ndarray], expected: dict[str, tuple[tuple[int, ...], np.dtype | None]],
                 what: str) -> None:
    """The arrays are exactly `expected`'s names, each of its shape (and dtype, unless None): one-line errors."""
    if set(arrays) != set(expected):
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        raise CompactLMError(f"{what} arrays do not match the config (missing {missing}, unexpected {extra})")
    for name, (shape, dtype) in expected.items():
        array = arrays[name]
        if tuple(array.shape) != shape or (dtype is not None and array.dtype != dtype):
            want = f"{np.dtype(dtype)}{list(shape)}" if dtype is not None else str(shape)
            have = f"{array.dtype}{list(array.shape)}" if dtype is not None else str(array.shape)
            raise CompactLMError(f"{what} array {name} has shape {have}, expected {want}" if dtype is None
                                 else f"{what} array {name} is {have}, expected {want}")


class ModelFile:
    """The methods float and int8 models share; a kind supplies `arrays`, `precision`, `metadata_fields()`."""

    config: ModelConfig
    vocab: Vocab
    info: dict
    precision: str
    arrays: dict[str, np.ndarray]   # the named arrays the file holds
    format = "npz"
    runtime = "numpy"   # what backend() runs on
    graph = "npz"       # an exported file's graph kind (step or sequence); the container for the others

    def _check_vocab(self) -> None:
        if self.vocab.size != self.config.vocab_size:
            raise CompactLMError(f"vocabulary has {self.vocab.size} entries, the config says {self.config.vocab_size}")

    @property
    def num_params(self) -> int:
        """Weights and biases (an int8 model's scales not counted)."""
        return int(sum(a.size for n, a in self.arrays.items() if not n.endswith(".scale")))

    @property
    def lexicon(self) -> Lexicon | None:
        """The words of the training split the file carries (compact_lm/lexicon.py), or None; decoded when first
        used (a damaged one fails then, so a caller that never uses it can still open the file)."""
        value = self.info.get("lexicon")
        cached = self.__dict__.get("_lexicon")
        if cached is None or cached[0] is not value:
            cached = self.__dict__["_lexicon"] = (value, model_lexicon(self.info, self._where()))
        return cached[1]

    loaded_from: str | None = None   # the file it was read from, if any

    def _where(self) -> str:
        """How errors about this model's metadata name it."""
        return self.loaded_from or "the model"

    def metadata_fields(self) -> dict:
        """The kind's own metadata entries (dtype, quantized, scheme)."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """The JSON document stored beside the arrays."""
        return model_metadata(self.config, self.vocab, self.info, **self.metadata_fields())

    def save(self, path: str | os.PathLike) -> None:
        """Write the model atomically (a damaged lexicon is refused, not copied)."""
        self.lexicon
        save_npz(path, self.arrays, self.metadata())

    def backend(self, **options):
        """The NumPy reference Backend of this model (`options`: the kind's arithmetic choices)."""
        from .backends import NumpyBackend
        return NumpyBackend(self, **options)

    def evaluate_ids(self, ids: np.ndarray, **options) -> Metrics:
        """Metrics of pre-encoded ids."""
        return evaluate_ids(self.backend(**options), ids)

    def evaluate(self, text: str, **options) -> Metrics:
        """Nats, bpc and perplexity of `text` (normalized like the training text)."""
        if not isinstance(text, str):
            raise CompactLMError(f"evaluate() takes a string, got {type(text).__name__}")
        return self.evaluate_ids(self.vocab.encode(text), **options)

    def as_float(self, refusal: str | CompactLMError):
        """The float model itself; other kinds raise `refusal` (a CompactLMError, or its message)."""
        raise refusal if isinstance(refusal, CompactLMError) else CompactLMError(refusal)

    def require_arrays(self, purpose: str) -> "ModelFile":
        """This model, whose arrays `purpose` (export, pruning) reads; an exported graph refuses."""
        return self

    def warnings(self) -> list[str]:
        """What a user should know before running this model elsewhere (none by default)."""
        return []

    def summary(self, path: str | os.PathLike) -> dict:
        """Config, vocabulary size, per-tensor shape/dtype/bytes and totals, as `compact-lm info` prints them."""
        tensors = {name: {"shape": list(a.shape), "dtype": str(a.dtype), "params": int(a.size), "bytes": int(a.nbytes)}
                   for name, a in self.arrays.items()}
        quantization = self.info.get("quantization", {})
        # what the same weights take as float32 (for an int8 model: its float source, table unfolded)
        fp32_bytes = 4 * int(quantization.get("source_params", self.num_params))
        return {"file": str(path), "file_bytes": os.path.getsize(path), **self.config.to_json(),
                "vocab_size": self.vocab.size, "params": self.num_params, "quantized": self.precision == "int8",
                "param_bytes": int(sum(t["bytes"] for t in tensors.values())), "fp32_bytes": fp32_bytes,
                "tensors": tensors, "steps": self.info.get("steps", 0), "metrics": self.info.get("metrics", {}),
                "train_config": self.info.get("train_config", {}), "pruning": self.info.get("pruning", []),
                "lexicon": lexicon_size(self.info)}
