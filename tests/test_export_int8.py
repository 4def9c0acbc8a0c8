"""int8 ONNX export: the graphs compute compact_lm.int8's scheme exactly as the NumPy int8 path does.

What "exactly" means here (export/verify_int8.py): every integer product is bit for bit the NumPy one, given
the same inputs; the float functions of the cells (tanh, sigmoid) round differently in onnxruntime, so a
hidden state within ~1e-7 of a rounding boundary can quantize to the neighbouring integer (a rounding flip,
~1e-5 per value). Hence the checks: single products bit-identical; whole steps from the same state within
float rounding (TOL) off flip positions; the sequence graph equal to the step graph (both onnxruntime).
"""
import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator

from compact_lm.backends import NumpyBackend
from compact_lm.cells import CELLS
from compact_lm.cli import main
from compact_lm.config import ModelConfig
from compact_lm.errors import CompactLMError
from compact_lm.export import INT8_OPSET, OPSET, build_model, export_model
from compact_lm.export.graph import FLOAT, GraphBuilder, make_model, tensor
from compact_lm.export.interface import out_name, state_names
from compact_lm.export.products_int8 import Int8GraphProducts, int8_matmul
from compact_lm.export.verify_int8 import teacher_forced, verify_int8
from compact_lm.int8 import ACT_SCALE, Int8Product, Int8Products
from compact_lm.model import Model, load
from compact_lm.network import init_params
from compact_lm.ort_backend import OrtBackend, session_options
from compact_lm.tools.quantize import quantize_model
from compact_lm.vocab import Vocab
from cli_helpers import assert_one_line_error, run
from export_helpers import max_state_diff

TOL = 1e-5     # float rounding of log-softmax and of the cells' tanh / sigmoid (observed <= 2e-6)
SIZES = {"1 layer": (20,), "2 layers": (20, 13)}    # unequal layer sizes, as pruning makes them


def quantized(alice_text: str, cell: str, hidden_sizes: tuple, seed: int = 0, embed: int = 12, **options):
    """A quantized model of PyTorch-style random weights (scaled up so the gates leave their linear range)."""
    vocab = Vocab.build(alice_text)
    config = ModelConfig(cell=cell, vocab_size=vocab.size, embed_size=embed, hidden_sizes=hidden_sizes)
    info = {"steps": 3, "train_config": {"cell": cell}, "metrics": {"val": {"bpc": 2.5}}}
    params = init_params(config, np.random.default_rng(seed), scale=1.5)
    return quantize_model(Model(config, vocab, params, info), **options)


def random_state(backend, batch: int, seed: int = 1) -> list:
    """A non-zero state in (-1, 1), so that the state inputs and their quantization are really used."""
    rng = np.random.default_rng(seed)
    return [tuple(np.tanh(2 * rng.standard_normal(s.shape)).astype(np.float32) for s in layer)
            for layer in backend.initial_state(batch)]


@pytest.fixture(scope="module", params=[(c, s) for c in CELLS for s in SIZES.values()], ids=lambda p: f"{p[0]}-{len(p[1])}layer")
def exported(request, tmp_path_factory, alice_text):
    """One quantized model per (cell, layers), exported as int8 step and sequence graphs, plus real text as ids."""
    cell, sizes = request.param
    model = quantized(alice_text, cell, sizes)
    folder = tmp_path_factory.mktemp(f"int8_{cell}{len(sizes)}")
    paths = {"step": folder / "step.onnx", "sequence": folder / "sequence.onnx"}
    export_model(model, paths["step"])
    export_model(model, paths["sequence"], sequence=True)
    ids = model.vocab.encode(alice_text[30000:30240]).astype(np.int64)
    return SimpleNamespace(model=model, paths=paths, ids=ids, reference=NumpyBackend(model))


# ------------------------------------------------------------------------------ single products
def run_graph(nodes_of, inputs: dict[str, np.ndarray], rank: int, optimize: bool = True) -> np.ndarray:
    """Build a graph with one float output of `rank` axes, `nodes_of(g, input names...)`, at INT8_OPSET; run it."""
    g = GraphBuilder()
    g.reserve(*inputs, "y")
    g.rename(nodes_of(g, *inputs), "y")
    types = {np.dtype(np.float32): FLOAT, np.dtype(np.int64): onnx.TensorProto.INT64}
    graph = g.graph("probe", [tensor(n, types[a.dtype], list(a.shape)) for n, a in inputs.items()],
                    [tensor("y", FLOAT, [f"d{i}" for i in range(rank)])])
    proto = make_model(graph, {}, "probe", INT8_OPSET)
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


def test_the_int8_table_gather_is_bit_identical_to_numpy(alice_text):
    model = quantized(alice_text, "gru", (16,))
    products = Int8GraphProducts(model)
    ids = np.arange(model.config.vocab_size, dtype=np.int64)[::-1].copy()
    got = run_graph(lambda g, name: products.embed(g, name), {"ids": ids}, 2)
    assert np.array_equal(got, Int8Products(model.arrays, 1).embed(ids))


