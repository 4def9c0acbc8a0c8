"""Quality bar: train with the CLI as a user would, then score the last 10 % of the file.

    python benchmarks/quality.py                      # the bar: GRU E=64 H=256, 10 minutes, 1 thread
    python benchmarks/quality.py --minutes 30 -- --layers 2 --hidden 512

Everything after `--` goes to `compact-lm train` unchanged. The default split trains on the first
90 % of tinyshakespeare, so the last 10 % (validation + test) was never trained on. Prints the bpc
of that tail, the validation and test bpc, steps and characters per second.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import blas_description, corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="tinyshakespeare.txt", help="a file in ../shared/data")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="run folder (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more `compact-lm train` options, after --")
    args = parser.parse_args()
    path = corpus(args.corpus)
    out = Path(args.out or tempfile.mkdtemp(prefix="quality-"))
    command = [sys.executable, "-m", "compact_lm", "train", "--corpus", str(path), "--cell", "gru", "--embed", "64",
               "--hidden", "256", "--minutes", str(args.minutes), "--threads", str(args.threads), "--out", str(out),
               "--quiet", *args.extra]
    print(blas_description())
    print("command: compact-lm", " ".join(command[3:]))
    started = time.time()
    subprocess.run(command, check=True)
    wall = time.time() - started
    text = path.read_text(encoding="utf-8")
    tail = out / "last10.txt"
    tail.write_text(text[int(round(len(text) * 0.9)):], encoding="utf-8")
    scored = subprocess.run([sys.executable, "-m", "compact_lm", "eval", str(out / "model.npz"), "--text", str(tail),
                             "--json"], check=True, capture_output=True, text=True)
    result = json.loads(scored.stdout)
    info = json.loads(subprocess.run([sys.executable, "-m", "compact_lm", "info", str(out / "model.npz"), "--json"],
                                     check=True, capture_output=True, text=True).stdout)
    metrics = info["metrics"]
    print(f"wall time {wall / 60:.1f} min, {info['steps']} steps, {metrics['chars_per_second']:,.0f} chars/s, "
          f"{info['params']:,} parameters")
    print(f"val bpc {metrics['val']['bpc']:.4f}  test bpc {metrics['test']['bpc']:.4f}")
    print(f"last 10 % of {path.name} ({result['chars']:,} chars): {result['bpc']:.4f} bpc")


if __name__ == "__main__":
    main()
