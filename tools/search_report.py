"""What a search leaves in DIR: every trial and candidate (search.md, search.json), the front of best savings
for each size, a plot of savings against bytes with the budget (search.png, with the plot extra), and the
best fitting candidate as best.npz + best.onnx, scored once on the test split for this report."""
from __future__ import annotations

import math
from pathlib import Path

from compact_lm.fileio import atomic_write, png_bytes

from .search_candidates import BEAM, K, MAX_CHARS, Budget, candidate_stem, rank_key

CLOSEST = 3   # candidates a failure lists
STATUSES = ("done", "stopped early", "diverged", "failed", "not run")


def trial_rows(outcomes: list[dict]) -> list[dict]:
    """One row per trial, by trial number: its architecture, status, steps, val bpc and candidates."""
    rows = []
    for outcome in sorted(outcomes, key=lambda o: o["spec"]["index"]):
        spec, metrics, final = outcome["spec"], outcome["metrics"], outcome["final"]
        row = {"trial": spec["index"], "label": spec["label"], "architecture": spec["architecture"],
               "train_config": spec["train_config"],   # every setting, defaults included: they may change later
               "steps": metrics.get("step"), "val_bpc": metrics.get("val_bpc"), "candidates": [], "best": None,
               "cpu_s": metrics.get("cpu_s")}   # the trial's CPU seconds (a stopped trial's: at its last report)
        if final is not None:
            status = "diverged" if final.get("diverged") else "failed" if final.get("error") else "done"
            row.update(status=status, steps=final["steps"],
                       val_bpc=final["val_bpc"], candidates=final["candidates"], best=final["best"],
                       history=[{"step": h["step"], "val_bpc": h.get("val_bpc")} for h in final.get("history", [])],
                       cpu_s=final.get("cpu_s", metrics.get("cpu_s")), oversized=final.get("oversized", []))
            if final.get("diverged") or final.get("error"):
                row["error"] = final.get("diverged") or final["error"]
        elif outcome["error"] is not None:
            row.update(status="failed", error=outcome["error"])
        elif metrics.get("step") is not None:
            row.update(status="stopped early", stopped_at_percent=metrics.get("budget_percent"))
        else:
            row["status"] = "not run"
        rows.append(row)
    return rows


def all_candidates(rows: list[dict]) -> list[dict]:
    """Every measured candidate, with its trial's number and architecture."""
    return [{"trial": r["trial"], "label": r["label"], **c} for r in rows for c in r["candidates"]]


def pareto_front(candidates: list[dict]) -> list[dict]:
    """The candidates no smaller file beats on savings: the best savings for each size, smallest first."""
    front, best = [], -math.inf
    for c in sorted(candidates, key=lambda c: (c["bytes"], -c["savings"], c["val_bpc"])):
        if c["savings"] > best:
            front.append(c)
            best = c["savings"]
    return front


def choose_best(candidates: list[dict], objective: str) -> dict | None:
    """The fitting candidate the objective ranks first (ties: lower trial number)."""
    fitting = [c for c in candidates if c["fits"]]
    return min(fitting, key=lambda c: (rank_key(c, objective), c["trial"])) if fitting else None


def budget_text(config) -> str:
    """The budget in words."""
    return f"{config.max_bytes:,} bytes" + ("" if config.max_keystroke_ms is None
                                            else f", keystroke p50 {config.max_keystroke_ms:g} ms")


def failure_message(config, rows: list[dict], candidates: list[dict], out: Path) -> str:
    """Why nothing was chosen, in one line: the candidates closest to the budget, or the trials' fates."""
    if not candidates:
        counts = ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in STATUSES if any(r["status"] == s for r in rows))
        return f"no trial finished its training and measurements ({counts}); every trial is in {out / 'search.md'}"
    budget = Budget(config.max_bytes, config.max_keystroke_ms)
    closest = sorted(candidates, key=lambda c: (budget.overshoot(c), c["trial"]))[:CLOSEST]
    listed = ", ".join(f"trial {c['trial']} {c['label']} keep {c['keep']:g} {c['precision']} ({c['bytes']:,} bytes, "
                       f"p50 {c['p50_ms']:.3f} ms)" for c in closest)
    return (f"no candidate met the budget ({budget_text(config)}); the closest: {listed}; every candidate is in "
            f"{out / 'search.md'}")


