"""A minimal protobuf walk of an ONNX ModelProto that finds what compact-lm refuses to run, without importing onnx.

onnxruntime resolves external-data references (paths relative to the model, e.g. "../../etc/passwd")
and runs custom-domain operators from registered libraries while it builds the session, and exposes
neither through its Python API beforehand; so the file is checked here, before onnxruntime sees it.
Field numbers are those of onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
SparseTensorProto, FunctionProto); any other field is skipped by wire type without being decoded.
Imports nothing beyond the standard library.
"""
from __future__ import annotations

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
_MAX_NESTING = 64          # subgraphs within subgraphs (Scan bodies); deeper is refused, never a RecursionError
_EXTERNAL = 1              # TensorProto.DataLocation.EXTERNAL
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE, _NODE_DOMAIN, _NODE_OP_TYPE = 5, 7, 4
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_FUNCTION_NODE = 7


class _Malformed(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at data[pos]; (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _Malformed("varint runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _fields(data: memoryview):
    """Yield (field number, wire type, value) of one message: int for varints, memoryview for
    length-delimited fields, None for fixed32/fixed64 (skipped). Raises _Malformed on bad framing."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if size > end - pos:
                raise _Malformed("length-delimited field runs past the end")
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Malformed("fixed-size field runs past the end")
            yield number, wire, None
        else:   # 3/4 are deprecated groups, never used by ONNX; 6/7 do not exist
            raise _Malformed(f"unsupported wire type {wire}")


def _sub(fields, wanted: int):
    """The length-delimited values of field `wanted` among already-decoded fields."""
    return [value for number, wire, value in fields if number == wanted and wire == 2]


def _check_tensor(data: memoryview) -> str | None:
    fields = list(_fields(data))
    if any(n == _TENSOR_EXTERNAL_DATA and w == 2 for n, w, _ in fields):
        return "a tensor with external data"
    if any(n == _TENSOR_DATA_LOCATION and w == 0 and v == _EXTERNAL for n, w, v in fields):
        return "a tensor with data_location EXTERNAL"
    return None


def _check_sparse(data: memoryview) -> str | None:
    fields = list(_fields(data))
    for tensor in _sub(fields, _SPARSE_VALUES) + _sub(fields, _SPARSE_INDICES):
        found = _check_tensor(tensor)
        if found:
            return found
    return None


def _check_node(data: memoryview, depth: int) -> str | None:
    fields = list(_fields(data))
    for domain in _sub(fields, _NODE_DOMAIN):
        name = bytes(domain).decode("utf-8", "replace")
        if name not in DEFAULT_DOMAINS:
            op = next((bytes(v).decode("utf-8", "replace") for v in _sub(fields, _NODE_OP_TYPE)), "?")
            return f"operator {op!r} from the custom domain {name!r}"
    for attribute in _sub(fields, _NODE_ATTRIBUTE):
        attr = list(_fields(attribute))
        for tensor in _sub(attr, _ATTR_T) + _sub(attr, _ATTR_TENSORS):
            found = _check_tensor(tensor)
            if found:
                return found
        for sparse in _sub(attr, _ATTR_SPARSE) + _sub(attr, _ATTR_SPARSES):
            found = _check_sparse(sparse)
            if found:
                return found
        for graph in _sub(attr, _ATTR_G) + _sub(attr, _ATTR_GRAPHS):
            found = _check_graph(graph, depth + 1)
            if found:
                return found
    return None


def _check_graph(data: memoryview, depth: int) -> str | None:
    if depth > _MAX_NESTING:
        raise _Malformed(f"subgraphs nested more than {_MAX_NESTING} deep")
    fields = list(_fields(data))
    for tensor in _sub(fields, _GRAPH_INITIALIZER):
        found = _check_tensor(tensor)
        if found:
            return found
    for sparse in _sub(fields, _GRAPH_SPARSE_INITIALIZER):
        found = _check_sparse(sparse)
        if found:
            return found
    for node in _sub(fields, _GRAPH_NODE):
        found = _check_node(node, depth)
        if found:
            return found
    return None


def unsafe_onnx_feature(data: bytes) -> str | None:
    """What in a serialized ModelProto compact-lm refuses to run, or None.

    Refused: tensors (initializers, Constant values, in subgraphs and local functions too) whose data
    lives in external files, and nodes in a domain other than the default ONNX one (custom operators).
    Raises ValueError if the bytes are not a well-formed protobuf message.
    """
    view = memoryview(data)
    fields = list(_fields(view))
    for graph in _sub(fields, _MODEL_GRAPH):
        found = _check_graph(graph, 0)
        if found:
            return found
    for function in _sub(fields, _MODEL_FUNCTIONS):
        for node in _sub(list(_fields(function)), _FUNCTION_NODE):
            found = _check_node(node, 0)
            if found:
                return found
    return None


_MODEL_METADATA_PROPS, _ENTRY_KEY, _ENTRY_VALUE = 14, 1, 2


def metadata_props(data: bytes) -> dict[str, str]:
    """ModelProto.metadata_props (key -> value) read from the bytes, without onnx or onnxruntime.

    Raises ValueError if the bytes are not a well-formed protobuf message, hold no graph (an empty or
    cut-off file), or a string is not UTF-8.
    """
    props, graph = {}, False
    for number, wire, value in _fields(memoryview(data)):
        graph = graph or (number == _MODEL_GRAPH and wire == 2)
        if number == _MODEL_METADATA_PROPS and wire == 2:
            entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == 2}
            props[entry.get(_ENTRY_KEY, "")] = entry.get(_ENTRY_VALUE, "")
    if not graph:
        raise _Malformed("no graph")
    return props
