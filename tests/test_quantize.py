"""int8: weight round trip, the integer path against a plain integer computation, quality, refusals."""
import math

import numpy as np
import pytest

from compact_lm.backends import NumpyBackend
from compact_lm.errors import CompactLMError
from compact_lm.fileio import save_npz
from compact_lm.int8 import (ACT_SCALE, ACT_ZERO_POINT, ACTIVATION_STEPS, ACTIVATION_TABLES, TABLE_ACTIVATIONS,
                             Int8Product, quantize_rows)
from compact_lm import load
from compact_lm.quantized import QuantizedModel
from compact_lm.tools.quantize import quantize_model
from conftest import random_model

RANDOM = dict(embed=6, scale=2.0)    # this file's random_model settings (pangram vocabulary, seed 0)


@pytest.mark.parametrize("bits", [7, 8])
def test_dequantized_weights_are_within_half_a_step(bits):
    w = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float32)
    q, scale = quantize_rows(w, bits)
    assert q.dtype == np.int8 and np.abs(q).max() <= 2 ** (bits - 1) - 1
    error = np.abs(q.astype(np.float32) * scale[:, None] - w)
    assert (error <= scale[:, None] / 2 * (1 + 1e-6)).all()


def test_integer_product_matches_a_plain_integer_computation():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 20)).astype(np.float32)
    bias = rng.standard_normal(12).astype(np.float32)
    x = np.tanh(rng.standard_normal((5, 20))).astype(np.float32)
    w_q, w_scale = quantize_rows(w, 7)
    product = Int8Product(w_q, w_scale, bias)
    # independent: Python integers, element by element
    x_q = [[min(255, max(0, round(float(v) / float(ACT_SCALE)) + ACT_ZERO_POINT)) for v in row] for row in x]
    expected_acc = np.array([[sum((x_q[b][k] - 128) * int(w_q[j, k]) for k in range(20)) for j in range(12)]
                             for b in range(5)])
    assert np.array_equal(product.integer_accumulate(x), expected_acc)
    expected = expected_acc.astype(np.float32) * (ACT_SCALE * w_scale).astype(np.float32) + bias
    np.testing.assert_allclose(product(x), expected, rtol=0, atol=1e-6)


class PlainTables:
    """The scheme's activation tables, element by element in Python: i = clip(round_half_even(a / step)) + 128."""

    steps = {"sigmoid": 1 / 16, "tanh": 1 / 32}
    functions = {"sigmoid": lambda a: 1 / (1 + math.exp(-a)), "tanh": math.tanh}

    def lookup(self, a: float, kind: str) -> float:
        index = min(127, max(-128, round(a / self.steps[kind])))    # Python's round is half to even
        return float(np.float32(self.functions[kind](index * self.steps[kind])))

    def sigmoid_(self, x):
        x[...] = [[self.lookup(float(v), "sigmoid") for v in row] for row in x]
        return x

    def tanh_(self, x):
        x[...] = [[self.lookup(float(v), "tanh") for v in row] for row in x]
        return x

    def gates_(self, x, kinds):
        hidden = x.shape[-1] // len(kinds)
        for j, kind in enumerate(kinds):
            getattr(self, f"{kind}_")(x[:, j * hidden:(j + 1) * hidden])
        return x


def test_activation_tables_follow_the_functions_within_half_a_step():
    a = np.linspace(-12, 12, 20001, dtype=np.float32)
    wide = a.astype(np.float64)
    for kind, exact, slope in [("sigmoid", 1 / (1 + np.exp(-wide)), 0.25), ("tanh", np.tanh(wide), 1.0)]:
        step = float(ACTIVATION_STEPS[kind])
        low, high = -128 * step, 127 * step
        inside = (a >= low) & (a <= high)
        got = getattr(TABLE_ACTIVATIONS, f"{kind}_")(a.copy())
        assert np.abs(got - exact)[inside].max() <= slope * step / 2 + 1e-7
        # beyond the range: the value at its end
        table = ACTIVATION_TABLES[kind]
        assert np.all(got[a < low] == table[0]) and np.all(got[a > high] == table[255])


