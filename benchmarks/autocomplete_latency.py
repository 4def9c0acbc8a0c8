"""Per-keystroke latency of autocomplete: onnxruntime fp32 vs the NumPy backend, side by side in one run.

    cd benchmarks && python autocomplete_latency.py [--model PATH.npz] [--chars 3000] [--context-check]

Without --model, trains a GRU E=64 H=256 on tinyshakespeare for --steps optimizer steps (default 200)
with compact_lm.trainer.Trainer, then exports it to an ONNX step graph (plus a sequence graph for
pastes). A session types the validation text one character at a time; each keystroke is timed for
    bar A: one step + top-3 word completions (beam 4, up to 16 characters)   p50 <= 0.5 ms, p99 <= 2 ms
    bar B: one step + top-3 next characters                                  p50 <= 0.1 ms
Runners take turns in blocks of characters so that noise from other work on the machine hits all of
them alike; one thread everywhere (BLAS and onnxruntime). A calibration runner (a fixed 0.1 ms busy
wait) shows how much of the tail is the machine rather than the code. With torch installed, a reference: a
plain-Python beam search (one session.run per beam, Python loops over the vocabulary) on PyTorch's
own ONNX export of the same GRU step. --context-check prints how much the next-character
distribution changes when the context is cut to N characters (what autocomplete.CONTEXT_CHARS rests on).
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from common import blas_description, corpus

from compact_lm.autocomplete import Autocompleter
from compact_lm.backends import NumpyBackend
from compact_lm.config import TrainConfig
from compact_lm.errors import CompactLMError
from compact_lm.export import export_model
from compact_lm import load
from compact_lm.model import Model
from compact_lm.ort_backend import OrtBackend, session_options
from compact_lm.tools.profile_timing import keystroke_runner
from compact_lm.trainer import Trainer, prepare_corpus

BARS = {"A: step + 3 completions": (0.5, 2.0), "B: step + 3 next chars": (0.1, None)}   # p50, p99 in ms
BLOCK = 100   # characters each runner types before the next takes its turn


def train_model(folder: Path, steps: int) -> Model:
    """A GRU E=64 H=256 trained on tinyshakespeare for `steps` steps (one BLAS thread)."""
    config = TrainConfig(corpus=(str(corpus("tinyshakespeare.txt")),), cell="gru", embed=64, hidden=256,
                         steps=steps, eval_every=steps, batch=64)   # (64: as the figures in docs were measured)
    print(f"training {steps} steps of a GRU E=64 H=256 on tinyshakespeare ...", file=sys.stderr)
    return Trainer(config, folder / "run", progress=False).run().model


def naive_runner(path: Path, completer: Autocompleter, text: str):
    """Reference: plain-Python beam search over a bare onnxruntime session (PyTorch's export), one call per beam."""
    session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
    vocab = completer.vocab
    chars = ["", *vocab.chars]
    ids = {c: i for i, c in enumerate(chars) if i}
    boundary = [i > 0 and completer.is_boundary(c) for i, c in enumerate(chars)]
    hidden = session.get_inputs()[1].shape[-1]

    def step(token: int, h):
        log_probs, h = session.run(["log_probs", "state_out"], {"tokens": np.array([token]), "state": h})
        return h, log_probs[0]

    def complete(h, log_probs, k=3, beam=4, max_chars=16):
        beams, finished = [("", 0.0, h, log_probs)], []
        for depth in range(1, max_chars + 1):
            candidates = []
            for text_so_far, score, state, lp in beams:
                for token in range(1, len(chars)):
                    total = score + float(lp[token])
                    if boundary[token]:
                        if depth > 1:   # never the word as typed, as Autocompleter
                            finished.append((total, text_so_far + chars[token]))
                    else:
                        candidates.append((total, text_so_far + chars[token], state, token))
            finished = sorted(finished, reverse=True)[:k]
            if depth == max_chars:
                break
            candidates = sorted(candidates, key=lambda c: -c[0])[:beam]
            candidates = [c for c in candidates if len(finished) < k or c[0] > finished[-1][0]]
            if not candidates:
                break
            beams = [(t, s, *step(token, state)) for s, t, state, token in candidates]   # (text, score, h, log p)
        return finished

    state = [np.zeros((1, hidden), np.float32), None, 0]   # h, log_probs, position
    state[0], state[1] = step(ids.get("\n", 0), state[0])
    clock = time.perf_counter

    def run(count: int) -> list[float]:
        times = []
        for _ in range(count):
            char = text[state[2] % len(text)]
            state[2] += 1
            began = clock()
            state[0], state[1] = step(ids.get(char, 0), state[0])
            complete(state[0], state[1])
            times.append(clock() - began)
        return times
    return run


def busy_runner(seconds: float = 1e-4):
    """Calibration: a fixed busy wait per 'keystroke'; its tail is the machine's noise (other processes, interrupts)."""
    clock = time.perf_counter

    def run(count: int) -> list[float]:
        times = []
        for _ in range(count):
            began = clock()
            while clock() - began < seconds:
                pass
            times.append(clock() - began)
        return times
    return run


def measure(runners: dict, chars: int) -> dict[str, np.ndarray]:
    """Per-keystroke milliseconds of each runner, taking turns in blocks (after a warm-up block each)."""
    for run in runners.values():
        run(BLOCK)
    times = {name: [] for name in runners}
    for _ in range(max(chars // BLOCK, 1)):
        for name, run in runners.items():
            times[name].extend(run(BLOCK))
    return {name: np.array(t) * 1e3 for name, t in times.items()}


def context_check(model: Model, text: str, positions: int = 200) -> None:
    """Mean and max |log p(next) - log p(next | last N characters only)| for several N, at `positions` points."""
    backend = NumpyBackend(model)
    ids = model.vocab.encode(text).astype(np.int64)
    start = len(ids) - positions
    full, _ = backend.run(ids[None, :], backend.initial_state(1))
    print("\ncontext cut to N characters (autocomplete.CONTEXT_CHARS): change of next-character log-probs")
    print(f"{'N':>6} {'mean |d log p|':>15} {'max |d log p|':>14} {'mean KL nats':>13}")
    for cut in (32, 64, 128, 256, 512, 1024):
        diffs, kls = [], []
        for end in range(start, len(ids), max(positions // 40, 1)):
            window = ids[max(end + 1 - cut, 0):end + 1]
            cut_log_p, _ = backend.run(window[None, :], backend.initial_state(1))
            a, b = full[0, end].astype(np.float64), cut_log_p[0, -1].astype(np.float64)
            diffs.append(np.abs(a - b))
            kls.append(float(np.sum(np.exp(a) * (a - b))))
        print(f"{cut:>6} {np.mean(diffs):>15.2e} {np.max(diffs):>14.2e} {np.mean(kls):>13.2e}")


def validation_text(model: Model) -> str:
    """The model's validation split if its training text is here, else tinyshakespeare's 90-95% slice."""
    try:
        return model.vocab.decode(prepare_corpus(TrainConfig.from_json(model.info["train_config"]), model.vocab).val)
    except (KeyError, CompactLMError):
        text = corpus("tinyshakespeare.txt").read_text(encoding="utf-8")
        return text[int(len(text) * 0.9):int(len(text) * 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a float .npz model (default: train one)")
    parser.add_argument("--steps", type=int, default=200, help="training steps when no --model (default 200)")
    parser.add_argument("--chars", type=int, default=3000, help="validation characters typed per runner (default 3000)")
    parser.add_argument("--context-check", action="store_true", help="also measure the effect of cutting the context")
    args = parser.parse_args()
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory(prefix="autocomplete_latency_") as folder:
        run(args, Path(folder))


def run(args, folder: Path) -> None:
    model = load(args.model) if args.model else train_model(folder, args.steps)
    validation = validation_text(model)
    text = validation[:args.chars + BLOCK]
    step_path, sequence_path = folder / "step.onnx", folder / "sequence.onnx"
    export_model(model, step_path)
    export_model(model, sequence_path, sequence=True)
    print(f"GRU E={model.config.embed_size} H={list(model.config.hidden_sizes)} V={model.config.vocab_size}, "
          f"{model.info.get('steps', '?')} training steps, val bpc "
          f"{model.info.get('metrics', {}).get('val', {}).get('bpc', float('nan')):.3f}; python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, onnxruntime {ort.__version__}")
    print(blas_description())
    completers = {"onnxruntime fp32": Autocompleter(OrtBackend(step_path, sequence_path=sequence_path)),
                  "numpy fp32": Autocompleter(NumpyBackend(model))}
    runners = {f"{bar} | {name}": keystroke_runner(completer, text, 3, "suggestions" if bar.startswith("A") else "next_chars")
               for bar in BARS for name, completer in completers.items()}
    torch_path = folder / "torch.onnx"
    from export_latency import torch_export
    if torch_export(model, torch_path):
        runners["A: step + 3 completions | reference: plain Python, torch export"] = \
            naive_runner(torch_path, completers["onnxruntime fp32"], text)
    runners["calibration: fixed 0.1 ms busy wait (the machine's noise)"] = busy_runner()
    gc.collect()
    times = measure(runners, args.chars)
    print(f"\nper keystroke, typing {len(text) - BLOCK:,} validation characters one at a time (ms):")
    print(f"{'bar | backend':<66} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}  bar")
    for name, ms in times.items():
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        bar_p50, bar_p99 = BARS.get(name.split(" | ")[0], (None, None))
        verdict = "" if bar_p50 is None or "reference" in name else (
            "ok" if p50 <= bar_p50 and (bar_p99 is None or p99 <= bar_p99) else "MISSED") + \
            f" (p50 <= {bar_p50}" + (f", p99 <= {bar_p99})" if bar_p99 else ")")
        print(f"{name:<66} {p50:>7.3f} {p90:>7.3f} {p99:>7.3f} {ms.max():>7.2f}  {verdict}")
    if args.context_check:
        context_check(model, validation[:4096])


if __name__ == "__main__":
    main()
