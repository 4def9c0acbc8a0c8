"""Checking an int8 export against the NumPy int8 path, with rounding flips told apart from errors.

Why the fp32 check (free-running, max |delta log p| <= 1e-4) cannot hold here: every int8 product quantizes
a hidden state that the cells compute with float tanh / sigmoid, which onnxruntime and NumPy round
differently in the last bit (|delta h| ~ 6e-8). A value within that distance of a rounding boundary
(x / ACT_SCALE = n + 1/2) quantizes to neighbouring integers on the two sides: a rounding flip, at a rate of
about |delta h| / ACT_SCALE ~ 1e-5 per quantized value. A flip moves one input of a product by ACT_SCALE,
and once the two runs differ, later flips follow: over thousands of characters, free-running log-probs of a
trained H=256 model drift apart by up to ~4e-2 (top-1 agreement ~99.9%, |delta bpc| ~ 1e-4), a quarter of
what int8 itself changes against fp32. NumPy on another CPU (another tanh) drifts from NumPy here the same way.

So the exact check is teacher-forced: at every position both backends start from the reference's state.
The products inside one step then read the given state (identical in both) and each layer's new state h'_k
(quantized for layer k+1 or the head). Where quantize(h'_k) agrees for every layer, every integer product
is identical, the logits are bit for bit the same and log-probs and states differ by float rounding only;
a position where it does not is a flip, set apart. An export error changes quantized states everywhere and
so shows up either as a large difference off the flips or as far too many flips.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from compact_lm.backends import Backend
from compact_lm.int8 import quantize_activations

from .verify import TOLERANCE, Comparison, compare, run_sequence, run_stepwise, streams, verify_backends

# Flip positions allowed per quantized value (each position's root flip counts once; observed <= 1.2e-5 per
# value on trained H=256 models), plus a few: flips are rare independent events, so a false alarm needs many
# times the expected count, while an export error flips values at most positions.
FLIP_RATE = 1e-4
FLIP_ALLOWANCE = 3
# Free-running runs drift apart (see above) without changing the model's quality: the |delta bpc| they may
# show (observed <= 2e-4 over 5000 characters; int8 itself moves bpc by ~1e-3 against fp32).
BPC_TOLERANCE = 1e-2


@dataclass(frozen=True)
class TeacherForced:
    """How one graph's steps from the reference's states compare with the reference's steps."""

    graph: str                    # "step", or "sequence" when the steps run through the sequence graph
    batch: int
    positions: int
    values: int                   # quantized new-state values compared (positions x sum of hidden sizes)
    flips: int                    # values that quantize differently on the two sides
    flip_positions: int           # positions with at least one flip (set apart below)
    max_abs_diff: float           # max |delta log-prob| off the flip positions
    max_state_diff: float         # max |delta state| off the flip positions
    max_abs_diff_at_flips: float  # max |delta log-prob| at the flip positions (0 if none)
    top1_agreement: float         # fraction of all positions (flips included) with the same most likely character

    @property
    def allowed_flip_positions(self) -> int:
        """How many flip positions still pass."""
        return int(FLIP_ALLOWANCE + FLIP_RATE * self.values)

    @property
    def ok(self) -> bool:
        """Float-rounding agreement off the flips, and no more flips than rounding explains."""
        return (self.max_abs_diff <= TOLERANCE and self.max_state_diff <= TOLERANCE
                and self.flip_positions <= self.allowed_flip_positions)

    def to_json(self) -> dict:
        """Plain JSON fields (allowed_flip_positions and ok included)."""
        return {**asdict(self), "allowed_flip_positions": self.allowed_flip_positions, "ok": self.ok}


def teacher_forced(reference: Backend, candidate: Backend, ids: np.ndarray, graph: str = "step",
                   state: list | None = None) -> TeacherForced:
    """Step both backends through ids [B, T], each position from the reference's state (first: `state`, or zeros)."""
    state = reference.initial_state(ids.shape[0]) if state is None else state
    values = flips = flip_positions = same_top1 = 0
    worst = worst_state = worst_at_flips = 0.0
    for column in np.ascontiguousarray(ids.T):
        want, want_state = reference.step(column, state)
        got, got_state = candidate.step(column, state)
        # [B] per stream: does any layer's new h quantize differently?
        flipped = sum((quantize_activations(w[0]) != quantize_activations(g[0])).sum(axis=1)
                      for w, g in zip(want_state, got_state))
        values += sum(w[0].size for w in want_state)
        flips += int(flipped.sum())
        clean = flipped == 0
        flip_positions += int((~clean).sum())
        diff = np.abs(np.asarray(want, np.float64) - got).max(axis=1)
        state_diff = np.max([np.abs(np.asarray(w, np.float64) - g).max(axis=1)
                             for w_layer, g_layer in zip(want_state, got_state)
                             for w, g in zip(w_layer, g_layer)], axis=0)
        worst = max(worst, float(diff[clean].max(initial=0.0)))
        worst_state = max(worst_state, float(state_diff[clean].max(initial=0.0)))
        worst_at_flips = max(worst_at_flips, float(diff[~clean].max(initial=0.0)))
        same_top1 += int((np.argmax(want, axis=1) == np.argmax(got, axis=1)).sum())
        state = want_state
    return TeacherForced(graph, ids.shape[0], int(ids.size), values, flips, flip_positions,
                         worst, worst_state, worst_at_flips, same_top1 / max(int(ids.size), 1))


