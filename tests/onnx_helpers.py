"""Helpers the fp32 and int8 export tests share."""
import numpy as np
import onnx


def all_op_types(graph: onnx.GraphProto) -> set[str]:
    """Operator types of a graph and of every subgraph inside it."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                ops |= all_op_types(attribute.g)
    return ops


def random_state(backend, batch: int, seed: int = 1, spread: float = 1.0) -> list:
    """A non-zero state in (-1, 1), tanh(spread * normal), so that the state inputs are really used."""
    rng = np.random.default_rng(seed)
    return [tuple(np.tanh(spread * rng.standard_normal(s.shape)).astype(np.float32) for s in layer)
            for layer in backend.initial_state(batch)]
