"""Peak memory of a training run on the 9M-character Gutenberg corpus.

    python benchmarks/train_memory.py [--minutes 5]

Runs `compact-lm train` (GRU H=256) in a child process and prints its peak resident set size
(getrusage of the child, which covers corpus loading, encoding, training and evaluation).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile

from common import blas_description, corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "compact_lm", "train", "--corpus", str(corpus("gutenberg_en.txt.gz")),
                   "--cell", "gru", "--hidden", "256", "--batch", "64", "--minutes", str(args.minutes), "--threads", "1",
                   "--out", out, "--quiet"]
        print(blas_description())
        print("command: compact-lm", " ".join(command[3:]))
        subprocess.run(command, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak RSS of the training process: {peak_kib / 1024:.0f} MiB ({peak_kib * 1024 / 1e9:.3f} GB)")


if __name__ == "__main__":
    main()
