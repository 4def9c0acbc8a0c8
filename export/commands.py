"""The `export` sub-command (argument parsing and printing only)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from compact_lm.cli import output_path
from compact_lm.errors import CompactLMError


def configure_export(p: argparse.ArgumentParser) -> None:
    """Options of `compact-lm export`."""
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--out", type=output_path, required=True, metavar="FILE.onnx", help="the step graph: tokens [batch] -> log_probs")
    p.add_argument("--sequence", type=output_path, metavar="FILE.onnx", help="also write a sequence graph: tokens [batch, time]")
    p.add_argument("--native-rnn", action="store_true",
                   help="use ONNX's RNN/GRU/LSTM operators (float models only) instead of plain ones")
    p.set_defaults(run=_cmd_export)


def _cmd_export(args) -> int:
    from compact_lm.fileio import atomic_write_all, same_file
    from compact_lm.opener import open_model
    from . import build_model
    for flag, path in (("--out", args.out), ("--sequence", args.sequence)):
        if path is not None and same_file(path, args.model):
            raise CompactLMError(f"{flag} must differ from the input model (nothing is overwritten)")
    model = open_model(args.model).require_arrays("export")
    if args.native_rnn:
        model = model.as_float(f"{args.model} is a quantized model and --native-rnn is for float models only: "
                               "ONNX's RNN/GRU/LSTM operators have no integer variant (export it without --native-rnn)")
    targets = [(args.out, False)]
    if args.sequence is not None:
        if same_file(args.sequence, args.out):
            raise CompactLMError("--sequence must name a different file than --out")
        targets.append((args.sequence, True))
    for path, _ in targets:   # both folders exist before either file is written
        if not Path(path).resolve().parent.is_dir():
            raise CompactLMError(f"cannot write {path}: {Path(path).resolve().parent} is not an existing folder")
    operators = "native recurrent operators" if args.native_rnn else "plain operators"
    protos = [build_model(model, sequence=sequence, native_rnn=args.native_rnn) for _, sequence in targets]
    # both files or neither: a --sequence that cannot be written leaves --out as it was
    atomic_write_all([(path, lambda handle, data=proto.SerializeToString(): handle.write(data))
                      for (path, _), proto in zip(targets, protos)])
    for (path, sequence), proto in zip(targets, protos):
        print(f"{path}: {'sequence' if sequence else 'step'} graph, {operators}, {model.precision}, "
              f"opset {proto.opset_import[0].version}, {os.path.getsize(path):,} bytes")
    for warning in model.warnings():
        print(f"compact-lm: warning: {args.model}: {warning}", file=sys.stderr)
    return 0
