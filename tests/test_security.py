"""Hostile model files: .npy headers declaring absurd sizes or unexpected dtypes, and .onnx files with
external data or custom-domain operators, are refused with one-line errors before anything is loaded."""
import re
import struct
import time
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compact_lm.errors import CompactLMError
from compact_lm.export import build_model, export_model
from compact_lm import load
from compact_lm.model import Model
from compact_lm.onnx_scan import unsafe_onnx_feature
from compact_lm.ort_backend import OrtBackend
from cli_helpers import assert_one_line_error, run
from conftest import random_model


def _npy_header(dtype_descr: str, shape: tuple, version=(1, 0)) -> bytes:
    """A .npy header (magic, length, dict padded to 64 bytes) declaring `shape` of `dtype_descr`, no data."""
    header = repr({"descr": dtype_descr, "fortran_order": False, "shape": shape}).encode("latin1")
    prefix_len = 10 if version == (1, 0) else 12
    header += b" " * (-(prefix_len + len(header) + 1) % 64) + b"\n"
    length = struct.pack("<H", len(header)) if version == (1, 0) else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes(version) + length + header


def _rewrite(path, replace: dict[str, bytes]) -> None:
    """Rewrite the zip at `path`, replacing the named members' bytes (others kept)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members.update(replace)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_a_header_declaring_a_terabyte_array_fails_fast(tmp_path, version):
    path = tmp_path / "m.npz"
    random_model().save(path)
    _rewrite(path, {"head.bias.npy": _npy_header("<f4", (2 ** 38,), version)})   # 1 TiB of float32
    start = time.perf_counter()
    with pytest.raises(CompactLMError, match=r"head\.bias\.npy.*declares \d+ bytes.*more than 2 GiB") as caught:
        load(path)
    assert time.perf_counter() - start < 1.0
    assert "\n" not in str(caught.value) and "m.npz" in str(caught.value)


def test_a_header_larger_than_its_data_is_refused(tmp_path):
    """A modest declared size that the member does not actually hold (np.load would read past it)."""
    path = tmp_path / "m.npz"
    random_model().save(path)
    _rewrite(path, {"head.bias.npy": _npy_header("<f4", (1000, 1000)) + b"\0" * 16})
    with pytest.raises(CompactLMError, match=r"head\.bias\.npy.*declares shape \(1000, 1000\).*holds 16 bytes"):
        load(path)


def test_a_member_claiming_more_than_2_gib_uncompressed_is_refused(tmp_path):
    """The zip central directory's uncompressed sizes are summed before any member is opened."""
    path = tmp_path / "m.npz"
    random_model().save(path)
    data = bytearray(path.read_bytes())
    # the first central-directory entry: its 4-byte uncompressed size sits at offset 24
    struct.pack_into("<I", data, data.index(b"PK\x01\x02") + 24, 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    with pytest.raises(CompactLMError, match="exceed 2 GiB uncompressed"):
        load(path)


@pytest.mark.parametrize("descr, message", [
    ("|O", "object arrays"),
    ("<i8", "has dtype int64, expected float32, float64 or int8"),
    ("<U4", "has dtype <U4"),
    ([("a", "<f4")], "expected float32, float64 or int8"),
    (">f4", "has dtype >f4"),
])
def test_unexpected_dtypes_are_refused_from_the_header(tmp_path, descr, message):
    path = tmp_path / "m.npz"
    random_model().save(path)
    _rewrite(path, {"head.bias.npy": _npy_header(descr, (4,)) + b"\0" * 64})
    with pytest.raises(CompactLMError, match=re.escape(message)):
        load(path)


def test_metadata_must_be_a_0d_string_in_the_header(tmp_path):
    path = tmp_path / "m.npz"
    random_model().save(path)
    _rewrite(path, {"metadata.npy": _npy_header("<f4", (2,)) + b"\0" * 8})
    with pytest.raises(CompactLMError, match="malformed metadata entry"):
        load(path)


def test_a_member_that_is_not_npy_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    random_model().save(path)
    _rewrite(path, {"notes.txt": b"hello"})
    with pytest.raises(CompactLMError, match="'notes.txt' is not an .npy array"):
        load(path)


def test_float64_and_int8_files_still_load(tmp_path):
    from compact_lm.tools.quantize import quantize_model
    model = random_model()
    wide = Model(model.config, model.vocab, {k: v.astype(np.float64) for k, v in model.params.items()})
    wide.save(tmp_path / "f64.npz")
    assert load(tmp_path / "f64.npz").params["head.bias"].dtype == np.float64
    quantize_model(model).save(tmp_path / "int8.npz")
    assert load(tmp_path / "int8.npz").arrays["table.q"].dtype == np.int8


def test_cli_reports_a_hostile_npz_on_one_line(tmp_path, capsys):
    path = tmp_path / "evil.npz"
    random_model().save(path)
    _rewrite(path, {"head.bias.npy": _npy_header("<f4", (2 ** 40,))})
    code, _, err = run(capsys, "eval", path, "--text", "hello there")
    assert_one_line_error(code, err, "evil.npz", "more than 2 GiB")


# --- .onnx

@pytest.fixture
def step_proto() -> onnx.ModelProto:
    return build_model(random_model())


def _save(proto: onnx.ModelProto, path) -> None:
    path.write_bytes(proto.SerializeToString())


def test_a_clean_export_passes_the_scan_and_loads(tmp_path):
    export_model(random_model("lstm"), tmp_path / "m.onnx", sequence=True)   # Scan subgraph inside
    assert unsafe_onnx_feature((tmp_path / "m.onnx").read_bytes()) is None
    assert OrtBackend(tmp_path / "m.onnx").has_sequence_graph


def test_an_initializer_with_external_data_is_refused(tmp_path, step_proto):
    # the weights would be read from a file beside the model: a path an attacker chooses
    from onnx.external_data_helper import set_external_data
    tensor = step_proto.graph.initializer[0]
    set_external_data(tensor, location="../../etc/passwd", offset=0, length=16)
    tensor.ClearField("raw_data")
    _save(step_proto, tmp_path / "ext.onnx")
    with pytest.raises(CompactLMError, match="ext.onnx is refused: it uses a tensor with external data"):
        OrtBackend(tmp_path / "ext.onnx")


def test_external_data_entries_without_data_location_are_refused(tmp_path, step_proto):
    entry = step_proto.graph.initializer[0].external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    _save(step_proto, tmp_path / "ext.onnx")
    with pytest.raises(CompactLMError, match="a tensor with external data"):
        OrtBackend(tmp_path / "ext.onnx")


def test_data_location_external_alone_is_refused(tmp_path, step_proto):
    step_proto.graph.initializer[0].data_location = TensorProto.EXTERNAL
    _save(step_proto, tmp_path / "ext.onnx")
    with pytest.raises(CompactLMError, match="data_location EXTERNAL"):
        OrtBackend(tmp_path / "ext.onnx")


def test_external_data_inside_a_scan_body_is_refused(tmp_path):
    proto = build_model(random_model(), sequence=True)
    scans = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert scans
    body = scans[0].attribute[[a.name for a in scans[0].attribute].index("body")].g
    constant = helper.make_node("Constant", [], ["hidden_const"], value=helper.make_tensor(
        "c", TensorProto.FLOAT, [1], [0.0]))
    constant.attribute[0].t.data_location = TensorProto.EXTERNAL
    body.node.insert(0, constant)
    _save(proto, tmp_path / "scan.onnx")
    with pytest.raises(CompactLMError, match="scan.onnx is refused: it uses a tensor with data_location EXTERNAL"):
        OrtBackend(tmp_path / "scan.onnx")


def test_a_custom_domain_operator_is_refused(tmp_path, step_proto):
    node = step_proto.graph.node[-1]
    node.domain = "com.evil"
    step_proto.opset_import.append(helper.make_opsetid("com.evil", 1))
    _save(step_proto, tmp_path / "custom.onnx")
    with pytest.raises(CompactLMError, match=f"operator '{node.op_type}' from the custom domain 'com.evil'"):
        OrtBackend(tmp_path / "custom.onnx")


def test_a_custom_operator_in_a_local_function_is_refused(tmp_path, step_proto):
    function = helper.make_function("local", "Wrap", ["x"], ["y"],
                                    [helper.make_node("Evil", ["x"], ["y"], domain="com.evil")],
                                    [helper.make_opsetid("", 21), helper.make_opsetid("com.evil", 1)])
    step_proto.functions.append(function)
    _save(step_proto, tmp_path / "func.onnx")
    with pytest.raises(CompactLMError, match="custom domain 'com.evil'"):
        OrtBackend(tmp_path / "func.onnx")


def test_cli_reports_an_unsafe_onnx_on_one_line(tmp_path, step_proto, capsys):
    step_proto.graph.node[0].domain = "com.microsoft"
    _save(step_proto, tmp_path / "ms.onnx")
    random_model().save(tmp_path / "m.npz")
    code, _, err = run(capsys, "verify", tmp_path / "m.npz", tmp_path / "ms.onnx")
    assert_one_line_error(code, err, "ms.onnx", "custom domain 'com.microsoft'")


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (payloads here stay under 2**14 bytes: 2-byte varints at most)."""
    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out += bytes([n & 0x7F | 0x80])
            n >>= 7
        return out + bytes([n])
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_deeply_nested_subgraphs_are_malformed_not_a_recursion_error():
    # built by hand: protobuf's own encoder refuses this depth. graph.node(1).attribute(5).g(6) x 100
    graph = b""
    for _ in range(100):
        graph = _field(1, _field(5, _field(6, graph)))
    with pytest.raises(ValueError, match="nested more than 64"):
        unsafe_onnx_feature(_field(7, graph))
