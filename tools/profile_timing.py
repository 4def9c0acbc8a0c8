"""Warm latency of several runtimes measured side by side: runners that take turns in blocks.

A runner is a callable `run(count) -> list[seconds]` doing `count` timed calls and carrying its own
state from block to block. `measure_in_turns` warms every runner up with one block, then lets them
take turns, one block each, so that noise from other work on the machine (a benchmark starting, a
CPU frequency change) hits every runner alike instead of whichever happened to run at that moment.
"""
from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

Runner = Callable[[int], list]


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of one runner's per-call wall times, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    calls: int

    def to_json(self) -> dict:
        """Plain JSON fields."""
        return asdict(self)


def latency_stats(seconds) -> LatencyStats:
    """p50 / p90 / p99 / mean in ms of per-call seconds (percentiles by linear interpolation, so ordered)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no calls were timed")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(float(p50), float(p90), float(p99), float(ms.mean()), int(ms.size))


def measure_in_turns(runners: dict[str, Runner], calls: int, turns: int) -> dict[str, LatencyStats]:
    """Time `calls` calls of every runner in `turns` blocks taken in turn, after one warm-up block each."""
    block = max(calls // max(turns, 1), 1)
    for run in runners.values():   # warm-up: first calls fill caches, allocate buffers, load BLAS kernels
        run(block)
    gc.collect()   # start clean, so a collection of the warm-up's garbage lands on no one in particular
    times: dict[str, list] = {name: [] for name in runners}
    for _ in range(max(calls // block, 1)):
        for name, run in runners.items():
            times[name].extend(run(block))
    return {name: latency_stats(t) for name, t in times.items()}


def step_runner(backend, ids: np.ndarray, batch: int) -> Runner:
    """One `backend.step` per call on `batch` streams reading consecutive ids of the text, state carried."""
    length = max(len(ids) // batch, 1)
    # column t holds the t-th id of each of `batch` contiguous streams, laid out once (no per-call work)
    columns = np.ascontiguousarray(np.resize(np.asarray(ids, dtype=np.int64), batch * length).reshape(batch, length).T)
    state = backend.initial_state(batch)
    position = 0
    clock = time.perf_counter

    def run(count: int) -> list:
        nonlocal state, position
        times = []
        for _ in range(count):
            tokens = columns[position % length]
            position += 1
            began = clock()
            _, state = backend.step(tokens, state)
            times.append(clock() - began)
        return times
    return run


def completion_runner(completer, prefixes: list[str], k: int) -> Runner:
    """One `completer.complete(prefix, k)` per call (the prefix run from scratch, then the word search)."""
    position = 0
    clock = time.perf_counter

    def run(count: int) -> list:
        nonlocal position
        times = []
        for _ in range(count):
            prefix = prefixes[position % len(prefixes)]
            position += 1
            began = clock()
            completer.complete(prefix, k)
            times.append(clock() - began)
        return times
    return run


def keystroke_runner(completer, text: str, k: int, ask: str = "suggestions") -> Runner:
    """One keystroke per call: type the text's next character into a session, then ask for k completions
    (`ask="next_chars"`: the k most likely next characters instead)."""
    if ask not in ("suggestions", "next_chars"):
        raise ValueError(f"ask must be 'suggestions' or 'next_chars', not {ask!r}")
    session = completer.session()
    position = 0
    clock = time.perf_counter

    def run(count: int) -> list:
        nonlocal session, position
        times = []
        for _ in range(count):
            if position == len(text):   # start over as a new document (the session's stack stays bounded)
                session, position = completer.session(), 0
            char = text[position]
            position += 1
            began = clock()
            session.type(char)
            getattr(session, ask)(k)
            times.append(clock() - began)
        return times
    return run


def completion_prefixes(text: str, is_boundary, count: int, context: int) -> list[tuple[str, str]]:
    """`count` (prefix, kind) pairs spread evenly over `text`: half end inside a word, half at a boundary.

    A prefix is the `context` characters before the cursor, as an app passes the text before it.
    "inside": the cursor is between two word characters; "boundary": right after a boundary character
    (the completion is then the whole next word).
    """
    inside, boundary = [], []
    for position in range(1, len(text)):
        before, after = text[position - 1], text[position]
        if is_boundary(before):
            if not is_boundary(after):   # a word starts here: there is a next word to complete
                boundary.append(position)
        elif not is_boundary(after):
            inside.append(position)
    pairs = []
    for kind, positions, wanted in (("inside", inside, (count + 1) // 2), ("boundary", boundary, count // 2)):
        if not positions or not wanted:
            continue
        picks = np.unique(np.linspace(0, len(positions) - 1, wanted).round().astype(int))
        pairs.extend((text[max(0, positions[i] - context):positions[i]], kind) for i in picks)
    return pairs
