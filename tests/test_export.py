"""ONNX export: every graph reproduces the NumPy reference, on onnxruntime and on onnx's reference evaluator.

`exported` (conftest) gives one random-weight float model per cell and layer count in all four graph forms.
"""
import re

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator

from compact_lm.cells import CELLS
from compact_lm.errors import CompactLMError
from compact_lm.export import OPSET, FloatGraphProducts, build_model, export_model
from compact_lm.export.cells import ONNX_CELLS
from compact_lm.export.interface import out_name, state_names
from compact_lm.ort_backend import OrtBackend
from conftest import export_float_model
from onnx_helpers import all_op_types, random_state

TOL = 1e-5


def max_state_diff(a: list, b: list) -> float:
    """Largest |difference| between two per-layer states (lists of tuples of arrays)."""
    return max(float(np.abs(x - y).max()) for la, lb in zip(a, b) for x, y in zip(la, lb))


def stepwise(backend, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
    """log_probs [B, T, V] from one step call per column of ids [B, T]."""
    out = []
    for t in range(ids.shape[1]):
        log_probs, state = backend.step(np.ascontiguousarray(ids[:, t]), state)
        out.append(log_probs)
    return np.stack(out, axis=1), state


def test_onnx_cell_registry_covers_every_cell():
    assert set(ONNX_CELLS) == set(CELLS)
    for name, cell in ONNX_CELLS.items():
        assert sorted(cell.native_blocks) == list(range(CELLS[name].gates))


def test_step_graph_matches_numpy_step(exported):
    ort = OrtBackend(exported.paths["step"])
    ids = exported.ids[None, :]
    theirs, their_state = stepwise(ort, ids, ort.initial_state(1))
    ours, our_state = stepwise(exported.reference, ids, exported.reference.initial_state(1))
    assert np.abs(theirs - ours).max() <= TOL
    assert max_state_diff(their_state, our_state) <= TOL


def test_step_graph_at_batch_4_from_a_nonzero_state(exported):
    ort = OrtBackend(exported.paths["step"])
    ids = exported.ids[:200].reshape(4, 50)
    state = random_state(ort, 4)
    theirs, their_state = stepwise(ort, ids, state)
    ours, our_state = stepwise(exported.reference, ids, state)
    assert np.abs(theirs - ours).max() <= TOL and max_state_diff(their_state, our_state) <= TOL


def test_sequence_graph_matches_numpy_run(exported):
    ort = OrtBackend(exported.paths["sequence"])
    ids = exported.ids[:240].reshape(3, 80)
    state = random_state(ort, 3)
    theirs, their_state = ort.run(ids, state)
    ours, our_state = exported.reference.run(ids, state)
    assert theirs.shape == (3, 80, exported.model.config.vocab_size)
    assert np.abs(theirs - ours).max() <= TOL and max_state_diff(their_state, our_state) <= TOL


def test_step_graph_one_character_at_a_time_equals_sequence_graph(exported):
    step, sequence = OrtBackend(exported.paths["step"]), OrtBackend(exported.paths["sequence"])
    ids = exported.ids[None, :120]
    one_by_one, state_a = stepwise(step, ids, step.initial_state(1))
    at_once, state_b = sequence.run(ids, sequence.initial_state(1))
    assert np.abs(one_by_one - at_once).max() <= TOL and max_state_diff(state_a, state_b) <= TOL


@pytest.mark.parametrize("graph", ["native_step", "native_sequence"])
def test_native_rnn_graphs_match_numpy(exported, graph):
    ort = OrtBackend(exported.paths[graph])
    ids = exported.ids[:160].reshape(2, 80)
    state = random_state(ort, 2)
    theirs, their_state = ort.run(ids, state) if graph == "native_sequence" else stepwise(ort, ids, state)
    ours, our_state = exported.reference.run(ids, state)
    assert np.abs(theirs - ours).max() <= TOL and max_state_diff(their_state, our_state) <= TOL


@pytest.mark.parametrize("graph", ["step", "sequence", "native_step"])
def test_unoptimized_session_matches_optimized(exported, graph):
    ids = exported.ids[:150].reshape(3, 50)
    optimized = OrtBackend(exported.paths[graph])
    plain = OrtBackend(exported.paths[graph], optimize=False)
    a, state_a = optimized.run(ids, optimized.initial_state(3))
    b, state_b = plain.run(ids, plain.initial_state(3))
    assert np.abs(a - b).max() <= TOL and max_state_diff(state_a, state_b) <= TOL


@pytest.mark.parametrize("graph", ["step", "sequence", "native_step", "native_sequence"])
def test_reference_evaluator_matches_numpy(exported, graph):
    model = exported.model
    evaluator = ReferenceEvaluator(onnx.load(exported.paths[graph]))
    ids = exported.ids[:40].reshape(2, 20)
    initial = state = random_state(exported.reference, 2)
    names = state_names(model.config)

    def feed(tokens, state):
        return {"tokens": tokens, **{n: v for layer, values in zip(names, state) for n, v in zip(layer, values)}}

    outputs = [out_name(n) for layer in names for n in layer]
    if "sequence" in graph:
        theirs = evaluator.run(["log_probs"], feed(ids, state))[0]
    else:
        columns = []
        for t in range(ids.shape[1]):
            result = evaluator.run(["log_probs", *outputs], feed(ids[:, t], state))
            columns.append(result[0])
            flat = iter(result[1:])
            state = [tuple(next(flat) for _ in layer) for layer in names]
        theirs = np.stack(columns, axis=1)
    ours, _ = exported.reference.run(ids, initial)
    assert np.abs(theirs - ours).max() <= TOL


@pytest.mark.parametrize("graph", ["step", "sequence", "native_step", "native_sequence"])
def test_saved_graphs_pass_the_full_checker_at_the_chosen_opset(exported, graph):
    proto = onnx.load(exported.paths[graph])
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]


