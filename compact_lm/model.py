"""A trained model: config + vocabulary + PyTorch-named arrays, saved as one `.npz` with JSON metadata."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from .backends import FloatProducts, NumpyBackend
from .config import ModelConfig
from .errors import CompactLMError
from .fileio import load_npz, save_npz
from .network import input_table, param_shapes
from .vocab import Vocab

FORMAT_VERSION = 1
MODEL_KIND = "compact-lm-model"
EVAL_CHUNK = 8192   # characters per chunk when scoring long texts (bounds memory, state carried)
# metadata carried from file to file (a pruned or quantized model keeps its history)
INFO_KEYS = ("steps", "train_config", "metrics", "chars_seen", "source", "pruning", "quantization")


@dataclass
class Metrics:
    """Cross-entropy of a text under a model."""

    nats: float          # mean negative log-likelihood per scored character, in nats
    chars: int           # characters scored (every one after the first)
    unknown: int         # characters that mapped to <unk>

    @property
    def bpc(self) -> float:
        """Bits per character: nats / ln 2."""
        return self.nats / math.log(2)

    @property
    def perplexity(self) -> float:
        """Per-character perplexity: exp(nats)."""
        return math.exp(self.nats)

    def to_json(self) -> dict:
        """The keys `compact-lm eval --json` prints."""
        return {"nats": self.nats, "bpc": self.bpc, "perplexity": self.perplexity,
                "chars": self.chars, "unknown": self.unknown}


@dataclass
class Model:
    """Config, vocabulary and parameters; `info` carries training config, steps and metrics."""

    config: ModelConfig
    vocab: Vocab
    params: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = param_shapes(self.config)
        if set(self.params) != set(expected):
            missing = sorted(set(expected) - set(self.params))
            extra = sorted(set(self.params) - set(expected))
            raise CompactLMError(f"model arrays do not match the config (missing {missing}, unexpected {extra})")
        for name, shape in expected.items():
            if tuple(self.params[name].shape) != shape:
                raise CompactLMError(f"model array {name} has shape {self.params[name].shape}, expected {shape}")
        if self.vocab.size != self.config.vocab_size:
            raise CompactLMError(f"vocabulary has {self.vocab.size} entries, the config says {self.config.vocab_size}")

    @property
    def num_params(self) -> int:
        """Total parameter count."""
        return int(sum(p.size for p in self.params.values()))

    def metadata(self) -> dict:
        """The JSON document stored beside the arrays."""
        return model_metadata(self.config, self.vocab, self.info, dtype=str(self.params["head.weight"].dtype),
                              quantized=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model atomically."""
        save_npz(path, self.params, self.metadata())

    def table(self) -> np.ndarray:
        """Layer 1's [V, G*H] input table (computed once, then cached)."""
        cached = self.__dict__.get("_table")
        if cached is None:
            cached = input_table(self.params)
            self.__dict__["_table"] = cached
        return cached

    def products(self, arithmetic: str | None = None) -> FloatProducts:
        """The products a NumpyBackend runs: float32 arithmetic on these arrays."""
        if arithmetic not in (None, "float"):
            raise CompactLMError(f"a float model runs in float arithmetic, not {arithmetic!r}")
        return FloatProducts(self.params, self.table(), self.config.layers)

    def evaluate_ids(self, ids: np.ndarray) -> Metrics:
        """Metrics of pre-encoded ids."""
        return evaluate_ids(NumpyBackend(self), ids)

    def evaluate(self, text: str) -> Metrics:
        """Nats, bpc and perplexity of `text` (normalized like the training text)."""
        return self.evaluate_ids(self.vocab.encode(text))


def model_metadata(config: ModelConfig, vocab: Vocab, info: dict, **fields) -> dict:
    """A model file's metadata: format, `fields` (dtype, quantized, ...), sizes, vocabulary, then `info`."""
    meta = {"format_version": FORMAT_VERSION, "kind": MODEL_KIND, **fields}
    meta.update(config.to_json())
    meta.update(vocab.to_json())
    meta.update({k: v for k, v in info.items() if k not in meta})
    meta.setdefault("steps", 0)
    return meta


def evaluate_ids(backend, ids: np.ndarray) -> Metrics:
    """Score ids[1:], each given all ids before it from the zero state, on any backend (chunked)."""
    if len(ids) < 2:
        raise CompactLMError("text to evaluate needs at least 2 characters")
    state = backend.initial_state(1)
    total = 0.0
    for start in range(0, len(ids) - 1, EVAL_CHUNK):
        # the chunk's last id is the next chunk's first input: its state is the one just computed
        chunk = np.asarray(ids[start:start + EVAL_CHUNK + 1], dtype=np.int64)
        log_p, state = backend.run(chunk[None, :-1], state)
        total -= float(log_p[0, np.arange(len(chunk) - 1), chunk[1:]].sum(dtype=np.float64))
    count = len(ids) - 1
    return Metrics(nats=total / count, chars=count, unknown=int(np.count_nonzero(ids == 0)))


def load(path: str | os.PathLike):
    """Load a model file (float `Model` or int8 `QuantizedModel`), checking version, arrays and vocabulary."""
    if str(path).lower().endswith(".onnx"):
        raise CompactLMError(f"{path} is an exported ONNX graph: give the .npz model file it was exported from "
                             "(complete, repl, eval-complete, profile and info take .onnx files)")
    arrays, meta = load_npz(path, "model")
    if meta.get("kind") != MODEL_KIND:
        raise CompactLMError(f"{path} is not a compact-lm model (kind {meta.get('kind')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CompactLMError(f"{path} has format version {version!r}; this compact-lm reads version {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_json(meta)
        vocab = Vocab.from_json(meta)
        quantized = bool(meta.get("quantized", False))
        weight_bits = int(meta["int8"]["weight_bits"]) if quantized else 0
    except (KeyError, TypeError, ValueError) as error:
        raise CompactLMError(f"{path} has invalid metadata: {error}") from None
    info = {k: v for k, v in meta.items() if k in INFO_KEYS}
    try:
        if quantized:
            from .quantized import QuantizedModel, check_scheme
            check_scheme(meta["int8"])
            return QuantizedModel(config, vocab, arrays, weight_bits, info)
        for name, array in arrays.items():
            if array.dtype.kind != "f":
                raise CompactLMError(f"array {name} has dtype {array.dtype}, expected floating point")
        return Model(config, vocab, arrays, info)
    except CompactLMError as error:
        raise CompactLMError(f"{path}: {error}") from None