def score_on_test(path: Path, plan, typing_chars: int) -> dict:
    """The chosen file on the test split, once: bpc and keystroke savings (one thread)."""
    from threadpoolctl import threadpool_limits
    from compact_lm.autocomplete import Autocompleter
    from compact_lm.complete_eval import simulate_typing
    from compact_lm.opener import open_model
    with threadpool_limits(limits=1):
        model = open_model(path, threads=1)
        typing = simulate_typing(Autocompleter(model, beam=BEAM, max_chars=MAX_CHARS), plan.texts[2][:typing_chars], K)
        return {"test_bpc": model.evaluate_ids(plan.corpus.test).bpc, "test_savings": typing.keystroke_savings,
                "test_typed_chars": typing.chars}


def build_report(config, plan, outcomes: list[dict], out: Path, marker: dict, elapsed_s: float | None = None) -> dict:
    """Tables, plot and the best model's files in `out`; returns the summary for search.json. `elapsed_s`: the
    wall time of the run so far."""
    rows = trial_rows(outcomes)
    candidates = all_candidates(rows)
    best = choose_best(candidates, config.objective)
    summary = {**marker, "status": "done", "budget": {"max_bytes": config.max_bytes,
                                                      "max_keystroke_ms": config.max_keystroke_ms},
               "counts": {s: sum(r["status"] == s for r in rows) for s in STATUSES},
               "trials": rows, "front": pareto_front(candidates), "best": None, "failure": None,
               "cpu_s": sum(r["cpu_s"] or 0.0 for r in rows), "elapsed_s": elapsed_s,
               "texts": {"validation": "validation.txt", "test": "test.txt"}}
    if best is not None:
        outcome = next(o for o in outcomes if o["spec"]["index"] == best["trial"])
        stem = candidate_stem(best["keep"], best["precision"])
        for suffix in (".npz", ".onnx"):
            outcome["checkpoint"].copy(f"{stem}{suffix}", out / f"best{suffix}")
        best = {**best, "files": ["best.npz", "best.onnx"], **score_on_test(out / "best.onnx", plan, config.typing_chars),
                "reproduce": [f"compact-lm info {out / 'best.onnx'}",
                              f"compact-lm eval {out / 'best.onnx'} --text {out / 'validation.txt'}",
                              f"compact-lm eval-complete {out / 'best.onnx'} --text {out / 'validation.txt'} "
                              f"--limit {config.typing_chars}"
                              # the shipped file names its corpus files, not where they are
                              + "".join(f" --corpus {c}" for c in config.corpus[:1])
                              + "".join(f" {c}" for c in config.corpus[1:])]}
        summary["best"] = best
    else:
        summary["failure"] = failure_message(config, rows, candidates, out)
    atomic_write(out / "search.md", lambda f: f.write(markdown(config, summary).encode()))
    plot(config, candidates, summary["front"], best, out / "search.png")
    return summary