@pytest.mark.parametrize("graph", ["step", "sequence", "native_step", "native_sequence"])
def test_saved_graphs_carry_an_ir_version_older_runtimes_read(exported, graph):
    """A runtime refuses a newer IR version than its own, whatever the operators: onnxruntime 1.15 reads up to 9."""
    proto = onnx.load(exported.paths[graph])
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import)) <= 9


def test_plain_graphs_use_only_portable_operators(exported):
    portable = {"Gather", "MatMul", "Gemm", "Add", "Sub", "Mul", "Sigmoid", "Tanh", "LogSoftmax", "Split",
                "Slice", "Scan", "Loop", "Transpose", "Identity"}
    for graph in ("step", "sequence"):
        assert all_op_types(onnx.load(exported.paths[graph]).graph) <= portable


def test_native_graph_uses_the_cells_own_operator(exported):
    cell = ONNX_CELLS[exported.model.config.cell]
    nodes = [n for n in onnx.load(exported.paths["native_step"]).graph.node if n.op_type == cell.native_op]
    assert len(nodes) == exported.model.config.layers
    if cell.native_op == "GRU":
        assert all(onnx.helper.get_node_attr_value(n, "linear_before_reset") == 1 for n in nodes)


def test_metadata_round_trips_vocabulary_config_and_training_info(exported):
    model = exported.model
    for graph in ("step", "sequence"):
        ort = OrtBackend(exported.paths[graph])
        assert ort.vocab == model.vocab and ort.config == model.config
        assert ort.metadata["train_config"] == model.info["train_config"]
        assert ort.metadata["metrics"] == model.info["metrics"]
        assert ort.metadata["graph"] == graph and ort.metadata["int8"] is False
    raw = {p.key: p.value for p in onnx.load(exported.paths["step"]).metadata_props}
    assert raw["int8"] == "false" and raw["kind"] == "compact-lm-onnx" and raw["cell"] == model.config.cell
    assert raw["unk_id"] == "0" and raw["nfc"] == "true" and raw["lowercase"] == "false"


def test_text_round_trips_through_the_metadata_vocabulary(exported, alice_text):
    ort = OrtBackend(exported.paths["step"])
    text = alice_text[1000:1300]
    assert np.array_equal(ort.vocab.encode(text), exported.model.vocab.encode(text))
    assert ort.vocab.decode(ort.vocab.encode(text)) == text


def test_run_without_a_sequence_graph_loops_the_step_graph(exported):
    ort = OrtBackend(exported.paths["step"])
    assert not ort.has_sequence_graph
    ids = exported.ids[:60].reshape(2, 30)
    theirs, _ = ort.run(ids, ort.initial_state(2))
    assert np.abs(theirs - exported.reference.run(ids, exported.reference.initial_state(2))[0]).max() <= TOL


def test_step_and_sequence_files_combine_in_one_backend(exported):
    ort = OrtBackend(exported.paths["step"], sequence_path=exported.paths["sequence"])
    assert ort.has_sequence_graph
    ids = exported.ids[None, :50]
    assert np.abs(ort.run(ids, ort.initial_state(1))[0] - stepwise(ort, ids, ort.initial_state(1))[0]).max() <= TOL


