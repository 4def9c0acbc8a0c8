"""The distillation objective and its analytic gradient, in float64.

`loss_and_grads` (network.py) is the lowest-level function that takes the teacher's distribution
(teacher_probs [T*B, V], rows time-major like the trainer builds them). Its target per position is
q = (1 - eps - a) onehot(target) + eps / V + a teacher   (label smoothing eps, distillation weight a)
and the loss is the mean cross-entropy -sum_v q[v] log p[v]. The reference objective here builds q
itself and takes log p from the inference forward (run_hidden + head_log_probs); the analytic
gradients must equal its fourth-order central finite differences, entry by entry, for every array.
"""
import numpy as np
import pytest

from compact_lm.config import ModelConfig
from compact_lm.network import head_log_probs, init_params, loss_and_grads, param_shapes, run_hidden
from test_gradients import TOLERANCE, _numeric_gradient   # one finite-difference rule for every gradient check

V, E, H, T, B = 7, 3, 4, 5, 2
# (label smoothing, distill): distillation alone, combined with smoothing, and the pure-teacher target
MIXES = [(0.0, 0.4), (0.1, 0.4), (0.0, 1.0)]


def _problem(cell: str):
    rng = np.random.default_rng(11)
    config = ModelConfig(cell=cell, vocab_size=V, embed_size=E, hidden_sizes=(H,))
    params = init_params(config, rng, dtype=np.float64, scale=2.0)
    for name in params:                                   # non-zero biases everywhere
        params[name] += 0.1 * rng.standard_normal(params[name].shape)
    inputs = rng.integers(0, V, size=(T, B))
    targets = rng.integers(0, V, size=(T, B))
    state = [tuple(0.5 * rng.standard_normal((B, H)) for _ in range(2 if cell == "lstm" else 1))]
    logits = 2.0 * rng.standard_normal((T * B, V))        # a fixed, peaked-ish random teacher
    teacher = np.exp(logits - logits.max(axis=1, keepdims=True))
    teacher /= teacher.sum(axis=1, keepdims=True)
    return config, params, inputs, targets, state, teacher


def _target(targets, teacher, eps, alpha):
    q = np.full((T * B, V), eps / V) + alpha * teacher
    q[np.arange(T * B), targets.reshape(-1)] += 1.0 - eps - alpha
    return q


def _reference_log_p(config, params, inputs, state):
    hidden, _ = run_hidden(params, config, inputs, state)
    return head_log_probs(params, hidden.reshape(-1, H))


def _reference_loss(config, params, inputs, state, q):
    return -float((q * _reference_log_p(config, params, inputs, state)).sum()) / (T * B)


def _relative_error(analytic, numeric):
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-6)


def _run(config, params, inputs, targets, state, teacher, eps, alpha):
    return loss_and_grads(params, config, inputs, targets, state, label_smoothing=eps,
                          teacher_probs=teacher, distill=alpha)


@pytest.mark.parametrize("eps, alpha", MIXES)
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_loss_is_cross_entropy_against_the_mixed_target(cell, eps, alpha):
    config, params, inputs, targets, state, teacher = _problem(cell)
    q = _target(targets, teacher, eps, alpha)
    assert np.allclose(q.sum(axis=1), 1.0) and q.min() >= 0.0
    result = _run(config, params, inputs, targets, state, teacher, eps, alpha)
    assert result.loss == pytest.approx(_reference_loss(config, params, inputs, state, q), rel=1e-12)
    log_p = _reference_log_p(config, params, inputs, state)
    plain_nll = -log_p[np.arange(T * B), targets.reshape(-1)].mean()
    assert result.nll == pytest.approx(plain_nll, rel=1e-12)      # nll ignores smoothing and teacher


@pytest.mark.parametrize("eps, alpha", MIXES)
def test_logit_gradient_is_softmax_minus_target(eps, alpha):
    """dL/dlogits = (p - q) / (T B), read off the head bias gradient (its sum over positions)."""
    config, params, inputs, targets, state, teacher = _problem("gru")
    result = _run(config, params, inputs, targets, state, teacher, eps, alpha)
    p = np.exp(_reference_log_p(config, params, inputs, state))
    expected = (p - _target(targets, teacher, eps, alpha)).sum(axis=0) / (T * B)
    np.testing.assert_allclose(result.grads["head.bias"], expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("eps, alpha", MIXES)
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_every_parameter_gradient_matches_finite_differences(cell, eps, alpha):
    config, params, inputs, targets, state, teacher = _problem(cell)
    q = _target(targets, teacher, eps, alpha)
    result = _run(config, params, inputs, targets, state, teacher, eps, alpha)
    checked = 0
    for name in param_shapes(config):
        flat = params[name].reshape(-1)
        analytic = result.grads[name].reshape(-1)
        for index in range(flat.size):
            numeric = _numeric_gradient(flat, index, lambda: _reference_loss(config, params, inputs, state, q))
            assert _relative_error(analytic[index], numeric) <= TOLERANCE, (name, index, analytic[index], numeric)
            checked += 1
    assert checked == sum(v.size for v in params.values())


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_carried_state_gradient_matches_finite_differences(cell):
    config, params, inputs, targets, state, teacher = _problem(cell)
    eps, alpha = 0.1, 0.4
    q = _target(targets, teacher, eps, alpha)
    result = _run(config, params, inputs, targets, state, teacher, eps, alpha)
    for s, array in enumerate(state[0]):
        flat = array.reshape(-1)
        for index in range(flat.size):
            numeric = _numeric_gradient(flat, index, lambda: _reference_loss(config, params, inputs, state, q))
            analytic = result.d_state[0][s].reshape(-1)[index]
            assert _relative_error(analytic, numeric) <= TOLERANCE, (s, index, analytic, numeric)


def test_the_check_sees_the_teacher_term():
    """The check has teeth: the gradient without the teacher term fails against the distillation objective."""
    config, params, inputs, targets, state, teacher = _problem("gru")
    q = _target(targets, teacher, 0.1, 0.4)
    without_teacher = loss_and_grads(params, config, inputs, targets, state, label_smoothing=0.1).grads
    name = "rnn.weight_hh_l0"
    flat = params[name].reshape(-1)
    errors = [_relative_error(without_teacher[name].reshape(-1)[i],
                              _numeric_gradient(flat, i, lambda: _reference_loss(config, params, inputs, state, q)))
              for i in range(flat.size)]
    assert min(errors) > TOLERANCE
