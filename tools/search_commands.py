"""`compact-lm search` on the command line (argument parsing and printing only; the work is in search.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compact_lm.cli import number, output_path, positive_int, whole_number

# flag dest -> SearchConfig field (the space's lists are gathered under "space")
CONFIG_FLAGS = ("corpus", "max_bytes", "max_keystroke_ms", "trials", "minutes_per_trial", "steps_per_trial",
                "objective", "scheduler", "eval_every", "typing_chars", "finetune_fraction", "seed")
SPACE_FLAGS = ("cells", "layers", "embed", "hidden", "dropout", "keeps", "precisions")


def configure_search(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm search`."""
    from .search import DEFAULT_MINUTES, SearchConfig
    from .search_ray import DEFAULT_CONNECT_TIMEOUT
    from .search_space import SearchSpace
    c, s = SearchConfig(max_bytes=1), SearchSpace()
    keep = argparse.SUPPRESS   # a flag left out is not "given": --resume checks only the flags given

    def listed(values) -> str:
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    p.add_argument("--corpus", nargs="+", metavar="FILE", default=keep,
                   help="UTF-8 text files (.gz accepted); default: the bundled Alice's Adventures in Wonderland")
    p.add_argument("--max-bytes", type=positive_int, metavar="N", default=keep,
                   help="required: the largest .onnx step graph (the file an app loads) to ship, in bytes")
    p.add_argument("--max-keystroke-ms", type=number, metavar="X", default=keep,
                   help="the slowest keystroke p50 to ship (type + top-3 completions, one thread); default: no limit")
    p.add_argument("--trials", type=positive_int, default=keep, help=f"architectures to train (default {c.trials})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes-per-trial", type=number, metavar="M", default=keep,
                        help=f"training budget of each trial (default {DEFAULT_MINUTES:g})")
    budget.add_argument("--steps-per-trial", type=positive_int, metavar="N", default=keep,
                        help="training budget of each trial in steps (deterministic)")
    p.add_argument("--objective", choices=["savings", "bpc"], default=keep,
                   help="keystroke savings (default) or bpc, on the validation split")
    p.add_argument("--scheduler", choices=["asha", "none"], default=keep,
                   help="asha (default): stop trials whose val bpc trails at 25 %% and 50 %% of the budget; none")
    p.add_argument("--space", metavar="FILE.json", default=None,
                   help="the search space as JSON (keys: cells, layers, embed, hidden, dropout, keeps, precisions, fixed)")
    p.add_argument("--cells", nargs="+", metavar="CELL", default=keep, help=f"recurrent cells to try (default {listed(s.cells)})")
    p.add_argument("--layers", nargs="+", type=positive_int, metavar="L", default=keep, help=f"layer counts to try (default {listed(s.layers)})")
    p.add_argument("--embed", nargs="+", type=positive_int, metavar="E", default=keep, help=f"embedding sizes to try (default {listed(s.embed)})")
    p.add_argument("--hidden", nargs="+", type=positive_int, metavar="H", default=keep, help=f"hidden sizes to try (default {listed(s.hidden)})")
    p.add_argument("--dropout", nargs="+", type=number, metavar="P", default=keep, help=f"dropout rates to try (default {listed(s.dropout)})")
    p.add_argument("--keeps", nargs="+", type=number, metavar="F", default=keep,
                   help=f"keep fractions applied to every trained model (default {listed(s.keeps)})")
    p.add_argument("--precisions", nargs="+", choices=["int8", "fp32"], default=keep,
                   help=f"precisions applied to every trained model (default {listed(s.precisions)})")
    p.add_argument("--eval-every", type=positive_int, metavar="N", default=keep,
                   help=f"steps between evaluations, reports and checkpoints (default {c.eval_every})")
    p.add_argument("--typing-chars", type=positive_int, metavar="N", default=keep,
                   help=f"validation characters typed to measure each candidate (default {c.typing_chars})")
    p.add_argument("--finetune-fraction", type=number, metavar="F", default=keep,
                   help=f"a pruned candidate fine-tunes on this fraction of the characters its training read (default {c.finetune_fraction:g})")
    p.add_argument("--seed", type=whole_number(0), default=keep, help=f"draws the trials and seeds training (default {c.seed})")
    p.add_argument("--address", metavar="ADDRESS", default=None,
                   help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local Ray for the run)")
    p.add_argument("--cpus", type=positive_int, default=None,
                   help="CPUs of the local Ray (default: what Ray detects, a container's CPU limit included)")
    p.add_argument("--storage", metavar="PATH_OR_URI", default=None,
                   help="where Ray Tune keeps the trials' checkpoints (default DIR/ray; on a cluster: a shared folder or URI)")
    p.add_argument("--connect-timeout", type=positive_number, metavar="S", default=DEFAULT_CONNECT_TIMEOUT,
                   help=f"seconds to wait for --address to answer (default {DEFAULT_CONNECT_TIMEOUT:g})")
    p.add_argument("--out", dest="out_dir", type=output_path, required=True, metavar="DIR",
                   help="output folder: best.npz, best.onnx, search.md, search.json, search.png, the trials")
    p.add_argument("--resume", action="store_true", help="finish the search in DIR (after a crash or a kill)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_cmd_search, parser=p, setting_flags={"out_dir": "--out"})


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _given(args) -> dict:
    """SearchConfig settings given on the command line; the space (file, then flags) under "space"."""
    from .search_space import read_space_file
    given = {name: getattr(args, name) for name in CONFIG_FLAGS if hasattr(args, name)}
    if "corpus" in given:
        given["corpus"] = tuple(given["corpus"])
    space = read_space_file(args.space) if args.space else {}
    space.update({name: getattr(args, name) for name in SPACE_FLAGS if hasattr(args, name)})
    if space:
        given["space"] = space
    return given


def _cmd_search(args) -> int:
    from compact_lm.errors import CompactLMError
    from .search_ray import require_ray
    require_ray()
    from .search import SearchConfig, resume_config, search
    if args.cpus is not None and args.address is not None:
        raise CompactLMError("--cpus sets the local Ray's CPUs; with --address the cluster has its own")
    given = _given(args)
    if args.resume:
        resume_config(Path(args.out_dir), given)   # the flags given must be the saved ones
        config = None
    else:
        if "max_bytes" not in given:
            args.parser.error("the following arguments are required: --max-bytes")
        config = SearchConfig(**given)
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    summary = search(config, args.out_dir, resume=args.resume, address=args.address, cpus=args.cpus,
                     storage=args.storage, connect_timeout=args.connect_timeout, log=log or (lambda _: None))
    print(format_summary(summary, Path(args.out_dir)), end="")
    return 0


def format_summary(summary: dict, out: Path) -> str:
    """The best model and the front, as printed at the end of a search."""
    best = summary["best"]
    lines = [f"best: {out / 'best.onnx'}: trial {best['trial']} ({best['label']}), keep {best['keep']:g} "
             f"{best['precision']}, hidden {best['hidden_sizes']}, {best['bytes']:,} bytes; validation: "
             f"{best['val_bpc']:.4f} bpc, {best['savings']:.1%} keystroke savings, p50 {best['p50_ms']:.3f} ms; "
             f"test: {best['test_bpc']:.4f} bpc, {best['test_savings']:.1%} savings",
             "front (the best savings for each size):",
             f"  {'bytes':>10} {'savings':>8} {'val bpc':>8} {'p50 ms':>7}  candidate"]
    for c in summary["front"]:
        lines.append(f"  {c['bytes']:>10,} {c['savings']:>8.1%} {c['val_bpc']:>8.4f} {c['p50_ms']:>7.3f}  trial "
                     f"{c['trial']} {c['label']} keep {c['keep']:g} {c['precision']}{'' if c['fits'] else ' (over budget)'}")
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    plot = ", search.png" if (out / "search.png").exists() else ""
    lines.append(f"trials: {counts}; written: {out / 'search.md'}, search.json{plot}, best.npz, best.onnx, "
                 "validation.txt, test.txt")
    return "\n".join(lines) + "\n"
