"""Do compact-lm's .onnx files run the same on an older onnxruntime? Compares every output; exit 1 if not.

    python onnxruntime_compat.py                      # onnxruntime 1.15.1 (the oldest wheel for Python 3.11)
    python onnxruntime_compat.py --version 1.17.3 --model model.npz

Exports every graph kind (fp32 step and sequence, with plain and with native recurrent operators;
int8 step and sequence) for rnn/gru/lstm at 1 and 2 layers (random weights; with --model, that float
model's graphs too), runs each here at batch 1 and 3 with fixed random inputs and the runtime's own
session options (compact_lm.ort_backend.session_options: one thread, all optimizations), then replays
the same inputs on the older onnxruntime in its own virtual environment (created under --venv from the
package index on first use) and compares every output: shape, dtype, finiteness, and the largest
difference against --tolerance. Graphs with plain operators are expected bit for bit; onnxruntime's
native RNN/GRU/LSTM kernels may round differently. This environment's onnxruntime is itself checked
against the NumPy reference by the tests.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import REPO

sys.path.insert(0, str(REPO))

REPLAY = r"""
import glob, sys, numpy as np, onnxruntime as ort
folder, version, tolerance, expected = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
assert ort.__version__ == version, f"expected onnxruntime {version}, found {ort.__version__}"
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
failures, worst, count = [], 0.0, 0
for path in sorted(glob.glob(folder + "/*.npz")):
    name = path.split("/")[-1][:-4]
    data = np.load(path, allow_pickle=False)
    try:
        session = ort.InferenceSession(path.rsplit("-b", 1)[0] + ".onnx", options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, {k[3:]: data[k] for k in data.files if k.startswith("in.")})
    except Exception as error:
        failures.append(f"{name}: {str(error).splitlines()[0]}")
        continue
    count += 1
    reference = [data[f"out.{j}"] for j in range(len([k for k in data.files if k.startswith("out.")]))]
    if len(outputs) != len(reference):
        failures.append(f"{name}: {len(outputs)} outputs, expected {len(reference)}")
        continue
    diffs, exact = [], True
    for j, (got, want) in enumerate(zip(outputs, reference)):
        if got.shape != want.shape or got.dtype != want.dtype:
            failures.append(f"{name} output {j}: {got.dtype}{got.shape}, expected {want.dtype}{want.shape}")
        elif not np.all(np.isfinite(got)):
            failures.append(f"{name} output {j}: not finite")
        else:
            diffs.append(float(np.max(np.abs(got.astype(np.float64) - want))))
            exact &= got.tobytes() == want.tobytes()
    if diffs:
        worst = max(worst, max(diffs))
        print("  %-34s %s" % (name, "bit for bit" if exact else "max |difference| %.3g" % max(diffs)))
        if max(diffs) > tolerance:
            failures.append(f"{name}: max |difference| {max(diffs):.3g} > {tolerance:g}")
if count != expected:
    failures.append(f"{count} graphs ran, {expected} were recorded")
print(f"onnxruntime {ort.__version__}: {count} graph runs, largest difference {worst:.3g}, "
      f"{len(failures)} failure(s)")
for failure in failures:
    print("  FAILED", failure)
sys.exit(1 if failures else 0)
"""

KINDS = (("fp32-step", False, {}), ("fp32-sequence", False, {"sequence": True}),
         ("fp32-native-step", False, {"native_rnn": True}),
         ("fp32-native-sequence", False, {"native_rnn": True, "sequence": True}),
         ("int8-step", True, {}), ("int8-sequence", True, {"sequence": True}))


def _models(model_path: str | None):
    from compact_lm.config import ModelConfig
    from compact_lm import load
    from compact_lm.model import Model
    from compact_lm.network import init_params
    from compact_lm.vocab import Vocab
    vocab = Vocab.build("the quick brown fox jumps over the lazy dog")
    for cell in ("rnn", "gru", "lstm"):
        for layers in (1, 2):
            config = ModelConfig(cell=cell, vocab_size=vocab.size, embed_size=8, hidden_sizes=(16, 12)[:layers])
            yield f"{cell}{layers}", Model(config, vocab, init_params(config, np.random.default_rng(0), scale=2.0), {})
    if model_path:
        model = load(model_path)
        if not isinstance(model, Model):
            raise SystemExit(f"--model {model_path}: give the float model (its int8 graphs are made from it)")
        yield "model", model


def record(folder: Path, model_path: str | None) -> int:
    """Export every graph kind, run it here at batch 1 and 3, save inputs and outputs; returns the runs."""
    import onnx
    import onnxruntime as ort
    from compact_lm.export import build_model
    from compact_lm.ort_backend import session_options
    from compact_lm.tools.quantize import quantize_model
    rng = np.random.default_rng(0)
    runs = 0
    for name, model in _models(model_path):
        int8 = quantize_model(model)
        for kind, quantized, options in KINDS:
            proto = build_model(int8 if quantized else model, **options)
            path = folder / f"{name}-{kind}.onnx"
            onnx.save(proto, path)
            session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
            for batch in (1, 3):
                feeds = {}
                for item in session.get_inputs():
                    shape = [batch if j == 0 else 7 if (item.name == "tokens" and j == 1) else d
                             for j, d in enumerate(item.shape)]
                    if item.type == "tensor(int64)":
                        feeds[item.name] = rng.integers(0, model.config.vocab_size, size=shape)
                    else:
                        feeds[item.name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
                outputs = session.run(None, feeds)
                np.savez(folder / f"{name}-{kind}-b{batch}.npz", **{f"in.{k}": v for k, v in feeds.items()},
                         **{f"out.{j}": o for j, o in enumerate(outputs)})
                runs += 1
    print(f"recorded {runs} graph runs with onnxruntime {ort.__version__}, opset {proto.opset_import[0].version}, "
          f"IR version {proto.ir_version}")
    return runs


def _older_runtime(venv: Path, version: str) -> Path:
    """The python of a virtual environment with onnxruntime==version (made on first use)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import onnxruntime, sys; sys.exit(onnxruntime.__version__ != {version!r})"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # onnxruntime before 1.19 was built against numpy 1.x and breaks on numpy 2
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"onnxruntime=={version}", "numpy<2"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1.15.1", help="the older onnxruntime to compare with")
    parser.add_argument("--model", help="also a trained float model file")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest |difference| accepted")
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "compact-lm-ort-compat"),
                        help="where the older onnxruntime's virtual environments live")
    args = parser.parse_args()
    python = _older_runtime(Path(args.venv) / args.version, args.version)
    with tempfile.TemporaryDirectory() as folder:
        runs = record(Path(folder), args.model)
        result = subprocess.run([str(python), "-c", REPLAY, folder, args.version, str(args.tolerance), str(runs)])
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
