"""A trained float model: config + vocabulary + PyTorch-named arrays, saved as one `.npz` with JSON metadata."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backends import FloatProducts
from .config import ModelConfig
from .errors import CompactLMError
from .model_file import ModelFile, check_arrays
from .network import input_table, param_shapes
from .vocab import Vocab


@dataclass
class Model(ModelFile):
    """Config, vocabulary and float parameters; `info` carries training config, steps and metrics."""

    config: ModelConfig
    vocab: Vocab
    params: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    precision = "fp32"   # float32 weights, or float64 from a `dtype=float64` run; exported graphs are float32

    def __post_init__(self) -> None:
        check_arrays(self.params, {name: (shape, None) for name, shape in param_shapes(self.config).items()}, "model")
        self._check_vocab()

    @classmethod
    def from_file(cls, config: ModelConfig, vocab: Vocab, arrays: dict[str, np.ndarray], meta: dict, info: dict) -> "Model":
        """The model of a loaded file's arrays (float dtypes only, finite values only)."""
        for name, array in arrays.items():
            if array.dtype.kind != "f":
                raise CompactLMError(f"array {name} has dtype {array.dtype}, expected floating point")
            # a damaged file's NaN would otherwise spread to every figure and suggestion without a word
            if not np.isfinite(array).all():
                raise CompactLMError(f"model array {name} holds NaN or infinite values")
        return cls(config, vocab, arrays, info)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The named arrays the file holds: the parameters."""
        return self.params

    def metadata_fields(self) -> dict:
        """dtype of the weights; not quantized."""
        return {"dtype": str(self.params["head.weight"].dtype), "quantized": False}

    def as_float(self, refusal) -> "Model":
        """This model (it is a float one)."""
        return self

    def table(self) -> np.ndarray:
        """Layer 1's [V, G*H] input table (computed once, then cached)."""
        cached = self.__dict__.get("_table")
        if cached is None:
            cached = input_table(self.params)
            self.__dict__["_table"] = cached
        return cached

    def products(self, arithmetic: str | None = None) -> FloatProducts:
        """The products a NumpyBackend runs: float arithmetic on these arrays."""
        if arithmetic not in (None, "float"):
            raise CompactLMError(f"a float model runs in float arithmetic, not {arithmetic!r}")
        return FloatProducts(self.params, self.table(), self.config.layers)
