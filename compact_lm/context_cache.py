"""Learning within a session: the words it learned, each with the model's state where the word began.

The user's dictionary (user_words.py) knows how often and how lately each word was used, not after what.
A learning session also keeps, for its last `size` learned words, the model's hidden state at the start
of the word (the last layer's h: the network's summary of the text before the word). These live in the
session's memory only: states are derived from the text, so they are never written anywhere, and each
session starts without them. A completion weighs every earlier use of a word by how much its context
resembles the present one (a neural cache, Grave et al. 2017, here over word starts) and by its recency,
as the dictionary does:
    weight(w | h) = sum over uses i of w of exp(theta * cos(h, h_i) - (now - t_i) ln 2 / half_life)
with h the state where the word being typed began, t_i counting the words added. The words that continue
the typed part p of the word share
    P_cache(w | h, p) = weight(w | h) / sum over the words v continuing p of weight(v | h),
which takes the dictionary's place in the mixture (Autocompleter._mix) whenever some use continues p; the
dictionary serves the rest (words of earlier sessions, words begun inside a paste). A use counts only while
the dictionary holds its word in the same stay (UserWords.arrival, kept with each use): a word forgotten,
cleared or evicted is never proposed from here, and learned again it starts afresh, as a forgotten word
should, while a word that a take-back (a backspace) puts back in the dictionary gets its uses back.
THETA, the half-life and SIZE were chosen by measurement (docs/experiments.md, "The context cache").

The state of a word start is the same for every keystroke of the word, so the weights are computed once
per word (one [size, POOLED] product) and each keystroke after that is a lookup. The cosine is taken between
states pooled to POOLED numbers (unit i summed into i mod POOLED, a fixed random-like projection: the units of
a network have no order): at H = 256 the kept uses take 256 KB instead of 1 MB, which the next word's search
no longer has to fetch back into the cache, within 0.1 point of the same keystroke savings (docs/experiments.md).

web/compact_lm.js's ContextCache is this class step for step (tests/web_golden.py checks that they agree).
"""
from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

import numpy as np

from .lexicon import prefix_range

if TYPE_CHECKING:
    from .user_words import UserWords

THETA = 10.0                # how sharply the cosine of two contexts selects (exp(theta * cos))
HALF_LIFE = 300.0           # words added: as the dictionary's default
SIZE = 1000                 # uses kept per session
POOLED = 64                 # a state's units summed into this many (unit i into i mod POOLED): 256 KB of float32 uses


