"""The user's own words: a bounded, local, readable dictionary that word completion learns from (opt-in).

    words = UserWords("my-words.json")      # read if it exists, else empty; nothing is written until save()
    ac = Autocompleter("model.onnx", user_words=words)   # or user_words="my-words.json"
    words.forget("Zanzibar"); words.clear(); words.save()

A session learns each word when it is typed to a boundary (an accepted suggestion is typed too), and
takes the word back when a backspace removes that boundary right away (a typo corrected before going on
is not learned). Words only: the file never holds the text, only each word, how often it was used and
when, and its decayed weight. Words are stored as the model's normalization gives them (a lowercase
model stores "romeo"), of MIN_WORD_CHARS to MAX_WORD_CHARS code points.

Recency: the clock counts learned words; a word's weight halves every `half_life` words,
    weight(w, now) = sum over its uses u of 2^-((now - t_u) / half_life),
kept incrementally as (weight at its last use, last use). Its order among other words does not change
with the clock, only when it is used, so every prefix's ranking is kept sorted (`key` below) and a
keystroke costs a dictionary lookup, not a scan. When more than `max_words` words are held the lowest
weight goes (the oldest on a tie).

Mixing with the model (Autocompleter._mix), for the word being typed with prefix p (empty at a boundary):
    P(w | p) = (1 - share) P_model(w | p) + share * weight(w) / W_p
where W_p is the total weight of the dictionary's words that continue p, and share = 0 when there are
none (the suggestions are then the model's). A word the model's search did not return counts
P_model = 0. `share` and `half_life` were chosen by measurement, against a share that grows with the
evidence W_p / (W_p + prior) (docs/experiments.md, "Learning the user's words"). A word that holds a
character outside the model's vocabulary gets the dictionary's words alone.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import threading
from pathlib import Path

from .errors import CompactLMError

FORMAT = "compact-lm-user-words"
VERSION = 1
MIN_WORD_CHARS = 2          # a one-letter word saves nothing when completed
MAX_WORD_CHARS = 40
DEFAULT_MAX_WORDS = 5000
DEFAULT_HALF_LIFE = 300.0   # learned words
DEFAULT_SHARE = 0.25        # of the probability, for the dictionary's words when one continues the prefix
MAX_FILE_BYTES = 16 * 1024 * 1024
_REBASE = 600.0             # keys are kept below exp's range by shifting them all when they pass this


class UserWords:
    """A bounded dictionary of the user's words with counts and recency; thread-safe (one lock)."""

    def __init__(self, path: str | os.PathLike | None = None, *, max_words: int = DEFAULT_MAX_WORDS,
                 half_life: float = DEFAULT_HALF_LIFE, share: float = DEFAULT_SHARE):
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise CompactLMError(f"max_words must be a whole number >= 1, got {max_words!r}")
        if not (isinstance(half_life, (int, float)) and math.isfinite(half_life) and half_life > 0):
            raise CompactLMError(f"half_life must be a number > 0, got {half_life!r}")
        if not (isinstance(share, (int, float)) and 0 <= share <= 1):
            raise CompactLMError(f"share must be a number from 0 to 1, got {share!r}")
        self.path = Path(path) if path is not None else None
        self.max_words, self.half_life, self.share = max_words, float(half_life), float(share)
        self._rate = math.log(2.0) / self.half_life   # decay per learned word, in log units
        self._lock = threading.RLock()
        self.clock = 0
        self._entries: dict[str, list] = {}   # word -> [count, last use, weight at last use]
        self._sorted: list[str] = []          # the words in code point order, for prefix ranges
        self._base = 0.0                      # keys are stored minus this
        self._ranked: dict[str, tuple[list, float]] = {}   # prefix -> (words by key, largest first; sum of exp(key))
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
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CompactLMError(f"user words {path} is not valid JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CompactLMError(f"user words {path} is not a {FORMAT} file (no \"format\": \"{FORMAT}\")")
        if document.get("version") != VERSION:
            raise CompactLMError(f"user words {path} has version {document.get('version')!r}; this compact-lm reads {VERSION}")
        words, clock = document.get("words"), document.get("clock")
        if not isinstance(words, dict) or isinstance(clock, bool) or not isinstance(clock, int) or clock < 0:
            raise CompactLMError(f"user words {path} is damaged: \"clock\" must be a whole number >= 0 and \"words\" an object")
        self.clock = clock
        for word, entry in words.items():
            ok = isinstance(entry, dict) and all(isinstance(entry.get(f), (int, float)) and not isinstance(entry.get(f), bool)
                                                 for f in ("count", "last", "weight"))
            if not ok or not 0 <= entry["last"] <= clock or entry["weight"] <= 0 or entry["count"] < 1 \
                    or not MIN_WORD_CHARS <= len(word) <= MAX_WORD_CHARS:
                raise CompactLMError(f"user words {path} is damaged: the entry of {word!r} must have count >= 1, "
                                     f"0 <= last <= clock and weight > 0, for a word of {MIN_WORD_CHARS}-{MAX_WORD_CHARS} characters")
            self._entries[word] = [int(entry["count"]), int(entry["last"]), float(entry["weight"])]
        self._sorted = sorted(self._entries)
        self._rebase()
        while len(self._entries) > self.max_words:
            self._evict()

    def to_json(self) -> dict:
        """The file's document: words with count, last use (on the clock of learned words) and weight then."""
        with self._lock:
            words = {w: {"count": c, "last": last, "weight": round(weight, 6)} for w, (c, last, weight) in
                     sorted(self._entries.items(), key=lambda item: (-self._key(item[0]), item[0]))}
            return {"format": FORMAT, "version": VERSION, "clock": self.clock, "half_life": self.half_life,
                    "words": words}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the dictionary as JSON atomically (to `path`, else the path it was opened from)."""
        from .fileio import atomic_write
        target = Path(path) if path is not None else self.path
        if target is None:
            raise CompactLMError("these user words have no file: give save() a path")
        text = json.dumps(self.to_json(), ensure_ascii=False, indent=1).encode("utf-8")
        atomic_write(target, lambda handle: handle.write(text))
        return target

    # ------------------------------------------------------------------------------- contents
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, word: str) -> bool:
        return word in self._entries

    def words(self) -> list[str]:
        """The words held, most weight first."""
        with self._lock:
            return sorted(self._entries, key=lambda w: (-self._key(w), w))

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
    def learn(self, word: str) -> tuple | None:
        """Count one use of `word` (already normalized); returns what `unlearn` needs to take it back, or None
        when the word is not kept (too short or too long)."""
        if not MIN_WORD_CHARS <= len(word) <= MAX_WORD_CHARS:
            return None
        with self._lock:
            previous = self._entries.get(word)
            previous = None if previous is None else list(previous)
            self.clock += 1
            if previous is None:
                entry = [1, self.clock, 1.0]
                bisect.insort(self._sorted, word)
            else:
                count, last, weight = previous
                entry = [count + 1, self.clock, weight * 2.0 ** (-(self.clock - last) / self.half_life) + 1.0]
            self._set(word, entry, previous)
            if len(self._entries) > self.max_words:
                self._evict()
            return (word, previous)

    def unlearn(self, undo: tuple) -> None:
        """Take back one `learn` (its return value): the word's entry as it was before (the clock stays)."""
        word, previous = undo
        with self._lock:
            if word not in self._entries:
                return
            if previous is None:
                self._remove(word)
            else:
                self._drop_ranked(word)
                self._entries[word] = list(previous)

    def forget(self, word: str) -> bool:
        """Remove `word` (as stored: normalized); whether it was there."""
        with self._lock:
            if word not in self._entries:
                return False
            self._remove(word)
            return True

    def clear(self) -> None:
        """Remove every word (the clock stays)."""
        with self._lock:
            self._entries.clear()
            self._sorted.clear()
            self._ranked.clear()

    def _set(self, word: str, entry: list, previous: list | None) -> None:
        """Store `entry` and update every kept ranking of a prefix of `word` (its key only grows)."""
        old_key = None if previous is None else self._key(word)
        self._entries[word] = entry
        key = self._key(word)
        if key > _REBASE:
            self._rebase()
            return
        for length in range(len(word) + 1):
            ranked = self._ranked.get(word[:length])
            if ranked is None:
                continue
            order, total = ranked
            if old_key is not None:
                order.remove(word)
                total = max(total - math.exp(old_key), 0.0)
            position = 0   # after every word of a larger key, or of the same key and an earlier text
            while position < len(order):
                other = self._key(order[position])
                if other < key or (other == key and order[position] > word):
                    break
                position += 1
            order.insert(position, word)
            self._ranked[word[:length]] = (order, total + math.exp(key))

    def _remove(self, word: str) -> None:
        self._drop_ranked(word)
        del self._entries[word]
        del self._sorted[bisect.bisect_left(self._sorted, word)]

    def _drop_ranked(self, word: str) -> None:
        for length in range(len(word) + 1):
            self._ranked.pop(word[:length], None)

    def _evict(self) -> None:
        """Remove the word of least weight (the oldest last use on a tie, then code point order)."""
        victim = min(self._entries, key=lambda w: (self._key(w), self._entries[w][1], w))
        self._remove(victim)

    def _rebase(self) -> None:
        """Shift every key so the largest is 0 (exp stays in range as the clock grows)."""
        self._ranked.clear()
        if self._entries:
            self._base += max(self._key(w) for w in self._entries)

    # ------------------------------------------------------------------------------- lookups
    def continuing(self, prefix: str, k: int) -> tuple[list[tuple[str, float]], float]:
        """The k words of most weight that start with `prefix` as (word, weight / W_prefix), most first, and
        the dictionary's share of the mixture (0 when no word continues `prefix`)."""
        with self._lock:
            ranked = self._ranked.get(prefix)
            if ranked is None:
                start = end = bisect.bisect_left(self._sorted, prefix)   # the words continuing prefix follow it
                while end < len(self._sorted) and self._sorted[end].startswith(prefix):
                    end += 1
                matches = self._sorted[start:end]
                keys = {w: self._key(w) for w in matches}
                order = sorted(matches, key=lambda w: (-keys[w], w))
                ranked = (order, sum(math.exp(keys[w]) for w in order))   # left to right, as compact_lm.js
                if len(self._ranked) >= 1 << 14:
                    self._ranked.clear()
                self._ranked[prefix] = ranked
            order, total = ranked
            if not order or total <= 0.0:   # no word continues prefix (or all have decayed to nothing)
                return [], 0.0
            return [(w, math.exp(self._key(w)) / total) for w in order[:k]], self.share

    def total_weight(self, prefix: str) -> float:
        """W_prefix: the weight now of all the words that start with `prefix`."""
        with self._lock:
            UserWords.continuing(self, prefix, 1)   # (fills the ranking of prefix; not a subclass's rule)
            return self._ranked[prefix][1] * math.exp(self._base - self.clock * self._rate)


def open_user_words(user_words) -> UserWords | None:
    """A UserWords from a path (read if it exists), a UserWords, or None."""
    if user_words is None or isinstance(user_words, UserWords):
        return user_words
    if isinstance(user_words, (str, os.PathLike)):
        return UserWords(user_words)
    raise CompactLMError(f"user_words must be a file path or a UserWords, got {type(user_words).__name__}")
