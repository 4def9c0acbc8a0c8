"""The `compact-lm profile` sub-command (argument parsing and printing only)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compact_lm.cli import output_path, positive_int
from compact_lm.errors import CompactLMError


def _log(quiet: bool):
    return (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr, flush=True))


def _cmd_profile(args) -> int:
    from compact_lm.data import read_text
    from .profile import ProfileConfig, default_text, profile_files
    from .profile_report import format_markdown, format_text, write_outputs
    if args.text is None:
        text, source = default_text()
    else:
        text, source = read_text(args.text, encoding_errors=args.encoding_errors, what="--text"), str(args.text)
        if not text:
            raise CompactLMError(f"--text {args.text}: the file is empty")
    if args.out is not None:   # before any measuring: a folder that cannot be made fails now, not at the end
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise CompactLMError(f"--out {out} is a file, not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CompactLMError(f"--out {out}: cannot create the folder ({error.strerror or error})") from None
    config = ProfileConfig(threads=args.threads, beam=args.beam, k=args.k, step_calls=args.step_calls,
                           completions=args.completions, keystrokes=args.keystrokes, limit=args.limit,
                           probe_rounds=args.rounds, baseline=not args.no_baseline, order=args.order,
                           corpus=tuple(args.corpus or ()))
    report = profile_files(args.models, text, text_source=source, config=config, log=_log(args.quiet))
    if args.json:
        print(json.dumps(report.to_json()))
    elif args.markdown:
        print(format_markdown(report), end="")
    else:
        print(format_text(report), end="")
    if args.out is not None:
        written = write_outputs(report, args.out)
        print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def configure_profile(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm profile`."""
    from .profile import ProfileConfig
    defaults = ProfileConfig()
    p.add_argument("models", nargs="+", metavar="MODEL_OR_ONNX",
                   help=".npz (NumPy, fp32 or int8) or .onnx (onnxruntime, fp32 or int8) files of one model")
    p.add_argument("--text", metavar="FILE", help="text to measure on (default: the last 5%% of the bundled corpus)")
    p.add_argument("--threads", type=positive_int, default=defaults.threads,
                   help="BLAS / onnxruntime threads (default 1)")
    p.add_argument("--beam", type=positive_int, default=defaults.beam, help="beam width (default 4)")
    p.add_argument("-k", "--k", dest="k", type=positive_int, default=defaults.k, help="completions asked (default 3)")
    p.add_argument("--limit", type=positive_int, default=defaults.limit,
                   help=f"characters typed for keystroke savings and accuracy (default {defaults.limit})")
    p.add_argument("--step-calls", type=positive_int, default=defaults.step_calls,
                   help=f"timed steps per file at each batch size (default {defaults.step_calls})")
    p.add_argument("--completions", type=positive_int, default=defaults.completions,
                   help=f"timed completions per file (default {defaults.completions})")
    p.add_argument("--keystrokes", type=positive_int, default=defaults.keystrokes,
                   help=f"timed keystrokes per file (default {defaults.keystrokes})")
    p.add_argument("--rounds", type=positive_int, default=defaults.probe_rounds,
                   help=f"fresh processes per file for the start-up figures (default {defaults.probe_rounds})")
    p.add_argument("--corpus", nargs="+", metavar="FILE",
                   help="the models' training text for the n-gram baseline, if not at the paths in their metadata")
    p.add_argument("--order", type=positive_int, default=None, help="n-gram baseline order (default 7; lower for a vocabulary of 464+ characters: 6, 5 from 1,291, 4 from 5,405, as n-gram keys fit in 62 bits)")
    p.add_argument("--no-baseline", action="store_true", help="skip the n-gram baseline")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    output.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--out", type=output_path, metavar="DIR", help="also write profile.json, profile.md and (with matplotlib) profile.png")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_cmd_profile)
