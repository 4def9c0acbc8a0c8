"""Serving throughput: threads sharing one Autocompleter against threads with one instance each, in one run.

    cd benchmarks && python serving.py [--model PATH.npz] [--threads 8] [--seconds 1] [--rounds 15]

Without --model, trains a GRU E=64 H=256 on the bundled corpus for --steps optimizer steps (default 150,
one BLAS thread) with compact_lm.train. The model is exported to an ONNX step graph and a sequence graph.
Each worker thread completes real prefixes from the last 10 % of the bundled corpus (the 64 characters
before a random position, `Autocompleter.complete(prefix, k=3)`, beam 4, from the start every time: the
prefix is 64 step calls with the step graph alone, one call with the sequence graph) for --seconds, and
completions finished before the deadline are counted. Per graph setup, the runners:
    shared      --threads threads, one Autocompleter between them
    instances   --threads threads, one Autocompleter (own onnxruntime sessions) each
    1 thread    one thread, one Autocompleter
    shared+lock as `shared`, with every model call behind one lock (what the Autocompleter did before)
take turns, round after round (each round starting with the next runner), so that other work on the
machine hits all of them alike; the figure is the mean over rounds (all completions / all seconds): with
more threads than cores, per-round rates of step-by-step work swing between two levels as the threads
convoy on the GIL, and a median would just pick one of them. Bar: shared >= 0.9 x instances. onnxruntime runs one intra-op thread per session.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from common import blas_description

import compact_lm
from compact_lm.autocomplete import Autocompleter
from compact_lm.config import TrainConfig
from compact_lm.data import default_corpus_path
from compact_lm.export import export_model

BAR = 0.9            # shared throughput / instances throughput
PREFIX_CHARS = 64


class LockedBackend:
    """A backend whose calls go through one lock: the Autocompleter's behaviour before it dropped its lock."""

    def __init__(self, inner):
        self.inner, self.vocab, self.vocab_size = inner, inner.vocab, inner.vocab_size
        self.lock = threading.Lock()

    def initial_state(self, batch: int) -> list:
        return self.inner.initial_state(batch)

    def step(self, token_ids, state):
        with self.lock:
            return self.inner.step(token_ids, state)

    def run(self, token_ids, state):
        with self.lock:
            return self.inner.run(token_ids, state)


def prefixes(count: int, seed: int) -> list[str]:
    """`count` prefixes: the PREFIX_CHARS characters before random positions in the last 10 % of the corpus."""
    text = default_corpus_path().read_text(encoding="utf-8")
    start = int(len(text) * 0.9)
    rng = np.random.default_rng(seed)
    return [text[p - PREFIX_CHARS:p] for p in rng.integers(start + PREFIX_CHARS, len(text), size=count).tolist()]


def throughput(completers: list[Autocompleter], work: list[list[str]], seconds: float) -> float:
    """Completions per second of len(completers) threads, thread i completing work[i] in a loop on completers[i]."""
    counts = [0] * len(completers)
    barrier = threading.Barrier(len(completers) + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        completer, todo = completers[i], work[i]
        barrier.wait()
        n = 0
        while True:
            completer.complete(todo[n % len(todo)], 3)
            if time.perf_counter() > deadline[0]:
                break
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(completers))]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def main() -> None:
    """Train or load the model, export it, measure every runner and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a float .npz model (default: train one)")
    parser.add_argument("--steps", type=int, default=150, help="training steps without --model")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="per runner per round")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    print(blas_description())
    print(f"onnxruntime {ort.__version__}; numpy {np.__version__}; Python {platform.python_version()}; "
          f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        folder = Path(tmp)
        if args.model is None:
            print(f"training a GRU E=64 H=256 on the bundled corpus for {args.steps} steps ...", file=sys.stderr)
            config = TrainConfig(cell="gru", embed=64, hidden=256, steps=args.steps, eval_every=args.steps, batch=64)
            model = compact_lm.train(config, folder / "run").model
        else:
            model = compact_lm.load(args.model)
        export_model(model, folder / "model.onnx")
        export_model(model, folder / "model-seq.onnx", sequence=True)
        c = model.config
        print(f"model: {c.cell} E={c.embed_size} H={list(c.hidden_sizes)} V={c.vocab_size}; "
              f"{args.threads} threads, {args.seconds:g} s per runner per round, {args.rounds} rounds; "
              f"complete(prefix of {PREFIX_CHARS} chars, k=3), beam 4")

        work = [prefixes(200, seed=i) for i in range(args.threads)]
        failed = False
        for setup, sequence in (("step graph", None), ("step + sequence graph", folder / "model-seq.onnx")):
            def open_one() -> Autocompleter:
                return Autocompleter(folder / "model.onnx", sequence=sequence)
            shared = open_one()
            runners = {
                "shared": ([shared] * args.threads, work),
                "instances": ([open_one() for _ in range(args.threads)], work),
                "1 thread": ([shared], work[:1]),
                "shared+lock": ([Autocompleter(LockedBackend(shared.backend))] * args.threads, work),
            }
            for completers, todo in runners.values():   # warm-up: first runs plan onnxruntime's memory
                throughput(completers, todo, 0.3)
            figures: dict[str, list[float]] = {name: [] for name in runners}
            names = list(runners)
            for round_ in range(args.rounds):
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    completers, todo = runners[name]
                    figures[name].append(throughput(completers, todo, args.seconds))
            mean = {name: statistics.fmean(values) for name, values in figures.items()}
            ratio = mean["shared"] / mean["instances"]
            failed |= ratio < BAR
            print(f"\n{setup}: completions/s, mean of {args.rounds} rounds (slowest - fastest round)")
            for name, values in figures.items():
                print(f"  {name:12s} {mean[name]:8.1f}   ({min(values):.0f} - {max(values):.0f})")
            print(f"  shared / instances = {ratio:.3f} (bar >= {BAR}: {'met' if ratio >= BAR else 'MISSED'}); "
                  f"shared / 1 thread = {mean['shared'] / mean['1 thread']:.2f}; "
                  f"shared / shared+lock = {mean['shared'] / mean['shared+lock']:.2f}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
