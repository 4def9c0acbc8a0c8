"""Cross-entropy of a text under any Backend: nats, bits per character, perplexity."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import CompactLMError

MAX_EXP = math.log(np.finfo(np.float64).max)   # exp of more overflows
EVAL_CHUNK = 8192   # characters per chunk when scoring long texts (bounds memory, state carried)


@dataclass
class Metrics:
    """Cross-entropy of a text under a model."""

    nats: float          # mean negative log-likelihood per scored character, in nats
    chars: int           # characters scored (every one after the first)
    unknown: int         # characters scored that mapped to <unk> (the unscored first one not counted)

    @property
    def bpc(self) -> float:
        """Bits per character: nats / ln 2."""
        return self.nats / math.log(2)

    @property
    def perplexity(self) -> float:
        """Per-character perplexity: exp(nats) (inf past float range: a diverged model's 1,000 nats)."""
        return math.exp(self.nats) if self.nats < MAX_EXP else math.inf

    def to_json(self) -> dict:
        """The keys `compact-lm eval --json` prints (a perplexity past float range is null: JSON has no inf)."""
        return {"nats": self.nats, "bpc": self.bpc,
                "perplexity": self.perplexity if self.nats < MAX_EXP else None,
                "chars": self.chars, "unknown": self.unknown}


def evaluate_ids(backend, ids: np.ndarray) -> Metrics:
    """Score ids[1:], each given all ids before it from the zero state, on any backend (chunked)."""
    if len(ids) < 2:
        raise CompactLMError("text to evaluate needs at least 2 characters")
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= backend.vocab_size:   # (numpy wraps -1)
        raise CompactLMError(f"ids to evaluate must be whole numbers from 0 to {backend.vocab_size - 1}")
    state = backend.initial_state(1)
    total = 0.0
    for start in range(0, len(ids) - 1, EVAL_CHUNK):
        # the chunk's last id is the next chunk's first input: its state is the one just computed
        chunk = np.asarray(ids[start:start + EVAL_CHUNK + 1], dtype=np.int64)
        log_p, state = backend.run(chunk[None, :-1], state)
        total -= float(log_p[0, np.arange(len(chunk) - 1), chunk[1:]].sum(dtype=np.float64))
    count = len(ids) - 1
    return Metrics(nats=total / count, chars=count, unknown=int(np.count_nonzero(ids[1:] == 0)))
