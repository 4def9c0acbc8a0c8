"""Shared helpers for building ONNX graphs: a node/initializer accumulator and model assembly.

Why a tiny builder instead of raw `onnx.helper` calls everywhere: every graph here is a few dozen
nodes whose intermediate names only need to be unique and readable (`l0/gh`, `l1/n`), and weights
must land in the outermost graph even when a Scan body uses them (so an int8 variant can swap how a
weight is stored without caring where it is used).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# One opset for every graph, fp32 and int8. Every operator used here has had its current meaning since
# opset 13 or earlier (QuantizeLinear's per-axis scales, Split's and Squeeze's inputs, LogSoftmax's
# axis); later versions only add types and attributes these graphs do not use. 17 is the default of
# PyTorch's TorchScript exporter (benchmarks/export_latency.py exports with it) and what every
# onnxruntime since 1.13 (2022) runs. A newer opset would shut out the older runtimes apps ship:
# onnxruntime 1.15.1 refuses an opset-28 / IR-14 file but runs these (benchmarks/onnxruntime_compat.py)
# with 1.32's outputs, bit for bit except its native RNN kernel; and 1.32 runs them as fast as at a newer
# opset (the figures: docs/experiments.md, "ONNX graphs").
OPSET = 17
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class GraphBuilder:
    """Collects nodes and initializers; `child()` makes a subgraph builder that shares names and weights."""

    def __init__(self, parent: "GraphBuilder | None" = None):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._root = parent._root if parent is not None else self
        if parent is None:
            self._used: set[str] = set()
            self._shared: dict[str, tuple[str, np.ndarray]] = {}

    def fresh(self, hint: str) -> str:
        """A value name not used anywhere in the model (subgraphs included), based on `hint`."""
        used = self._root._used
        name, n = hint, 1
        while name in used:
            n += 1
            name = f"{hint}_{n}"
        used.add(name)
        return name

    def reserve(self, *names: str) -> None:
        """Claim names chosen elsewhere (graph inputs and outputs) so no intermediate takes them."""
        for name in names:
            if name in self._root._used:
                raise ValueError(f"value name {name!r} is already used")
            self._root._used.add(name)

    def weight(self, hint: str, array: np.ndarray) -> str:
        """An initializer in the outermost graph (visible from every subgraph); returns its name."""
        name = self.fresh(hint)
        self._root.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def shared(self, key: str, array: np.ndarray) -> str:
        """One initializer per model for `key`, however many nodes use it (a constant such as a scale)."""
        root = self._root
        if key not in root._shared:
            root._shared[key] = (self.weight(key, array), np.array(array))
        name, value = root._shared[key]
        if value.dtype != np.asarray(array).dtype or not np.array_equal(value, array):
            raise ValueError(f"shared constant {key!r} was created with another value")
        return name

    def ints(self, hint: str, values) -> str:
        """An int64 1-D constant (split sizes, axes)."""
        return self.weight(hint, np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], hint: str, *, outputs: int = 1, out_names: list[str] | None = None,
           **attrs) -> str | list[str]:
        """Append one node; returns its output name (or list of names when outputs > 1).

        Output names are made from `hint`, unless given as `out_names` (reserved graph outputs, names from
        `fresh`, or "" for an optional output left out).
        """
        if out_names is None:
            out_names = [self.fresh(hint if outputs == 1 else f"{hint}.{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, out_names, name=self.fresh(f"{hint}:{op_type}"), **attrs))
        return out_names[0] if len(out_names) == 1 else out_names

    def split(self, x: str, sizes: list[int], hint: str, axis: int = -1) -> list[str]:
        """Split x along `axis` into blocks of the given sizes (gate blocks of a [.., G*H] tensor)."""
        return self.op("Split", [x, self.ints(f"{hint}.sizes", sizes)], hint, outputs=len(sizes), axis=axis)

    def rename(self, old: str, new: str) -> None:
        """Rename a value of this graph (e.g. a cell's output to a reserved graph output name) in every node."""
        for node in self.nodes:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]

    def child(self) -> "GraphBuilder":
        """A builder for a subgraph (Scan/Loop body) of this graph."""
        return GraphBuilder(self)

    def graph(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.GraphProto:
        """The GraphProto of what was collected (a subgraph keeps no initializers of its own)."""
        initializers = self.initializers if self._root is self else []
        return helper.make_graph(self.nodes, name, inputs, outputs, initializer=initializers)


def tensor(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    """Value info of a graph input/output; strings in `shape` are dynamic dims (batch, time)."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(graph: onnx.GraphProto, metadata: dict[str, str], doc: str, opset: int = OPSET) -> onnx.ModelProto:
    """Wrap a graph as a model at `opset`, with string metadata_props, then run the full checker."""
    from compact_lm import __version__
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that can carry this opset (8 for opset 17), not the newest onnx knows:
    # a runtime refuses a file whose IR version is newer than its own, whatever the operators
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="compact-lm", producer_version=__version__, doc_string=doc)
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model
