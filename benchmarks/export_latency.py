"""Per-character latency of the exported step graph against the alternatives, one thread each.

    cd benchmarks && python export_latency.py [--calls 5000] [--block 500]

A GRU with E=64, H=256 and the tinyshakespeare vocabulary (65 characters + <unk>), with init_params
weights (latency does not depend on training), and its int8 quantization (tools/quantize.py, 7-bit
weights). At batch 1, side by side in one run:
  - onnxruntime, our plain-operator step graph (through OrtBackend.step, and as a bare session.run);
  - onnxruntime, our native-GRU step graph (the same two ways);
  - onnxruntime, our int8 step graph (the same two ways);
  - NumpyBackend.step, fp32 and int8 (BLAS limited to one thread);
  - onnxruntime running PyTorch's own export (torch.onnx.export of Embedding + GRU + Linear doing one
    step with explicit state in and out, same weights), with the same session options as ours.
Then plain vs native vs int8 at batch 1, 4 and 8. Calls are timed one by one after a warm-up; the runners
take turns in blocks so that noise from other work on the machine hits all of them alike.
Figures: median and 90th percentile of the per-call times.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from common import blas_description, corpus

from compact_lm.backends import NumpyBackend
from compact_lm.config import ModelConfig
from compact_lm.export import export_model
from compact_lm.verify import TOLERANCE, compare, run_stepwise
from compact_lm.model import Model
from compact_lm.network import init_params
from compact_lm.ort_backend import OrtBackend, session_options
from compact_lm.tools.quantize import quantize_model
from compact_lm.vocab import Vocab

EMBED, HIDDEN = 64, 256
WARMUP = 300


def make_model() -> Model:
    """GRU E=64 H=256 over the tinyshakespeare vocabulary (66 ids), PyTorch-style random weights."""
    vocab = Vocab.build(corpus("tinyshakespeare.txt").read_text(encoding="utf-8"))
    config = ModelConfig(cell="gru", vocab_size=vocab.size, embed_size=EMBED, hidden_sizes=(HIDDEN,))
    return Model(config, vocab, init_params(config, np.random.default_rng(0)))


def backend_runner(backend, batch: int):
    """A zero-argument callable doing one step (the state carried from call to call)."""
    tokens = np.arange(batch, dtype=np.int64) % backend.vocab_size
    state = backend.initial_state(batch)

    def call():
        nonlocal state
        _, state = backend.step(tokens, state)
    return call


def session_runner(session: ort.InferenceSession, state_in: str, state_out: str, batch: int, hidden: int):
    """One bare session.run per call: a prebuilt feed dict, only the state replaced."""
    feed = {"tokens": np.arange(batch, dtype=np.int64) % 60, state_in: np.zeros((batch, hidden), np.float32)}
    outputs = ["log_probs", state_out]

    def call():
        feed[state_in] = session.run(outputs, feed)[1]
    return call


def torch_export(model: Model, path: Path) -> bool:
    """Export PyTorch's equivalent one-step module with the model's weights; False without torch."""
    try:
        import torch
    except ImportError:
        return False
    config = model.config

    class TorchStep(torch.nn.Module):
        """Embedding -> GRU (one step, explicit state) -> Linear -> log_softmax, as docs/format.md describes."""

        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(config.vocab_size, config.embed_size)
            self.rnn = torch.nn.GRU(config.embed_size, config.hidden_sizes[0], 1, batch_first=True)
            self.head = torch.nn.Linear(config.hidden_sizes[0], config.vocab_size)

        def forward(self, tokens, state):
            out, h = self.rnn(self.embedding(tokens)[:, None, :], state[None])
            return torch.log_softmax(self.head(out[:, 0]), dim=-1), h[0]

    module = TorchStep().eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.params.items()}, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter announces its own deprecation
        torch.onnx.export(module, (torch.zeros(1, dtype=torch.long), torch.zeros(1, config.hidden_sizes[0])), str(path),
                          input_names=["tokens", "state"], output_names=["log_probs", "state_out"],
                          dynamic_axes={"tokens": {0: "batch"}, "state": {0: "batch"}, "log_probs": {0: "batch"},
                                        "state_out": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return True


def measure(runners: dict, calls: int, block: int) -> dict[str, list[float]]:
    """Per-call seconds of each runner: warm-up, then `calls` calls in blocks taken in turn."""
    for call in runners.values():
        for _ in range(WARMUP):
            call()
    times = {name: [] for name in runners}
    clock = time.perf_counter
    for _ in range(calls // block):
        for name, call in runners.items():
            out = times[name]
            for _ in range(block):
                start = clock()
                call()
                out.append(clock() - start)
    return times


def summary(samples: list[float]) -> tuple[float, float]:
    """(median, p90) in microseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e6, ordered[int(0.9 * (len(ordered) - 1))] * 1e6


def print_table(title: str, times: dict, base: str) -> None:
    base_median = summary(times[base])[0]
    print(f"\n{title}")
    print(f"{'runner':<44} {'median us':>10} {'p90 us':>9} {'x ' + base:>22}")
    for name, samples in times.items():
        median, p90 = summary(samples)
        print(f"{name:<44} {median:>10.1f} {p90:>9.1f} {median / base_median:>22.2f}")


