"""int8 ONNX export: the graphs compute compact_lm.int8's scheme exactly as the NumPy int8 path does.

"Exactly": every integer product, every table lookup and every elementwise operation gives the same bits,
so the states are bit-identical step after step, free-running included; only the final LogSoftmax
rounds differently (TOL). Single products and whole runs are checked, in onnxruntime (optimized or not)
and in onnx's ReferenceEvaluator.
"""
import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from compact_lm.backends import NumpyBackend
from compact_lm.cells import LSTM_GATE_ACTIVATIONS
from compact_lm.cli import main
from compact_lm.errors import CompactLMError
from compact_lm.export import OPSET, build_model, export_model
from compact_lm.export.graph import FLOAT, GraphBuilder, make_model, tensor
from compact_lm.export.interface import out_name, state_names
from compact_lm.export.products_int8 import Int8GraphProducts, int8_matmul
from compact_lm.verify import verify_backends
from compact_lm.int8 import ACT_SCALE, ACTIVATION_STEPS, TABLE_ACTIVATIONS, Int8Product, Int8Products
from compact_lm import load
from compact_lm.ort_backend import OrtBackend, session_options
from compact_lm.tools.quantize import quantize_model
from compact_lm.vocab import Vocab
from cli_helpers import assert_one_line_error, run
from conftest import export_int8_model, random_model
from onnx_helpers import all_op_types, random_state

TOL = 1e-5     # float rounding of log-softmax (observed <= 2e-6)


@pytest.fixture(scope="module")
def export_precision() -> str:
    """conftest's `exported` gives this file quantized models, exported as int8 step and sequence graphs."""
    return "int8"


# ------------------------------------------------------------------------------ single products
def run_graph(nodes_of, inputs: dict[str, np.ndarray], rank: int, optimize: bool = True) -> np.ndarray:
    """Build a graph with one float output of `rank` axes, `nodes_of(g, input names...)`, at OPSET; run it."""
    g = GraphBuilder()
    g.reserve(*inputs, "y")
    g.rename(nodes_of(g, *inputs), "y")
    types = {np.dtype(np.float32): FLOAT, np.dtype(np.int64): onnx.TensorProto.INT64}
    graph = g.graph("probe", [tensor(n, types[a.dtype], list(a.shape)) for n, a in inputs.items()],
                    [tensor("y", FLOAT, [f"d{i}" for i in range(rank)])])
    proto = make_model(graph, {}, "probe", OPSET)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), session_options(1, optimize),
                                           providers=["CPUExecutionProvider"])
    return session.run(["y"], inputs)[0]


def awkward_inputs(width: int, rows: int = 40, seed: int = 0) -> np.ndarray:
    """Hidden-state-like values plus the hard cases: exact and near rounding ties, +-1, zero, out of range."""
    rng = np.random.default_rng(seed)
    x = np.tanh(2 * rng.standard_normal((rows, width))).astype(np.float32)
    ties = ((rng.integers(-127, 127, size=(8, width)) + 0.5) * ACT_SCALE).astype(np.float32)
    x[:8] = ties
    x[8:16] = np.nextafter(ties, np.float32(2))
    x[16:24] = np.nextafter(ties, np.float32(-2))
    x[24, :] = 1.0
    x[25, :] = -1.0
    x[26, :] = 0.0
    x[27, :] = rng.choice([-3.0, -1.01, 1.01, 3.0], size=width)   # saturates to 0 / 255
    return x


@pytest.mark.parametrize("optimize", [True, False])
def test_one_int8_product_is_bit_identical_to_numpy(optimize):
    rng = np.random.default_rng(3)
    weight = rng.uniform(-0.3, 0.3, size=(48, 37)).astype(np.float32)
    from compact_lm.int8 import quantize_rows
    product = Int8Product(*quantize_rows(weight, 7), rng.standard_normal(48).astype(np.float32))
    x = awkward_inputs(37)
    got = run_graph(lambda g, name: int8_matmul(g, name, product, "p"), {"x": x}, 2, optimize)
    assert got.dtype == np.float32 and np.array_equal(got, product(x))
    # with leading time and batch axes, as the sequence graph multiplies [T, B, in]
    x3 = x.reshape(5, 8, 37)
    got3 = run_graph(lambda g, name: int8_matmul(g, name, product, "p"), {"x": x3}, 3, optimize)
    assert np.array_equal(got3, product(x).reshape(5, 8, 48))


