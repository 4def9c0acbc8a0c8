"""The candidates of one trained model: every keep fraction (pruned, then fine-tuned) x every precision, each
exported to the `.onnx` step graph an app loads, and measured as shipped:

  bytes        the .onnx file's size (what --max-bytes limits);
  val_bpc      bits per character of the validation split under the .onnx file (onnxruntime);
  savings      keystroke savings typing the first `typing_chars` characters of the validation split with
               top-3 completions, the simulation of `compact-lm eval-complete` (complete_eval.simulate_typing);
  p50 / p90    latency of one keystroke in that simulation (type a character + top-3 completions, one thread),
               what --max-keystroke-ms limits.

The same figures come back from `compact-lm info` (bytes), `eval` (bpc) and `eval-complete --limit` (savings)
on the file and the split's text, which the search writes beside the best model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compact_lm.autocomplete import Autocompleter
from compact_lm.complete_eval import simulate_typing
from compact_lm.opener import open_model

K = 3              # completions shown per keystroke (eval-complete's default)
BEAM = 4           # beam width of the word search (eval-complete's default)
MAX_CHARS = 16     # longest completion (eval-complete's default)
OBJECTIVES = ("savings", "bpc")


@dataclass(frozen=True)
class Budget:
    """What a shipped file must meet: its bytes and its keystroke p50 (None: no latency limit)."""

    max_bytes: int
    max_keystroke_ms: float | None = None

    def fits(self, row: dict) -> bool:
        """Whether a measured candidate meets both limits."""
        return row["bytes"] <= self.max_bytes and (self.max_keystroke_ms is None
                                                   or row["p50_ms"] <= self.max_keystroke_ms)

    def overshoot(self, row: dict) -> float:
        """How far a candidate is from fitting: its worst ratio to a limit (<= 1 fits)."""
        ratios = [row["bytes"] / self.max_bytes]
        if self.max_keystroke_ms is not None:
            ratios.append(row["p50_ms"] / self.max_keystroke_ms)
        return max(ratios)


def rank_key(row: dict, objective: str) -> tuple:
    """Sort key, best first: the objective (most savings, or lowest val bpc), then fewer bytes (for savings: of two
    files typing the same, the one to ship is the smaller, on the size/savings front), then the other figure."""
    if objective == "savings":
        return (-row["savings"], row["bytes"], row["val_bpc"])
    return (row["val_bpc"], -row["savings"], row["bytes"])


def candidate_stem(keep: float, precision: str) -> str:
    """File stem of a candidate: keep0.5-int8."""
    return f"keep{keep:g}-{precision}"


def measure(path: Path, val_ids, val_text: str, typing_chars: int) -> dict:
    """bytes, val bpc, keystroke savings and latency of one shipped .onnx file (one thread)."""
    shipped = open_model(path, threads=1)
    typing = simulate_typing(Autocompleter(shipped, beam=BEAM, max_chars=MAX_CHARS), val_text[:typing_chars], K)
    return {"bytes": os.path.getsize(path), "val_bpc": shipped.evaluate_ids(val_ids).bpc,
            "savings": typing.keystroke_savings, "p50_ms": typing.latency_ms["p50"],
            "p90_ms": typing.latency_ms["p90"], "typed_chars": typing.chars}


# metric entries that are not a function of the model: wall-clock figures (which would make the file's bytes vary
# from run to run with the length of a number) and the fine-tuning trainer's test-split score (the search reads
# the test split once, for the chosen model, in its report)
UNSHIPPED_METRICS = ("elapsed_s", "train_s", "chars_per_second", "test")


def deterministic_info(info: dict) -> dict:
    """A model's info without UNSHIPPED_METRICS (quantize_model copies what is left as its source metrics), and
    with every train_config's corpus paths reduced to file names: where the corpus lives must not change a
    shipped file's bytes (or tell its users the trainer's folders). Digests (sha256) are kept."""
    metrics = {k: v for k, v in info.get("metrics", {}).items() if k not in UNSHIPPED_METRICS}
    return _corpus_names({**info, "metrics": metrics})


def _corpus_names(value):
    if isinstance(value, dict):
        out = {k: _corpus_names(v) for k, v in value.items()}
        config = out.get("train_config")
        if isinstance(config, dict) and isinstance(config.get("corpus"), (list, tuple)):
            out["train_config"] = {**config, "corpus": [Path(c).name if isinstance(c, str) else c
                                                        for c in config["corpus"]]}
        return out
    if isinstance(value, list):
        return [_corpus_names(v) for v in value]
    return value


def make_candidates(model, *, keeps, precisions, finetune_steps: int, train_ids, val_ids, val_text: str,
                    typing_chars: int, folder: Path, log=None,
                    too_big: dict[tuple[float, str], int] | None = None) -> tuple[list[dict], list[dict]]:
    """Prune, quantize and export `model` for every keep x precision into `folder`; one measured row each.
    A candidate in `too_big` ({(keep, precision): lower bound of its bytes}, search_estimate.oversized) is not
    made (no fine-tuning, no measuring): it is returned in the second list, with that bound."""
    from compact_lm.export import export_model
    from .prune import CALIBRATION_CHARS, finetune_config, prune_model, target_sizes
    from .quantize import quantize_model
    rows = []
    too_big = too_big or {}
    skipped = [{"keep": k, "precision": p, "min_bytes": size} for (k, p), size in too_big.items()]
    unpruned_bpc = model.evaluate_ids(val_ids).bpc
    for keep in keeps:
        made = [p for p in precisions if (float(keep), p) not in too_big]
        if not made:
            continue
        steps = 0
        if keep == 1.0:
            pruned = model
        else:
            steps = finetune_steps
            sizes = target_sizes(model.config.hidden_sizes, keep=keep)
            pruned = prune_model(model, sizes, finetune_steps=steps,
                                 train_config=finetune_config(model, max(steps, 1), train_chars=len(train_ids)) if steps else None,
                                 calibration_ids=train_ids[-CALIBRATION_CHARS:], work_dir=folder, log=log,
                                 val_ids=val_ids, unpruned_val_bpc=unpruned_bpc)
        original_info, pruned.info = pruned.info, deterministic_info(pruned.info)
        for precision in made:
            variant = pruned if precision == "fp32" else quantize_model(pruned)
            stem = candidate_stem(keep, precision)
            variant.save(folder / f"{stem}.npz")
            export_model(variant, folder / f"{stem}.onnx")
            row = {"keep": float(keep), "precision": precision, "hidden_sizes": list(variant.config.hidden_sizes),
                   "params": variant.num_params, "finetune_steps": steps, "file": f"{stem}.onnx",
                   **measure(folder / f"{stem}.onnx", val_ids, val_text, typing_chars)}
            rows.append(row)
        pruned.info = original_info   # the trained model keeps its corpus paths: later keeps fine-tune from them
    return rows, skipped
