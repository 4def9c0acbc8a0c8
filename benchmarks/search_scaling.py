"""Search throughput: the same search with 1 and with N local Ray workers, trials per hour side by side.

    python benchmarks/search_scaling.py                    # 8 trials of 500 steps, --cpus 1 then --cpus 2
    python benchmarks/search_scaling.py --trials 4 --steps 200 --cpus 1 2

Each run is `compact-lm search ... --scheduler none --steps-per-trial N` in a fresh process (a fresh local
Ray), so every run trains exactly the same trials to the same models; only how many run at once differs.
The trials are one architecture family (GRU E32 H128, dropouts and embeddings varied) so that they cost about
the same and the figure measures throughput, not how the last long trial happens to fall. Trials per hour
are counted over the command's whole wall time (imports, Ray's start, the report included).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import blas_description, run_search, runs_folder

SPACE = {"cells": ["gru"], "layers": [1], "embed": [32, 48], "hidden": [128], "dropout": [0.0, 0.1, 0.2, 0.3],
         "keeps": [1.0, 0.5], "precisions": ["int8"]}


def scaling_run(space_file: Path, out: Path, trials: int, steps: int, cpus: int) -> dict:
    """One search of the benchmark's trials on `cpus` local workers."""
    return run_search(["--space", str(space_file), "--trials", str(trials), "--steps-per-trial", str(steps),
                       "--scheduler", "none", "--max-bytes", "200000", "--cpus", str(cpus), "--quiet"], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500, help="training steps of each trial")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2], help="local Ray CPUs of each run")
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    root, space_file = runs_folder(args.out, "search-scaling-", SPACE)
    print(blas_description(), "(each trial limits itself to 1 BLAS thread)")
    print(f"{args.trials} trials of {args.steps} steps each, scheduler none, bundled corpus; runs in {root}")
    results = {}
    for cpus in args.cpus:
        result = scaling_run(space_file, root / f"cpus{cpus}", args.trials, args.steps, cpus)
        summary = result["summary"]
        models = [(t["label"], t["val_bpc"]) for t in summary["trials"]]
        results[cpus] = {**result, "models": models}
        print(f"--cpus {cpus}: {result['wall_s']:.1f} s wall ({args.trials * 3600 / result['wall_s']:.1f} trials/hour), "
              f"{summary['cpu_s'] / 60:.1f} CPU-minutes in the trials, the machine busy {result['machine_cpu_s'] / 60:.1f}")
    first = args.cpus[0]
    for cpus in args.cpus[1:]:
        same = results[cpus]["models"] == results[first]["models"]
        print(f"--cpus {cpus} vs --cpus {first}: {results[first]['wall_s'] / results[cpus]['wall_s']:.2f}x trials/hour "
              f"(whole command); the same models (val bpc of every trial): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
