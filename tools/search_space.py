"""What `compact-lm search` chooses from: the trained architectures (cell, layers, embedding and hidden
sizes, dropout) and, applied to each trained model, the keep fractions and precisions.

The architectures are a finite grid; a search draws `trials` distinct points of it with its seed, up front,
so the same seed gives the same trials on any machine or cluster (and Tune only runs them).
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from compact_lm.cells import CELLS
from compact_lm.config import TrainConfig
from compact_lm.errors import CompactLMError, SettingError

PRECISIONS = ("int8", "fp32")
# TrainConfig settings the search sets itself (per trial, or from its own options): "fixed" may not set them
MANAGED = ("corpus", "cell", "layers", "embed", "hidden", "dropout", "steps", "epochs", "minutes", "seed",
           "eval_every", "init", "teacher", "distill")
SPACE_KEYS = ("cells", "layers", "embed", "hidden", "dropout", "keeps", "precisions", "fixed")


@dataclass(frozen=True)
class SearchSpace:
    """The choices of a search; every entry is a list of values (fixed: TrainConfig settings for every trial)."""

    cells: tuple[str, ...] = ("gru", "lstm", "rnn")
    layers: tuple[int, ...] = (1, 2)
    embed: tuple[int, ...] = (16, 32, 64)
    hidden: tuple[int, ...] = (32, 64, 128, 256)
    dropout: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    keeps: tuple[float, ...] = (1.0, 0.5)             # pruning: fraction of hidden units kept (1.0: not pruned)
    precisions: tuple[str, ...] = PRECISIONS
    fixed: dict = field(default_factory=dict)         # e.g. {"batch": 32, "seq_len": 64, "lr": 0.005}

    def __post_init__(self) -> None:
        for name in SPACE_KEYS[:-1]:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise SettingError(name, "must be a list of values (got {got!r})", got=value)
            object.__setattr__(self, name, tuple(value))
            if not getattr(self, name):
                raise SettingError(name, "needs at least one value")
            if len(set(getattr(self, name))) != len(getattr(self, name)):
                raise SettingError(name, "lists a value twice (got {got!r})", got=list(getattr(self, name)))
        object.__setattr__(self, "fixed", dict(self.fixed))
        self.validate()

    def validate(self) -> None:
        """One-line error naming the first impossible choice."""
        unknown = [c for c in self.cells if c not in CELLS]
        if unknown:
            raise SettingError("cells", "unknown cell {got!r}; choose from {known}", got=unknown[0], known=", ".join(CELLS))
        for name in ("layers", "embed", "hidden"):
            bad = [v for v in getattr(self, name) if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad:
                raise SettingError(name, "every value must be a whole number >= 1 (got {got!r})", got=bad[0])
        bad = [v for v in self.dropout if not (isinstance(v, (int, float)) and 0.0 <= v <= 0.95)]
        if bad:
            raise SettingError("dropout", "every value must be between 0 and 0.95 (got {got!r})", got=bad[0])
        bad = [v for v in self.keeps if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 1)]
        if bad:
            raise SettingError("keeps", "every fraction must be in (0, 1] (got {got!r})", got=bad[0])
        bad = [v for v in self.precisions if v not in PRECISIONS]
        if bad:
            raise SettingError("precisions", "choose int8 and/or fp32 (got {got!r})", got=bad[0])
        names = {f.name for f in fields(TrainConfig)}
        for key in self.fixed:
            if key in MANAGED:
                raise SettingError("fixed", "{key!r} is set by the search itself, not in fixed", key=key)
            if key not in names:
                raise SettingError("fixed", "{key!r} is not a training setting", key=key)

    def architectures(self) -> list[dict]:
        """Every trained architecture of the space, in a fixed order."""
        return [{"cell": c, "layers": n, "embed": e, "hidden": h, "dropout": float(d)}
                for c, n, e, h, d in itertools.product(self.cells, self.layers, self.embed, self.hidden, self.dropout)]

    def sample(self, trials: int, seed: int, accept=None) -> list[dict]:
        """`trials` distinct architectures drawn with `seed` (all of them if the space holds fewer); with
        `accept`, an architecture it rejects is passed over and the next one drawn instead."""
        grid = self.architectures()
        drawn = []
        for i in np.random.default_rng(seed).permutation(len(grid)):
            if len(drawn) == trials:
                break
            if accept is None or accept(grid[int(i)]):
                drawn.append(grid[int(i)])
        return drawn

    def to_json(self) -> dict:
        """Plain JSON fields (the format of a space file)."""
        return {name: list(getattr(self, name)) for name in SPACE_KEYS[:-1]} | {"fixed": dict(self.fixed)}

    @classmethod
    def from_json(cls, data: dict) -> "SearchSpace":
        """Rebuild from JSON; keys left out keep their defaults."""
        return cls(**{k: v for k, v in data.items() if k in SPACE_KEYS})


def describe(architecture: dict) -> str:
    """A short name of an architecture: `gru L1 E16 H64 d0.1`."""
    a = architecture
    return f"{a['cell']} L{a['layers']} E{a['embed']} H{a['hidden']} d{a['dropout']:g}"


def read_space_file(path: str | Path) -> dict:
    """The JSON object of a space file, its keys checked (values are checked by SearchSpace)."""
    path = Path(path)
    if not path.is_file():
        raise CompactLMError(f"space file {path} does not exist" if not path.exists() else f"space file {path} is a folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompactLMError(f"space file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CompactLMError(f"space file {path} must hold a JSON object")
    unknown = sorted(set(data) - set(SPACE_KEYS))
    if unknown:
        raise CompactLMError(f"space file {path}: unknown key {unknown[0]!r}; the keys are {', '.join(SPACE_KEYS)}")
    if "fixed" in data and not isinstance(data["fixed"], dict):
        raise CompactLMError(f"space file {path}: 'fixed' must be an object of training settings")
    return data
