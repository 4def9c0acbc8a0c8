"""The `complete`, `repl` and `eval-complete` sub-commands (argument parsing and printing only)."""
from __future__ import annotations

import argparse
import json
import sys

from .cli import blas_threads, positive_int
from .errors import CompactLMError


def _add_completion_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file: .npz (NumPy) or .onnx (onnxruntime)")
    p.add_argument("-k", "--k", dest="k", type=positive_int, default=3, help="suggestions shown (default 3)")
    p.add_argument("--beam", type=positive_int, default=4, help="beam width of the word search (default 4)")
    p.add_argument("--max-chars", type=positive_int, default=16,
                   help="longest word completion in characters, counting the boundary that ends it (default 16)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="BLAS threads (default 1: one keystroke is too little work to split)")
    p.add_argument("--no-lexicon", dest="lexicon", action="store_false",
                   help="do not search the model's lexicon (the words of its training text) first")


def _add_user_words(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--user-words", metavar="FILE", default=None, help=f"the user's own words (a JSON file): {what}")


def _add_context_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context-cache", action="store_true",
                   help="while learning, also weigh each word typed by how much its context resembles the present "
                        "one (in memory only; more keystrokes saved, slower: docs/cli.md)")


def _existing_user_words(args) -> None:
    """A command that only reads --user-words needs the file to exist (a mistyped path is not an empty dictionary)."""
    if args.user_words is not None:
        from pathlib import Path
        from .fileio import check_file
        check_file(Path(args.user_words), "--user-words")


def _completer(args):
    from .autocomplete import Autocompleter
    return Autocompleter(args.model, beam=args.beam, max_chars=args.max_chars, threads=args.threads,
                         sequence=getattr(args, "sequence", None), user_words=getattr(args, "user_words", None),
                         lexicon=args.lexicon, context_cache=getattr(args, "context_cache", False))


def configure_complete(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm complete`."""
    _add_completion_options(p)
    p.add_argument("prefix", metavar="PREFIX", nargs="?", help="the text typed so far")
    p.add_argument("--prefix-file", metavar="FILE",
                   help="read the text typed so far from FILE (- for standard input) instead of PREFIX, "
                        "without the file's final newline: for prefixes too long for a command line")
    p.add_argument("--next", action="store_true", help="also print the most likely next characters")
    p.add_argument("--sequence", metavar="SEQ.onnx", help="the model's sequence graph: the prefix in one call")
    _add_user_words(p, "mixed into the completions (read, never written)")
    p.set_defaults(run=_cmd_complete, parser=p)


def _prefix(args) -> str:
    """PREFIX, or the whole of --prefix-file (exactly one of them)."""
    if (args.prefix is None) == (args.prefix_file is None):   # a usage error: argparse's message and exit 2
        args.parser.error("give the text typed so far as PREFIX or with --prefix-file FILE (one of them)")
    if args.prefix is not None:
        return args.prefix
    if args.prefix_file == "-":
        text = sys.stdin.read()
    else:
        from .data import SAVE_AS_UTF8, read_text
        text = read_text(args.prefix_file, what="--prefix-file", utf8_hint=SAVE_AS_UTF8)
    # the newline that ends a file (or `echo`) is not typed text: "Alice was b\n" completes "b"
    return text[:-1] if text.endswith("\n") else text


def _cmd_complete(args) -> int:
    from .repl import format_suggestions, quoted
    prefix = _prefix(args)
    _existing_user_words(args)
    with blas_threads(args):
        completer = _completer(args)
        suggestions = completer.complete(prefix, args.k)
        next_chars = completer.next_chars(prefix, args.k) if args.next else []
    for s in suggestions:
        print(f"{s.prob:8.2%}  {quoted(s.text)}")
    if not suggestions:
        unknown = False
        for char in reversed(prefix):   # the word being typed: after the last boundary
            if completer.is_boundary(char):
                break
            unknown = unknown or completer._is_unknown(char)
        print("(no completion: the word holds a character outside the model's vocabulary"
              + (" and no word of --user-words continues it)" if completer.user_words is not None else ")") if unknown
              else "(no completion within --max-chars)")
    if args.next:
        print("next characters: " + format_suggestions(next_chars))
    return 0


def configure_repl(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm repl`."""
    _add_completion_options(p)
    p.add_argument("--sequence", metavar="SEQ.onnx", help="the model's sequence graph: pasted text in one call")
    _add_user_words(p, "learns the words you type and saves them at every newline and on exit (created if missing)")
    _add_context_cache(p)
    p.set_defaults(run=_cmd_repl)


def _cmd_repl(args) -> int:
    from .repl import repl
    if args.context_cache and args.user_words is None:
        raise CompactLMError("--context-cache weighs the words learning finds: give --user-words FILE")
    with blas_threads(args):
        repl(_completer(args), args.k)
    return 0


def configure_eval_complete(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm eval-complete`."""
    _add_completion_options(p)
    p.add_argument("--text", required=True, metavar="FILE", help="the text a person types")
    p.add_argument("--limit", type=positive_int, default=10000,
                   help="type only the first N characters of the text (default 10000)")
    p.add_argument("--corpus", nargs="+", metavar="FILE", default=None,
                   help="the model's training text, if not at the paths in its metadata (its training split is used)")
    p.add_argument("--order", type=positive_int, default=None, help="n-gram baseline order (default 7; lower for a vocabulary of 464+ characters: 6, 5 from 1,291, 4 from 5,405, as n-gram keys fit in 62 bits)")
    p.add_argument("--no-baseline", action="store_true",
                   help="score the model alone: no n-gram baselines (which count the whole training split)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--learn", action="store_true",
                   help="also score the model learning the user's words as the text is typed (from an empty dictionary)")
    _add_user_words(p, "--learn starts from its words (read, never written)")
    _add_context_cache(p)
    p.set_defaults(run=_cmd_eval_complete)


def _cmd_eval_complete(args) -> int:
    from .complete_eval import eval_complete, format_report
    from .data import read_text
    _existing_user_words(args)
    if args.no_baseline and args.corpus:
        raise CompactLMError("--corpus is the baselines' training text: not with --no-baseline")
    whole = read_text(args.text, encoding_errors=args.encoding_errors, what="--text")
    text = whole[:args.limit]
    if not text:
        raise CompactLMError(f"--text {args.text}: the file is empty")
    source = f"--text {args.text}" + ("" if len(whole) <= args.limit else f" (its first {args.limit:,} characters: --limit)")
    with blas_threads(args):
        result = eval_complete(args.model, text, k=args.k, corpus=args.corpus, order=args.order,
                               beam=args.beam, max_chars=args.max_chars, learn=args.learn, user_words=args.user_words,
                               lexicon=args.lexicon, context_cache=args.context_cache, text_source=source,
                               baseline=not args.no_baseline,
                               log=None if args.quiet else lambda message: print(f"eval-complete: {message}", file=sys.stderr, flush=True))
    print(json.dumps(result) if args.json else format_report(result))
    return 0