# ---------------------------------------------------------------------------------- whole graphs
@pytest.mark.parametrize("graph, batch", [("step", 1), ("step", 4), ("sequence", 1)])
def test_steps_from_the_same_state_match_numpy_off_rounding_flips(exported, graph, batch):
    ort = OrtBackend(exported.paths[graph])   # a sequence file alone runs its steps as sequences of length 1
    ids = exported.ids[:200].reshape(batch, -1)
    result = teacher_forced(exported.reference, ort, ids, graph, state=random_state(ort, batch))
    assert result.max_abs_diff <= TOL and result.max_state_diff <= TOL
    # flips are rare (~1e-5 per value: expected 0.07 here); an export error would flip most positions
    assert result.flip_positions <= 2 and result.ok


class ReferenceBackend:
    """A step or sequence graph run by onnx's ReferenceEvaluator (the ONNX spec in NumPy), as a Backend."""

    def __init__(self, path, model):
        self.evaluator = ReferenceEvaluator(onnx.load(path))
        self.sequence = "sequence" in str(path)
        self.names = state_names(model.config)
        self.outputs = ["log_probs", *(out_name(n) for layer in self.names for n in layer)]

    def step(self, tokens, state):
        feed = {n: v for layer, values in zip(self.names, state) for n, v in zip(layer, values)}
        result = self.evaluator.run(self.outputs, {"tokens": tokens[:, None] if self.sequence else tokens, **feed})
        flat = iter(result[1:])
        return (result[0][:, 0] if self.sequence else result[0]), [tuple(next(flat) for _ in layer) for layer in self.names]


@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_onnx_reference_evaluator_agrees_with_numpy(exported, graph):
    """The graphs mean the scheme by the ONNX spec itself, not only as onnxruntime runs them."""
    reference = ReferenceBackend(exported.paths[graph], exported.model)
    ids = exported.ids[:40].reshape(2, 20)
    result = teacher_forced(exported.reference, reference, ids, graph, state=random_state(exported.reference, 2))
    assert result.max_abs_diff <= TOL and result.max_state_diff <= TOL and result.flip_positions <= 1


def test_sequence_graph_equals_step_graph_run_one_character_at_a_time(exported):
    step, sequence = OrtBackend(exported.paths["step"]), OrtBackend(exported.paths["sequence"])
    ids = exported.ids[:240].reshape(3, 80)
    state = random_state(step, 3)
    at_once, state_a = sequence.run(ids, state)
    one_by_one = []
    for t in range(ids.shape[1]):
        log_probs, state = step.step(np.ascontiguousarray(ids[:, t]), state)
        one_by_one.append(log_probs)
    assert at_once.shape == (3, 80, exported.model.config.vocab_size)
    # same kernels on the same shapes: the same numbers, so no flips and no drift over 80 steps
    assert np.abs(at_once - np.stack(one_by_one, axis=1)).max() <= 1e-6 and max_state_diff(state_a, state) <= 1e-6


@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_unoptimized_session_matches_optimized(exported, graph):
    ids = exported.ids[:150].reshape(3, 50)
    optimized, plain = OrtBackend(exported.paths[graph]), OrtBackend(exported.paths[graph], optimize=False)
    state = random_state(plain, 3)
    a, state_a = optimized.run(ids, state)
    b, state_b = plain.run(ids, state)
    assert np.abs(a - b).max() <= 1e-6 and max_state_diff(state_a, state_b) <= 1e-6


def test_free_running_verification_passes(exported):
    """What `compact-lm verify` runs: free-running bpc, teacher-forced steps, sequence vs step."""
    step = OrtBackend(exported.paths["step"], sequence_path=exported.paths["sequence"])
    report = verify_int8(exported.reference, step, exported.ids, sequence_alone=OrtBackend(exported.paths["sequence"]))
    assert report.failures() == []
    assert [(r.graph, r.batch) for r in report.teacher_forced] == [("step", 1), ("step", 4), ("sequence", 1)]
    assert all(abs(r.bpc_difference) < 1e-3 and r.top1_agreement >= 0.99 for r in report.free_running)
    assert report.loop.max_abs_diff <= 1e-6


def test_a_wrong_scale_is_caught_by_the_teacher_forced_check(alice_text, tmp_path):
    """The check can fail: one head row's scale 1% off changes that logit at every position."""
    model = quantized(alice_text, "lstm", (20, 13))
    wrong = quantized(alice_text, "lstm", (20, 13))
    wrong.arrays["head.weight.scale"][5] *= np.float32(1.01)
    export_model(wrong, tmp_path / "wrong.onnx")
    ids = model.vocab.encode(alice_text[500:600])[None, :].astype(np.int64)
    result = teacher_forced(NumpyBackend(model), OrtBackend(tmp_path / "wrong.onnx"), ids)
    assert not result.ok and result.max_abs_diff > 1e-3


