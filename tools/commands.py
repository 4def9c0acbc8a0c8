"""The compression sub-commands of `compact-lm`: prune, quantize, sweep."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from compact_lm.cli import blas_threads, number, output_path, positive_int, whole_number
from compact_lm.errors import CompactLMError
from compact_lm.data import SAVE_AS_UTF8, check_recorded_corpus
from compact_lm.fileio import check_writable, same_file


def _load_float(path: str, action: str):
    from compact_lm.opener import open_model
    return open_model(path).as_float(f"{path} is already quantized: {action} the float model, then quantize")


def _refuse_overwriting(out: str, *inputs: tuple[str, str | None]) -> None:
    """A one-line CompactLMError if --out names one of the (what, path) files the command reads, or cannot be written."""
    check_writable(out)
    for what, path in inputs:
        if path is not None and same_file(path, out):
            raise CompactLMError(f"--out must differ from {what} (nothing is overwritten)")


def _cmd_prune(args) -> int:
    with blas_threads(args):   # the unit statistics and the fine-tuning are NumPy work
        return _prune(args)


def _prune(args) -> int:
    from compact_lm.data import read_text
    from compact_lm.trainer import prepare_corpus
    from .prune import calibration_ids_from_corpus, finetune_config, prune_model, resolve_criterion, target_sizes
    _refuse_overwriting(args.out, ("the input model", args.model), ("--calibration", args.calibration),
                        *(("--corpus", path) for path in args.corpus or ()))
    model = _load_float(args.model, "prune")
    source_params = model.num_params
    sizes = target_sizes(model.config.hidden_sizes, keep=args.keep, hidden=args.hidden)
    criterion = resolve_criterion(model, args.criterion)
    corpus = tuple(args.corpus) if args.corpus else None
    config = None
    if not corpus and (args.finetune_steps or args.calibration is None or args.min_char_count):
        check_recorded_corpus(model.info.get("train_config"))   # read below: from another folder, say to give them
    if args.finetune_steps or args.calibration is None:
        overrides = {k: v for k, v in (("lr", args.finetune_lr), ("dropout", args.finetune_dropout),
                                       ("distill", args.distill)) if v is not None}
        # read once up front: a bad file fails before any work, and the split's length sets the streams a step
        train = prepare_corpus(finetune_config(model, 1, corpus=corpus, batch=1), model.vocab, utf8_hint=SAVE_AS_UTF8).train
        config = finetune_config(model, max(args.finetune_steps, 1), corpus=corpus, train_chars=len(train), **overrides)
        # (without --corpus, the text the model was trained on: it is read as much as --corpus would be)
        _refuse_overwriting(args.out, *(("the training text", path) for path in config.corpus))
    calibration_text = (read_text(args.calibration, what="--calibration", utf8_hint=SAVE_AS_UTF8)
                        if args.calibration is not None else None)
    if calibration_text is not None and not calibration_text:
        raise CompactLMError(f"--calibration {args.calibration}: the file is empty")
    out_folder = Path(args.out).resolve().parent   # (there: _refuse_overwriting checked)
    if args.min_char_count:
        model = _drop_characters(model, args.min_char_count, config or finetune_config(model, 1, corpus=corpus),
                                 calibration_text)
    if calibration_text is not None:
        calibration = model.vocab.encode(calibration_text)
        if len(calibration) < 2:
            raise CompactLMError(f"--calibration {args.calibration}: the file is empty")
    else:
        calibration = calibration_ids_from_corpus(model, config)
    pruned = prune_model(model, sizes, criterion=criterion, rounds=args.rounds,
                         finetune_steps=args.finetune_steps, train_config=config, calibration_ids=calibration,
                         work_dir=out_folder, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    pruned.save(args.out)
    print(f"{args.out}: hidden {list(model.config.hidden_sizes)} -> {list(pruned.config.hidden_sizes)}, "
          f"{source_params:,} -> {pruned.num_params:,} parameters, {os.path.getsize(args.out):,} bytes")
    return 0


DROPPED_SHOWN = 40   # dropped characters listed by prune --min-char-count (a large alphabet drops hundreds)


def _drop_characters(model, min_count: int, config, calibration_text: str | None):
    """The model without the characters its training split has fewer than `min_count` of (see prune_vocab.py)."""
    from compact_lm.trainer import prepare_corpus
    from .prune import calibration_ids_from_corpus
    from .prune_vocab import character_counts, drop_rare_characters
    counts = character_counts(model, prepare_corpus(config, model.vocab).train)
    calibration = (model.vocab.encode(calibration_text) if calibration_text is not None
                   else calibration_ids_from_corpus(model, config))
    smaller, dropped = drop_rare_characters(model, counts, min_count, calibration)
    index = {char: i for i, char in enumerate(model.vocab.tokens)}
    share = sum(int(counts[index[char]]) for char in dropped) / max(int(counts.sum()), 1)
    shown = "".join(dropped[:DROPPED_SHOWN]) + ("..." if len(dropped) > DROPPED_SHOWN else "")
    # (those characters are <unk> from now on: a bpc measured before and after compares different texts)
    print(f"dropped {len(dropped)} characters seen fewer than {min_count} times, {share:.2%} of the training "
          f"split's characters, which are <unk> from now on: {shown!r}", file=sys.stderr)
    smaller.info["pruning"] = [*model.info.get("pruning", []), {"min_char_count": min_count, "dropped_characters": dropped}]
    return smaller


def _cmd_quantize(args) -> int:
    from compact_lm.data import read_text
    from compact_lm.opener import open_model
    from .quantize import quantize_model
    _refuse_overwriting(args.out, ("the input model", args.model), ("--calibration", args.calibration))
    model = open_model(args.model).as_float(f"{args.model} is already quantized (quantizing twice would only add error)")
    text = None
    if args.calibration is not None:
        text = read_text(args.calibration, what="--calibration", utf8_hint=SAVE_AS_UTF8)
        if len(model.vocab.encode(text)) < 2:
            raise CompactLMError(f"--calibration {args.calibration}: the file is empty")
    quantized = quantize_model(model, weight_bits=args.weight_bits)
    if text is not None:   # measured before saving, so the int8 file carries its own figures
        ids = model.vocab.encode(text)
        before, after = model.evaluate_ids(ids), quantized.evaluate_ids(ids)
        weights_only = quantized.evaluate_ids(ids, arithmetic="float").bpc
        quantized.info["metrics"] = {"calibration": {**after.to_json(), "text": str(args.calibration),
                                                     "fp32_bpc": before.bpc, "int8_weights_float_bpc": weights_only}}
    quantized.save(args.out)
    print(f"{args.out}: int8 ({args.weight_bits}-bit weights), {os.path.getsize(args.out):,} bytes "
          f"({os.path.getsize(args.out) / os.path.getsize(args.model):.3f} of {args.model})")
    if text is not None:
        print(f"{args.calibration}: fp32 {before.bpc:.4f} bpc, int8 {after.bpc:.4f} bpc (x{after.bpc / before.bpc:.4f}); "
              f"int8 weights with float arithmetic {weights_only:.4f} bpc")
    return 0


def _cmd_sweep(args) -> int:
    from .sweep import sweep
    rows = sweep(args.model, args.out_dir, corpus=tuple(args.corpus) if args.corpus else None, keeps=tuple(args.keeps),
                 finetune_steps=args.finetune_steps, criterion=args.criterion, rounds=args.rounds,
                 progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    from .sweep import markdown_table
    print(markdown_table(rows), end="")
    plot = ", sweep.png" if (Path(args.out_dir) / "sweep.png").exists() else ""
    print(f"written: {Path(args.out_dir) / 'sweep.md'}, sweep.json{plot}, keep*-fp32.npz, keep*-int8.npz")
    return 0


def _criterion_help() -> str:
    from compact_lm.cells import CELLS
    from .prune import CRITERIA
    return (f"unit importance: {', '.join(CRITERIA)} (default: the cell's own, "
            + ", ".join(f"{cell.prune_criterion} for {name}" for name, cell in CELLS.items()) + ")")


def configure_prune(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm prune`."""
    from .prune import FINETUNE_DISTILL, FINETUNE_DROPOUT, FINETUNE_LR
    p.add_argument("model", metavar="MODEL")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--keep", type=number, help="fraction of hidden units to keep, in (0, 1]")
    size.add_argument("--hidden", type=int, nargs="+", help="hidden size to keep: one for all layers or one per layer")
    p.add_argument("--criterion", help=_criterion_help())
    p.add_argument("--rounds", type=positive_int, default=1, help="prune in this many rounds, fine-tuning after each")
    p.add_argument("--finetune-steps", type=int, default=0, help="trainer steps in all, of at least 64 streams each (0: no fine-tuning)")
    p.add_argument("--finetune-lr", type=number, help=f"peak learning rate (default {FINETUNE_LR:g})")
    p.add_argument("--finetune-dropout", type=number, help=f"dropout while fine-tuning (default {FINETUNE_DROPOUT:g})")
    p.add_argument("--distill", type=number, help="weight of the unpruned model's predictions in the "
                   f"fine-tuning target (default {FINETUNE_DISTILL:g}; 0 = plain cross-entropy)")
    p.add_argument("--corpus", nargs="+", metavar="FILE", help="training text (default: the model's own corpus)")
    p.add_argument("--calibration", metavar="FILE", help="text for the unit statistics and the refit "
                   "(default: the end of the training split)")
    p.add_argument("--min-char-count", type=whole_number(0), default=0, metavar="N",
                   help="also drop the characters seen fewer than N times in the training split: they read "
                        "as <unk> (default 0: keep the vocabulary)")
    p.add_argument("--out", type=output_path, required=True, metavar="FILE")
    p.add_argument("--threads", type=positive_int, help="cap BLAS threads (default: NumPy's own, every core)")
    p.add_argument("--quiet", action="store_true")
    # fine-tuning settings (TrainConfig's names) as prune spells them
    p.set_defaults(run=_cmd_prune, setting_flags={"lr": "--finetune-lr", "dropout": "--finetune-dropout",
                                                  "steps": "--finetune-steps"})


def configure_quantize(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm quantize`."""
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--weight-bits", type=int, default=7, choices=[7, 8],
                   help="7 (default: exact in onnxruntime on every CPU) or 8")
    p.add_argument("--calibration", metavar="FILE", help="text on which to report fp32 vs int8 bpc")
    p.add_argument("--out", type=output_path, required=True, metavar="FILE")
    p.set_defaults(run=_cmd_quantize)


def configure_sweep(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm sweep`."""
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--corpus", nargs="+", metavar="FILE", help="training text (default: the model's own corpus)")
    p.add_argument("--keeps", type=number, nargs="+", default=[1.0, 0.75, 0.5, 0.25],
                   help="fractions of hidden units to keep, each in (0, 1] (default 1.0 0.75 0.5 0.25)")
    p.add_argument("--finetune-steps", type=int, default=None, help="default: 20 %% of the characters the model was trained on, in steps of at least 64 streams")
    p.add_argument("--criterion", help=_criterion_help())
    p.add_argument("--rounds", type=positive_int, default=1, help="prune each in this many rounds (default 1)")
    p.add_argument("--out", dest="out_dir", type=output_path, required=True, metavar="DIR")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_cmd_sweep)
