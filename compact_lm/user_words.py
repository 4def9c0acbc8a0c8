"""The user's own words: a bounded, local, readable dictionary that word completion learns from (opt-in).

    words = UserWords("my-words.json")      # read if it exists, else empty; nothing is written until save()
    ac = Autocompleter("model.onnx", user_words=words)   # or user_words="my-words.json"
    words.forget("Zanzibar"); words.clear(); words.save()

A session learns each word when it is typed to a boundary (an accepted suggestion is typed too), and
takes the word back when a backspace deletes that boundary (a typo corrected before going on is not
kept). Words only: the file never holds the text, only each word, how often it was used and when, and
its decayed weight. Words are stored as the model's normalization gives them (a lowercase model stores
"romeo"), of MIN_WORD_CHARS to MAX_WORD_CHARS code points. The file is written readable by its owner
only (mode 0600).

Recency: the clock counts learned words; a word's weight halves every `half_life` words,
    weight(w, now) = sum over its uses u of 2^-((now - t_u) / half_life),
kept incrementally as (weight at its last use, last use). Its rank among other words does not change
with the clock, only when it is used: key(w) = log weight(w, last) + last * ln 2 / half_life. So every
prefix's ranking is a sorted list that a use updates in O(log n), and a keystroke costs a lookup, not a
scan. When more than `max_words` words are held the word of least weight goes (the later in code point
order on a tie).

Mixing with the model (Autocompleter._mix), for the word being typed with prefix p (empty at a boundary):
    P(w | p) = (1 - share) P_model(w | p) + share * weight(w) / W_p
where W_p is the total weight of the dictionary's words that continue p, and share = 0 when there are
none (the suggestions are then the model's). A word the model's search did not return counts
P_model = 0. A session with the context cache (compact_lm/context_cache.py, opt-in) puts its weights, which
also say how alike the contexts are, in the place of weight(w) / W_p while a word it kept continues p.
`share` and `half_life` were chosen by measurement, against a share that grows with the
evidence W_p / (W_p + prior) (docs/experiments.md, "Learning the user's words"). A word that holds a
character outside the model's vocabulary gets the dictionary's words alone.

web/compact_lm.js's UserWords is this class line for line (same file, same floating-point operations in
the same order); tests/web_golden.py checks that they agree.
"""
from __future__ import annotations

import bisect
import itertools
import json
import math
import numbers
import os
import threading
from pathlib import Path
from typing import NamedTuple

from .errors import CompactLMError
from .lexicon import MAX_WORD_CHARS, prefix_range

FORMAT = "compact-lm-user-words"
VERSION = 1
MIN_WORD_CHARS = 2          # a one-letter word saves nothing when completed
DEFAULT_MAX_WORDS = 5000
DEFAULT_HALF_LIFE = 300.0   # learned words
DEFAULT_SHARE = 0.25        # of the probability, for the dictionary's words when one continues the prefix
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_CLOCK = 2 ** 53         # clock and uses are whole numbers JavaScript holds exactly
_ARRIVALS = itertools.count(1)   # arrival numbers, shared by every dictionary of the process (see arrival())
_REBASE = 600.0             # keys are kept below exp's range by shifting them all when one passes this
_CANCELLED = 1e-6           # a ranking's total that loses more than this share to a subtraction is summed again
_KEPT_RANKINGS = 1 << 14    # prefixes whose ranking is kept (all are dropped when there are more)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value) -> bool:
    """A JSON whole number (3 or 3.0), 0 <= value <= MAX_CLOCK (compared as is: a huge int never becomes a float)."""
    return _number(value) and (isinstance(value, int) or value.is_integer()) and 0 <= value <= MAX_CLOCK


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class Learned(NamedTuple):
    """What `UserWords.learn` returns and `unlearn` takes: the word's entry before and after, the words its
    arrival evicted (each with its entry and arrival), its arrival then, and the dictionary's removals count then."""

    word: str
    previous: list | None
    entry: list
    evicted: list
    arrival: int
    removals: int


