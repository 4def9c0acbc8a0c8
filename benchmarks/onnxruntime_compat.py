"""Do compact-lm's .onnx files run the same on an older onnxruntime? Prints the largest difference.

    python onnxruntime_compat.py                      # onnxruntime 1.15.1 (the oldest wheel for Python 3.11)
    python onnxruntime_compat.py --version 1.17.3 --model model.npz

Exports every graph kind (fp32 step, sequence and native-operator step; int8 step and sequence) for
rnn/gru/lstm at 1 and 2 layers (random weights; with --model, that model's graphs too), runs each
on this environment's onnxruntime with fixed random inputs, then replays the same inputs on the older
onnxruntime in its own virtual environment (created under --venv, installed from the package
index on first use) and compares every output. This environment's onnxruntime is itself checked
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
import sys, glob, numpy as np, onnxruntime as ort
worst = 0.0
for path in sorted(glob.glob(sys.argv[1] + "/*.onnx")):
    data = np.load(path[:-5] + ".npz", allow_pickle=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {k[3:]: data[k] for k in data.files if k.startswith("in.")})
    diff = max(float(np.max(np.abs(o - data["out.%d" % j]))) for j, o in enumerate(outputs))
    worst = max(worst, diff)
    print("  %-28s max |difference| %.3g" % (path.split("/")[-1], diff))
print("onnxruntime %s: largest difference over every graph and output: %.3g" % (ort.__version__, worst))
"""


def _models(model_path: str | None):
    from compact_lm.config import ModelConfig
    from compact_lm.model import Model, load
    from compact_lm.network import init_params
    from compact_lm.vocab import Vocab
    vocab = Vocab.build("the quick brown fox jumps over the lazy dog")
    for cell in ("rnn", "gru", "lstm"):
        for layers in (1, 2):
            config = ModelConfig(cell=cell, vocab_size=vocab.size, embed_size=8, hidden_sizes=(16, 12)[:layers])
            yield f"{cell}{layers}", Model(config, vocab, init_params(config, np.random.default_rng(0), scale=2.0), {})
    if model_path:
        yield "model", load(model_path)


def record(folder: Path, model_path: str | None) -> None:
    """Export every graph kind, run it here with fixed inputs, save inputs and outputs beside it."""
    import onnx
    import onnxruntime as ort
    from compact_lm.export import build_model
    from compact_lm.tools.quantize import quantize_model
    rng = np.random.default_rng(0)
    for name, model in _models(model_path):
        int8 = quantize_model(model)
        for kind, variant, options in (("fp32-step", model, {}), ("fp32-sequence", model, {"sequence": True}),
                                       ("fp32-native", model, {"native_rnn": True}), ("int8-step", int8, {}),
                                       ("int8-sequence", int8, {"sequence": True})):
            proto = build_model(variant, **options)
            path = folder / f"{name}-{kind}.onnx"
            onnx.save(proto, path)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {}
            for item in session.get_inputs():
                shape = [3 if j == 0 else 7 if (item.name == "tokens" and j == 1) else d
                         for j, d in enumerate(item.shape)]
                if item.type == "tensor(int64)":
                    feeds[item.name] = rng.integers(0, model.config.vocab_size, size=shape)
                else:
                    feeds[item.name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
            outputs = session.run(None, feeds)
            np.savez(path.with_suffix(".npz"), **{f"in.{k}": v for k, v in feeds.items()},
                     **{f"out.{j}": o for j, o in enumerate(outputs)})
    print(f"recorded with onnxruntime {ort.__version__}, opset {proto.opset_import[0].version}, "
          f"IR version {proto.ir_version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1.15.1", help="the older onnxruntime to compare with")
    parser.add_argument("--model", help="also a trained model file")
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "compact-lm-ort-compat"),
                        help="where the older onnxruntime's virtual environment lives")
    args = parser.parse_args()
    venv = Path(args.venv) / args.version
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # onnxruntime before 1.19 was built against numpy 1.x
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"onnxruntime=={args.version}", "numpy<2"],
                       check=True)
    with tempfile.TemporaryDirectory() as folder:
        record(Path(folder), args.model)
        subprocess.run([str(python), "-c", REPLAY, folder], check=True)


if __name__ == "__main__":
    main()
