"""The `train`, `eval`, `sample` and `info` sub-commands (argument parsing and printing only)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .cli import blas_threads, number, output_path, positive_int
from .config import TRAIN_HELP, TrainConfig
from .errors import CompactLMError

# settings -> the argparse type of their flag; help and default come from TrainConfig (config.TRAIN_HELP)
TRAIN_FLAG_TYPES = {
    "cell": str, "layers": positive_int, "embed": positive_int, "hidden": positive_int, "seq_len": positive_int,
    "batch": positive_int, "optimizer": str, "lr": number, "min_lr_ratio": number, "warmup_steps": int,
    "momentum": number, "dropout": number, "weight_drop": number, "weight_decay": number,
    "label_smoothing": number, "clip": number, "steps": positive_int, "epochs": number, "minutes": number,
    "eval_every": positive_int, "seed": int, "min_count": positive_int, "encoding_errors": str, "dtype": str,
    "init": str, "teacher": str, "distill": number,
}
BUDGETS = ("steps", "epochs", "minutes")


def train_flags() -> list[tuple[str, str, str]]:
    """(flag, default, meaning) of every training setting with a flag, in TrainConfig's order."""
    rows = []
    for field in dataclasses.fields(TrainConfig):
        if field.name in TRAIN_HELP:
            default = "" if field.default is None or field.name in BUDGETS else f"{field.default:g}" \
                if isinstance(field.default, float) else str(field.default)
            rows.append(("--" + field.name.replace("_", "-"), default, TRAIN_HELP[field.name]))
    return rows


def train_flags_markdown() -> str:
    """docs/cli.md's table of training flags (between its train-options markers), made from TrainConfig."""
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    rows += [f"| `{flag}` | {default} | {meaning.replace('<unk>', '`<unk>`')} |" for flag, default, meaning in train_flags()]
    return "\n".join(rows) + "\n"