def _num(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def markdown(config, summary: dict) -> str:
    """search.md: the budget, the best model, every trial, every candidate, the front."""
    rows, best, counts = summary["trials"], summary["best"], summary["counts"]
    budget = (f"Budget: the shipped `.onnx` step graph at most {config.max_bytes:,} bytes"
              + ("" if config.max_keystroke_ms is None else f", a keystroke (type + top-{K} completions, one thread) "
                 f"at most {config.max_keystroke_ms:g} ms at p50") + ".")
    objective = ("keystroke savings" if config.objective == "savings" else "validation bpc")
    # what was typed: --typing-chars, or the whole validation split when it is shorter
    typed = next((c["typed_chars"] for r in rows for c in r.get("candidates", []) if "typed_chars" in c), config.typing_chars)
    typing = (f"typing the first {typed:,} characters of the validation split" if typed >= config.typing_chars else
              f"typing the whole validation split, {typed:,} characters (fewer than --typing-chars {config.typing_chars:,})")
    lines = ["# compact-lm search", "", budget,
             f"Objective: {objective}, {typing} "
             f"(`validation.txt`). {len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "; "
             f"{summary['cpu_s'] / 60:.1f} CPU-minutes in the trials"
             + ("" if summary.get("elapsed_s") is None else f", {summary['elapsed_s'] / 60:.1f} minutes of wall time in this run")
             + ".", ""]
    lines += ["## Best model", ""]
    if best is not None:
        lines += [f"`best.onnx` (and `best.npz`): trial {best['trial']} ({best['label']}), keep {best['keep']:g}, "
                  f"{best['precision']}, hidden {best['hidden_sizes']}: {best['bytes']:,} bytes, val "
                  f"{best['val_bpc']:.4f} bpc, {best['savings']:.1%} keystroke savings, p50 {best['p50_ms']:.3f} ms.",
                  f"Test split (scored once, for this report): {best['test_bpc']:.4f} bpc, {best['test_savings']:.1%} "
                  f"keystroke savings typing {best['test_typed_chars']:,} characters (`test.txt`).", "",
                  "Reproduce: " + "; ".join(f"`{c}`" for c in best["reproduce"]), ""]
    else:
        lines += [summary["failure"], ""]
    lines += ["## Trials", "",
              "| trial | architecture | status | steps | CPU s | val bpc | best fitting candidate | bytes | savings | p50 ms |",
              "|---:|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        status = r["status"] + (f" at {r['stopped_at_percent']:.0f} %" if r.get("stopped_at_percent") is not None else "")
        b = r["best"] or {}
        chosen = f"keep {b['keep']:g} {b['precision']}" if b else ("none fits" if r["candidates"] else "-")
        lines.append(f"| {r['trial']} | {r['label']} | {status} | {_num(r['steps'], ',')} | {_num(r['cpu_s'], ',.0f')} | "
                     f"{_num(r['val_bpc'], '.4f')} | "
                     f"{chosen} | {_num(b.get('bytes'), ',')} | {_num(b.get('savings'), '.1%')} | {_num(b.get('p50_ms'), '.3f')} |")
    lines += ["", "## Candidates", "",
              "Every trained model, pruned to each keep fraction (fine-tuned) and in each precision, measured as "
              "its `.onnx` file.", "",
              "| trial | architecture | keep | precision | hidden | bytes | val bpc | savings | p50 ms | p90 ms | fits |",
              "|---:|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        for c in r["candidates"]:
            lines.append(f"| {r['trial']} | {r['label']} | {c['keep']:g} | {c['precision']} | {c['hidden_sizes']} | "
                         f"{c['bytes']:,} | {c['val_bpc']:.4f} | {c['savings']:.1%} | {c['p50_ms']:.3f} | "
                         f"{c['p90_ms']:.3f} | {'yes' if c['fits'] else 'no'} |")
    skipped = [f"trial {r['trial']} keep {o['keep']:g} {o['precision']} (at least {o['min_bytes']:,} bytes)"
               for r in rows for o in r.get("oversized", [])]
    if skipped:
        lines += ["", "Not made, since their shapes alone exceed the budget (an untrained model of the same shapes, "
                  "exported, is that large): " + ", ".join(skipped) + "."]
    lines += ["", "## Front: the best savings for each size", "",
              "| bytes | savings | val bpc | p50 ms | trial | architecture | keep | precision | fits |",
              "|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for c in summary["front"]:
        lines.append(f"| {c['bytes']:,} | {c['savings']:.1%} | {c['val_bpc']:.4f} | {c['p50_ms']:.3f} | {c['trial']} | "
                     f"{c['label']} | {c['keep']:g} | {c['precision']} | {'yes' if c['fits'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(config, candidates: list[dict], front: list[dict], best: dict | None, path: Path) -> None:
    """search.png: keystroke savings against file bytes, the budget marked (with matplotlib only)."""
    if not candidates:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for fits, style in ((True, dict(marker="o", color="tab:blue", label="fits the budget")),
                        (False, dict(marker="x", color="tab:gray", label="does not fit"))):
        chosen = [c for c in candidates if c["fits"] == fits]
        if chosen:
            axes.scatter([c["bytes"] for c in chosen], [100 * c["savings"] for c in chosen], s=24, **style)
    # the front holds its last value up to the largest file, so one point still shows as a line
    right = max(c["bytes"] for c in candidates)
    axes.step([c["bytes"] for c in front] + [right], [100 * c["savings"] for c in front] + [100 * front[-1]["savings"]],
              where="post", color="tab:orange", marker="o", markevery=list(range(len(front))), markerfacecolor="none",
              label="front (best savings for each size)")
    axes.axvline(config.max_bytes, color="tab:red", linestyle="--", label=f"budget {config.max_bytes:,} bytes")
    if best is not None:
        axes.scatter([best["bytes"]], [100 * best["savings"]], marker="*", s=200, color="tab:green", zorder=3,
                     label=f"best: trial {best['trial']}, keep {best['keep']:g} {best['precision']}")
    axes.set_xscale("log")
    from matplotlib.ticker import FuncFormatter
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))   # plain bytes, not 2x10^4
    axes.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    axes.set_xlabel("file bytes (.onnx step graph)")
    axes.set_ylabel("keystroke savings (%), validation")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    image = png_bytes(figure)
    atomic_write(path, lambda f: f.write(image))