def test_a_failed_write_leaves_no_file(tmp_path, alice_text):
    model = export_float_model(alice_text, "gru", (8,))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CompactLMError, match="cannot write"):
        export_model(model, tmp_path / "a_file" / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_failed_export_keeps_the_previous_file(tmp_path, alice_text, monkeypatch):
    path = tmp_path / "model.onnx"
    export_model(export_float_model(alice_text, "gru", (8,)), path)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("compact_lm.fileio.os.fsync", disk_full)
    with pytest.raises(CompactLMError, match="No space left"):
        export_model(export_float_model(alice_text, "lstm", (8,)), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "not a valid ONNX model"),
    (lambda data: data[:-3], "truncated"),
    (lambda data: b"just some text, not a protobuf", "not a valid ONNX model"),
    (lambda data: b"", "not a valid ONNX model"),
    (lambda data: bytes(range(256)) * 4 + data[1024:], "not a valid ONNX model"),
])
def test_damaged_onnx_files_give_one_line_errors(tmp_path, alice_text, damage, message):
    path = tmp_path / "model.onnx"
    export_model(export_float_model(alice_text, "gru", (8,)), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CompactLMError, match=message) as error:
        OrtBackend(path)
    assert "\n" not in str(error.value)


def test_every_truncation_of_the_metadata_is_refused(tmp_path, alice_text):
    path = tmp_path / "model.onnx"
    export_model(export_float_model(alice_text, "gru", (8,)), path)
    data = path.read_bytes()
    for cut in range(len(data) - 400, len(data), 7):   # the metadata_props are serialized last
        path.write_bytes(data[:cut])
        with pytest.raises(CompactLMError):
            OrtBackend(path)


def test_onnx_without_compact_lm_metadata_is_refused(tmp_path):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Tanh", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)]), tmp_path / "other.onnx")
    with pytest.raises(CompactLMError, match="without compact-lm metadata"):
        OrtBackend(tmp_path / "other.onnx")


def test_an_onnx_file_is_named_a_foreign_one_before_onnxruntime_reads_it(tmp_path):
    """IR version 99 fails in onnxruntime; the missing metadata is what the user needs to hear (as in JavaScript)."""
    graph = onnx.helper.make_graph([], "g", [], [])
    onnx.save(onnx.helper.make_model(graph, ir_version=99), tmp_path / "future.onnx")
    with pytest.raises(CompactLMError, match="future.onnx is an ONNX model without compact-lm metadata"):
        OrtBackend(tmp_path / "future.onnx")


def test_onnxruntime_failing_on_a_compact_lm_file_is_named(tmp_path, exported):
    model = onnx.load(exported.paths["step"])
    model.ir_version = 99
    onnx.save(model, tmp_path / "future.onnx")
    with pytest.raises(CompactLMError, match=rf"^onnxruntime {re.escape(onnxruntime.__version__)} could not open .*future.onnx: .*"):
        OrtBackend(tmp_path / "future.onnx")


def test_missing_onnx_file(tmp_path):
    with pytest.raises(CompactLMError, match="does not exist"):
        OrtBackend(tmp_path / "nope.onnx")


def test_a_sequence_file_alone_also_serves_step(exported):
    ort = OrtBackend(exported.paths["sequence"])
    ids = exported.ids[:40].reshape(2, 20)
    theirs, _ = stepwise(ort, ids, ort.initial_state(2))
    assert np.abs(theirs - exported.reference.run(ids, exported.reference.initial_state(2))[0]).max() <= TOL


class RecordingProducts(FloatGraphProducts):
    """fp32 products that note every initializer they create."""

    def __init__(self, model):
        super().__init__(model)
        self.created = set()

    def _recorded(self, method, g, *args):
        root = g._root
        before = len(root.initializers)
        out = method(g, *args)
        self.created |= {t.name for t in root.initializers[before:]}
        return out

    def embed(self, g, ids):
        return self._recorded(super().embed, g, ids)

    def inputs(self, g, k, x):
        return self._recorded(super().inputs, g, k, x)

    def recurrent(self, g, k, h):
        return self._recorded(super().recurrent, g, k, h)

    def logits(self, g, h):
        return self._recorded(super().logits, g, h)


@pytest.mark.parametrize("sequence", [False, True])
def test_every_float_weight_of_a_plain_graph_comes_from_the_products(alice_text, sequence):
    """What lets an int8 GraphProducts replace all of them: the builders add no float weight of their own."""
    model = export_float_model(alice_text, "lstm", (10, 7))
    products = RecordingProducts(model)
    proto = build_model(model, sequence=sequence, products=products)
    floats = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    # table; layer 0: W_hh; layer 1: W_ih, folded bias, W_hh; head: W, b (LSTM keeps no recurrent bias)
    assert len(floats) == 7 and floats == products.created
