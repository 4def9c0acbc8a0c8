"""The `compact-lm` command line: train, eval, sample, info; the compression, export, autocomplete and
profiling commands register themselves from their own modules."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

from .errors import CompactLMError

PROG = "compact-lm"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


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


_positive_int = whole_number(1)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _threads(args) -> contextlib.AbstractContextManager:
    """Cap BLAS threads for the command, if --threads was given."""
    if getattr(args, "threads", None) is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=args.threads)


# ------------------------------------------------------------------------------------- train
TRAIN_OPTIONS = [
    # flag, config field, type, help
    ("--cell", "cell", str, "recurrent cell: rnn, gru or lstm (default gru)"),
    ("--layers", "layers", _positive_int, "recurrent layers (default 1)"),
    ("--embed", "embed", _positive_int, "embedding size E (default 64)"),
    ("--hidden", "hidden", _positive_int, "hidden size H (default 256)"),
    ("--seq-len", "seq_len", _positive_int, "BPTT window T in characters (default 128)"),
    ("--batch", "batch", _positive_int, "parallel streams B (default 64)"),
    ("--optimizer", "optimizer", str, "adamw or sgd (default adamw)"),
    ("--lr", "lr", _number, "peak learning rate (default 5e-3)"),
    ("--min-lr-ratio", "min_lr_ratio", _number, "final / peak learning rate of the cosine decay (default 0.05)"),
    ("--warmup-steps", "warmup_steps", int, "linear warm-up steps (default 100)"),
    ("--momentum", "momentum", _number, "SGD momentum (default 0.9)"),
    ("--dropout", "dropout", _number, "dropout between layers and before the head (default 0.2)"),
    ("--weight-drop", "weight_drop", _number, "DropConnect on recurrent weights W_hh, one mask per window (default 0)"),
    ("--weight-decay", "weight_decay", _number, "decoupled weight decay on matrices (default 0.1)"),
    ("--label-smoothing", "label_smoothing", _number, "label smoothing epsilon (default 0)"),
    ("--clip", "clip", _number, "global gradient-norm clip (default 1.0)"),
    ("--steps", "steps", _positive_int, "budget in optimizer steps (default 1000 if no budget is given)"),
    ("--epochs", "epochs", _number, "budget in passes over the training split"),
    ("--minutes", "minutes", _number, "budget in wall-clock minutes"),
    ("--eval-every", "eval_every", _positive_int, "steps between evaluations + checkpoints (default 200)"),
    ("--seed", "seed", int, "random seed (default 0)"),
    ("--min-count", "min_count", _positive_int, "characters seen fewer times become <unk> (default 1)"),
    ("--encoding-errors", "encoding_errors", str, "strict, replace or ignore invalid UTF-8 (default strict)"),
    ("--dtype", "dtype", str, "float32 or float64 (default float32)"),
    ("--init", "init", str, "start from this float model's weights (its sizes and vocabulary win)"),
    ("--teacher", "teacher", str, "distil from this float model (same vocabulary)"),
    ("--distill", "distill", _number, "weight of the teacher's distribution in the target (default 0)"),
]


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on text files (default: the bundled Alice corpus)",
                       description="Train a character-level RNN/GRU/LSTM language model in NumPy.")
    p.add_argument("--corpus", nargs="+", metavar="FILE", default=argparse.SUPPRESS,
                   help="UTF-8 text files (.gz accepted); default: the bundled Alice's Adventures in Wonderland")
    for flag, dest, kind, text in TRAIN_OPTIONS:
        p.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=text)
    p.add_argument("--split", nargs=3, type=_number, metavar=("TRAIN", "VAL", "TEST"), default=argparse.SUPPRESS,
                   help="contiguous split fractions (default 0.9 0.05 0.05)")
    p.add_argument("--lowercase", dest="lowercase", action="store_true", default=argparse.SUPPRESS,
                   help="lowercase the text")
    p.add_argument("--no-nfc", dest="nfc", action="store_false", default=argparse.SUPPRESS,
                   help="keep the text as is (default: Unicode NFC normalization)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for model.npz, state.npz, history")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out (bit-exact)")
    p.add_argument("--threads", type=_positive_int, help="cap BLAS threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_train)


def _train_config(args):
    from .config import TrainConfig
    from .trainer import STATE_FILE
    from .fileio import load_npz
    given = {dest: getattr(args, dest) for _, dest, _, _ in TRAIN_OPTIONS if hasattr(args, dest)}
    for dest in ("corpus", "split", "lowercase", "nfc"):
        if hasattr(args, dest):
            given[dest] = tuple(getattr(args, dest)) if dest in ("corpus", "split") else getattr(args, dest)
    budgets = [b for b in ("steps", "epochs", "minutes") if b in given]
    if len(budgets) > 1:
        raise CompactLMError(f"give only one budget, not {' and '.join('--' + b for b in budgets)}")
    if args.resume:
        state_path = Path(args.out) / STATE_FILE
        if not state_path.exists():
            raise CompactLMError(f"--resume: {state_path} does not exist (nothing to resume)")
        try:
            saved = TrainConfig.from_json(load_npz(state_path, "training state")[1]["train_config"]).to_json()
        except (KeyError, TypeError, ValueError) as error:
            raise CompactLMError(f"--resume: {state_path} is not a compact-lm training state ({error})") from None
        if budgets:   # a budget given on resume replaces the saved one, which the check below then reports
            for b in ("steps", "epochs", "minutes"):
                saved[b] = None
        saved.update(given)
        return TrainConfig.from_json(saved)
    return TrainConfig(**given)


def _cmd_train(args) -> int:
    from .trainer import Trainer
    config = _train_config(args)
    with _threads(args):
        trainer = Trainer(config, args.out, resume=args.resume, progress=not args.quiet)
        result = trainer.run()
    metrics = result.model.info["metrics"]
    lines = [f"model: {Path(args.out) / 'model.npz'} ({result.model.num_params:,} parameters, {trainer.step} steps)"]
    for split in ("val", "test"):
        if split in metrics:
            lines.append(f"{split}: {metrics[split]['bpc']:.4f} bpc (perplexity {metrics[split]['perplexity']:.3f})")
    lines.append(f"speed: {metrics['chars_per_second']:,.0f} characters/second")
    print("\n".join(lines))
    return 0


# -------------------------------------------------------------------------------------- eval
def _cmd_eval(args) -> int:
    from .data import read_text
    from .model import load
    model = load(args.model)
    text = read_text(args.text, encoding_errors=args.encoding_errors, what="--text")
    with _threads(args):
        ids = model.vocab.encode(text)
        if len(ids) < 2:
            raise CompactLMError(f"--text {args.text}: needs at least 2 characters")
        metrics = model.evaluate_ids(ids)
    result = metrics.to_json()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['chars']:,} characters scored ({result['unknown']:,} unknown): "
              f"{result['nats']:.4f} nats, {result['bpc']:.4f} bpc, perplexity {result['perplexity']:.3f}")
    return 0


# ------------------------------------------------------------------------------------ sample
def _cmd_sample(args) -> int:
    from .backends import NumpyBackend
    from .model import load
    from .sample import sample
    model = load(args.model)
    text = sample(NumpyBackend(model), model.vocab, prompt=args.prompt, length=args.length,
                  temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    sys.stdout.write(args.prompt + text + "\n")
    return 0


# -------------------------------------------------------------------------------------- info
def model_summary(path: str) -> dict:
    """Config, vocabulary size, per-tensor shape/dtype/bytes and totals of a model file (float or int8)."""
    from .model import load
    model = load(path)
    arrays = getattr(model, "params", None) or model.arrays
    tensors = {name: {"shape": list(a.shape), "dtype": str(a.dtype), "params": int(a.size), "bytes": int(a.nbytes)}
               for name, a in arrays.items()}
    quantization = model.info.get("quantization", {})
    # what the same weights take as float32 (for an int8 model: its float source, table unfolded)
    fp32_bytes = 4 * int(quantization.get("source_params", model.num_params))
    return {"file": str(path), "file_bytes": os.path.getsize(path), **model.config.to_json(),
            "vocab_size": model.vocab.size, "params": model.num_params, "quantized": hasattr(model, "arrays"),
            "param_bytes": int(sum(t["bytes"] for t in tensors.values())), "fp32_bytes": fp32_bytes,
            "tensors": tensors, "steps": model.info.get("steps", 0), "metrics": model.info.get("metrics", {}),
            "train_config": model.info.get("train_config", {}), "pruning": model.info.get("pruning", [])}


def onnx_summary(path: str) -> dict:
    """Graph kind, opset, the model metadata it carries and per-initializer shape/dtype/bytes of a compact-lm .onnx file."""
    import numpy as np
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import helper
    from .ort_backend import checked_metadata, read_onnx
    data = read_onnx(path)                   # the safety checks of every .onnx load; parsed once, from these bytes
    try:
        proto = onnx.load_model_from_string(data)
        props = {entry.key: entry.value for entry in proto.metadata_props}
    except (DecodeError, ValueError, UnicodeDecodeError) as error:
        raise CompactLMError(f"{path} is not a valid ONNX model (truncated or corrupted?): {error}") from None
    meta = checked_metadata(path, props)
    tensors = {}
    for tensor in proto.graph.initializer:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        size = int(np.prod(tensor.dims, dtype=np.int64))
        tensors[tensor.name] = {"shape": list(tensor.dims), "dtype": str(dtype), "params": size,
                                "bytes": size * dtype.itemsize}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"file": str(path), "file_bytes": len(data), "graph": meta["graph"], "opset": opset,
            "ir_version": proto.ir_version, "int8": bool(meta.get("int8")), "native_rnn": bool(meta.get("native_rnn")),
            **{k: meta.get(k) for k in ("cell", "layers", "embed_size", "hidden_sizes", "vocab_size")},
            "tensors": tensors, "param_bytes": int(sum(t["bytes"] for t in tensors.values())),
            "steps": meta.get("steps", 0), "metrics": meta.get("metrics", {})}


def _is_onnx(path: str) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def _cmd_info(args) -> int:
    summary = onnx_summary(args.model) if _is_onnx(args.model) else model_summary(args.model)
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
    print(f"{summary['file']}: {summary['cell']} model, {summary['layers']} layer(s), "
          f"embed {summary['embed_size']}, hidden {summary['hidden_sizes']}, vocab {summary['vocab_size']}")
    print(f"{summary['params']:,} parameters, {summary['param_bytes']:,} bytes of arrays "
          f"({summary['param_bytes'] / summary['fp32_bytes']:.3f} of the fp32 original's {summary['fp32_bytes']:,}), "
          f"{summary['file_bytes']:,} bytes on disk, {summary['steps']:,} training steps"
          + (", int8" if summary["quantized"] else ""))
    _print_tensors(summary)
    return 0


def _print_tensors(summary: dict) -> None:
    width = max(len(n) for n in summary["tensors"])
    for name, t in summary["tensors"].items():
        print(f"  {name:<{width}}  {str(tuple(t['shape'])):>12}  {t['dtype']:>8}  {t['params']:>9,} params  {t['bytes']:>10,} B")
    for split in ("val", "test"):
        if split in summary["metrics"]:
            print(f"{split}: {summary['metrics'][split]['bpc']:.4f} bpc")


# ----------------------------------------------------------------------------- export, verify
VERIFY_CHARS = 2000   # characters compared by `verify` unless --chars says otherwise


def _onnx_source(path: str, native_rnn: bool = False):
    """Load a float or quantized model file for ONNX export / verify (native recurrent operators: float only)."""
    from .model import load
    from .quantized import QuantizedModel
    model = load(path)
    if native_rnn and isinstance(model, QuantizedModel):
        raise CompactLMError(f"{path} is a quantized model and --native-rnn is for float models only: ONNX's "
                             "RNN/GRU/LSTM operators have no integer variant (export it without --native-rnn)")
    return model


def _cmd_export(args) -> int:
    from .export import build_model, save_model
    from .quantized import QuantizedModel
    from .fileio import same_file
    for flag, path in (("--out", args.out), ("--sequence", args.sequence)):
        if path is not None and same_file(path, args.model):
            raise CompactLMError(f"{flag} must differ from the input model (nothing is overwritten)")
    model = _onnx_source(args.model, args.native_rnn)
    targets = [(args.out, False)]
    if args.sequence is not None:
        if same_file(args.sequence, args.out):
            raise CompactLMError("--sequence must name a different file than --out")
        targets.append((args.sequence, True))
    for path, _ in targets:   # both folders exist before either file is written
        if not Path(path).resolve().parent.is_dir():
            raise CompactLMError(f"cannot write {path}: {Path(path).resolve().parent} is not an existing folder")
    operators = "native recurrent operators" if args.native_rnn else "plain operators"
    for path, sequence in targets:
        proto = build_model(model, sequence=sequence, native_rnn=args.native_rnn)
        save_model(proto, path)
        precision = "int8" if isinstance(model, QuantizedModel) else "fp32"
        print(f"{path}: {'sequence' if sequence else 'step'} graph, {operators}, {precision}, "
              f"opset {proto.opset_import[0].version}, {os.path.getsize(path):,} bytes")
    if isinstance(model, QuantizedModel) and model.weight_bits > 7:
        print(f"{PROG}: warning: {args.model} has {model.weight_bits}-bit weights; onnxruntime's AVX2 kernels without "
              "VNNI can saturate their uint8 x int8 pair sums, so there the graph may not match the NumPy int8 "
              "path (7-bit weights are exact on every CPU)", file=sys.stderr)
    return 0


def _comparison_lines(results) -> list[str]:
    """The free-running table of `verify`: one line per mode."""
    lines = [f"{'mode':<9} {'batch':>5} {'positions':>9} {'max |dlogp|':>11} {'top-1 agree':>11} "
             f"{'bpc numpy':>9} {'bpc onnx':>9} {'d bpc':>9}"]
    for r in results:
        lines.append(f"{r.mode:<9} {r.batch:>5} {r.positions:>9,} {r.max_abs_diff:>11.2e} {r.top1_agreement:>11.2%} "
                     f"{r.bpc_reference:>9.4f} {r.bpc_candidate:>9.4f} {r.bpc_difference:>+9.1e}")
    return lines


def _cmd_verify(args) -> int:
    from .backends import NumpyBackend
    from .data import SAVE_AS_UTF8, default_corpus_path, read_text
    from .export.verify import TOLERANCE, verify_backends
    from .ort_backend import OrtBackend, metadata_differences
    from .quantized import QuantizedModel
    model = _onnx_source(args.model)
    backend = OrtBackend(args.onnx, sequence_path=args.sequence)
    int8 = backend.metadata.get("int8") is True
    if int8 != isinstance(model, QuantizedModel):
        raise CompactLMError(f"{args.onnx} is an {'int8' if int8 else 'fp32'} export and {args.model} a "
                             f"{'float' if int8 else 'quantized'} model: "
                             "verify an export against the model it came from")
    differences = metadata_differences(model.metadata(), backend.metadata)
    if differences:
        raise CompactLMError(f"{args.onnx} was exported from another model than {args.model} ({'; '.join(differences)})")
    if args.text is None:   # the end of the bundled corpus (its test split)
        ids = model.vocab.encode(default_corpus_path().read_text(encoding="utf-8"))[-args.chars:]
    else:
        ids = model.vocab.encode(read_text(args.text, what="--text", utf8_hint=SAVE_AS_UTF8))[:args.chars]
    if len(ids) < 8:
        source = f"--text {args.text}" if args.text is not None else f"--chars {args.chars}"
        raise CompactLMError(f"{source}: needs at least 8 characters (4 streams of 2)")
    results = verify_backends(NumpyBackend(model), backend, ids, sequence=backend.has_sequence_graph)
    worst = max(r.max_abs_diff for r in results)
    if args.json:
        print(json.dumps({"model": str(args.model), "onnx": str(args.onnx), "chars": int(len(ids)), "int8": int8,
                          "tolerance": TOLERANCE, "max_abs_diff": worst, "ok": worst <= TOLERANCE,
                          "results": [r.to_json() for r in results]}))
    else:
        kind = " int8" if int8 else ""
        print(f"{args.model} (NumPy{kind}) vs {args.onnx} (onnxruntime{kind}) on {len(ids):,} characters:")
        print("\n".join(_comparison_lines(results)))
        if not backend.has_sequence_graph:
            print("(no sequence graph: give --sequence FILE.onnx to check one)")
    if worst > TOLERANCE:
        raise CompactLMError(f"max |delta log-prob| {worst:.3g} exceeds {TOLERANCE:g}: {args.onnx} does not match {args.model}")
    if not args.json:
        print(f"ok: max |delta log-prob| {worst:.2e} <= {TOLERANCE:g}")
    return 0


# ------------------------------------------------------------- complete, repl, eval-complete
def _completer(args):
    from .autocomplete import Autocompleter
    return Autocompleter(args.model, beam=args.beam, max_chars=args.max_chars, threads=args.threads,
                         sequence=getattr(args, "sequence", None))


def _cmd_complete(args) -> int:
    from .repl import format_suggestions, quoted
    with _threads(args):
        completer = _completer(args)
        suggestions = completer.complete(args.prefix, args.k)
        next_chars = completer.next_chars(args.prefix, args.k) if args.next else []
    for s in suggestions:
        print(f"{s.prob:8.2%}  {quoted(s.text)}")
    if not suggestions:
        print("(no completion within --max-chars)")
    if args.next:
        print("next characters: " + format_suggestions(next_chars))
    return 0


def _cmd_repl(args) -> int:
    from .repl import repl
    with _threads(args):
        repl(_completer(args), args.k)
    return 0


def _cmd_eval_complete(args) -> int:
    from .complete_eval import eval_complete, format_report
    from .data import read_text
    text = read_text(args.text, encoding_errors=args.encoding_errors, what="--text")[:args.limit]
    if not text:
        raise CompactLMError(f"--text {args.text}: the file is empty")
    with _threads(args):
        result = eval_complete(args.model, text, k=args.k, corpus=args.corpus, order=args.order,
                               beam=args.beam, max_chars=args.max_chars)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _add_completion_options(p) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file: .npz (NumPy) or .onnx (onnxruntime)")
    p.add_argument("-k", "--k", dest="k", type=_positive_int, default=3, help="suggestions shown (default 3)")
    p.add_argument("--beam", type=_positive_int, default=4, help="beam width of the word search (default 4)")
    p.add_argument("--max-chars", type=_positive_int, default=16,
                   help="longest completion in characters, boundary included (default 16)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="BLAS threads (default 1: one keystroke is too little work to split)")


def _add_completion_commands(sub) -> None:
    p = sub.add_parser("complete", help="the most likely completions of the word being typed, with probabilities")
    _add_completion_options(p)
    p.add_argument("prefix", metavar="PREFIX", help="the text typed so far")
    p.add_argument("--next", action="store_true", help="also print the most likely next characters")
    p.add_argument("--sequence", metavar="SEQ.onnx", help="the model's sequence graph: the prefix in one call")
    p.set_defaults(run=_cmd_complete)

    p = sub.add_parser("repl", help="type and see completions update per keystroke (per line without a terminal)")
    _add_completion_options(p)
    p.add_argument("--sequence", metavar="SEQ.onnx", help="the model's sequence graph: pasted text in one call")
    p.set_defaults(run=_cmd_repl)

    p = sub.add_parser("eval-complete", help="keystroke savings and accuracy of word completion, vs an n-gram baseline")
    _add_completion_options(p)
    p.add_argument("--text", required=True, metavar="FILE", help="the text a person types")
    p.add_argument("--limit", type=_positive_int, default=10000,
                   help="type only the first N characters of the text (default 10000)")
    p.add_argument("--corpus", nargs="+", metavar="FILE", default=None,
                   help="the model's training text, if not at the paths in its metadata (its training split is used)")
    p.add_argument("--order", type=_positive_int, default=None, help="n-gram baseline order (default 7)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.set_defaults(run=_cmd_eval_complete)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = _Parser(prog=PROG, description="Tiny character-level language models in NumPy: train, compress, run.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)

    from .tools.commands import add_commands as add_compression_commands
    add_compression_commands(sub, _positive_int, _number)

    p = sub.add_parser("eval", help="nats, bpc and perplexity of a text under a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--text", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--threads", type=_positive_int, help="cap BLAS threads")
    p.set_defaults(run=_cmd_eval)

    p = sub.add_parser("sample", help="generate text from a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--prompt", default="")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--temperature", type=_number, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_cmd_sample)

    p = sub.add_parser("info", help="config, vocabulary and per-tensor sizes of a model (.npz or .onnx)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("export", help="write a model as an ONNX step graph (and a sequence graph): "
                                      "fp32 for a float model, int8 for a quantized one")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the step graph: tokens [batch] -> log_probs")
    p.add_argument("--sequence", metavar="FILE.onnx", help="also write a sequence graph: tokens [batch, time]")
    p.add_argument("--native-rnn", action="store_true",
                   help="use ONNX's RNN/GRU/LSTM operators (not in onnxruntime mobile builds; float models only) "
                        "instead of plain ones")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("verify", help="compare an exported .onnx under onnxruntime with the NumPy model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("onnx", metavar="FILE.onnx")
    p.add_argument("--sequence", metavar="FILE.onnx", help="a sequence graph of the same model to check too")
    p.add_argument("--text", metavar="FILE", help="text to compare on (default: the end of the bundled corpus)")
    p.add_argument("--chars", type=_positive_int, default=VERIFY_CHARS,
                   help=f"characters of the text to use (default {VERIFY_CHARS})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_cmd_verify)

    _add_completion_commands(sub)

    from .tools.profile_commands import add_commands as add_profile_commands   # profile, demo
    add_profile_commands(sub, _positive_int, _number)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (1 for a user error, 130 for Ctrl-C)."""
    from .trainer import Interrupted
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Interrupted as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 130
    except CompactLMError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
