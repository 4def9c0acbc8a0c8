"""Search against hand work, and ASHA against the full search, for one byte budget and CPU time.

    python benchmarks/search_budget.py --baseline SWEEP/keep0.5-int8.onnx --baseline-cpu-minutes 15.0

Runs `compact-lm search` on tinyshakespeare with `--max-bytes` (default 120,000) twice on a local Ray with
`--cpus` workers: with ASHA (the default scheduler) and with `--scheduler none` (every trial trains its whole
budget), the same config and seed, so the same trials. Then types the whole validation split (the one the
search writes, 90/5/5 as `train` splits) with the baseline model, the ASHA search's best model and the full
search's, as `eval-complete` does (top-3 distinct words, beam 4, one thread), and prints keystroke savings,
the searches' CPU time (the trials' own, summed) and their ratios. The baseline is the model made by hand:
the 10-minute GRU-256 (`benchmarks/quality.py`) and `compact-lm sweep` of it, whose measured CPU minutes
`--baseline-cpu-minutes` gives; pick `--trials` and `--minutes-per-trial` so the ASHA search spends no more.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import blas_description, corpus, run_search, runs_folder

# a space sized to the budget: 1-layer int8 files whose hidden sizes fit 120 KB unpruned (LSTM H144 does not: the
# search passes it over), so no CPU goes to fine-tuning pruned copies; batch 32, since in short budgets more
# updates win (GRU E64 H144, 4 minutes: val 2.1071 bpc with batch 32, 2.1134 with 64, the search's default)
SPACE = {"cells": ["gru", "lstm"], "layers": [1], "embed": [64], "hidden": [112, 128, 144],
         "dropout": [0.0, 0.1], "keeps": [1.0], "precisions": ["int8"], "fixed": {"batch": 32}}


def budget_run(args, space_file: Path, out: Path, scheduler: str) -> dict:
    """One search in a fresh process: its wall time and search.json (a finished run in `out` is read instead)."""
    if (out / "search.json").exists() and (out / "wall.json").exists():
        return {**json.loads((out / "wall.json").read_text()),
                "summary": json.loads((out / "search.json").read_text(encoding="utf-8"))}
    run = run_search(["--corpus", str(corpus("tinyshakespeare.txt")), "--space", str(space_file),
                      "--max-bytes", str(args.max_bytes), "--trials", str(args.trials),
                      "--minutes-per-trial", str(args.minutes_per_trial), "--typing-chars", str(args.typing_chars),
                      "--scheduler", scheduler, "--cpus", str(args.cpus), "--seed", str(args.seed)], out)
    (out / "wall.json").write_text(json.dumps({k: run[k] for k in ("wall_s", "machine_cpu_s")}))
    return run


def savings(path: Path, text: str) -> float:
    """Keystroke savings typing `text`, as eval-complete measures them (one thread)."""
    from threadpoolctl import threadpool_limits
    from compact_lm.autocomplete import Autocompleter
    from compact_lm.complete_eval import simulate_typing
    from compact_lm.opener import open_model
    from compact_lm.tools.search_candidates import BEAM, K, MAX_CHARS
    with threadpool_limits(limits=1):
        model = open_model(path, threads=1)
        return simulate_typing(Autocompleter(model, beam=BEAM, max_chars=MAX_CHARS), text, K).keystroke_savings


def describe(summary: dict) -> str:
    best = summary["best"]
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    return (f"{len(summary['trials'])} trials ({counts}); best: trial {best['trial']} {best['label']} keep "
            f"{best['keep']:g} {best['precision']}, hidden {best['hidden_sizes']}, {best['bytes']:,} bytes, "
            f"val {best['val_bpc']:.4f} bpc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the hand-made model's .onnx (sweep's keep 0.5 int8)")
    parser.add_argument("--baseline-cpu-minutes", type=float, required=True,
                        help="CPU minutes the baseline took: training + sweep")
    parser.add_argument("--max-bytes", type=int, default=120_000)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--minutes-per-trial", type=float, default=5.5)
    parser.add_argument("--typing-chars", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedulers", nargs="+", default=["asha", "none"])
    parser.add_argument("--out", help="folder for the runs (default: a temporary one; a run finished there is "
                                      "read, not run again)")
    args = parser.parse_args()
    root, space_file = runs_folder(args.out, "search-budget-", SPACE)
    print(blas_description(), "(each trial limits itself to 1 BLAS thread)")
    print(f"space {json.dumps(SPACE)}; {args.trials} trials of {args.minutes_per_trial:g} minutes, --max-bytes "
          f"{args.max_bytes:,}, --typing-chars {args.typing_chars:,}, --cpus {args.cpus}, seed {args.seed}; runs in {root}")
    runs = {s: budget_run(args, space_file, root / s, s) for s in args.schedulers}
    validation = (root / args.schedulers[0] / "validation.txt").read_text(encoding="utf-8")
    baseline_bytes = Path(args.baseline).stat().st_size
    base = savings(Path(args.baseline), validation)
    print(f"baseline {args.baseline}: {baseline_bytes:,} bytes, {args.baseline_cpu_minutes:.1f} CPU-minutes; "
          f"savings on the whole validation split ({len(validation):,} characters): {base:.2%}")
    results = {}
    for scheduler, run in runs.items():
        summary = run["summary"]
        typed = savings(root / scheduler / "best.onnx", validation)
        results[scheduler] = (typed, summary["cpu_s"] / 60)
        print(f"search --scheduler {scheduler}: {describe(summary)}; {summary['cpu_s'] / 60:.1f} CPU-minutes in the "
              f"trials ({summary['cpu_s'] / 60 / args.baseline_cpu_minutes:.2f} of the baseline's), the machine busy "
              f"{run['machine_cpu_s'] / 60:.1f} CPU-minutes in all (Ray included: "
              f"{run['machine_cpu_s'] / 60 / args.baseline_cpu_minutes:.2f} of the baseline's), "
              f"{run['wall_s'] / 60:.1f} minutes wall; savings on the whole validation split {typed:.2%} "
              f"({100 * (typed - base):+.2f} points vs the baseline)")
    if "asha" in results and "none" in results:
        (asha, asha_cpu), (full, full_cpu) = results["asha"], results["none"]
        print(f"ASHA vs the full search: {100 * (asha - full):+.2f} points of savings in {asha_cpu / full_cpu:.0%} "
              "of its CPU time")


if __name__ == "__main__":
    main()
