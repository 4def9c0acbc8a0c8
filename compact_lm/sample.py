"""Sampling text from a model (temperature, top-k), on any backend."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .backends import Backend
from .errors import SettingError
from .vocab import START_TEXT, UNK_ID, Vocab


def sample(backend: Backend, vocab: Vocab, *, prompt: str = "", length: int = 200, temperature: float = 1.0,
           top_k: int | None = None, seed: int | None = None) -> str:
    """Continue `prompt` by `length` characters; `<unk>` is never drawn."""
    return "".join(generate(backend, vocab, prompt=prompt, length=length, temperature=temperature, top_k=top_k,
                            seed=seed))


def generate(backend: Backend, vocab: Vocab, *, prompt: str = "", length: int = 200, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None) -> Iterator[str]:
    """The characters `sample` draws, one at a time as each is drawn (settings checked before the first)."""
    if length < 0:
        raise SettingError("length", "{length} must be >= 0 (got {got})", got=length)
    if not temperature > 0:
        raise SettingError("temperature", "{temperature} must be > 0 (got {got})", got=temperature)
    if seed is not None and seed < 0:
        raise SettingError("seed", "{seed} must be >= 0 (got {got})", got=seed)
    if top_k is not None and top_k < 1:
        raise SettingError("top_k", "{top_k} must be >= 1 (got {got})", got=top_k)
    return _draw(backend, vocab, prompt, length, temperature, top_k, np.random.default_rng(seed))


def _draw(backend: Backend, vocab: Vocab, prompt: str, length: int, temperature: float, top_k: int | None,
          rng: np.random.Generator) -> Iterator[str]:
    # without a prompt, start as if a new line had just begun
    ids = vocab.encode(prompt) if prompt else vocab.encode(START_TEXT)
    if len(ids) == 0:
        ids = np.array([UNK_ID])
    state = backend.initial_state(1)
    log_p, state = backend.run(ids[None, :], state)
    log_p = log_p[0, -1]
    for _ in range(length):
        logits = log_p.astype(np.float64) / temperature
        logits[UNK_ID] = -np.inf
        if top_k is not None and top_k < len(logits):
            cut = np.partition(logits, -top_k)[-top_k]
            logits[logits < cut] = -np.inf
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        token = int(rng.choice(len(probs), p=probs))
        yield vocab.decode([token])
        step_log_p, state = backend.step(np.array([token]), state)
        log_p = step_log_p[0]