def check_agreement(model: Model, paths: dict) -> None:
    """The runners compute the same thing: log-probabilities of 20 steps agree with NumPy to 1e-4."""
    ids = model.vocab.encode("First Citizen:\nBefore")[None, :].astype(np.int64)
    want, _ = NumpyBackend(model).run(ids, NumpyBackend(model).initial_state(1))
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
        state_in = [i.name for i in session.get_inputs() if i.name != "tokens"][0]
        state_out = [o.name for o in session.get_outputs() if o.name != "log_probs"][0]
        h = np.zeros((1, HIDDEN), np.float32)
        worst = 0.0
        for t in range(ids.shape[1]):
            log_probs, h = session.run(["log_probs", state_out], {"tokens": ids[:, t], state_in: h})
            worst = max(worst, float(np.abs(log_probs - want[:, t]).max()))
        print(f"  {name}: max |delta log-prob| vs NumPy over {ids.shape[1]} steps = {worst:.1e}")
        if worst > 1e-4:
            raise SystemExit(f"{name} does not compute the same model (max |delta| {worst:.3g})")


def check_int8_agreement(qmodel, path: Path) -> None:
    """The int8 graph computes the NumPy int8 path: the same log-probabilities up to log-softmax rounding."""
    ids = qmodel.vocab.encode("First Citizen:\nBefore we proceed any further, hear me speak.")[None, :].astype(np.int64)
    result = compare("step", run_stepwise(NumpyBackend(qmodel), ids), run_stepwise(OrtBackend(path), ids), ids)
    print(f"  int8: max |delta log-prob| vs NumPy int8 over {ids.shape[1]} steps = {result.max_abs_diff:.1e}")
    if result.max_abs_diff > TOLERANCE:
        raise SystemExit(f"int8 does not compute the NumPy int8 path ({result.to_json()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per runner (default 5000)")
    parser.add_argument("--block", type=int, default=500, help="calls per turn (default 500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="export_latency_") as folder:
        run(args, Path(folder))


def run(args, folder: Path) -> None:
    model = make_model()
    qmodel = quantize_model(model)
    paths = {"plain": folder / "plain.onnx", "native": folder / "native.onnx"}
    export_model(model, paths["plain"])
    export_model(model, paths["native"], native_rnn=True)
    has_torch = torch_export(model, folder / "torch.onnx")
    if has_torch:
        paths["torch"] = folder / "torch.onnx"
    int8_path = folder / "int8.onnx"
    export_model(qmodel, int8_path)

    print(f"GRU E={EMBED} H={HIDDEN} V={model.config.vocab_size}, one thread; python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs")
    print("files: " + ", ".join(f"{name} {path.stat().st_size:,} B" for name, path in paths.items())
          + f"; parameters {model.num_params:,} ({model.num_params * 4:,} B as float32)")
    int8_bytes, fp32_bytes = int8_path.stat().st_size, paths["plain"].stat().st_size
    print(f"int8 file: {int8_bytes:,} B = {int8_bytes / fp32_bytes:.3f} x the fp32 plain file ({fp32_bytes:,} B)")
    check_agreement(model, paths)
    check_int8_agreement(qmodel, int8_path)

    with threadpool_limits(limits=1):
        print(blas_description())
        plain, native, int8 = OrtBackend(paths["plain"]), OrtBackend(paths["native"]), OrtBackend(int8_path)
        sessions = {name: ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
                    for name, path in {**paths, "int8": int8_path}.items()}
        runners = {
            "ort plain step (OrtBackend.step)": backend_runner(plain, 1),
            "ort plain step (bare session.run)": session_runner(sessions["plain"], "state_l0", "state_l0_out", 1, HIDDEN),
            "ort native GRU step (OrtBackend.step)": backend_runner(native, 1),
            "ort native GRU step (bare session.run)": session_runner(sessions["native"], "state_l0", "state_l0_out", 1, HIDDEN),
            "ort int8 step (OrtBackend.step)": backend_runner(int8, 1),
            "ort int8 step (bare session.run)": session_runner(sessions["int8"], "state_l0", "state_l0_out", 1, HIDDEN),
            "NumpyBackend.step": backend_runner(NumpyBackend(model), 1),
            "NumpyBackend.step, int8": backend_runner(NumpyBackend(qmodel), 1),
        }
        if has_torch:
            runners["ort on torch.onnx.export (bare session.run)"] = session_runner(sessions["torch"], "state", "state_out", 1, HIDDEN)
        print_table(f"batch 1: {args.calls} calls each", measure(runners, args.calls, args.block),
                    "ort plain step (OrtBackend.step)")
        if not has_torch:
            print("(torch not importable: no PyTorch-exported graph to compare)")

        for batch in (1, 4, 8):
            runners = {f"plain, batch {batch}": backend_runner(plain, batch),
                       f"native GRU, batch {batch}": backend_runner(native, batch),
                       f"int8, batch {batch}": backend_runner(int8, batch)}
            print_table(f"OrtBackend.step at batch {batch}: {args.calls} calls each",
                        measure(runners, args.calls, args.block), f"plain, batch {batch}")


if __name__ == "__main__":
    main()