class UserWords:
    """A bounded dictionary of the user's words with counts and recency; thread-safe (one lock)."""

    def __init__(self, path: str | os.PathLike | None = None, *, max_words: int = DEFAULT_MAX_WORDS,
                 half_life: float = DEFAULT_HALF_LIFE, share: float = DEFAULT_SHARE):
        # (numpy numbers too, as the Autocompleter's beam and k take them)
        if not (isinstance(max_words, numbers.Integral) and not isinstance(max_words, bool) and max_words >= 1):
            raise CompactLMError(f"max_words must be a whole number >= 1, got {max_words!r}")
        if not (isinstance(half_life, numbers.Real) and not isinstance(half_life, bool) and math.isfinite(half_life)
                and half_life > 0):
            raise CompactLMError(f"half_life must be a number > 0, got {half_life!r}")
        if not (isinstance(share, numbers.Real) and not isinstance(share, bool) and 0 <= share <= 1):
            raise CompactLMError(f"share must be a number from 0 to 1, got {share!r}")
        max_words = int(max_words)
        if path is not None and not (isinstance(path, (str, os.PathLike)) and str(path)):
            raise CompactLMError(f"user words must be a file path, got {path!r}")
        self.path = Path(path) if path is not None else None
        if self.path is not None and not self.path.parent.is_dir():   # found now, not at the first save
            missing = "is not a folder" if self.path.parent.exists() else "does not exist"
            raise CompactLMError(f"user words {self.path}: the folder {self.path.parent} {missing}")
        self.max_words, self.half_life, self.share = max_words, float(half_life), float(share)
        self._rate = math.log(2.0) / self.half_life   # decay per learned word, in log units
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()   # saves one at a time, so the last one writes the latest words
        self.clock = 0
        self.changes = 0                      # counts every change (learn, unlearn, forget, clear): when to save
        self.removals = 0                     # counts the words that left (unlearned, forgotten, evicted, cleared)
        self._entries: dict[str, list] = {}   # word -> [count, last use, weight at last use]
        self._arrivals: dict[str, int] = {}   # word -> its arrival (memory only: see arrival())
        self._sorted: list[str] = []          # the words in code point order, for prefix ranges
        self._base = 0.0                      # keys are stored minus this
        # prefix -> [ranking: (-key, word) ascending = most weight first, then code point order; sum of exp(key)]
        self._ranked: dict[str, list] = {}
        if self.path is not None and self.path.exists():
            self._read(self.path)

    # ------------------------------------------------------------------------------------ file
    def _read(self, path: Path) -> None:
        if path.is_dir():
            raise CompactLMError(f"user words {path} is a folder, not a file")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CompactLMError(f"cannot read user words {path}: {error.strerror or error}") from None
        if len(data) > MAX_FILE_BYTES:
            raise CompactLMError(f"user words {path} is {len(data):,} bytes, more than {MAX_FILE_BYTES:,}: not a user-words file")
        try:
            document = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CompactLMError(f"user words {path} is not valid JSON: {str(error).splitlines()[0][:200]}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CompactLMError(f"user words {path} is not a {FORMAT} file (no \"format\": \"{FORMAT}\")")
        version = document.get("version")
        if isinstance(version, bool) or version != VERSION:   # (true == 1 in Python, not in JSON)
            raise CompactLMError(f"user words {path} has version {repr(version)[:20]}; this compact-lm reads {VERSION}")
        words, clock = document.get("words"), document.get("clock")
        if not isinstance(words, dict) or not _whole(clock):
            raise CompactLMError(f"user words {path} is damaged: \"clock\" must be a whole number from 0 to 2^53 "
                                 f"and \"words\" an object")
        self.clock = int(clock)
        for word, entry in words.items():
            ok = (isinstance(entry, dict) and _whole(entry.get("count")) and entry["count"] >= 1
                  and _whole(entry.get("last")) and entry["last"] <= clock
                  and _number(entry.get("weight")) and 0 < entry["weight"] <= 1e300   # (so finite, NaN fails too)
                  and MIN_WORD_CHARS <= len(word) <= MAX_WORD_CHARS and _encodable(word))
            if not ok:
                raise CompactLMError(f"user words {path} is damaged: the entry of {word[:MAX_WORD_CHARS + 1]!r} must "
                                     f"have a whole count >= 1, a whole last <= clock and a finite weight > 0, for a "
                                     f"word of {MIN_WORD_CHARS}-{MAX_WORD_CHARS} characters")
            self._entries[word] = [int(entry["count"]), int(entry["last"]), float(entry["weight"])]
            self._arrivals[word] = next(_ARRIVALS)
        self._sorted = sorted(self._entries)
        self._rebase()
        while len(self._entries) > self.max_words:
            self._remove(self._ranking("")[0][-1][1])

    def to_json(self) -> dict:
        """The file's document: each word with its count, last use (on the clock of learned words) and weight then."""
        with self._lock:
            words = {w: {"count": c, "last": last, "weight": weight} for w, (c, last, weight) in
                     ((w, self._entries[w]) for _, w in self._ranking("")[0])}
            return {"format": FORMAT, "version": VERSION, "clock": self.clock, "words": words}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the dictionary as JSON atomically, readable by its owner only (to `path`, else its own file)."""
        from .fileio import atomic_write
        if path is not None and not (isinstance(path, (str, os.PathLike)) and str(path)):
            raise CompactLMError(f"save() takes a file path, got {path!r}")
        target = Path(path) if path is not None else self.path
        if target is None:
            raise CompactLMError("these user words have no file: give save() a path")
        # one save at a time (a slower earlier one never replaces a later one); learning waits only for the copy
        with self._save_lock:
            text = json.dumps(self.to_json(), ensure_ascii=False, indent=1).encode("utf-8")
            atomic_write(target, lambda handle: handle.write(text), mode=0o600)
        return target

    # ------------------------------------------------------------------------------- contents
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, word: str) -> bool:
        return word in self._entries

    def words(self) -> list[str]:
        """The words held, most weight first."""
        with self._lock:
            return [w for _, w in self._ranking("")[0]]

    def arrival(self, word: str) -> int | None:
        """A number for the word's present stay in the dictionary (None if absent): new, and unique among every
        dictionary of the process, each time the word comes in from outside (learned anew after it left, read from
        the file), the old one when a take-back (unlearn) puts an evicted word back. Memory only: what the context
        cache (context_cache.py) keeps with each use, so that uses from before a forget never count again."""
        return self._arrivals.get(word)

    def weight(self, word: str) -> float:
        """The word's weight now (0 if absent): its uses, each halved every half_life learned words since."""
        with self._lock:
            entry = self._entries.get(word)
            return 0.0 if entry is None else entry[2] * 2.0 ** (-(self.clock - entry[1]) / self.half_life)

    def _key(self, word: str) -> float:
        """log weight(word, now) + now * rate - base: fixed between the word's uses, so it ranks words at any clock."""
        count, last, weight = self._entries[word]
        return math.log(weight) + last * self._rate - self._base

    # ------------------------------------------------------------------------------- changes
    def learn(self, word: str) -> Learned | None:
        """Count one use of `word` (already normalized); returns what `unlearn` needs to take it back, or None
        when the word is not kept (too short or too long, or not writable as UTF-8: a lone surrogate)."""
        # (a lone surrogate, which Python lets into a str, could be written to no file: the whole dictionary
        # could no longer be saved)
        if not isinstance(word, str):
            raise CompactLMError(f"learn() takes a word (a string), got {type(word).__name__}")
        if not MIN_WORD_CHARS <= len(word) <= MAX_WORD_CHARS or not _encodable(word):
            return None
        with self._lock:
            previous = self._entries.get(word)
            previous = None if previous is None else list(previous)
            self.clock += 1
            if previous is None:
                entry = [1, self.clock, 1.0]
            else:
                count, last, weight = previous
                entry = [count + 1, self.clock, weight * 2.0 ** (-(self.clock - last) / self.half_life) + 1.0]
            self._put(word, entry)
            evicted = []
            while len(self._entries) > self.max_words:
                victim = self._ranking("")[0][-1][1]
                evicted.append((victim, list(self._entries[victim]), self._arrivals[victim]))
                self._remove(victim)
            self.changes += 1
            # (the word's arrival now: 0 if its own arrival evicted it; the removals count, to see any removal since)
            return Learned(word, previous, list(entry), evicted, self._arrivals.get(word, 0), self.removals)

    def unlearn(self, undo: Learned) -> None:
        """Take back one `learn` (its return value): the word's entry as it was before, and the words its arrival
        evicted if nothing left the dictionary since (a word evicted, then learned again and forgotten, stays
        forgotten). Nothing happens if the word changed since (another session used it, or it was forgotten)."""
        with self._lock:
            if self._entries.get(undo.word) != undo.entry:
                return
            untouched = self.removals == undo.removals
            if undo.previous is None:
                self._remove(undo.word)
            else:
                self._put(undo.word, list(undo.previous))
            if untouched and undo.evicted:
                for victim, victim_entry, arrival in undo.evicted:
                    if victim not in self._entries and len(self._entries) < self.max_words:
                        self._put(victim, list(victim_entry), arrival)
                # (again: a reader that saw the count between the take-back and the victims' return looks again)
                self.removals += 1
            self.changes += 1

    def forget(self, word: str) -> bool:
        """Remove `word` (as stored: normalized); whether it was there."""
        with self._lock:
            if word not in self._entries:
                return False
            self._remove(word)
            self.changes += 1
            return True

    def clear(self) -> None:
        """Remove every word (the clock stays)."""
        with self._lock:
            self._entries.clear()
            self._arrivals.clear()
            self._sorted.clear()
            self._ranked.clear()
            self.changes += 1
            self.removals += 1

    def _put(self, word: str, entry: list, arrival: int | None = None) -> None:
        """Store `entry` for `word` (new or not) and update every kept ranking of a prefix of `word`; a new word
        gets `arrival`, else a new arrival."""
        old_key = self._key(word) if word in self._entries else None
        if old_key is None:
            bisect.insort(self._sorted, word)
            self._arrivals[word] = next(_ARRIVALS) if arrival is None else arrival
        self._entries[word] = entry
        key = self._key(word)
        if key > _REBASE:
            self._rebase()
            return
        for length in range(len(word) + 1):
            ranked = self._ranked.get(word[:length])
            if ranked is None:
                continue
            order = ranked[0]
            if old_key is not None:
                del order[bisect.bisect_left(order, (-old_key, word))]
                _subtract(ranked, math.exp(old_key))
            bisect.insort(order, (-key, word))
            ranked[1] += math.exp(key)

    def _remove(self, word: str) -> None:
        key = self._key(word)
        for length in range(len(word) + 1):
            ranked = self._ranked.get(word[:length])
            if ranked is not None:
                del ranked[0][bisect.bisect_left(ranked[0], (-key, word))]
                _subtract(ranked, math.exp(key))
        del self._entries[word]
        del self._arrivals[word]
        del self._sorted[bisect.bisect_left(self._sorted, word)]
        self.removals += 1   # (after the word is gone: a reader that sees the count sees the removal)

    def _rebase(self) -> None:
        """Shift every key so the largest is 0 (exp stays in range as the clock grows); rankings are rebuilt."""
        self._ranked.clear()
        if self._entries:
            self._base += max(self._key(w) for w in self._entries)

    # ------------------------------------------------------------------------------- lookups
    def _ranking(self, prefix: str) -> list:
        """[(-key, word) of the words that start with prefix, most weight first; sum of exp(key)], kept."""
        ranked = self._ranked.get(prefix)
        if ranked is None:
            start, end = prefix_range(self._sorted, prefix)
            order = sorted((-self._key(w), w) for w in self._sorted[start:end])
            total = 0.0
            for negative_key, _ in order:   # left to right, as compact_lm.js
                total += math.exp(-negative_key)
            if len(self._ranked) >= _KEPT_RANKINGS:
                self._ranked.clear()
            ranked = self._ranked[prefix] = [order, total]
        return ranked

    def continuing(self, prefix: str, k: int) -> tuple[list[tuple[str, float]], float]:
        """The k words of most weight that start with `prefix` as (word, weight / W_prefix), most first, and
        the dictionary's share of the mixture (0 when no word continues `prefix`)."""
        with self._lock:
            order, total = self._ranking(prefix)
            if not order or not total > 0.0:   # no word continues prefix (or all have decayed to nothing)
                return [], 0.0
            return [(w, math.exp(-negative_key) / total) for negative_key, w in order[:k]], self.share

    def total_weight(self, prefix: str) -> float:
        """W_prefix: the weight now of all the words that start with `prefix`."""
        with self._lock:
            return self._ranking(prefix)[1] * math.exp(self._base - self.clock * self._rate)


def _subtract(ranked: list, amount: float) -> None:
    """ranked's total minus a removed word's exp(key). When nearly all of the sum goes (the dominant word left),
    the difference would be mostly rounding error (even negative): the total is summed again from the order,
    left to right as compact_lm.js does."""
    before = ranked[1]
    after = before - amount
    if after < before * _CANCELLED:
        after = 0.0
        for negative_key, _ in ranked[0]:
            after += math.exp(-negative_key)
    ranked[1] = after


def _encodable(word: str) -> bool:
    """Whether `word` can be written as UTF-8 (no lone surrogates)."""
    try:
        word.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def open_user_words(user_words) -> UserWords | None:
    """A UserWords from a path (read if it exists), a UserWords, or None."""
    if user_words is None or isinstance(user_words, UserWords):
        return user_words
    if isinstance(user_words, (str, os.PathLike)):
        return UserWords(user_words)
    raise CompactLMError(f"user_words must be a file path or a UserWords, got {type(user_words).__name__}")
