"""The size / quality trade-off: keep fractions x {fp32, int8}, each pruned model fine-tuned, all
scored on the same validation split; writes a markdown table, JSON and (with matplotlib) a PNG."""
from __future__ import annotations

import json
import os
from pathlib import Path

from compact_lm.data import SAVE_AS_UTF8, check_recorded_corpus
from compact_lm.errors import CompactLMError, Interrupted, SettingError
from compact_lm.fileio import atomic_write, png_bytes, same_file
from compact_lm.opener import open_model
from compact_lm.trainer import prepare_corpus

from .prune import (CALIBRATION_CHARS, finetune_budget, finetune_config, prune_model, resolve_criterion,
                    round_sizes, target_sizes)
from .quantize import quantize_model

DEFAULT_KEEPS = (1.0, 0.75, 0.5, 0.25)


def sweep(model_path: str, out_dir: str, *, corpus: tuple[str, ...] | None = None, keeps=DEFAULT_KEEPS,
          finetune_steps: int | None = None, criterion: str | None = None, rounds: int = 1,
          progress: bool = False, log=print) -> list[dict]:
    """Run the sweep; returns one row per (keep, precision) and writes sweep.md / sweep.json / sweep.png."""
    out = Path(out_dir)
    original = open_model(model_path).as_float(f"{model_path} is quantized; sweep starts from the float model")
    if finetune_steps is not None and finetune_steps < 0:
        raise SettingError("finetune_steps", "{finetune_steps} must be >= 0, got {got}", got=finetune_steps)
    criterion = resolve_criterion(original, criterion)
    outside = [keep for keep in keeps if not 0 < keep <= 1]
    if outside:
        raise SettingError("keeps", "every fraction must be in (0, 1], got {got}", got=outside[0])
    repeated = sorted({keep for keep in keeps if list(keeps).count(keep) > 1})
    if repeated:
        raise SettingError("keeps", "{keep} is given twice (its files would replace each other)", keep=repeated[0])
    sizes_for = {keep: target_sizes(original.config.hidden_sizes, keep=keep) for keep in keeps}
    for keep in keeps:   # every keep's rounds, before the first is pruned
        if keep != 1.0:
            round_sizes(original.config.hidden_sizes, sizes_for[keep], rounds)
    if not corpus:   # the texts the model was trained on, as recorded: from another folder, say to give them
        check_recorded_corpus(original.info.get("train_config"))
    # (only the corpus and its splits matter to prepare_corpus: batch=1 spares finetune_config reading it first)
    data = prepare_corpus(finetune_config(original, 1, corpus=corpus, batch=1), original.vocab, utf8_hint=SAVE_AS_UTF8)
    config = finetune_config(original, 1, corpus=corpus, train_chars=len(data.train))
    if finetune_steps is None:   # 20 % of the characters of the original run
        trained = original.info.get("train_config") or {}
        finetune_steps = finetune_budget(int(original.info.get("steps", 0) or 0),
                                         int(trained.get("batch", config.batch)), 0.2, config.batch)
    config = finetune_config(original, max(finetune_steps, 1), corpus=corpus, train_chars=len(data.train))
    if len(data.val) < 2:   # every row is scored on it
        raise CompactLMError(f"the validation split of {', '.join(map(str, config.corpus))} holds fewer than 2 "
                             "characters: sweep scores every variant on it (give a corpus with a validation split)")
    written = [out / name for name in ("sweep.md", "sweep.json", "sweep.png")]
    written += [out / f"keep{keep}-{precision}.npz" for keep in keeps for precision in ("fp32", "int8")]
    for path in written:   # nothing the sweep reads is overwritten
        for source in (model_path, *config.corpus):
            if path.exists() and same_file(path, source):
                raise SettingError("out_dir", "{out_dir} {out} would overwrite {source} with {name}: give another "
                                   "folder", out=out, source=source, name=path.name)
    # every argument is checked above, before the folder or any file in it is touched
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingError("out_dir", "{out_dir} {out}: cannot create the folder ({reason})", out=out, reason=error.strerror or error) from None
    calibration = data.train[-CALIBRATION_CHARS:]
    base_bytes = os.path.getsize(model_path)
    base_bpc = original.evaluate_ids(data.val).bpc
    rows = []
    for keep in keeps:
        if keep == 1.0:
            model = original
        else:
            try:
                model = prune_model(original, sizes_for[keep], criterion=criterion, rounds=rounds,
                                    finetune_steps=finetune_steps, train_config=config, calibration_ids=calibration,
                                    work_dir=out, progress=progress, log=log, val_ids=data.val,
                                    unpruned_val_bpc=base_bpc)
            except Interrupted:   # (prune's message is about one model; here earlier keeps' files are written)
                raise Interrupted(f"interrupted while fine-tuning keep {keep}: the files of the keeps before it are "
                                  "written, the report is not; run the same command again for all of them") from None
        variants = [("fp32", model), ("int8", quantize_model(model))]
        for precision, variant in variants:
            path = out / f"keep{keep}-{precision}.npz"
            variant.save(path)
            bpc = variant.evaluate_ids(data.val).bpc
            # fine-tuning keeps the checkpoint with the best val bpc: the test split is the held-out check
            test_bpc = variant.evaluate_ids(data.test).bpc if len(data.test) >= 2 else None
            row = {"keep": keep, "precision": precision, "hidden_sizes": list(variant.config.hidden_sizes),
                   "params": variant.num_params, "file_bytes": os.path.getsize(path), "val_bpc": bpc,
                   "bpc_change": bpc / base_bpc - 1.0, "test_bpc": test_bpc,
                   "size_ratio": os.path.getsize(path) / base_bytes,
                   "finetune_steps": 0 if keep == 1.0 else finetune_steps, "file": path.name}
            rows.append(row)
            log(f"keep {keep:<5} {precision}: val {bpc:.4f} bpc ({row['bpc_change']:+.2%}), "
                f"{row['file_bytes']:,} bytes ({row['size_ratio']:.3f} of the original)")
    write_report(rows, out, model_path, base_bpc)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The sweep as a markdown table."""
    lines = ["| keep | precision | hidden | params | file bytes | size vs fp32 | val bpc | change | test bpc |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        test = "" if r.get("test_bpc") is None else f"{r['test_bpc']:.4f}"
        lines.append(f"| {r['keep']} | {r['precision']} | {r['hidden_sizes']} | {r['params']:,} | "
                     f"{r['file_bytes']:,} | {r['size_ratio']:.3f} | {r['val_bpc']:.4f} | {r['bpc_change']:+.2%} | {test} |")
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict], out: Path, model_path: str, base_bpc: float) -> None:
    """sweep.md, sweep.json and sweep.png (bpc against file bytes) in `out`."""
    header = (f"Sweep of {model_path} (val bpc {base_bpc:.4f}); pruned models fine-tuned. params counts the "
              "numbers stored: an int8 model stores layer 1's input as one folded table [V, G*H] instead of "
              "the embedding [V, E] and W_ih [G*H, E].\n\n")
    atomic_write(out / "sweep.md", lambda f: f.write((header + markdown_table(rows)).encode()))
    atomic_write(out / "sweep.json", lambda f: f.write(json.dumps({"model": str(model_path), "val_bpc": base_bpc,
                                                                    "rows": rows}, indent=1).encode()))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    for precision, marker in (("fp32", "o"), ("int8", "s")):
        chosen = [r for r in rows if r["precision"] == precision]
        axes.plot([r["file_bytes"] / 1024 for r in chosen], [r["val_bpc"] for r in chosen], marker=marker,
                  label=precision)
        for r in chosen:
            axes.annotate(f"{r['keep']}", (r["file_bytes"] / 1024, r["val_bpc"]), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("file size (KiB)")
    axes.set_ylabel("validation bits per character")
    axes.legend()
    axes.grid(alpha=0.3)
    image = png_bytes(figure)
    atomic_write(out / "sweep.png", lambda f: f.write(image))
