"""GRU's linear_before_reset convention, checked against computations that share no code with compact-lm.

PyTorch's GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), which is ONNX's linear_before_reset=1;
the ONNX default (0) is n = tanh(W_in x + b_in + W_hn (r * h) + b_hn). The two differ only where r
is not 1, so the weights are scaled up to move r away from its midrange.
"""
import numpy as np
import onnx
import onnxruntime
import pytest

from compact_lm.export import build_model
from conftest import random_model

TOL = 1e-5


@pytest.fixture(scope="module")
def gru_model(alice_text):
    return random_model("gru", (16,), embed=10, text=alice_text, seed=5, scale=2.0)


def session(proto: onnx.ModelProto) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def one_step(proto: onnx.ModelProto, tokens: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log_probs, h') of a step graph."""
    return tuple(session(proto).run(["log_probs", "state_l0_out"], {"tokens": tokens, "state_l0": h}))


def handwritten_gru_step(p: dict, tokens: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's documented GRU equations plus the head, in float64, written out gate by gate."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    size = h.shape[1]
    x = p["embedding.weight"][tokens]
    w_ir, w_iz, w_in = np.split(p["rnn.weight_ih_l0"], 3)
    w_hr, w_hz, w_hn = np.split(p["rnn.weight_hh_l0"], 3)
    b_ir, b_iz, b_in = np.split(p["rnn.bias_ih_l0"], 3)
    b_hr, b_hz, b_hn = np.split(p["rnn.bias_hh_l0"], 3)
    assert w_hn.shape == (size, size)
    sigmoid = lambda a: 1.0 / (1.0 + np.exp(-a))
    r = sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = np.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
    h_new = (1 - z) * n + z * h
    logits = h_new @ p["head.weight"].T + p["head.bias"]
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    return log_probs, h_new


def with_linear_before_reset_0(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with ONNX's default GRU form (what a careless exporter writes)."""
    changed = onnx.ModelProto()
    changed.CopyFrom(proto)
    for node in changed.graph.node:
        if node.op_type == "GRU":
            for attribute in node.attribute:
                if attribute.name == "linear_before_reset":
                    attribute.i = 0
    return changed


@pytest.mark.parametrize("native_rnn", [False, True])
def test_gru_step_matches_handwritten_equations(gru_model, native_rnn, alice_text):
    tokens = gru_model.vocab.encode(alice_text[500:506]).astype(np.int64)
    h = np.tanh(np.random.default_rng(0).standard_normal((len(tokens), 16))).astype(np.float32)
    log_probs, h_new = one_step(build_model(gru_model, native_rnn=native_rnn), tokens, h)
    want_log_probs, want_h = handwritten_gru_step(gru_model.params, tokens, h)
    assert np.abs(h_new - want_h).max() <= TOL and np.abs(log_probs - want_log_probs).max() <= TOL


def test_the_other_gru_convention_is_detected(gru_model, alice_text):
    """The check above can fail: linear_before_reset=0 gives clearly different numbers."""
    tokens = gru_model.vocab.encode(alice_text[500:506]).astype(np.int64)
    h = np.tanh(np.random.default_rng(0).standard_normal((len(tokens), 16))).astype(np.float32)
    _, h_new = one_step(with_linear_before_reset_0(build_model(gru_model, native_rnn=True)), tokens, h)
    _, want_h = handwritten_gru_step(gru_model.params, tokens, h)
    assert np.abs(h_new - want_h).max() > 1e-3


@pytest.mark.parametrize("native_rnn", [False, True])
def test_gru_sequence_matches_torch(gru_model, native_rnn, alice_text):
    torch = pytest.importorskip("torch")
    config = gru_model.config
    embedding = torch.nn.Embedding(config.vocab_size, config.embed_size)
    gru = torch.nn.GRU(config.embed_size, config.hidden_sizes[0], 1, batch_first=True)
    head = torch.nn.Linear(config.hidden_sizes[0], config.vocab_size)
    for prefix, module in (("embedding.", embedding), ("rnn.", gru), ("head.", head)):
        module.load_state_dict({k[len(prefix):]: torch.from_numpy(v) for k, v in gru_model.params.items()
                                if k.startswith(prefix)}, strict=True)
    ids = gru_model.vocab.encode(alice_text[9000:9120]).astype(np.int64).reshape(2, 60)
    h0 = np.tanh(np.random.default_rng(3).standard_normal((2, 16))).astype(np.float32)
    with torch.no_grad():
        out, h_n = gru(embedding(torch.from_numpy(ids)), torch.from_numpy(h0)[None])
        want = torch.log_softmax(head(out), dim=-1).numpy()
    got, h_final = session(build_model(gru_model, sequence=True, native_rnn=native_rnn)).run(
        ["log_probs", "state_l0_out"], {"tokens": ids, "state_l0": h0})
    assert np.abs(got - want).max() <= TOL and np.abs(h_final - h_n[0].numpy()).max() <= TOL