def test_a_wrong_recurrent_weight_makes_most_positions_flip(alice_text, tmp_path):
    model = quantized(alice_text, "gru", (20,))
    wrong = quantized(alice_text, "gru", (20,))
    wrong.arrays["rnn.weight_hh_l0.q"][:, 3] = -wrong.arrays["rnn.weight_hh_l0.q"][:, 3]
    export_model(wrong, tmp_path / "wrong.onnx")
    ids = model.vocab.encode(alice_text[500:600])[None, :].astype(np.int64)
    ort = OrtBackend(tmp_path / "wrong.onnx")
    result = teacher_forced(NumpyBackend(model), ort, ids, state=random_state(ort, 1))
    assert not result.ok and result.flip_positions > result.allowed_flip_positions


# ------------------------------------------------------------------------------ file and metadata
def all_op_types(graph: onnx.GraphProto) -> set[str]:
    """Operator types of a graph and of every subgraph inside it."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                ops |= all_op_types(attribute.g)
    return ops


@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_saved_graphs_pass_the_full_checker_with_standard_operators_only(exported, graph):
    proto = onnx.load(exported.paths[graph])
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", INT8_OPSET)]
    portable = {"Gather", "Add", "Sub", "Mul", "Sigmoid", "Tanh", "LogSoftmax", "Split", "Scan", "Transpose",
                "Identity", "QuantizeLinear", "MatMulInteger", "Cast"}
    assert all_op_types(proto.graph) <= portable and "MatMul" not in all_op_types(proto.graph)


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
        assert ort.metadata["int8_scheme"]["weight_bits"] == 7 and ort.metadata["opset"] == INT8_OPSET
        assert ort.metadata["train_config"] == model.info["train_config"]
    raw = {p.key: p.value for p in onnx.load(exported.paths["step"]).metadata_props}
    assert raw["int8"] == "true" and raw["dtype"] == "float32" and raw["native_rnn"] == "false"
    assert json.loads(raw["int8_scheme"])["activation_zero_point"] == 128


def test_int8_file_is_under_a_third_of_the_fp32_file(alice_text):
    """GRU E=64, H=256 over a 66-character vocabulary, as in benchmarks/export_latency.py."""
    vocab = Vocab(tuple(sorted(set(alice_text)))[:65])
    config = ModelConfig(cell="gru", vocab_size=vocab.size, embed_size=64, hidden_sizes=(256,))
    assert vocab.size == 66
    model = Model(config, vocab, init_params(config, np.random.default_rng(0)))
    fp32 = len(build_model(model).SerializeToString())
    int8 = len(build_model(quantize_model(model)).SerializeToString())
    assert int8 <= 0.3 * fp32, (int8, fp32)


def test_fp32_export_is_unchanged_by_the_int8_path(alice_text):
    model = Model(*(lambda q: (q.config, q.vocab))(quantized(alice_text, "gru", (8,))),
                  init_params(ModelConfig("gru", Vocab.build(alice_text).size, 12, (8,)), np.random.default_rng(0)))
    proto = build_model(model)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert {p.key: p.value for p in proto.metadata_props}["int8"] == "false"


def test_native_rnn_export_of_a_quantized_model_is_refused(alice_text):
    with pytest.raises(CompactLMError, match="no integer variant"):
        build_model(quantized(alice_text, "lstm", (8,)), native_rnn=True)


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
    assert code == 0 and err == "" and f"int8, opset {INT8_OPSET}" in out
    assert OrtBackend(tmp_path / "m.onnx").metadata["int8"] is True


def test_cli_verify_of_an_int8_export_passes(cli_files, capsys):
    code, out, err = run(capsys, "verify", cli_files / "int8.npz", cli_files / "step.onnx",
                         "--sequence", cli_files / "sequence.onnx", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["ok"] and report["int8"] and report["failures"] == []
    assert [(r["mode"], r["batch"]) for r in report["results"]] == [("step", 1), ("step", 4), ("sequence", 1)]
    assert [(r["graph"], r["batch"]) for r in report["teacher_forced"]] == [("step", 1), ("step", 4), ("sequence", 1)]
    assert all(r["max_abs_diff"] <= TOL and r["ok"] for r in report["teacher_forced"])
    assert all(r["top1_agreement"] >= 0.99 and abs(r["bpc_difference"]) < 1e-3 for r in report["results"])
    assert report["sequence_vs_step"]["max_abs_diff"] <= 1e-6


def test_cli_verify_text_output(cli_files, capsys):
    code, out, err = run(capsys, "verify", cli_files / "int8.npz", cli_files / "step.onnx", "--chars", 500)
    assert code == 0, err
    assert "500 characters" in out and "teacher-forced" in out and "ok: teacher-forced" in out
    assert "no sequence graph" in out


def test_cli_verify_fails_for_another_quantized_model(cli_files, tiny_model_path, tmp_path, capsys):
    model = load(tiny_model_path)
    other = Model(model.config, model.vocab, init_params(model.config, np.random.default_rng(9)))
    quantize_model(other).save(tmp_path / "other.npz")
    assert run(capsys, "export", tmp_path / "other.npz", "--out", tmp_path / "other.onnx")[0] == 0
    code, out, err = run(capsys, "verify", cli_files / "int8.npz", tmp_path / "other.onnx")
    assert_one_line_error(code, err, "teacher-forced step graph", "does not match")
    assert "teacher-forced" in out


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
