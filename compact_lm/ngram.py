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

Size. `bytes` is what the tables would take on a device in this compact encoding, computed from the
actual table sizes: for every order m = 1..n,
  - per stored context h (m - 1 characters; the unigram order has one, the empty context):
    CONTEXT_BYTES = 10: a 4-byte hash of (m, h) as its key (contexts sorted by it, found by binary
    search), a 4-byte index of its first n-gram entry (its last is the next context's first - 1) and
    gamma(h) as a 2-byte float16;
  - per stored n-gram h w: the word id (1 byte while V <= 256, else 2, 4 beyond 65,536: `word_bytes`)
    and its discounted mass max(c(h w) - D, 0) / c(h .) as a 2-byte float16 (3 bytes at V <= 256).
That is everything a lookup needs (the recursion above reads gamma(h) and the masses of the words
seen after h, order by order). Not counted: a fixed header (order, V, the vocabulary's characters),
under a kilobyte at any size. Every figure measured here uses the float64 values: float16 keeps 11
significant bits (relative error <= 2^-11 from 6.1e-5 up; smaller masses keep fewer), and what that
rounding costs in bpc or keystroke savings is not measured. The 4-byte key is lossy: an exact key of an
order-7 context needs about 36 bits at V = 65, so among the full tinyshakespeare 7-gram's 459,129
contexts some 25 pairs would collide (and unseen contexts may match a stored one); neither is
measured, and 5-byte keys (+1 byte per context) would make collisions rare.

Count cut-off (`cutoff`, SRILM's -gtNmin for every order >= 2): an n-gram seen fewer than `cutoff`
times in the text is not stored; its discounted mass goes to its context's gamma (so every
distribution still sums to 1), and a context left with no n-gram is not stored (it is skipped, like
one never seen). The discounts are those of the uncut counts.

Pruning to a byte budget (`max_bytes`, weighted-difference pruning after Seymore & Rosenfeld, an
approximation of Stolcke's entropy pruning): every n-gram h w of order >= 2 scores
c(h w) (ln P(w | h) - ln P'(w | h)), P' the model without it (its mass moved to gamma(h), as a
cut-off does), all scores from the unpruned model; the lowest-scoring n-grams are removed until the
tables fit. `fit_to_bytes` searches orders, cut-offs and pruning for the best model within a byte
budget (see there).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CompactLMError, SettingError
from .vocab import Vocab

DEFAULT_ORDER = 7        # characters per n-gram (context = order - 1): best tinyshakespeare validation bpc of 4..8
CACHE_ROWS = 1 << 16     # distributions remembered by context (beam search revisits the same contexts)
CONTEXT_BYTES = 10       # per stored context: 4-byte hashed key + 4-byte first-entry index + float16 gamma
MASS_BYTES = 2           # per stored n-gram, besides its word id: float16 discounted mass
# fit_to_bytes: the cut-offs tried (with every order up to DEFAULT_ORDER), and the share of the training
# ids held out to choose among the candidates
FIT_CUTOFFS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024)
FIT_HELDOUT = 0.1
MAX_KEY = 2 ** 62        # an n-gram's key (its characters in base V) stays below this, in int64


def max_order(vocab_size: int) -> int:
    """The highest n-gram order whose keys (the characters in base V) fit below MAX_KEY for `vocab_size` characters."""
    if vocab_size <= 1:
        return 61
    top = 0   # in whole numbers: a float power overflows for a high order; any V >= 2 reaches MAX_KEY by order 62
    while vocab_size ** (top + 1) < MAX_KEY:
        top += 1
    return top


def check_order(order: int | None, vocab_size: int) -> int:
    """The n-gram order to use (None: DEFAULT_ORDER, or the highest whose keys fit for a vocabulary of thousands of
    characters); a one-line SettingError, before any work, unless it is a whole number >= 1 whose keys fit."""
    if order is None:
        return min(DEFAULT_ORDER, max_order(vocab_size))
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise SettingError("order", "n-gram {order} must be a whole number >= 1, got {value!r}", value=order)
    if order > max_order(vocab_size):
        raise SettingError("order", "n-gram {order} {value} is too high for {size} characters (at most {top}: "
                           "longer n-gram keys overflow)", value=order, size=vocab_size, top=max_order(vocab_size))
    return order


def word_bytes(vocab_size: int) -> int:
    """Bytes of a word id in the compact encoding: 1 while V <= 256, 2 while V <= 65536, else 4."""
    return 1 if vocab_size <= 1 << 8 else 2 if vocab_size <= 1 << 16 else 4


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


def order_table(gram_keys: np.ndarray, counts: np.ndarray, vocab_size: int, keep: np.ndarray | None = None) -> OrderTable:
    """Group sorted n-gram keys (context * V + word) with their counts into an OrderTable.

    With `keep` (a mask over the n-grams) only those are stored; the mass of the others goes to their
    context's gamma, and contexts left without an n-gram are dropped. Discounts come from all counts.
    """
    contexts, words = np.divmod(gram_keys, vocab_size)
    context_keys, starts = np.unique(contexts, return_index=True)
    totals = np.add.reduceat(counts, starts).astype(np.float64)
    d = discounts(counts)
    per_gram = d[np.minimum(counts, 3)]
    index = np.repeat(np.arange(context_keys.size), np.diff(np.append(starts, counts.size)))
    mass = (counts - per_gram) / totals[index]
    gamma = np.add.reduceat(per_gram, starts) / totals
    if keep is not None and not keep.all():
        gamma = gamma + np.bincount(index[~keep], weights=mass[~keep], minlength=context_keys.size)
        stored = np.bincount(index[keep], minlength=context_keys.size)
        contexts_kept = stored > 0
        context_keys, gamma = context_keys[contexts_kept], gamma[contexts_kept]
        words, mass = words[keep], mass[keep]
        starts = np.cumsum(stored[contexts_kept]) - stored[contexts_kept]
    return OrderTable(context_keys, np.append(starts, words.size).astype(np.int64), words.astype(np.int64), mass, gamma)


class NgramBackend:
    """Interpolated modified Kneser-Ney over characters, with the Backend protocol (state = the context)."""

    def __init__(self, ids: np.ndarray, vocab: Vocab, order: int | None = None, cutoff: int = 1,
                 max_bytes: int | None = None):
        order = check_order(order, vocab.size)
        for name, value in (("cut-off", cutoff), ("byte budget", 1 if max_bytes is None else max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CompactLMError(f"n-gram {name} must be a whole number >= 1, got {value!r}")
        if cutoff > 1 and max_bytes is not None:
            raise CompactLMError("an n-gram is cut off by count or pruned to a byte budget, not both")
        self.vocab, self.vocab_size, self.order, self.cutoff = vocab, vocab.size, order, cutoff
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size < order or ids.min() < 0 or ids.max() >= self.vocab_size:
            raise CompactLMError(f"the n-gram baseline needs at least {order} ids in [0, {self.vocab_size})")
        self.train_chars = int(ids.size)
        # at order m, keys[i] packs ids[i:i+m] in base V (sum_j ids[i+j] V^(m-1-j)); the top order counts
        # occurrences, lower orders the distinct characters seen before each m-gram (unique (m+1)-grams
        # that end in it)
        keys = ids
        unique_by_order = {}
        for m in range(1, order + 1):
            if m > 1:
                keys = keys[:-1] * self.vocab_size + ids[m - 1:]
            if m < order:
                unique_by_order[m] = np.unique(keys, return_counts=True)
        top_keys, top_counts = np.unique(keys, return_counts=True)
        counted = {order: (top_keys, top_counts, top_counts)}   # m -> n-gram keys, KN counts, occurrences
        below = top_keys
        for m in range(order - 1, 0, -1):
            suffix_keys, continuation = np.unique(below % self.vocab_size ** m, return_counts=True)
            grams, occurrences = unique_by_order[m]   # every m-gram of the text (suffix_keys: a sorted subset)
            counted[m] = (suffix_keys, continuation, occurrences[np.searchsorted(grams, suffix_keys)])
            below = grams
        self.tables: list[OrderTable | None] = [None] * (order + 1)
        for m, (gram_keys, counts, occurrences) in counted.items():
            keep = occurrences >= cutoff if cutoff > 1 and m > 1 else None
            self.tables[m] = order_table(gram_keys, counts, self.vocab_size, keep)
        self.max_bytes = None   # the budget it was pruned to (None: not pruned; a model that fits is not)
        if max_bytes is not None and self.bytes > max_bytes:
            keep = self._prune_masks(counted, max_bytes)
            for m in range(2, order + 1):
                self.tables[m] = order_table(*counted[m][:2], self.vocab_size, keep[m])
            self.max_bytes = max_bytes
        self._cache: dict[bytes, np.ndarray] = {}
        self.fit: dict | None = None   # how fit_to_bytes chose this model (None: not chosen by it)

    def _probability(self, m: int, contexts: np.ndarray, words: np.ndarray) -> np.ndarray:
        """P(words | contexts) from orders 1..m (contexts: the last m - 1 ids, packed), vectorized."""
        if m == 0:
            return np.full(words.size, 1.0 / self.vocab_size)
        lower = self._probability(m - 1, contexts % self.vocab_size ** max(m - 2, 0), words)
        table = self.tables[m]
        if not table.context_keys.size:
            return lower
        slot = np.minimum(np.searchsorted(table.context_keys, contexts), table.context_keys.size - 1)
        found = table.context_keys[slot] == contexts
        gram_keys = np.repeat(np.arange(table.context_keys.size), np.diff(table.starts)) * self.vocab_size + table.words
        wanted = slot * self.vocab_size + words
        entry = np.minimum(np.searchsorted(gram_keys, wanted), gram_keys.size - 1)
        mass = np.where(found & (gram_keys[entry] == wanted), table.mass[entry], 0.0)
        return np.where(found, table.gamma[slot] * lower + mass, lower)

    def _prune_masks(self, counted: dict, max_bytes: int) -> dict:
        """Which n-grams of orders >= 2 to keep so that the tables fit in max_bytes: weighted-difference pruning.

        Each n-gram h w scores c(h w) (ln P(w | h) - ln P'(w | h)), P' being the model without it (its
        mass moved to gamma(h)), every score taken from the unpruned model; the lowest-scoring n-grams go
        first, as few as the budget allows (if even the unigrams alone do not fit, all of orders >= 2 go).
        """
        scores, context_index = {}, {}
        for m in range(2, self.order + 1):
            table = self.tables[m]
            index = np.repeat(np.arange(table.context_keys.size), np.diff(table.starts))
            lower = self._probability(m - 1, table.context_keys[index] % self.vocab_size ** (m - 2), table.words)
            gamma, mass = table.gamma[index], table.mass
            scores[m] = counted[m][2] * (np.log(mass + gamma * lower) - np.log((gamma + mass) * lower))
            context_index[m] = (index, table.context_keys.size)
        per_gram = word_bytes(self.vocab_size) + MASS_BYTES
        unigram_bytes = CONTEXT_BYTES + self.tables[1].words.size * per_gram

        def size(threshold: float) -> int:
            total = unigram_bytes
            for m, (index, contexts) in context_index.items():
                kept = scores[m] >= threshold
                total += int(np.count_nonzero(np.bincount(index[kept], minlength=contexts))) * CONTEXT_BYTES
                total += int(np.count_nonzero(kept)) * per_gram
            return total

        if not scores:   # a unigram model: nothing to prune
            return {}
        thresholds = np.append(np.unique(np.concatenate(list(scores.values()))), np.inf)
        low, high = 0, thresholds.size - 1   # the lowest threshold (most kept) that fits
        while low < high:
            middle = (low + high) // 2
            if size(thresholds[middle]) <= max_bytes:
                high = middle
            else:
                low = middle + 1
        return {m: scores[m] >= thresholds[low] for m in scores}

    @property
    def name(self) -> str:
        """What the model is, in a few words: "7-gram interpolated Kneser-Ney" (", count cut-off 3" / ", pruned to N bytes")."""
        cut = f", count cut-off {self.cutoff}" if self.cutoff > 1 else ""
        if self.max_bytes is not None:
            cut = f", pruned to {self.max_bytes:,} bytes"
        return f"{self.order}-gram interpolated Kneser-Ney{cut}"

    @property
    def contexts(self) -> int:
        """Contexts stored, over every order (the unigram order's one empty context included)."""
        return int(sum(t.context_keys.size for t in self.tables[1:]))

    @property
    def ngrams(self) -> int:
        """N-grams stored (each with its discounted mass), over every order."""
        return int(sum(t.words.size for t in self.tables[1:]))

    @property
    def bytes(self) -> int:
        """Bytes of the tables in the compact encoding of the module docstring."""
        return self.contexts * CONTEXT_BYTES + self.ngrams * (word_bytes(self.vocab_size) + MASS_BYTES)

    def size_info(self) -> dict:
        """The JSON of what the model stores: order, cut-off, byte budget it was pruned to, contexts, n-grams, bytes
        (and the encoding)."""
        return {"order": self.order, "cutoff": self.cutoff, "pruned_to": self.max_bytes,
                "contexts": self.contexts, "ngrams": self.ngrams,
                "bytes": self.bytes, "encoding": f"{CONTEXT_BYTES} B per context + "
                f"{word_bytes(self.vocab_size) + MASS_BYTES} B per n-gram"}

    def log2_probs(self, ids: np.ndarray) -> np.ndarray:
        """log2 P(ids[t] | the ids before it) for every t >= 1, as `distribution` gives it (vectorized)."""
        ids = np.asarray(ids, dtype=np.int64)
        targets = ids[1:]
        probs = np.full(targets.size, 1.0 / self.vocab_size)
        keys = np.zeros(targets.size, dtype=np.int64)   # the m - 1 ids before each target, packed; -1: too few
        for m in range(1, self.order + 1):
            if m > 1:   # the new oldest id of target t's context is ids[t + 2 - m]
                oldest = np.full(targets.size, -1, dtype=np.int64)
                oldest[m - 2:] = ids[:targets.size - (m - 2)]
                keys = np.where((oldest >= 0) & (keys >= 0), keys + oldest * self.vocab_size ** (m - 2), -1)
            table = self.tables[m]
            if not table.context_keys.size:   # everything of this order pruned away
                continue
            at = np.flatnonzero(keys >= 0)
            slot = np.minimum(np.searchsorted(table.context_keys, keys[at]), table.context_keys.size - 1)
            found = table.context_keys[slot] == keys[at]
            at, slot = at[found], slot[found]
            # each target's entry: n-grams keyed (context index) * V + word are sorted
            gram_keys = np.repeat(np.arange(table.context_keys.size), np.diff(table.starts)) * self.vocab_size + table.words
            wanted = slot * self.vocab_size + targets[at]
            entry = np.minimum(np.searchsorted(gram_keys, wanted), gram_keys.size - 1)
            mass = np.where(gram_keys[entry] == wanted, table.mass[entry], 0.0)
            probs[at] = table.gamma[slot] * probs[at] + mass
        return np.log2(probs)

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
                continue   # not stored: skipped (with a cut-off a longer context may still be stored)
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


def fit_to_bytes(train_ids: np.ndarray, vocab: Vocab, max_bytes: int, *, orders=None,
                 cutoffs=FIT_CUTOFFS, heldout: float = FIT_HELDOUT) -> NgramBackend:
    """The best Kneser-Ney model of at most `max_bytes` (compact encoding) estimated from `train_ids`.

    Candidates, for every order (1..DEFAULT_ORDER, or as high as keys fit, unless `orders`): the smallest count cut-off of
    `cutoffs` whose model fits the budget (the whole model when it fits: lowering the order is the
    cut-off 1 candidate of a lower order), and, when the whole model does not fit, the model pruned to
    the budget (weighted-difference pruning, NgramBackend's max_bytes). Sizes are those of the models
    estimated from all of `train_ids`. Each candidate is scored by its bits per character on the last
    `heldout` of `train_ids`, estimated again with the same settings from the ids before them: the
    choice never sees the text the model is later evaluated on. The lowest held-out bpc wins (ties: the
    smaller model). Returns that candidate estimated from all of `train_ids`; its `fit` attribute holds
    the budget, the held-out size and bpc, and every candidate looked at (size_info + heldout_bpc, None
    for the cut-offs over the budget, which are not scored).
    """
    train_ids = np.asarray(train_ids, dtype=np.int64)
    orders = list(range(1, check_order(None, vocab.size) + 1)) if orders is None else list(orders)
    split = int(round(train_ids.size * (1 - heldout)))
    fit_ids, check_ids = train_ids[:split], train_ids[split:]
    if check_ids.size < 2 or fit_ids.size < max(orders):
        raise CompactLMError(f"too little training text ({train_ids.size} characters) to fit an n-gram to a budget")
    tried, best = [], None

    def score(settings: dict) -> None:
        nonlocal best
        model = NgramBackend(train_ids, vocab, **settings)
        held = NgramBackend(fit_ids, vocab, **settings)
        bpc = float(-held.log2_probs(check_ids).mean())
        tried.append({**model.size_info(), "heldout_bpc": bpc})
        if model.bytes <= max_bytes and (best is None or (bpc, model.bytes) < (best[0], best[1].bytes)):
            best = (bpc, model)

    for order in orders:
        for cutoff in cutoffs:
            model = NgramBackend(train_ids, vocab, order, cutoff)
            if model.bytes <= max_bytes:
                score({"order": order, "cutoff": cutoff})
                break
            tried.append({**model.size_info(), "heldout_bpc": None})   # over the budget: not scored
        if order > 1 and NgramBackend(train_ids, vocab, order).bytes > max_bytes:
            score({"order": order, "max_bytes": max_bytes})
    if best is None:
        raise CompactLMError(f"no n-gram fits in {max_bytes:,} bytes (the smallest tried takes "
                             f"{min(t['bytes'] for t in tried):,})")
    chosen = best[1]
    chosen.fit = {"budget_bytes": int(max_bytes), "heldout_chars": int(check_ids.size), "heldout_bpc": best[0],
                  "candidates": tried}
    return chosen