@pytest.mark.parametrize("step", [1 / 16, 1 / 32])
def test_activation_tables_match_a_plain_lookup_at_ties(step):
    """Half-step ties (round half to even), the range ends and beyond, for both tables' steps."""
    a = np.array([[-0.5 * step, 0.5 * step, 1.5 * step, 2.5 * step, -127.5 * step, 126.5 * step, 127.5 * step,
                   -128.5 * step, 7.97, 8.0, -9.0, 0.0]], dtype=np.float32)
    for kind in ("sigmoid", "tanh"):
        want = getattr(PlainTables(), f"{kind}_")(a.copy())
        assert np.array_equal(getattr(TABLE_ACTIVATIONS, f"{kind}_")(a.copy()), want)
    kinds = ("sigmoid", "tanh", "sigmoid")
    blocks = np.concatenate([a, a, a], axis=1)
    assert np.array_equal(TABLE_ACTIVATIONS.gates_(blocks.copy(), kinds), PlainTables().gates_(blocks.copy(), kinds))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_int8_step_matches_an_independent_integer_step(cell):
    """One whole int8 step (table gather, integer products, table activations, head) against arithmetic done here."""
    from compact_lm.cells import get_cell
    quantized = quantize_model(random_model(cell, (24,), **RANDOM))
    a = quantized.arrays
    backend = NumpyBackend(quantized)
    rng = np.random.default_rng(4)
    state = [tuple(np.tanh(rng.standard_normal((3, 24))).astype(np.float32) for _ in get_cell(cell).state_names)]
    ids = np.array([1, 5, 9])

    def product(name, bias, x):
        x_q = np.clip(np.rint(x / ACT_SCALE), -128, 127).astype(np.int32)          # = QuantizeLinear - 128
        acc = x_q @ a[name + ".q"].astype(np.int32).T
        return acc.astype(np.float32) * (ACT_SCALE * a[name + ".scale"]).astype(np.float32) + a[bias]

    xg = a["table.q"][ids].astype(np.float32) * a["table.scale"]
    gh = product("rnn.weight_hh_l0", "rnn.bias_hh_l0", state[0][0])
    new_state = get_cell(cell).step(xg, gh, state[0], PlainTables())
    logits = product("head.weight", "head.bias", new_state[0])
    shifted = logits - logits.max(1, keepdims=True)
    expected = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    log_p, got_state = backend.step(ids, state)
    np.testing.assert_allclose(log_p, expected, atol=1e-5)
    # the state is exact: integer sums, then the same float operations in the same order
    assert all(np.array_equal(got, want) for got, want in zip(got_state[0], new_state))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_int8_stays_close_to_float(cell):
    model = random_model(cell, (24, 16), **RANDOM)
    text = "the quick brown fox jumps over the lazy dog\n" * 3
    fp32 = model.evaluate(text).bpc
    int8 = quantize_model(model).evaluate(text).bpc
    assert abs(int8 - fp32) / fp32 < 0.02


def test_quantized_model_round_trips_through_a_file(tmp_path):
    quantized = quantize_model(random_model("lstm", (24, 16), **RANDOM))
    quantized.save(tmp_path / "q.npz")
    again = load(tmp_path / "q.npz")
    assert isinstance(again, QuantizedModel) and again.weight_bits == 7
    assert all(np.array_equal(again.arrays[n], quantized.arrays[n]) for n in quantized.arrays)
    text = "the lazy fox"
    assert again.evaluate(text).nats == quantized.evaluate(text).nats


def test_quantized_file_is_about_a_quarter():
    model = random_model("gru", (128,), embed=32, scale=2.0)
    quantized = quantize_model(model)
    float_bytes = sum(a.nbytes for a in model.params.values())
    int8_bytes = sum(a.nbytes for a in quantized.arrays.values())
    assert int8_bytes < 0.3 * float_bytes


def test_dequantized_float_path_separates_weight_error():
    quantized = quantize_model(random_model("gru", (24, 16), **RANDOM))
    text = "the quick brown fox"
    int8, weights_only = quantized.evaluate(text).nats, quantized.evaluate(text, arithmetic="float").nats
    assert int8 != weights_only and abs(int8 - weights_only) < 0.01


def test_quantizing_twice_is_refused():
    with pytest.raises(CompactLMError, match="already quantized"):
        quantize_model(quantize_model(random_model("gru", (24, 16), **RANDOM)))


def test_an_int8_file_of_the_earlier_scheme_is_refused(tmp_path):
    """Files from before the activation tables and per-column table scales would load with another meaning."""
    quantized = quantize_model(random_model("gru", (24, 16), **RANDOM))
    meta = quantized.metadata()
    for key in ("table_scales", "sigmoid_step", "tanh_step"):
        del meta["int8"][key]
    save_npz(tmp_path / "old.npz", quantized.arrays, meta)
    with pytest.raises(CompactLMError, match="old.npz: int8 model of an earlier int8 scheme .*quantize the float model again"):
        load(tmp_path / "old.npz")


def test_an_int8_file_with_a_nan_scale_is_refused(tmp_path):
    quantized = quantize_model(random_model("gru", (24, 16), **RANDOM))
    quantized.arrays["head.weight.scale"][2] = np.nan
    save_npz(tmp_path / "nan.npz", quantized.arrays, quantized.metadata())
    with pytest.raises(CompactLMError, match="head.weight.scale holds NaN or infinite values"):
        load(tmp_path / "nan.npz")