def awkward_pre_activations(width: int, step: float, rows: int = 30, seed: int = 0) -> np.ndarray:
    """Pre-activations with the hard cases of a table lookup: half-step ties and their neighbours, -0, the
    range ends and beyond, +-inf, huge and subnormal values."""
    rng = np.random.default_rng(seed)
    x = (4 * rng.standard_normal((rows, width))).astype(np.float32)
    ties = ((rng.integers(-140, 140, size=(6, width)) + 0.5) * step).astype(np.float32)
    x[:6], x[6:12], x[12:18] = ties, np.nextafter(ties, np.float32(100)), np.nextafter(ties, np.float32(-100))
    x[18] = -0.0
    x[19] = rng.choice([-1e30, 1e30, -np.inf, np.inf, 127.5 * step, -128.5 * step, 1e-42], size=width)
    x[20] = (np.arange(width) % 300 - 150) * step
    return x


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("rows", [1, 30])
def test_table_lookups_are_bit_identical_to_numpy(optimize, rows):
    activations = Int8GraphProducts.activations
    for kind in ("sigmoid", "tanh"):
        x = awkward_pre_activations(37, float(ACTIVATION_STEPS[kind]))[-rows:]
        got = run_graph(lambda g, name: getattr(activations, kind)(g, name, 37, "a"), {"x": x}, 2, optimize)
        assert np.array_equal(got, getattr(TABLE_ACTIVATIONS, f"{kind}_")(x.copy()))
    hidden = 11     # the LSTM's four blocks in one joined lookup
    x = np.concatenate([awkward_pre_activations(hidden, float(ACTIVATION_STEPS[kind]), seed=j)
                        for j, kind in enumerate(LSTM_GATE_ACTIVATIONS)], axis=1)[-rows:]
    got = run_graph(lambda g, name: g.op("Concat", activations.gates(g, name, LSTM_GATE_ACTIVATIONS, hidden, "a"),
                                         "joined", axis=-1), {"x": x}, 2, optimize)
    assert np.array_equal(got, TABLE_ACTIVATIONS.gates_(x.copy(), LSTM_GATE_ACTIVATIONS))


def test_the_int8_table_gather_is_bit_identical_to_numpy(alice_text):
    model = export_int8_model(alice_text, "gru", (16,))
    products = Int8GraphProducts(model)
    ids = np.arange(model.config.vocab_size, dtype=np.int64)[::-1].copy()
    got = run_graph(lambda g, name: products.embed(g, name), {"ids": ids}, 2)
    assert np.array_equal(got, Int8Products(model.arrays, 1).embed(ids))


# ---------------------------------------------------------------------------------- whole graphs
def run_both(reference, candidate, ids: np.ndarray, graph: str, state: list):
    """Free-running log-probs [B, T, V] and final states of both backends over ids [B, T], from `state`."""
    if graph == "sequence":
        return reference.run(ids, state), candidate.run(ids, state)
    results = []
    for backend in (reference, candidate):
        current, log_probs = state, []
        for column in np.ascontiguousarray(ids.T):
            step_log_probs, current = backend.step(column, current)
            log_probs.append(step_log_probs)
        results.append((np.stack(log_probs, axis=1), current))
    return results


def same_states(a: list, b: list) -> bool:
    """Bit-identical per-layer states."""
    return all(np.array_equal(x, y) for la, lb in zip(a, b) for x, y in zip(la, lb))


