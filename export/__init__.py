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
from .metadata import onnx_metadata
from .native import build_native_graph
from .products import FloatGraphProducts, GraphProducts
from .sequence import build_sequence_graph
from .step import build_step_graph


def build_model(model: Model, *, sequence: bool = False, native_rnn: bool = False,
                products: GraphProducts | None = None) -> onnx.ModelProto:
    """The checked ONNX model of `model`: step or sequence graph, plain or native recurrent operators.

    `products` (plain graphs only) decides how weights are stored and multiplied: fp32 by default.
    """
    if native_rnn:
        if products is not None:
            raise ValueError("native recurrent operators hold their own fp32 weights; give products only for plain graphs")
        graph = build_native_graph(model, sequence)
        precision, int8 = "fp32", False
    else:
        products = FloatGraphProducts(model) if products is None else products
        graph = (build_sequence_graph if sequence else build_step_graph)(model, products)
        precision, int8 = products.name, products.int8
    kind = "sequence" if sequence else "step"
    metadata = onnx_metadata(model, graph=kind, native_rnn=native_rnn, int8=int8)
    doc = (f"compact-lm {model.config.cell} language model, {kind} graph "
           f"({'native recurrent operators' if native_rnn else 'plain operators'}, {precision})")
    return make_model(graph, metadata, doc)


def save_model(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write an ONNX model atomically (a failed write leaves no partial file)."""
    data = proto.SerializeToString()
    atomic_write(path, lambda handle: handle.write(data))


def export_model(model: Model, path: str | os.PathLike, *, sequence: bool = False, native_rnn: bool = False) -> None:
    """Export `model` as an fp32 .onnx file (step graph unless `sequence`)."""
    save_model(build_model(model, sequence=sequence, native_rnn=native_rnn), path)


__all__ = ["OPSET", "FloatGraphProducts", "GraphProducts", "build_model", "export_model", "save_model"]
