"""A character n-gram baseline (interpolated modified Kneser-Ney) behind the Backend protocol.

Estimated from token ids (the model's training split), so the same Autocompleter and the same
evaluation run on it. Its state is the context: one "layer" holding an int64 array [batch, order-1]
of the last ids, -1 where the text is shorter than that.

With c(h w) the count of n-gram h w at the top order and the number of distinct characters seen
before h w at lower orders (Kneser-Ney continuation counts), and h' = h without its first character:
    P(w | h) = max(c(h w) - D(c), 0) / c(h .) + gamma(h) P(w | h'),
    gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3 N3+(h .)) / c(h .),
where N_i(h .) counts the characters seen i times after h (3+: three or more) and D(c) = D1, D2, D3
for c = 1, 2, >= 3 (Chen & Goodman's estimates from each order's counts of counts). The recursion
ends at the uniform distribution 1/V; a context never seen is skipped (P(w | h) = P(w | h')).
Every distribution sums to 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CompactLMError
from .vocab import Vocab

DEFAULT_ORDER = 7        # characters per n-gram (context = order - 1): best tinyshakespeare validation bpc of 4..8
CACHE_ROWS = 1 << 16     # distributions remembered by context (beam search revisits the same contexts)


@dataclass(frozen=True)
class OrderTable:
    """The counts of one order, grouped by context: context keys sorted, each with its words' discounted mass."""

    context_keys: np.ndarray   # [C] int64, context ids packed in base V
    starts: np.ndarray         # [C + 1] int64, words of context i are words[starts[i]:starts[i + 1]]
    words: np.ndarray          # [N] int64
    mass: np.ndarray           # [N] float64, max(c - D(c), 0) / c(h .)
    gamma: np.ndarray          # [C] float64, weight of the lower order


def discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3] from counts of counts: Y = n1/(n1 + 2 n2), D_i = i - (i + 1) Y n_{i+1} / n_i, in [0.1, i]."""
    n = [np.count_nonzero(counts == i) for i in range(1, 5)]
    if n[0] == 0 or n[1] == 0:   # too little text for the estimate: a plain half discount
        return np.array([0.0, 0.5, 0.5, 0.5])
    y = n[0] / (n[0] + 2 * n[1])
    values = [0.0]
    for i in (1, 2, 3):
        d = i - (i + 1) * y * n[i] / n[i - 1] if n[i - 1] else 0.5
        values.append(min(max(d, 0.1), float(i)))   # > 0: every seen context passes mass down, so no p is 0
    return np.array(values)


def order_table(gram_keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> OrderTable:
    """Group sorted n-gram keys (context * V + word) with their counts into an OrderTable."""
    contexts, words = np.divmod(gram_keys, vocab_size)
    context_keys, starts = np.unique(contexts, return_index=True)
    totals = np.add.reduceat(counts, starts).astype(np.float64)
    d = discounts(counts)
    per_gram = d[np.minimum(counts, 3)]
    index = np.repeat(np.arange(context_keys.size), np.diff(np.append(starts, counts.size)))
    mass = (counts - per_gram) / totals[index]
    gamma = np.add.reduceat(per_gram, starts) / totals
    return OrderTable(context_keys, np.append(starts, counts.size).astype(np.int64), words.astype(np.int64), mass, gamma)


class NgramBackend:
    """Interpolated modified Kneser-Ney over characters, with the Backend protocol (state = the context)."""

    def __init__(self, ids: np.ndarray, vocab: Vocab, order: int = DEFAULT_ORDER):
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise CompactLMError(f"n-gram order must be a whole number >= 1, got {order!r}")
        self.vocab, self.vocab_size, self.order = vocab, vocab.size, order
        if float(self.vocab_size) ** order >= 2.0 ** 62:
            raise CompactLMError(f"n-gram order {order} is too high for {self.vocab_size} characters (keys overflow)")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size < order or ids.min() < 0 or ids.max() >= self.vocab_size:
            raise CompactLMError(f"the n-gram baseline needs at least {order} ids in [0, {self.vocab_size})")
        # at order m, keys[i] packs ids[i:i+m] in base V (sum_j ids[i+j] V^(m-1-j)); the top order counts
        # occurrences, lower orders the distinct characters seen before each m-gram (unique (m+1)-grams
        # that end in it)
        self.tables: list[OrderTable | None] = [None] * (order + 1)
        keys = ids
        unique_by_order = {}
        for m in range(1, order + 1):
            if m > 1:
                keys = keys[:-1] * self.vocab_size + ids[m - 1:]
            if m < order:
                unique_by_order[m] = np.unique(keys)
        top_keys, top_counts = np.unique(keys, return_counts=True)
        self.tables[order] = order_table(top_keys, top_counts, self.vocab_size)
        below = top_keys
        for m in range(order - 1, 0, -1):
            suffix_keys, continuation = np.unique(below % self.vocab_size ** m, return_counts=True)
            self.tables[m] = order_table(suffix_keys, continuation, self.vocab_size)
            below = unique_by_order[m]
        self._cache: dict[bytes, np.ndarray] = {}

    def initial_state(self, batch: int) -> list:
        """An empty context for `batch` streams."""
        return [(np.full((batch, self.order - 1), -1, dtype=np.int64),)]

    def distribution(self, context: np.ndarray) -> np.ndarray:
        """Float64 probabilities [V] of the next id after `context` (ids, -1 padding on the left)."""
        context = [int(i) for i in context if i >= 0]
        probs = np.full(self.vocab_size, 1.0 / self.vocab_size)
        for m in range(1, min(len(context) + 1, self.order) + 1):
            key = 0
            for i in context[len(context) - (m - 1):] if m > 1 else ():
                key = key * self.vocab_size + i
            table = self.tables[m]
            slot = int(np.searchsorted(table.context_keys, key))
            if slot == table.context_keys.size or table.context_keys[slot] != key:
                break   # unseen here means unseen in every longer context too
            start, end = table.starts[slot], table.starts[slot + 1]
            probs *= table.gamma[slot]
            probs[table.words[start:end]] += table.mass[start:end]
        return probs

    def _log_probs(self, context: np.ndarray) -> np.ndarray:
        key = context.tobytes()
        row = self._cache.get(key)
        if row is None:
            if len(self._cache) >= CACHE_ROWS:
                self._cache.clear()
            row = self._cache[key] = np.log(self.distribution(context)).astype(np.float32)
        return row

    def step(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, V] of the next id after token_ids [B], and the context with them appended."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1, 1)
        context = np.concatenate([state[0][0][:, 1:], ids], axis=1) if self.order > 1 else state[0][0]
        log_probs = np.stack([self._log_probs(row) for row in context]) if len(context) else \
            np.empty((0, self.vocab_size), np.float32)
        return log_probs, [(context,)]

    def run(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, T, V] after each of token_ids [B, T], and the final context."""
        ids = np.asarray(token_ids, dtype=np.int64)
        log_probs = np.empty((ids.shape[0], ids.shape[1], self.vocab_size), dtype=np.float32)
        for t in range(ids.shape[1]):
            log_probs[:, t], state = self.step(ids[:, t], state)
        return log_probs, state