@pytest.mark.parametrize("graph, batch", [("step", 1), ("step", 4), ("sequence", 1), ("sequence", 3)])
def test_free_running_states_are_bit_identical_to_numpy(exported, graph, batch):
    ort = OrtBackend(exported.paths[graph])
    ids = exported.ids[:240 // batch * batch].reshape(batch, -1)
    state = random_state(ort, batch, spread=2.0)
    (want, want_state), (got, got_state) = run_both(exported.reference, ort, ids, graph, state)
    assert same_states(want_state, got_state)
    assert np.abs(want - got).max() <= TOL


def test_sequence_graph_equals_step_graph_run_one_character_at_a_time(exported):
    step, sequence = OrtBackend(exported.paths["step"]), OrtBackend(exported.paths["sequence"])
    ids = exported.ids[:240].reshape(3, 80)
    state = random_state(step, 3, spread=2.0)
    (one_by_one, state_a), _ = run_both(step, step, ids, "step", state)
    at_once, state_b = sequence.run(ids, state)
    assert at_once.shape == (3, 80, exported.model.config.vocab_size)
    assert same_states(state_a, state_b) and np.abs(at_once - one_by_one).max() <= 1e-6


class GatherElements(OpRun):
    """GatherElements by its spec (out[i][j] = data[i][index[i][j]] for axis 1), replacing onnx 1.23's reference
    version, whose np.choose handles at most 64 table entries: this one operator is checked against this
    definition and against onnxruntime (test_table_lookups_are_bit_identical_to_numpy), not the evaluator's."""

    def _run(self, data, indices, axis=None):
        return (np.take_along_axis(data, indices, axis=axis),)


class ReferenceBackend:
    """A step or sequence graph run by onnx's ReferenceEvaluator (the ONNX spec in NumPy), as a Backend."""

    def __init__(self, path, model):
        self.evaluator = ReferenceEvaluator(onnx.load(path), new_ops=[GatherElements])
        self.sequence = "sequence" in str(path)
        self.names = state_names(model.config)
        self.outputs = ["log_probs", *(out_name(n) for layer in self.names for n in layer)]

    def run(self, tokens, state):
        feed = {n: v for layer, values in zip(self.names, state) for n, v in zip(layer, values)}
        result = self.evaluator.run(self.outputs, {"tokens": tokens, **feed})
        flat = iter(result[1:])
        return result[0], [tuple(next(flat) for _ in layer) for layer in self.names]

    def step(self, tokens, state):
        if self.sequence:
            log_probs, state = self.run(tokens[:, None], state)
            return log_probs[:, 0], state
        return self.run(tokens, state)


@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_onnx_reference_evaluator_agrees_with_numpy_bit_for_bit(exported, graph):
    """The graphs mean the scheme by the ONNX spec itself, not only as onnxruntime runs them."""
    reference = ReferenceBackend(exported.paths[graph], exported.model)
    ids = exported.ids[:40].reshape(2, 20)
    (want, want_state), (got, got_state) = run_both(exported.reference, reference, ids, graph,
                                                    random_state(exported.reference, 2, spread=2.0))
    assert same_states(want_state, got_state) and np.abs(want - got).max() <= TOL


@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_unoptimized_session_matches_optimized(exported, graph):
    ids = exported.ids[:150].reshape(3, 50)
    optimized, plain = OrtBackend(exported.paths[graph]), OrtBackend(exported.paths[graph], optimize=False)
    state = random_state(plain, 3, spread=2.0)
    a, state_a = optimized.run(ids, state)
    b, state_b = plain.run(ids, state)
    assert same_states(state_a, state_b) and np.abs(a - b).max() <= 1e-6


def test_verification_passes(exported):
    """What `compact-lm verify` runs: free-running at batch 1 and 4, and the sequence graph."""
    ort = OrtBackend(exported.paths["step"], sequence_path=exported.paths["sequence"])
    results = verify_backends(exported.reference, ort, exported.ids, sequence=True)
    assert [(r.mode, r.batch) for r in results] == [("step", 1), ("step", 4), ("sequence", 1)]
    assert all(r.max_abs_diff <= TOL and r.top1_agreement == 1.0 for r in results)


def test_a_wrong_scale_fails_verification(alice_text, tmp_path):
    """The check can fail: one head row's scale 1% off changes that logit at every position."""
    model = export_int8_model(alice_text, "lstm", (20, 13))
    wrong = export_int8_model(alice_text, "lstm", (20, 13))
    wrong.arrays["head.weight.scale"][5] *= np.float32(1.01)
    export_model(wrong, tmp_path / "wrong.onnx")
    ids = model.vocab.encode(alice_text[500:600])
    results = verify_backends(NumpyBackend(model), OrtBackend(tmp_path / "wrong.onnx"), ids, sequence=False)
    assert all(r.max_abs_diff > 1e-3 for r in results)


def test_a_wrong_recurrent_weight_fails_verification(alice_text, tmp_path):
    model = export_int8_model(alice_text, "gru", (20,))
    wrong = export_int8_model(alice_text, "gru", (20,))
    wrong.arrays["rnn.weight_hh_l0.q"][:, 3] = -wrong.arrays["rnn.weight_hh_l0.q"][:, 3]
    export_model(wrong, tmp_path / "wrong.onnx")
    ids = model.vocab.encode(alice_text[500:600])
    results = verify_backends(NumpyBackend(model), OrtBackend(tmp_path / "wrong.onnx"), ids, sequence=False)
    assert all(r.max_abs_diff > 1e-3 for r in results)


# ------------------------------------------------------------------------------ file and metadata
@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_saved_graphs_pass_the_full_checker_with_standard_operators_only(exported, graph):
    proto = onnx.load(exported.paths[graph])
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    # no float function but the final LogSoftmax: sigmoid and tanh are table lookups (GatherElements)
    portable = {"Gather", "GatherElements", "Reshape", "Add", "Sub", "Mul", "LogSoftmax", "Split", "Scan", "Transpose",
                "Identity", "QuantizeLinear", "MatMulInteger", "Cast"}
    assert all_op_types(proto.graph) <= portable and "MatMul" not in all_op_types(proto.graph)


@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_saved_graphs_carry_an_ir_version_older_runtimes_read(exported, graph):
    """As the fp32 graphs: the oldest IR version for the opset, which onnxruntime 1.15 reads."""
    proto = onnx.load(exported.paths[graph])
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import)) <= 9


