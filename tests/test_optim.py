"""compact_lm.optim against updates computed here by hand from the published equations.

AdamW (Loshchilov & Hutter 2019, Algorithm 2), with the schedule multiplier folded into lr as in
PyTorch: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, m_hat = m / (1 - b1^t),
v_hat = v / (1 - b2^t), p <- p - lr (m_hat / (sqrt(v_hat) + eps) + wd p) with the decay term on
matrices only. SGD: u = mu u + g, p <- p - lr (u + wd p). Float64 throughout.
"""
import math

import numpy as np
import pytest

from compact_lm.config import ModelConfig
from compact_lm.network import param_shapes
from compact_lm.optim import SGD, AdamW, FlatParams, clip_global_norm, lr_at
from compact_lm.trainer import Trainer, _decay_names

from conftest import tiny_config

SHAPES = {"embedding.weight": (3, 2), "rnn.weight_hh_l0": (2, 2), "rnn.bias_hh_l0": (2,), "head.bias": (3,)}
MATRICES = {"embedding.weight", "rnn.weight_hh_l0"}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s) for n, s in SHAPES.items()}


def _grads(seed):
    """Gradients of mixed scales (so eps matters for some entries), one entry exactly zero."""
    rng = np.random.default_rng(seed)
    grads = {n: rng.standard_normal(s) * 10.0 ** rng.integers(-4, 1, size=s) for n, s in SHAPES.items()}
    grads["head.bias"][1] = 0.0
    return grads


def _decay(name: str) -> float:
    return 1.0 if name in MATRICES else 0.0


# ---------------------------------------------------------------------------- which tensors decay

def test_weight_decay_applies_to_matrices_only():
    config = ModelConfig(cell="lstm", vocab_size=7, embed_size=3, hidden_sizes=(4, 5))
    shapes = param_shapes(config)
    assert _decay_names(shapes) == {n for n, s in shapes.items() if len(s) == 2}
    assert len(_decay_names(shapes)) == 6          # embedding, W_ih and W_hh of 2 layers, head


def test_flat_views_share_the_buffer():
    flat = FlatParams(_params(), MATRICES)
    flat.flat += 1.0
    for name, value in _params().items():
        np.testing.assert_array_equal(flat.views[name], value + 1.0)


# ---------------------------------------------------------------------------- AdamW

