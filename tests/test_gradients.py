"""Analytic BPTT gradients equal float64 central finite differences, for every cell and depth."""
import numpy as np
import pytest

from compact_lm.config import ModelConfig
from compact_lm.network import init_params, loss_and_grads, param_shapes

TOLERANCE = 1e-6
STEP = 1e-3   # fourth-order central differences: truncation ~STEP^4, round-off ~1e-16 / STEP


def _problem(cell: str, layers: int):
    rng = np.random.default_rng(1)
    config = ModelConfig(cell=cell, vocab_size=7, embed_size=5, hidden_sizes=(6, 4)[:layers])
    params = init_params(config, rng, dtype=np.float64, scale=2.0)
    for name in params:                      # non-zero biases everywhere
        params[name] += 0.1 * rng.standard_normal(params[name].shape)
    inputs = rng.integers(0, 7, size=(5, 3))
    targets = rng.integers(0, 7, size=(5, 3))
    state = [tuple(0.5 * rng.standard_normal((3, h)) for _ in range(2 if cell == "lstm" else 1))
             for h in config.hidden_sizes]
    return config, params, inputs, targets, state


def _loss(config, params, inputs, targets, state):
    return loss_and_grads(params, config, inputs, targets, state, label_smoothing=0.1).loss


def _numeric_gradient(flat: np.ndarray, index: int, loss) -> float:
    """(-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h, restoring the entry afterwards."""
    saved = flat[index]
    values = []
    for offset in (2 * STEP, STEP, -STEP, -2 * STEP):
        flat[index] = saved + offset
        values.append(loss())
    flat[index] = saved
    return (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * STEP)


def _relative_error(analytic: float, numeric: float) -> float:
    # below 1e-6 in size, a gradient is held to an absolute 1e-12 (finite-difference round-off is ~1e-13)
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-6)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_parameter_gradients_match_finite_differences(cell, layers):
    config, params, inputs, targets, state = _problem(cell, layers)
    result = loss_and_grads(params, config, inputs, targets, state, label_smoothing=0.1)
    rng = np.random.default_rng(2)
    for name, shape in param_shapes(config).items():
        flat = params[name].reshape(-1)
        for index in rng.choice(flat.size, size=min(flat.size, 12), replace=False):
            numeric = _numeric_gradient(flat, index, lambda: _loss(config, params, inputs, targets, state))
            analytic = result.grads[name].reshape(-1)[index]
            assert _relative_error(analytic, numeric) <= TOLERANCE, (name, index, analytic, numeric)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_carried_state_gradient_matches_finite_differences(cell, layers):
    config, params, inputs, targets, state = _problem(cell, layers)
    result = loss_and_grads(params, config, inputs, targets, state, label_smoothing=0.1)
    for k, layer_state in enumerate(state):
        for s, array in enumerate(layer_state):
            flat = array.reshape(-1)
            for index in range(flat.size):
                numeric = _numeric_gradient(flat, index, lambda: _loss(config, params, inputs, targets, state))
                analytic = result.d_state[k][s].reshape(-1)[index]
                assert _relative_error(analytic, numeric) <= TOLERANCE, (k, s, index, analytic, numeric)


def test_a_wrong_gradient_is_caught(monkeypatch):
    """The check has teeth: a 1e-4 relative slip in one recurrent gradient fails it."""
    config, params, inputs, targets, state = _problem("gru", 1)
    result = loss_and_grads(params, config, inputs, targets, state, label_smoothing=0.1)
    name, index = "rnn.weight_hh_l0", 7
    flat = params[name].reshape(-1)
    numeric = _numeric_gradient(flat, index, lambda: _loss(config, params, inputs, targets, state))
    assert _relative_error(result.grads[name].reshape(-1)[index] * (1 + 1e-4), numeric) > TOLERANCE


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gradients_with_dropout_and_weight_drop_match_finite_differences(cell):
    """With the masks fixed (same generator seed every call), the masked loss is differentiated exactly."""
    config, params, inputs, targets, state = _problem(cell, 2)

    def run():
        return loss_and_grads(params, config, inputs, targets, state, dropout=0.3, weight_drop=0.3,
                              label_smoothing=0.1, rng=np.random.default_rng(5))

    result = run()
    rng = np.random.default_rng(3)
    for name in ("rnn.weight_hh_l0", "rnn.weight_hh_l1", "rnn.weight_ih_l1", "embedding.weight"):
        flat = params[name].reshape(-1)
        for index in rng.choice(flat.size, size=8, replace=False):
            numeric = _numeric_gradient(flat, index, lambda: run().loss)
            analytic = result.grads[name].reshape(-1)[index]
            assert _relative_error(analytic, numeric) <= TOLERANCE, (name, index, analytic, numeric)
