"""The `compact-lm` command line: one table of commands; each part of the package adds its own options and code.

A command's module is imported only when that command runs, so `compact-lm complete` loads neither the
pruning tools nor the ONNX builders. A part's `configure_<command>(parser)` adds the options and sets
`run`, a function of the parsed arguments that returns the exit code.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
from typing import NamedTuple

from .errors import CompactLMError, Interrupted, SettingError

PROG = "compact-lm"


class Command(NamedTuple):
    """Where a sub-command's options and code live, and its one-line help."""

    module: str
    help: str


COMMANDS = {
    "train": Command("compact_lm.model_commands", "train a model on text files (default: the bundled Alice corpus)"),
    "eval": Command("compact_lm.model_commands", "nats, bpc and perplexity of a text under a model"),
    "sample": Command("compact_lm.model_commands", "generate text from a model"),
    "info": Command("compact_lm.model_commands", "config, vocabulary and per-tensor sizes of a model (.npz or .onnx)"),
    "prune": Command("compact_lm.tools.commands",
                     "remove whole hidden units (optionally fine-tuning), keeping the format"),
    "quantize": Command("compact_lm.tools.commands", "int8 weights with per-row scales, the input table's per "
                        "column (the scheme the int8 ONNX graph runs)"),
    "sweep": Command("compact_lm.tools.commands", "size / quality table: keep fractions x {fp32, int8}"),
    "export": Command("compact_lm.export.commands", "write a model as an ONNX step graph (and a sequence graph): "
                      "fp32 for a float model, int8 for a quantized one"),
    "verify": Command("compact_lm.verify", "compare an exported .onnx under onnxruntime with the NumPy model"),
    "complete": Command("compact_lm.complete_commands",
                        "the most likely completions of the word being typed, with probabilities"),
    "repl": Command("compact_lm.complete_commands",
                    "type and see completions update per keystroke (per line without a terminal)"),
    "eval-complete": Command("compact_lm.complete_commands",
                             "keystroke savings and accuracy of word completion, vs an n-gram baseline"),
    "profile": Command("compact_lm.tools.profile_commands", "latency, start-up, size and quality of model files "
                       "side by side (NumPy / onnxruntime, fp32 / int8, pruned or not)"),
    "search": Command("compact_lm.tools.search_commands", "which model to ship under a byte budget: train many on Ray Tune, prune, quantize, measure"),
    "demo": Command("compact_lm.tools.demo", "the whole pipeline on the bundled corpus (or --corpus): train, prune, quantize, "
                    "export, verify, profile; every artifact and table in DIR"),
    "web": Command("compact_lm.web", "write a static web page that runs a model in the browser: suggestions as "
                   "you type, next characters, latency, a model card"),
    "serve": Command("compact_lm.web", "serve a site written by `compact-lm web` on 127.0.0.1"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _print_message(self, message: str, file=None) -> None:
        """As argparse's, except that a write error on stdout (help to a full disk) is not swallowed: it must not
        exit 0. Errors go to stderr as argparse sends them (where a failed write has nowhere to be told)."""
        if message and file is not None and file is sys.stdout:
            file.write(message)
        else:
            super()._print_message(message, file)


# ------------------------------------------------------------------- argument types the parts share
def whole_number(minimum: int):
    """argparse type: a whole number >= `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


positive_int = whole_number(1)


def number(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def output_path(text: str) -> str:
    """argparse type: where to write (an empty string would mean the current folder, never what was meant)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return text


def blas_threads(args) -> contextlib.AbstractContextManager:
    """Cap BLAS threads for the command, if --threads was given."""
    if getattr(args, "threads", None) is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=args.threads)


# ---------------------------------------------------------------------------------------- parser
def _command_in(argv: list[str]) -> str | None:
    """The sub-command named in argv (the top-level parser has no option that takes a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the command named in `argv` (all of them if None) gets its full options."""
    from . import __version__
    parser = _Parser(prog=PROG, description="Tiny character-level language models in NumPy: train, compress, run.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    wanted = set(COMMANDS) if argv is None else {_command_in(argv)}
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help[:1].upper() + command.help[1:] + ".")
        if name in wanted:
            configure = getattr(importlib.import_module(command.module), f"configure_{name.replace('-', '_')}")
            configure(p)
    return parser


def flag_of(parser: argparse.ArgumentParser, args: argparse.Namespace, setting: str) -> str:
    """How the command that ran spells a library setting: its `setting_flags` entry, else the option whose
    destination the setting is, else the setting's own name (never a flag the command does not have)."""
    named = getattr(args, "setting_flags", {}).get(setting)
    if named:
        return named
    for action in parser._subparsers._group_actions[0].choices[args.command]._actions:
        if action.dest == setting and action.option_strings:
            return max(action.option_strings, key=len)
    return setting


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (1 for a user error, 130 for Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = parser._subparsers._group_actions[0].choices[args.command]
        unknown = _late_positionals(command, args, unknown)
        if unknown:   # said by the command's own parser ("compact-lm train: error: ..."), as its other argument errors
            command.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.run(args)
    except Interrupted as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 130
    except SettingError as error:
        print(f"{PROG}: error: {error.worded(lambda name: flag_of(parser, args, name))}", file=sys.stderr)
        return 1
    except CompactLMError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:   # what a command does not word itself: writing its output to a full disk, `| head`
        return _output_failed(error)


def _late_positionals(command: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]) -> list[str]:
    """`unknown` less the optional positionals it fills: argparse settles an optional positional (complete's PREFIX)
    together with the required one before it, so one given after an option (`complete M -k 3 "the qu"`) is left over."""
    for action in command._get_positional_actions():
        if action.nargs == "?" and getattr(args, action.dest) == action.default and unknown:
            if unknown[0] == "--" and len(unknown) > 1:   # `-k 3 -- "-x"`: what follows -- is the positional
                unknown.pop(0)
            elif unknown[0].startswith("-"):
                continue
            setattr(args, action.dest, unknown.pop(0))
    return unknown


def _output_failed(error: OSError) -> int:
    """The exit code for output that could not be written: 0 when the reader went away (`| head`: nothing more to
    say), else 1 after one line (a full disk, /dev/full)."""
    _silence_stdout()
    if isinstance(error, BrokenPipeError):
        return 0
    where = f" ({error.filename})" if error.filename else " (writing the output)"
    print(f"{PROG}: error: {error.strerror or error}{where}", file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit cannot fail again with a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # no real stdout (a test's capture): nothing to flush there
        pass


def entry_point() -> None:
    """Console-script entry point."""
    try:
        code = main()
    except KeyboardInterrupt:   # before the command ran (importing its module): as during it
        print(f"{PROG}: interrupted", file=sys.stderr)
        code = 130
    except SystemExit as done:   # argparse's --help, --version and usage errors: their output is flushed below too
        code = done.code
    except OSError as error:   # --help to a full disk, or `| head`
        code = _output_failed(error)
    try:   # what is still buffered (a redirect to a file) is written here, so its errors are worded too
        if sys.stdout is not None:   # (None: started with stdout closed)
            sys.stdout.flush()
    except OSError as error:
        code = _output_failed(error) or code
    sys.exit(code)
