"""compact_lm.export: a Model as ONNX graphs, with everything an app needs in the file's metadata.

    export_model(model, "model.onnx")                      # step graph, plain operators
    export_model(model, "seq.onnx", sequence=True)         # the same model over [batch, time] (Scan)
    export_model(model, "native.onnx", native_rnn=True)    # ONNX's own RNN/GRU/LSTM operators

Inputs, outputs and metadata are documented in export/interface.py and export/metadata.py; run a
file with compact_lm.ort_backend.OrtBackend.
"""
from __future__ import annotations

import os

import onnx

from compact_lm.fileio import atomic_write
from compact_lm.model import Model

from .graph import OPSET, make_model
from .linear import FP32, Arithmetic
from .metadata import onnx_metadata
from .native import build_native_graph
from .sequence import build_sequence_graph
from .step import build_step_graph


def build_model(model: Model, *, sequence: bool = False, native_rnn: bool = False,
                arithmetic: Arithmetic = FP32) -> onnx.ModelProto:
    """The checked ONNX model of `model`: step or sequence graph, plain or native recurrent operators."""
    if native_rnn:
        graph = build_native_graph(model, sequence, arithmetic)
    else:
        graph = (build_sequence_graph if sequence else build_step_graph)(model, arithmetic)
    kind = "sequence" if sequence else "step"
    metadata = onnx_metadata(model, graph=kind, native_rnn=native_rnn, int8=arithmetic.int8)
    doc = (f"compact-lm {model.config.cell} language model, {kind} graph "
           f"({'native recurrent operators' if native_rnn else 'plain operators'}, {arithmetic.name})")
    return make_model(graph, metadata, doc)


def save_model(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write an ONNX model atomically (a failed write leaves no partial file)."""
    data = proto.SerializeToString()
    atomic_write(path, lambda handle: handle.write(data))


def export_model(model: Model, path: str | os.PathLike, *, sequence: bool = False, native_rnn: bool = False) -> None:
    """Export `model` as an fp32 .onnx file (step graph unless `sequence`)."""
    save_model(build_model(model, sequence=sequence, native_rnn=native_rnn), path)


__all__ = ["OPSET", "Arithmetic", "FP32", "build_model", "export_model", "save_model"]
