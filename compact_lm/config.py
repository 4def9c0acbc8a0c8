"""Frozen configuration dataclasses, saved with every model and training state."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .cells import CELLS
from .errors import CompactLMError, SettingError
from .fileio import MAX_TOTAL_BYTES


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a model: Embedding(V, E) -> L recurrent layers -> Linear(H_last, V).

    `hidden_sizes` has one entry per layer; after pruning the layers may differ.
    """

    cell: str = "gru"
    vocab_size: int = 0
    embed_size: int = 64
    hidden_sizes: tuple[int, ...] = (256,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if self.cell not in CELLS:
            raise CompactLMError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.vocab_size < 1 or self.embed_size < 1 or not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise CompactLMError(f"model sizes must be positive: {self}")

    @property
    def layers(self) -> int:
        """Number of recurrent layers."""
        return len(self.hidden_sizes)

    def to_json(self) -> dict:
        """Plain JSON fields."""
        return {"cell": self.cell, "vocab_size": self.vocab_size, "embed_size": self.embed_size,
                "hidden_sizes": list(self.hidden_sizes), "layers": self.layers}

    @classmethod
    def from_json(cls, meta: dict) -> "ModelConfig":
        """Rebuild from metadata (sizes must be JSON whole numbers: "128" or 128.5 is a damaged file, not 128)."""
        sizes = meta["hidden_sizes"]
        if not isinstance(sizes, list) or not all(map(_whole, [meta["vocab_size"], meta["embed_size"], *sizes])):
            raise ValueError("vocab_size, embed_size and hidden_sizes must be whole numbers")
        return cls(cell=meta["cell"], vocab_size=int(meta["vocab_size"]), embed_size=int(meta["embed_size"]),
                   hidden_sizes=tuple(int(h) for h in sizes))


def _whole(value) -> bool:
    """A JSON whole number (128 or 128.0; not True, "128" or 128.5)."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


DEFAULT_STEPS = 1000   # the budget when none of steps / epochs / minutes is given

# What each TrainConfig setting means: the one source of `compact-lm train`'s flags (help + default) and of
# docs/cli.md's table (tests/test_cli_docs.py checks it). Settings missing here are not command-line flags.
TRAIN_HELP = {
    "cell": "recurrent cell: rnn, gru or lstm",
    "layers": "recurrent layers",
    "embed": "embedding size E",
    "hidden": "hidden size H",
    "seq_len": "BPTT window T in characters",
    "batch": "parallel streams B",
    "optimizer": "adamw or sgd",
    "lr": "peak learning rate",
    "min_lr_ratio": "final / peak learning rate of the cosine decay",
    "warmup_steps": "linear warm-up steps",
    "momentum": "SGD momentum",
    "dropout": "dropout between layers and before the head",
    "weight_drop": "DropConnect on recurrent weights W_hh, one mask per window",
    "weight_decay": "decoupled weight decay on matrices",
    "label_smoothing": "label smoothing epsilon",
    "clip": "global gradient-norm clip",
    "steps": f"budget in optimizer steps ({DEFAULT_STEPS} if no budget is given)",
    "epochs": "budget in passes over the training split",
    "minutes": "budget in wall-clock minutes of training (the final evaluation comes after it)",
    "eval_every": "steps between evaluations + checkpoints",
    "seed": "random seed",
    "min_count": "characters seen fewer times become <unk>",
    "encoding_errors": "strict, replace or ignore invalid UTF-8",
    "dtype": "float32 or float64",
    "init": "start from this float model's weights (its sizes and vocabulary win)",
    "teacher": "distil from this float model (same vocabulary)",
    "distill": "weight of the teacher's distribution in the target",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; same config + same seed = bit-identical weights
    (with the same BLAS library and thread count: they decide the order of floating-point sums)."""

    corpus: tuple[str, ...] = ()          # empty: the bundled corpus
    encoding_errors: str = "strict"
    nfc: bool = True
    lowercase: bool = False
    min_count: int = 1
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    # model
    cell: str = "gru"
    layers: int = 1
    embed: int = 64
    hidden: int = 256
    # optimisation
    seq_len: int = 128
    batch: int = 16                       # more updates in a time budget: docs/experiments.md, "Training recipe"
    optimizer: str = "adamw"
    lr: float = 2e-2                      # with min_lr_ratio 0: docs/experiments.md, "Training recipe"
    min_lr_ratio: float = 0.0
    warmup_steps: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    momentum: float = 0.9
    weight_decay: float = 0.1
    clip: float = 1.0
    dropout: float = 0.2
    weight_drop: float = 0.0
    label_smoothing: float = 0.0
    init_scale: float = 1.0
    # budget: steps, else epochs, else minutes (the first one set wins)
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    eval_every: int = 800                 # steps between evaluations and checkpoints (at batch 16: the characters 200 steps of 64 read)
    seed: int = 0
    dtype: str = "float32"
    init: str | None = None               # a float model file to start from (its sizes and vocabulary)
    teacher: str | None = None            # a float model file to distil from (same vocabulary)
    distill: float = 0.0                  # weight of the teacher's distribution in the target

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None and self.minutes is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS)
        object.__setattr__(self, "corpus", tuple(str(c) for c in self.corpus))
        object.__setattr__(self, "split", tuple(float(s) for s in self.split))
        self.validate()

    def validate(self) -> None:
        """One-line error naming the first nonsensical setting."""
        def bad(name: str, why: str) -> SettingError:
            return SettingError(name, why + " (got {got!r})", got=getattr(self, name))

        if self.cell not in CELLS:
            raise bad("cell", f"unknown cell; choose one of {', '.join(CELLS)}")
        for name in ("layers", "embed", "hidden", "seq_len", "batch", "eval_every", "min_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive whole number")
        # W_ih and W_hh of every layer (the embedding and the head come on top): a run's state.npz holds them 4
        # times (the weights, the best weights, AdamW's two moments) and a file holds at most MAX_TOTAL_BYTES of
        # arrays, so a larger model could be trained but never resumed
        gates = CELLS[self.cell].gates
        weights = gates * self.hidden * (self.embed + self.hidden) + (self.layers - 1) * gates * 2 * self.hidden ** 2
        if 4 * weights * (8 if self.dtype == "float64" else 4) > MAX_TOTAL_BYTES:
            raise SettingError("hidden", "{embed} {embed_value}, {hidden} {hidden_value} and {layers} {layers_value} "
                               "give {weights} recurrent weights, more than a training state holds ({limit} GiB of "
                               "arrays for 4 copies)", embed_value=self.embed, hidden_value=self.hidden,
                               layers_value=self.layers, weights=f"{weights:,}", limit=MAX_TOTAL_BYTES // 1024 ** 3)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be a whole number >= 0")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", "must be >= 0")
        for name in ("lr", "clip", "init_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise bad(name, "must be a positive number")
        for name, low, high in (("dropout", 0.0, 0.95), ("weight_drop", 0.0, 0.95), ("distill", 0.0, 1.0), ("label_smoothing", 0.0, 0.5), ("min_lr_ratio", 0.0, 1.0),
                                ("beta1", 0.0, 0.9999), ("beta2", 0.0, 0.99999), ("momentum", 0.0, 0.9999)):
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise bad(name, f"must be between {low} and {high}")
        if self.distill + self.label_smoothing > 1.0:
            raise bad("distill", "plus {label_smoothing} must be at most 1")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "must be >= 0")
        if self.optimizer not in ("adamw", "sgd"):
            raise bad("optimizer", "choose adamw or sgd")
        if self.encoding_errors not in ("strict", "replace", "ignore"):
            raise bad("encoding_errors", "choose strict, replace or ignore")
        if self.dtype not in ("float32", "float64"):
            raise bad("dtype", "choose float32 or float64")
        if len(self.split) != 3 or min(self.split) < 0 or self.split[0] <= 0 or abs(sum(self.split) - 1) > 1e-6:
            raise bad("split", "needs three non-negative fractions (train > 0) that sum to 1")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise bad("steps", "must be a positive whole number")
        for name in ("epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise bad(name, "must be a positive number")

    def to_json(self) -> dict:
        """Plain JSON fields."""
        out = dataclasses.asdict(self)
        out["corpus"], out["split"] = list(self.corpus), list(self.split)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        """Rebuild from JSON, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("corpus", "split"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model this config trains."""
        return ModelConfig(cell=self.cell, vocab_size=vocab_size, embed_size=self.embed,
                           hidden_sizes=(self.hidden,) * self.layers)