@dataclass(frozen=True)
class Int8Verification:
    """Everything `compact-lm verify` checks for an int8 export."""

    free_running: list[Comparison]         # as for fp32: reported; pass on |delta bpc| only
    teacher_forced: list[TeacherForced]    # the exact check
    loop: Comparison | None                # sequence graph vs step graph, both onnxruntime, free-running

    def failures(self) -> list[str]:
        """One line per failed check (empty: the export computes the reference's int8 scheme)."""
        lines = [f"teacher-forced {r.graph} graph at batch {r.batch}: max |delta log-prob| {r.max_abs_diff:.3g}, "
                 f"max |delta state| {r.max_state_diff:.3g} off {r.flip_positions} rounding-flip positions "
                 f"(tolerance {TOLERANCE:g}, at most {r.allowed_flip_positions} flip positions)"
                 for r in self.teacher_forced if not r.ok]
        lines += [f"free-running {r.mode} at batch {r.batch}: |delta bpc| {abs(r.bpc_difference):.3g} "
                  f"exceeds {BPC_TOLERANCE:g}" for r in self.free_running if abs(r.bpc_difference) > BPC_TOLERANCE]
        if self.loop is not None and self.loop.max_abs_diff > TOLERANCE:
            lines.append(f"sequence graph vs step graph: max |delta log-prob| {self.loop.max_abs_diff:.3g} "
                         f"exceeds {TOLERANCE:g}")
        return lines

    def to_json(self) -> dict:
        """Plain JSON fields."""
        return {"free_running": [r.to_json() for r in self.free_running],
                "teacher_forced": [r.to_json() for r in self.teacher_forced],
                "sequence_vs_step": None if self.loop is None else self.loop.to_json()}


def verify_int8(reference: Backend, candidate, ids: np.ndarray, *, sequence_alone: Backend | None = None,
                batch: int = 4) -> Int8Verification:
    """All int8 checks of an OrtBackend `candidate` against the NumPy int8 `reference` on ids.

    Teacher-forced: the candidate's step graph at batch 1 and `batch`, and `sequence_alone` (an OrtBackend of
    the sequence file only, whose steps run through it) at batch 1. If the candidate has a sequence graph, its
    free-running log-probs must also equal those of the candidate's steps: both are onnxruntime, with the
    same kernels on the same shapes, so they agree to float rounding and no flips arise.
    """
    one, many = streams(ids, 1), streams(ids, batch)
    free = verify_backends(reference, candidate, ids, sequence=candidate.has_sequence_graph, batch=batch)
    step_graph = candidate.metadata["graph"]
    forced = [teacher_forced(reference, candidate, one, step_graph),
              teacher_forced(reference, candidate, many, step_graph)]
    if sequence_alone is not None:
        forced.append(teacher_forced(reference, sequence_alone, one, "sequence"))
    loop = None
    if candidate.has_sequence_graph:
        loop = compare("sequence vs step", run_stepwise(candidate, one), run_sequence(candidate, one), one)
    return Int8Verification(free, forced, loop)


def teacher_forced_lines(results: list[TeacherForced]) -> list[str]:
    """The teacher-forced table `compact-lm verify` prints."""
    lines = ["teacher-forced (every position from the NumPy state; positions with an int8 rounding flip set apart):",
             f"{'graph':<9} {'batch':>5} {'positions':>9} {'flips (allowed)':>15} {'max |dlogp|':>11} "
             f"{'max |dstate|':>12} {'at flips':>9} {'top-1 agree':>11}"]
    for r in results:
        flips = f"{r.flip_positions} ({r.allowed_flip_positions})"
        lines.append(f"{r.graph:<9} {r.batch:>5} {r.positions:>9,} {flips:>15} {r.max_abs_diff:>11.2e} "
                     f"{r.max_state_diff:>12.2e} {r.max_abs_diff_at_flips:>9.1e} {r.top1_agreement:>11.2%}")
    return lines