def test_every_matrix_is_stored_as_int8(exported):
    proto = onnx.load(exported.paths["step"])
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    matrices = {name: a for name, a in arrays.items() if a.ndim == 2 and min(a.shape) > 1}
    config = exported.model.config
    # the table, W_hh of every layer, W_ih of layers 2.., the head
    assert len(matrices) == 2 * config.layers + 1 and all(a.dtype == np.int8 for a in matrices.values())
    assert all(a.dtype in (np.float32, np.uint8, np.int64) for a in arrays.values() if a.dtype != np.int8)


def test_metadata_round_trips_and_says_int8(exported):
    model = exported.model
    for graph in ("step", "sequence"):
        ort = OrtBackend(exported.paths[graph])
        assert ort.vocab == model.vocab and ort.config == model.config
        assert ort.metadata["graph"] == graph and ort.metadata["int8"] is True and ort.metadata["quantized"] is True
        assert ort.metadata["int8_scheme"] == model.metadata()["int8"]
        assert ort.metadata["int8_scheme"]["weight_bits"] == 7 and ort.metadata["opset"] == OPSET
        assert ort.metadata["train_config"] == model.info["train_config"]
    raw = {p.key: p.value for p in onnx.load(exported.paths["step"]).metadata_props}
    assert raw["int8"] == "true" and raw["dtype"] == "float32" and raw["native_rnn"] == "false"
    assert json.loads(raw["int8_scheme"])["activation_zero_point"] == 128


def test_int8_file_is_under_a_third_of_the_fp32_file(alice_text):
    """GRU E=64, H=256 over a 66-character vocabulary, as in benchmarks/export_latency.py."""
    vocab = Vocab(tuple(sorted(set(alice_text)))[:65])
    assert vocab.size == 66
    model = random_model("gru", (256,), embed=64, vocab=vocab)
    fp32 = len(build_model(model).SerializeToString())
    int8 = len(build_model(quantize_model(model)).SerializeToString())
    assert int8 <= 0.3 * fp32, (int8, fp32)


def test_fp32_export_is_unchanged_by_the_int8_path(alice_text):
    model = random_model("gru", (8,), embed=12, text=alice_text)
    proto = build_model(model)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert {p.key: p.value for p in proto.metadata_props}["int8"] == "false"


