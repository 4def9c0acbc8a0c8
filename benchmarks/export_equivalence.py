"""The export bars: onnxruntime against the NumPy reference on 20,000 characters of tinyshakespeare
validation text, for every cell and layer count, fp32 and int8.

    python benchmarks/export_equivalence.py [--steps 150] [--chars 20000]

Each model (E=64, H=256 per layer) is trained briefly here (how close two runtimes agree does not
depend on how long a model was trained), exported with `compact-lm export`, and checked with
`compact-lm verify --json` (free-running, batch 1 and 4, step and sequence graphs). Prints, for fp32 and for
int8 (onnxruntime int8 vs the NumPy int8 path), max |delta log-prob|, top-1 agreement and max |delta bpc|.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import blas_description, corpus

from compact_lm.config import TrainConfig
from compact_lm.tools.quantize import quantize_model
from compact_lm.trainer import Trainer


def cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "compact_lm", *args], check=True, capture_output=True,
                          text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--chars", type=int, default=20000)
    args = parser.parse_args()
    text_path = corpus("tinyshakespeare.txt")
    text = text_path.read_text(encoding="utf-8")
    print(blas_description())
    print(f"{'cell':<5} {'layers':>6} {'fp32 max|d|':>11} {'fp32 top-1':>10} {'int8 max|d|':>11} {'int8 top-1':>10} "
          f"{'int8 |dbpc|':>11}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        val = folder / "val.txt"
        val.write_text(text[int(round(len(text) * 0.9)):int(round(len(text) * 0.95))], encoding="utf-8")
        for cell in ("rnn", "gru", "lstm"):
            for layers in (1, 2):
                run = folder / f"{cell}{layers}"
                config = TrainConfig(corpus=(str(text_path),), cell=cell, layers=layers, hidden=256, embed=64,
                                     batch=32, seq_len=64, steps=args.steps, eval_every=args.steps)
                model = Trainer(config, run, progress=False).run().model
                quantize_model(model).save(run / "int8.npz")
                cli("export", str(run / "model.npz"), "--out", str(run / "fp32.onnx"), "--sequence", str(run / "fp32s.onnx"))
                cli("export", str(run / "int8.npz"), "--out", str(run / "int8.onnx"), "--sequence", str(run / "int8s.onnx"))
                fp32 = json.loads(cli("verify", str(run / "model.npz"), str(run / "fp32.onnx"), "--sequence",
                                      str(run / "fp32s.onnx"), "--text", str(val), "--chars", str(args.chars), "--json"))
                int8 = json.loads(cli("verify", str(run / "int8.npz"), str(run / "int8.onnx"), "--sequence",
                                      str(run / "int8s.onnx"), "--text", str(val), "--chars", str(args.chars), "--json"))
                print(f"{cell:<5} {layers:>6} {fp32['max_abs_diff']:>11.2e} "
                      f"{min(r['top1_agreement'] for r in fp32['results']):>10.3%} {int8['max_abs_diff']:>11.2e} "
                      f"{min(r['top1_agreement'] for r in int8['results']):>10.3%} "
                      f"{max(abs(r['bpc_difference']) for r in int8['results']):>11.1e}", flush=True)


if __name__ == "__main__":
    main()
