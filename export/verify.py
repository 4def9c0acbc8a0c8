"""Run two backends on the same text and measure how far apart they are (what `compact-lm verify` prints).

Works on any pair of Backends: the reference is normally NumpyBackend(model), the candidate an
OrtBackend of the exported file, fp32 or int8 (an int8 graph computes the NumPy int8 path's states bit
for bit, compact_lm/int8.py, so the same check and tolerance hold). For each mode (one stream step by
step, `batch` streams step by step, one stream as a single sequence call) both see the same ids from the
zero state, and we compare log-probabilities at every position:
    max |delta| = max over positions and vocabulary of |log p_ref - log p_cand|
    top-1 agreement = fraction of positions where both rank the same character first
    bpc = mean over positions t of -log p(id[t+1] | ids[..t]) / ln 2
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from compact_lm.backends import Backend

TOLERANCE = 1e-4   # the export is correct when max |delta log-prob| stays below this


@dataclass(frozen=True)
class Comparison:
    """How one mode of the candidate compares with the reference."""

    mode: str
    batch: int
    positions: int
    max_abs_diff: float
    top1_agreement: float
    bpc_reference: float
    bpc_candidate: float

    @property
    def bpc_difference(self) -> float:
        """Candidate bpc minus reference bpc."""
        return self.bpc_candidate - self.bpc_reference

    def to_json(self) -> dict:
        """Plain JSON fields (bpc_difference included)."""
        return {**asdict(self), "bpc_difference": self.bpc_difference}


def streams(ids: np.ndarray, batch: int) -> np.ndarray:
    """Cut ids into `batch` contiguous streams of equal length: [batch, len(ids) // batch]."""
    length = len(ids) // batch
    return np.asarray(ids[:batch * length], dtype=np.int64).reshape(batch, length)


def run_stepwise(backend: Backend, ids: np.ndarray) -> np.ndarray:
    """Log-probabilities [B, T, V] from one `step` call per position."""
    state = backend.initial_state(ids.shape[0])
    columns = np.ascontiguousarray(ids.T)
    out = []
    for column in columns:
        log_probs, state = backend.step(column, state)
        out.append(np.asarray(log_probs, dtype=np.float64))
    return np.stack(out, axis=1)


def run_sequence(backend: Backend, ids: np.ndarray) -> np.ndarray:
    """Log-probabilities [B, T, V] from one `run` call."""
    return np.asarray(backend.run(ids, backend.initial_state(ids.shape[0]))[0], dtype=np.float64)


def bits_per_char(log_probs: np.ndarray, ids: np.ndarray) -> float:
    """Mean -log2 p of each next id: log_probs [B, T, V] scored against ids[:, 1:]."""
    picked = np.take_along_axis(log_probs[:, :-1], ids[:, 1:, None], axis=-1)
    return float(-picked.mean() / math.log(2))


def compare(mode: str, reference: np.ndarray, candidate: np.ndarray, ids: np.ndarray) -> Comparison:
    """The figures of one mode from both backends' log-probabilities [B, T, V] on ids [B, T]."""
    return Comparison(mode=mode, batch=ids.shape[0], positions=int(ids.size),
                      max_abs_diff=float(np.abs(reference - candidate).max()),
                      top1_agreement=float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
                      bpc_reference=bits_per_char(reference, ids), bpc_candidate=bits_per_char(candidate, ids))


def verify_backends(reference: Backend, candidate: Backend, ids: np.ndarray, *, sequence: bool,
                    batch: int = 4) -> list[Comparison]:
    """Step by step at batch 1 and `batch`, and (if `sequence`) as one sequence call at batch 1."""
    one = streams(ids, 1)
    many = streams(ids, batch)
    results = [compare("step", run_stepwise(reference, one), run_stepwise(candidate, one), one),
               compare("step", run_stepwise(reference, many), run_stepwise(candidate, many), many)]
    if sequence:
        results.append(compare("sequence", run_sequence(reference, one), run_sequence(candidate, one), one))
    return results
