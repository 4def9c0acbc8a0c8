"""Optimisers over one flat parameter buffer: AdamW and SGD with momentum, global-norm clipping,
linear warm-up + cosine decay. Every tensor is a view into the flat buffer, so an update is a
handful of whole-buffer operations, not a Python loop over tensors."""
from __future__ import annotations

import math

import numpy as np


class FlatParams:
    """Parameters living as named views into one contiguous buffer."""

    def __init__(self, params: dict[str, np.ndarray], decay_names: set[str]):
        self.names = list(params)
        dtype = next(iter(params.values())).dtype
        sizes = [params[n].size for n in self.names]
        self.flat = np.empty(sum(sizes), dtype=dtype)
        self.decay_mask = np.zeros(self.flat.size, dtype=dtype)
        self.grad = np.zeros_like(self.flat)
        self.views: dict[str, np.ndarray] = {}
        self._grad_views: dict[str, np.ndarray] = {}
        start = 0
        for name, size in zip(self.names, sizes):
            shape = params[name].shape
            self.views[name] = self.flat[start:start + size].reshape(shape)
            self.views[name][...] = params[name]
            self._grad_views[name] = self.grad[start:start + size].reshape(shape)
            if name in decay_names:
                self.decay_mask[start:start + size] = 1.0
            start += size

    def set_grads(self, grads: dict[str, np.ndarray]) -> None:
        """Copy per-tensor gradients into the flat gradient buffer."""
        for name in self.names:
            self._grad_views[name][...] = grads[name]


def lr_at(progress: float, step: int, *, lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """The learning rate of the step with 0-based index `step`:

        lr_t = lr * (step + 1) / W                                              if step < W  (W = warmup_steps)
        lr_t = lr * (r + (1 - r) * (1 + cos(pi * clip(progress, 0, 1))) / 2)    otherwise    (r = min_lr_ratio)

    i.e. a linear warm-up reaching lr at step W - 1, then a cosine from lr (progress 0) down to lr * r
    (progress 1), held at the floor after. `progress` is counted from the end of the warm-up (the
    trainer's `progress_fraction`: (step - W) / (total - W) for a step budget), so the cosine starts
    at the peak."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def clip_global_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale `grad` in place so its L2 norm is at most max_norm; returns the norm before clipping."""
    norm = float(np.sqrt(np.dot(grad, grad)))
    if math.isfinite(norm) and norm > max_norm:
        grad *= max_norm / (norm + 1e-12)
    return norm


class AdamW:
    """Adam with decoupled weight decay: p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p) on decayed tensors."""

    def __init__(self, flat: FlatParams, *, beta1: float, beta2: float, weight_decay: float, eps: float = 1e-8):
        self.flat, self.beta1, self.beta2, self.weight_decay, self.eps = flat, beta1, beta2, weight_decay, eps
        self.m = np.zeros_like(flat.flat)
        self.v = np.zeros_like(flat.flat)
        self.t = 0
        self._tmp = np.empty_like(flat.flat)

    def step(self, lr: float) -> None:
        """One update from flat.grad."""
        self.t += 1
        g, m, v, tmp = self.flat.grad, self.m, self.v, self._tmp
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        bias1 = 1.0 - self.beta1 ** self.t
        bias2 = 1.0 - self.beta2 ** self.t
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / math.sqrt(bias2)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / bias1
        if self.weight_decay:
            tmp += (lr * self.weight_decay) * (self.flat.decay_mask * self.flat.flat)
        self.flat.flat -= tmp

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Moments, for checkpoints."""
        return {"optim.m": self.m, "optim.v": self.v}

    def load_state(self, arrays: dict[str, np.ndarray], t: int) -> None:
        """Restore moments and the step counter."""
        self.m[...] = arrays["optim.m"]
        self.v[...] = arrays["optim.v"]
        self.t = t


class SGD:
    """SGD with (heavy-ball) momentum and decoupled weight decay: u = mu u + g; p -= lr (u + wd p)."""

    def __init__(self, flat: FlatParams, *, momentum: float, weight_decay: float):
        self.flat, self.momentum, self.weight_decay = flat, momentum, weight_decay
        self.u = np.zeros_like(flat.flat)
        self.t = 0

    def step(self, lr: float) -> None:
        """One update from flat.grad."""
        self.t += 1
        self.u *= self.momentum
        self.u += self.flat.grad
        update = self.u.copy()
        if self.weight_decay:
            update += self.weight_decay * (self.flat.decay_mask * self.flat.flat)
        update *= lr
        self.flat.flat -= update

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Momentum buffer, for checkpoints."""
        return {"optim.u": self.u}

    def load_state(self, arrays: dict[str, np.ndarray], t: int) -> None:
        """Restore the buffer and the step counter."""
        self.u[...] = arrays["optim.u"]
        self.t = t