def test_native_rnn_export_of_a_quantized_model_is_refused(alice_text):
    with pytest.raises(CompactLMError, match="no integer variant"):
        build_model(export_int8_model(alice_text, "lstm", (8,)), native_rnn=True)


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_files(tiny_model_path, tmp_path_factory):
    """The tiny trained GRU quantized, exported through the CLI as int8 step + sequence graphs and as fp32."""
    folder = tmp_path_factory.mktemp("int8_cli")
    quantize_model(load(tiny_model_path)).save(folder / "int8.npz")
    assert main(["export", str(folder / "int8.npz"), "--out", str(folder / "step.onnx"),
                 "--sequence", str(folder / "sequence.onnx")]) == 0
    assert main(["export", str(tiny_model_path), "--out", str(folder / "fp32.onnx")]) == 0
    return folder


def test_cli_export_writes_int8_graphs(cli_files, tiny_model_path, tmp_path, capsys):
    code, out, err = run(capsys, "export", cli_files / "int8.npz", "--out", tmp_path / "m.onnx")
    assert code == 0 and err == "" and f"int8, opset {OPSET}" in out
    assert OrtBackend(tmp_path / "m.onnx").metadata["int8"] is True


def test_cli_verify_of_an_int8_export_passes(cli_files, capsys):
    code, out, err = run(capsys, "verify", cli_files / "int8.npz", cli_files / "step.onnx",
                         "--sequence", cli_files / "sequence.onnx", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["ok"] and report["int8"] and report["max_abs_diff"] <= TOL
    assert [(r["mode"], r["batch"]) for r in report["results"]] == [("step", 1), ("step", 4), ("sequence", 1)]
    assert all(r["top1_agreement"] == 1.0 and abs(r["bpc_difference"]) < 1e-5 for r in report["results"])


def test_cli_verify_text_output(cli_files, capsys):
    code, out, err = run(capsys, "verify", cli_files / "int8.npz", cli_files / "step.onnx", "--chars", 500)
    assert code == 0, err
    assert "500 characters" in out and "(NumPy int8)" in out and "ok: max |delta log-prob|" in out
    assert "no sequence graph" in out


def test_cli_verify_fails_for_another_quantized_model(cli_files, tiny_model_path, tmp_path, capsys):
    model = load(tiny_model_path)
    other = random_model(model.config.cell, model.config.hidden_sizes, embed=model.config.embed_size,
                         vocab=model.vocab, seed=9)
    quantize_model(other).save(tmp_path / "other.npz")
    assert run(capsys, "export", tmp_path / "other.npz", "--out", tmp_path / "other.onnx")[0] == 0
    code, out, err = run(capsys, "verify", cli_files / "int8.npz", tmp_path / "other.onnx")
    assert_one_line_error(code, err, "max |delta log-prob|", "does not match")


@pytest.mark.parametrize("model, onnx_file, fragment", [
    ("model", "step.onnx", "step.onnx is an int8 export"),
    ("int8", "fp32.onnx", "fp32.onnx is an fp32 export"),
])
def test_cli_verify_refuses_int8_against_float_and_back(cli_files, tiny_model_path, capsys, model, onnx_file, fragment):
    path = tiny_model_path if model == "model" else cli_files / "int8.npz"
    code, _, err = run(capsys, "verify", path, cli_files / onnx_file)
    assert_one_line_error(code, err, fragment, "verify an export against the model it came from")


def test_an_fp32_step_file_and_an_int8_sequence_file_do_not_combine(cli_files):
    with pytest.raises(CompactLMError, match="not from the same model.*quantized"):
        OrtBackend(cli_files / "fp32.onnx", sequence_path=cli_files / "sequence.onnx")


def test_cli_export_of_8_bit_weights_warns(tiny_model_path, tmp_path, capsys):
    quantize_model(load(tiny_model_path), weight_bits=8).save(tmp_path / "int8.npz")
    code, out, err = run(capsys, "export", tmp_path / "int8.npz", "--out", tmp_path / "m.onnx")
    assert code == 0 and "int8" in out
    assert err.count("\n") == 1 and "warning" in err and "8-bit weights" in err
    assert OrtBackend(tmp_path / "m.onnx").metadata["int8_scheme"]["weight_bits"] == 8
