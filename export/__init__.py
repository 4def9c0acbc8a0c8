"""compact_lm.export: a Model (fp32) or QuantizedModel (int8) as ONNX graphs, with everything an app needs in
the file's metadata.

    export_model(model, "model.onnx")                      # step graph, plain operators
    export_model(model, "seq.onnx", sequence=True)         # the same model over [batch, time] (Scan)
    export_model(model, "native.onnx", native_rnn=True)    # ONNX's own RNN/GRU/LSTM operators
    export_model(quantized_model, "int8.onnx")             # a QuantizedModel: int8 step graph (also sequence)

Inputs, outputs and metadata are documented in export/interface.py and export/metadata.py; run a
file with compact_lm.ort_backend.OrtBackend.
"""
from __future__ import annotations

import os

import onnx

from compact_lm.fileio import atomic_write
from compact_lm.model_file import ModelFile

from .graph import OPSET, make_model
from .metadata import onnx_metadata
from .native import build_native_graph
from .products import FloatGraphProducts, GraphProducts, default_products
from .products_int8 import Int8GraphProducts
from .sequence import build_sequence_graph
from .step import build_step_graph


def build_model(model: ModelFile, *, sequence: bool = False, native_rnn: bool = False,
                products: GraphProducts | None = None) -> onnx.ModelProto:
    """The checked ONNX model of `model`: step or sequence graph, plain or native recurrent operators.

    `products` (plain graphs only) decides how weights are stored and multiplied: int8 for a
    QuantizedModel, fp32 for a float Model, unless given.
    """
    model = model.require_arrays("export")
    if native_rnn:
        model = model.as_float("a quantized model exports only as plain-operator graphs: ONNX's RNN/GRU/LSTM "
                               "operators have no integer variant")
        if products is not None:
            raise ValueError("native recurrent operators hold their own fp32 weights; give products only for plain graphs")
        graph = build_native_graph(model, sequence)
        precision, int8, opset = "fp32", False, OPSET
    else:
        products = default_products(model) if products is None else products
        graph = (build_sequence_graph if sequence else build_step_graph)(model, products)
        precision, int8, opset = products.name, products.int8, products.opset
    kind = "sequence" if sequence else "step"
    metadata = onnx_metadata(model, graph=kind, native_rnn=native_rnn, int8=int8, opset=opset)
    doc = (f"compact-lm {model.config.cell} language model, {kind} graph "
           f"({'native recurrent operators' if native_rnn else 'plain operators'}, {precision})")
    return make_model(graph, metadata, doc, opset)


def save_model(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write an ONNX model atomically (a failed write leaves no partial file)."""
    data = proto.SerializeToString()
    atomic_write(path, lambda handle: handle.write(data))


def export_model(model: ModelFile, path: str | os.PathLike, *, sequence: bool = False,
                 native_rnn: bool = False) -> None:
    """Export `model` as an .onnx file (step graph unless `sequence`; int8 if the model is quantized)."""
    model.lexicon   # a damaged lexicon is refused, not exported
    save_model(build_model(model, sequence=sequence, native_rnn=native_rnn), path)


__all__ = ["OPSET", "FloatGraphProducts", "GraphProducts", "Int8GraphProducts", "build_model",
           "default_products", "export_model", "save_model"]