def _adamw_reference(params, grads_per_step, lrs, *, b1, b2, eps, wd):
    """The published update, element by element in the order of the equations."""
    p = {n: v.copy() for n, v in params.items()}
    m = {n: np.zeros_like(v) for n, v in params.items()}
    v = {n: np.zeros_like(x) for n, x in params.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for name in p:
            g = grads[name]
            m[name] = b1 * m[name] + (1 - b1) * g
            v[name] = b2 * v[name] + (1 - b2) * g * g
            m_hat = m[name] / (1 - b1 ** t)
            v_hat = v[name] / (1 - b2 ** t)
            p[name] = p[name] - lr * (m_hat / (np.sqrt(v_hat) + eps) + _decay(name) * wd * p[name])
    return p


@pytest.mark.parametrize("steps", [1, 2])
def test_adamw_matches_the_published_update(steps):
    hyper = dict(b1=0.8, b2=0.95, eps=1e-3, wd=0.3)
    grads, lrs = [_grads(1), _grads(2)][:steps], [0.01, 0.025][:steps]
    flat = FlatParams(_params(), MATRICES)
    optimizer = AdamW(flat, beta1=hyper["b1"], beta2=hyper["b2"], weight_decay=hyper["wd"], eps=hyper["eps"])
    for g, lr in zip(grads, lrs):
        flat.set_grads(g)
        optimizer.step(lr)
    expected = _adamw_reference(_params(), grads, lrs, **hyper)
    for name, p0 in _params().items():
        # compare the change, not the value, so a slip the size of eps shows
        np.testing.assert_allclose(flat.views[name] - p0, expected[name] - p0, rtol=1e-9, atol=1e-15, err_msg=name)


def test_adamw_first_step_moves_each_entry_by_lr_when_eps_is_negligible():
    """Bias correction makes step 1 exactly lr * sign(g) for |g| >> eps (no decay)."""
    flat = FlatParams(_params(), set())
    optimizer = AdamW(flat, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-12)
    grads = {n: np.where(v >= 0, 1.0, -1.0) * 0.5 for n, v in _params(3).items()}
    flat.set_grads(grads)
    optimizer.step(0.01)
    for name, p0 in _params().items():
        np.testing.assert_allclose(p0 - flat.views[name], 0.01 * np.sign(grads[name]), rtol=1e-9)


def test_adamw_decay_is_decoupled_and_spares_biases():
    """With a zero gradient the Adam term is 0: matrices shrink by exactly (1 - lr wd), biases stay."""
    flat = FlatParams(_params(), MATRICES)
    AdamW(flat, beta1=0.9, beta2=0.99, weight_decay=0.1).step(0.05)
    for name, p0 in _params().items():
        factor = 1.0 - 0.05 * 0.1 if name in MATRICES else 1.0
        np.testing.assert_allclose(flat.views[name], factor * p0, rtol=1e-15, atol=0, err_msg=name)


def test_adamw_resumes_exactly_from_its_state():
    """Moments and t restored after step 1 give the same step 2 (t drives the bias correction)."""
    def fresh():
        flat = FlatParams(_params(), MATRICES)
        return flat, AdamW(flat, beta1=0.8, beta2=0.95, weight_decay=0.3, eps=1e-3)

    flat, optimizer = fresh()
    flat.set_grads(_grads(1))
    optimizer.step(0.01)
    saved = {k: v.copy() for k, v in optimizer.state_arrays().items()}
    saved_params = flat.flat.copy()
    flat.set_grads(_grads(2))
    optimizer.step(0.02)

    flat2, optimizer2 = fresh()
    flat2.flat[...] = saved_params
    optimizer2.load_state(saved, t=1)
    flat2.set_grads(_grads(2))
    optimizer2.step(0.02)
    np.testing.assert_array_equal(flat2.flat, flat.flat)


# ---------------------------------------------------------------------------- SGD with momentum

def test_sgd_momentum_two_steps_match_hand_computation():
    mu, wd, lrs = 0.9, 0.2, [0.1, 0.05]
    flat = FlatParams(_params(), MATRICES)
    optimizer = SGD(flat, momentum=mu, weight_decay=wd)
    p = _params()
    u = {n: np.zeros_like(v) for n, v in p.items()}
    for seed, lr in zip((1, 2), lrs):
        grads = _grads(seed)
        flat.set_grads(grads)
        optimizer.step(lr)
        for name in p:
            u[name] = mu * u[name] + grads[name]
            p[name] = p[name] - lr * (u[name] + _decay(name) * wd * p[name])
    for name in p:
        np.testing.assert_allclose(flat.views[name], p[name], rtol=1e-13, atol=1e-15, err_msg=name)


# ---------------------------------------------------------------------------- schedule

LR, WARMUP, MIN_RATIO = 0.01, 10, 0.1


def _lr(step, progress=0.0):
    return lr_at(progress, step, lr=LR, warmup_steps=WARMUP, min_lr_ratio=MIN_RATIO)


@pytest.mark.parametrize("step, expected", [(0, LR / 10), (4, LR * 5 / 10), (WARMUP - 1, LR)])
def test_warmup_is_linear_from_lr_over_warmup_to_lr(step, expected):
    assert _lr(step) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("progress, expected", [
    (0.0, LR),                                                     # decay starts at the peak
    (0.25, LR * (MIN_RATIO + (1 - MIN_RATIO) * (1 + math.sqrt(0.5)) / 2)),
    (0.5, LR * (1 + MIN_RATIO) / 2),                               # half way: the mean of lr and min
    (1.0, LR * MIN_RATIO),                                         # ends at min_lr_ratio * lr
    (1.7, LR * MIN_RATIO),                                         # overrun: held at the floor
])
def test_cosine_decay_values(progress, expected):
    assert _lr(WARMUP + 5, progress) == pytest.approx(expected, rel=1e-12)


def test_no_warmup_starts_at_the_peak():
    assert lr_at(0.0, 0, lr=LR, warmup_steps=0, min_lr_ratio=MIN_RATIO) == LR


def test_trainer_schedule_decays_from_the_peak_after_warmup(small_corpus, tmp_path):
    """Through real training steps: lr at the first post-warm-up step is (close to) the peak lr, and the
    last step is near min_lr_ratio * lr. (The cosine once counted from step 0: with warm-up 10 of 20 steps
    lr fell from lr to 0.55 lr at the hand-over.)"""
    config = tiny_config(small_corpus, steps=20, warmup_steps=WARMUP, lr=LR, min_lr_ratio=MIN_RATIO, dropout=0.0)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    lrs = []
    for _ in range(20):
        trainer.train_step()
        lrs.append(trainer.last_lr)
    assert lrs[WARMUP - 1] == pytest.approx(LR)
    # one cosine step below the peak is at most 1 - cos(pi / 10) ~ 2.5% of the range
    assert lrs[WARMUP] >= 0.97 * LR, lrs
    # the cosine over the 10 remaining steps: step k after warm-up has progress k / 10
    for k in range(10):
        assert lrs[WARMUP + k] == pytest.approx(_lr(WARMUP + k, k / 10), rel=1e-12)
    assert lrs[-1] <= LR * (MIN_RATIO + (1 - MIN_RATIO) * 0.03), lrs


def _minute_run(config, folder, seconds_per_step, steps, *, resume=False):
    """Run `steps` train steps of a minute-budget Trainer, each counted as `seconds_per_step` of elapsed time."""
    trainer = Trainer(config, folder, resume=resume, progress=False)
    lrs = []
    for _ in range(steps):
        trainer.train_step()
        trainer.elapsed += seconds_per_step
        lrs.append(trainer.last_lr)
    return trainer, lrs


def test_minute_budget_cosine_runs_from_the_end_of_warmup_to_the_end_of_the_budget(small_corpus, tmp_path):
    """60 s budget, 2 s per step, warm-up 10 steps = 20 s: the cosine covers the remaining 40 s,
    peak at the first post-warm-up step, progress (elapsed - 20) / 40 after."""
    config = tiny_config(small_corpus, steps=None, minutes=1.0, warmup_steps=WARMUP, lr=LR, min_lr_ratio=MIN_RATIO,
                         dropout=0.0)
    trainer, lrs = _minute_run(config, tmp_path / "run", 2.0, 30)
    assert trainer.decay_start_s == 20.0
    assert lrs[WARMUP - 1] == pytest.approx(LR) and lrs[WARMUP] == pytest.approx(LR)
    for step in range(WARMUP, 30):
        assert lrs[step] == pytest.approx(_lr(step, (2.0 * step - 20.0) / 40.0), rel=1e-12), step
    assert trainer.done()


def test_minute_budget_schedule_continues_after_resume(small_corpus, tmp_path):
    """The warm-up's end time is saved with the state: a resumed run continues the same cosine."""
    config = tiny_config(small_corpus, steps=None, minutes=1.0, warmup_steps=WARMUP, lr=LR, min_lr_ratio=MIN_RATIO,
                         dropout=0.0)
    _, straight = _minute_run(config, tmp_path / "straight", 2.0, 30)
    first, split = _minute_run(config, tmp_path / "split", 2.0, 15)
    first.save_state()
    resumed, rest = _minute_run(config, tmp_path / "split", 2.0, 15, resume=True)
    assert resumed.decay_start_s == 20.0 and resumed.elapsed == 60.0
    assert split + rest == straight


# ---------------------------------------------------------------------------- global-norm clipping

def _grad_set(scale):
    """Several tensors in one flat buffer, with global norm `scale`."""
    flat = FlatParams(_params(), MATRICES)
    grads = _grads(4)
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    flat.set_grads({n: g * (scale / norm) for n, g in grads.items()})
    return flat


def test_clip_scales_a_large_gradient_to_exactly_the_clip_keeping_direction():
    flat = _grad_set(5.0)
    before = flat.grad.copy()
    returned = clip_global_norm(flat.grad, 2.0)
    assert returned == pytest.approx(5.0, rel=1e-12)                  # the norm before clipping
    assert np.sqrt(sum((v ** 2).sum() for v in flat._grad_views.values())) == pytest.approx(2.0, rel=1e-10)
    np.testing.assert_allclose(flat.grad, before * (2.0 / 5.0), rtol=1e-10)  # same direction, every tensor


def test_clip_leaves_a_small_gradient_untouched():
    flat = _grad_set(0.5)
    before = flat.grad.copy()
    assert clip_global_norm(flat.grad, 2.0) == pytest.approx(0.5, rel=1e-12)
    np.testing.assert_array_equal(flat.grad, before)


def test_clip_of_zero_gradients_is_safe():
    grad = np.zeros(17)
    with np.errstate(all="raise"):
        assert clip_global_norm(grad, 1.0) == 0.0
    np.testing.assert_array_equal(grad, np.zeros(17))


def test_clip_reports_a_non_finite_norm_without_scaling():
    """The trainer stops on a non-finite norm; clipping must not turn inf into nan first."""
    grad = np.array([1.0, np.inf, 2.0])
    assert clip_global_norm(grad, 1.0) == np.inf
    np.testing.assert_array_equal(grad, [1.0, np.inf, 2.0])