class ContextCache:
    """A session's last `size` learned words with the model's state where each began (memory only)."""

    def __init__(self, size: int = SIZE, theta: float = THETA, half_life: float = HALF_LIFE):
        self.size, self.theta = size, theta
        self._rate = math.log(2.0) / half_life
        self._vectors: np.ndarray | None = None   # [size, POOLED] float32: unit-length pooled states, row = slot
        self._words: list[str | None] = [None] * size   # the word in each slot (None: empty or taken back)
        self._times = np.zeros(size)               # when each slot's word was added
        # the distinct words in a slot, in code point order, and each slot's index into them, so that
        # one bincount sums the weights per word already in that order
        self._sorted: list[str] = []
        self._uses: dict[str, int] = {}           # word -> how many slots hold it
        self._bins = np.zeros(size, dtype=np.intp)   # 1 + that index (0: none)
        self._counted = np.zeros(size, dtype=np.intp)   # _bins, 0 for a use that does not count: bincount's bins
        self._arrivals: list[int] = [0] * size     # the dictionary's arrival of each slot's word then
        self.added = 0                             # words added so far (the clock; slot = added % size)
        self._version = 0                          # changes whenever a slot does
        self._query: tuple | None = None           # (versions, dictionary, state, weights in _sorted's order)
        # the dictionary and its `removals` count when which uses count was last decided
        self._removals_seen, self._held_seen = None, None
        self._last_unit: tuple | None = None       # (state, _unit(state)): a word's start is queried, then added

    def add(self, state: np.ndarray, word: str, arrival: int, held: UserWords) -> tuple[int, int]:
        """Keep `word` with `state` (the model's hidden state where the word began; never changed afterwards: it is
        recognized by identity) and `arrival`, the word's arrival in `held` (the dictionary) as it was just learned
        (Learned.arrival); returns what `remove` takes."""
        if held is not self._held_seen:   # counted below, for `held`: decide again at the next completion
            self._held_seen = None
        vector = self._unit_of(state)
        if self._vectors is None:
            self._vectors = np.zeros((self.size, vector.size), dtype=np.float32)
        slot = self.added % self.size
        self._empty(slot)
        self._vectors[slot] = vector
        self._words[slot] = word
        count = self._uses.get(word, 0)
        if not count:   # a new word: the indices at and after its place move up one
            at = bisect.bisect_left(self._sorted, word)
            self._sorted.insert(at, word)
            self._bins[self._bins > at] += 1
            self._counted[self._counted > at] += 1
        self._uses[word] = count + 1
        self._bins[slot] = self._counted[slot] = bisect.bisect_left(self._sorted, word) + 1
        self._arrivals[slot] = arrival
        self.added += 1
        self._times[slot] = self.added
        self._version += 1
        return slot, self.added

    def remove(self, use: tuple[int, int]) -> None:
        """Take back one `add` (its return value), if its slot still holds that use."""
        slot, added = use
        if self._times[slot] == added and self._words[slot] is not None:
            self._empty(slot)
            self._version += 1

    def _empty(self, slot: int) -> None:
        word = self._words[slot]
        if word is None:
            return
        self._words[slot] = None
        self._bins[slot] = self._counted[slot] = 0
        count = self._uses.pop(word) - 1
        if count:
            self._uses[word] = count
        else:   # its last use: the indices after it move down one
            at = bisect.bisect_left(self._sorted, word)
            del self._sorted[at]
            self._bins[self._bins > at + 1] -= 1
            self._counted[self._counted > at + 1] -= 1

    def continuing(self, state: np.ndarray, prefix: str, k: int, held: UserWords) -> list[tuple[str, float]]:
        """The k words of most weight that continue `prefix` (and are in `held`, the dictionary), as (word,
        weight / total weight of the words continuing prefix), most first, ties in code point order; [] if none.
        The weights are computed once per state (a word's keystrokes share its start's) and change."""
        self._decide_counted(held)
        query = self._query
        version = (self._version, held.changes)   # the dictionary's changes too (forget, clear)
        # the same state object (checkpoints are never changed in place; an equal copy only costs a recomputation)
        if query is None or query[0] != version or query[1] is not held or query[2] is not state:
            query = self._query = (version, held, state, self._weigh(state))
        weights, words = query[3], self._sorted
        lo, hi = prefix_range(words, prefix)
        if hi - lo > 8 * k:   # many words (a word start): in NumPy
            part = weights[lo:hi]
            total = float(part.sum())   # (pairwise: JavaScript's sum from left to right agrees within rounding)
            # ties: code point order (an exact tie across the k-th place, which argpartition may cut either way,
            # needs two uses with the very same weight: equal states and ages, so it does not arise)
            top = np.argpartition(part, -k)[-k:]
            top = dict(zip(top.tolist(), part[top].tolist()))
        else:   # a few: in Python floats, faster than NumPy's per-call cost
            top = dict(enumerate(weights[lo:hi].tolist()))
            total = 0.0
            for weight in top.values():   # left to right, as compact_lm.js
                total += weight
        if not total > 0.0:
            return []
        ranked = sorted((-weight, i) for i, weight in top.items() if weight > 0.0)[:k]
        return [(words[lo + i], -negative / total) for negative, i in ranked]

    def _weigh(self, state: np.ndarray) -> np.ndarray:
        """weight(w | state) of every word in _sorted."""
        count = len(self._sorted)
        if self._vectors is None or not count:
            return np.zeros(0)
        used = min(self.added, self.size)
        # cosines in float32 (the rows and the query rounded to float32; JavaScript sums the same float32 products
        # in float64: they agree to about 1e-7), the rest in float64
        exponents = np.multiply(self._vectors[:used] @ self._unit_of(state), self.theta, dtype=np.float64)
        exponents -= (self.added - self._times[:used]) * self._rate
        # one sum per word, in slot order; bin 0 takes the empty slots and the uses that do not count
        return np.bincount(self._counted[:used], np.exp(exponents, out=exponents), minlength=count + 1)[1:]

    def _decide_counted(self, held: UserWords) -> None:
        """Which uses count: those whose word `held` (the dictionary) has, in the stay the use was added in. Decided
        again when the dictionary changes (only a removal can end a stay; a take-back that puts a word back comes
        with the removal of the word that had pushed it out) or is another one."""
        removals = held.removals   # (read first: a removal during the scan is seen next time)
        if removals == self._removals_seen and held is self._held_seen:
            return
        arrival = held.arrival
        same = [word is not None and arrival(word) == then for word, then in zip(self._words, self._arrivals)]
        counted = np.where(same, self._bins, 0)
        if not np.array_equal(counted, self._counted):
            self._counted = counted
            self._version += 1
        self._removals_seen, self._held_seen = removals, held


    def _unit_of(self, state: np.ndarray) -> np.ndarray:
        """_unit(state), remembered for the last state object (its word's start: queried first, added when the word
        ends). A state is never changed after it is passed here (the session's checkpoints are not)."""
        last = self._last_unit
        if last is None or last[0] is not state:
            last = self._last_unit = (state, _unit(state))
        return last[1]


def _unit(state: np.ndarray) -> np.ndarray:
    """The state pooled to at most POOLED numbers (unit i added to sum i mod POOLED, in unit order, in float64) as a
    vector of length 1 (divided in float64, then rounded to float32; a zero vector stays zero)."""
    vector = np.asarray(state).reshape(-1)
    if vector.size % POOLED and vector.size > POOLED:
        vector = np.concatenate((vector, np.zeros(-vector.size % POOLED, vector.dtype)))
    # (a sum over the first axis adds the rows one after the other: the order compact_lm.js adds them in)
    pooled = vector.reshape(-1, min(POOLED, vector.size)).sum(axis=0, dtype=np.float64)
    norm = math.sqrt(float(pooled @ pooled))
    return (pooled / norm if norm > 0 else pooled).astype(np.float32)