def configure_train(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm train`."""
    p.add_argument("--corpus", nargs="+", metavar="FILE", default=argparse.SUPPRESS,
                   help="UTF-8 text files (.gz accepted); default: the bundled Alice's Adventures in Wonderland")
    for flag, default, meaning in train_flags():
        dest = flag[2:].replace("-", "_")
        p.add_argument(flag, dest=dest, type=TRAIN_FLAG_TYPES[dest], default=argparse.SUPPRESS,
                       help=f"{meaning} (default {default})" if default else meaning)
    p.add_argument("--split", nargs=3, type=number, metavar=("TRAIN", "VAL", "TEST"), default=argparse.SUPPRESS,
                   help="contiguous split fractions (default 0.9 0.05 0.05)")
    p.add_argument("--lowercase", dest="lowercase", action="store_true", default=argparse.SUPPRESS,
                   help="lowercase the text")
    p.add_argument("--no-nfc", dest="nfc", action="store_false", default=argparse.SUPPRESS,
                   help="keep the text as is (default: Unicode NFC normalization)")
    p.add_argument("--out", dest="out_dir", type=output_path, required=True, metavar="DIR",
                   help="output folder for model.npz, state.npz, history")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out (bit-exact)")
    p.add_argument("--threads", type=positive_int, help="cap BLAS threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_train)


def _train_config(args) -> TrainConfig:
    from .trainer import saved_train_config
    given = {dest: getattr(args, dest) for dest in TRAIN_FLAG_TYPES if hasattr(args, dest)}
    for dest in ("corpus", "split", "lowercase", "nfc"):
        if hasattr(args, dest):
            given[dest] = tuple(getattr(args, dest)) if dest in ("corpus", "split") else getattr(args, dest)
    budgets = [b for b in BUDGETS if b in given]
    if len(budgets) > 1:
        raise CompactLMError(f"give only one budget, not {' and '.join('--' + b for b in budgets)}")
    if args.resume:
        saved = saved_train_config(args.out_dir).to_json()
        if budgets:   # a budget given on resume replaces the saved one, which the trainer then reports
            for b in BUDGETS:
                saved[b] = None
        saved.update(given)
        return TrainConfig.from_json(saved)
    return TrainConfig(**given)


def _cmd_train(args) -> int:
    from .trainer import Trainer
    config = _train_config(args)
    with blas_threads(args):
        trainer = Trainer(config, args.out_dir, resume=args.resume, progress=not args.quiet)
        result = trainer.run()
    metrics = result.model.info["metrics"]
    kept = int(result.model.info.get("steps", trainer.step))
    which = (f"{trainer.step} steps" if kept == trainer.step
             else f"the best by val bpc: step {kept} of {trainer.step}")   # later steps overfit the training text
    lines = [f"model: {Path(args.out_dir) / 'model.npz'} ({result.model.num_params:,} parameters, {which})"]
    for split in ("val", "test"):
        if metrics.get(split, {}).get("bpc") is not None:   # (a split too short to score has none)
            lines.append(f"{split}: {metrics[split]['bpc']:.4f} bpc (perplexity {_perplexity(metrics[split]['perplexity'])})")
    lines.append(f"speed: {metrics['chars_per_second']:,.0f} characters/second")
    print("\n".join(lines))
    return 0


def configure_eval(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm eval`."""
    p.add_argument("model", metavar="MODEL", help="a model file: .npz (NumPy) or .onnx (onnxruntime)")
    p.add_argument("--text", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--threads", type=positive_int, help="cap BLAS threads")
    p.set_defaults(run=_cmd_eval)


def _cmd_eval(args) -> int:
    from .data import read_text
    from .opener import open_model
    model = open_model(args.model)
    text = read_text(args.text, encoding_errors=args.encoding_errors, what="--text")
    with blas_threads(args):
        ids = model.vocab.encode(text)
        if len(ids) < 2:
            raise CompactLMError(f"--text {args.text}: needs at least 2 characters")
        metrics = model.evaluate_ids(ids)
    result = metrics.to_json()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['chars']:,} characters scored ({result['unknown']:,} unknown): "
              f"{result['nats']:.4f} nats, {result['bpc']:.4f} bpc, perplexity {_perplexity(result['perplexity'])}")
    return 0


def _perplexity(value: float | None) -> str:
    """A perplexity as printed (None: past float range, as metrics.Metrics.to_json gives it)."""
    return "inf" if value is None else f"{value:.3f}"


def configure_sample(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm sample`."""
    p.add_argument("model", metavar="MODEL", help="a model file: .npz (NumPy) or .onnx (onnxruntime)")
    p.add_argument("--prompt", default="")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--temperature", type=number, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_cmd_sample)


def _cmd_sample(args) -> int:
    from .opener import open_model
    from .sample import generate
    model = open_model(args.model)
    chars = generate(model.backend(), model.vocab, prompt=args.prompt, length=args.length,
                     temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    live = sys.stdout.isatty()   # on a terminal each character shows as it is drawn; a pipe gets whole blocks
    sys.stdout.write(args.prompt)
    for char in chars:
        sys.stdout.write(char)
        if live:
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def configure_info(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm info`."""
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_cmd_info)


def _cmd_info(args) -> int:
    from .opener import open_model
    summary = open_model(args.model).summary(args.model)
    if args.json:
        print(json.dumps(summary))
        return 0
    if "graph" in summary:
        print(f"{summary['file']}: {summary['graph']} graph, {'int8' if summary['int8'] else 'fp32'}, "
              f"{'native recurrent' if summary['native_rnn'] else 'plain'} operators, opset {summary['opset']}, "
              f"IR version {summary['ir_version']}, {summary['file_bytes']:,} bytes")
        print(f"  of a {summary['cell']} model, {summary['layers']} layer(s), embed {summary['embed_size']}, "
              f"hidden {summary['hidden_sizes']}, vocab {summary['vocab_size']}; "
              f"{summary['param_bytes']:,} bytes of initializers")
        _print_tensors(summary)
        return 0
    finetuned = sum(int(entry.get("finetune_steps", 0) or 0) for entry in summary["pruning"])
    # (a pruned model's steps are its last fine-tuning's, or its source's when none: the sum says what pruning added)
    steps = (f"pruned, then fine-tuned {finetuned:,} steps" if finetuned else
             f"{summary['steps']:,} training steps" + (", then pruned" if summary["pruning"] else ""))
    print(f"{summary['file']}: {summary['cell']} model, {summary['layers']} layer(s), "
          f"embed {summary['embed_size']}, hidden {summary['hidden_sizes']}, vocab {summary['vocab_size']}")
    print(f"{summary['params']:,} parameters, {summary['param_bytes']:,} bytes of arrays "
          f"({summary['param_bytes'] / summary['fp32_bytes']:.3f} of the fp32 original's {summary['fp32_bytes']:,}), "
          f"{summary['file_bytes']:,} bytes on disk, {steps}"
          + (", int8" if summary["quantized"] else ""))
    _print_tensors(summary)
    return 0


def _print_tensors(summary: dict) -> None:
    width = max(len(n) for n in summary["tensors"])
    for name, t in summary["tensors"].items():
        print(f"  {name:<{width}}  {str(tuple(t['shape'])):>12}  {t['dtype']:>8}  {t['params']:>9,} params  "
              f"{t['bytes']:>10,} B")
    lexicon = summary.get("lexicon")
    if lexicon:   # the rest of the file's bytes beside the arrays
        print(f"lexicon: {lexicon['words']:,} words of its training text, {lexicon['bytes']:,} bytes of the file")
    for split, figures in summary["metrics"].items():   # val and test; an int8 file's calibration text
        if isinstance(figures, dict) and "bpc" in figures:
            print(f"{split}: {figures['bpc']:.4f} bpc")
