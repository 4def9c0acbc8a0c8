"""Words and the lexicon: what a word is, and the words of the training text that completion searches among.

A word is a maximal run of word characters; whitespace, punctuation and symbols are boundaries, apostrophes
and the hyphen are not ("don't", "o'er", "well-known" are one word). `word_spans` finds the words a boundary
ends.

A model file carries its lexicon: every word of its training split (as the vocabulary normalizes it, at
most MAX_WORD_CHARS long, none touching an unknown character), in the metadata key "lexicon":
    {"encoding": "front-zlib-base64", "words": N, "data": base64(zlib(lines joined by "\\n"))}
with one line per word, in code point order, front-coded: chr(0x30 + n) and the rest of the word, n the code
points it shares with the word before (so "there" after "the" is "3re"; 27 % fewer bytes than the words).
Word completion searches these words first while the word being typed is the start of one of them (the
decoding a phone keyboard does with its word list: the model's beam never spends a slot on a misspelling, and
a rare long word the model spells badly is still found letter by letter); the model's other words fill the
slots they leave; a word typed outside the lexicon is completed as before, by the model alone. Measured in
docs/experiments.md ("The lexicon"): on tinyshakespeare 14,360 words in 42,228 bytes of base64 (15 % more on
the int8 GRU-256's file), +0.9 points of keystroke savings; on Alice +2.8.
web/compact_lm.js reads the same key and searches the same way.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable

from .errors import CompactLMError
from .vocab import UNK_TEXT

WORD_JOINERS = frozenset("'\u2019-")   # apostrophes and the hyphen: "don't", "o'er", "well-known" are one word
# Not words for the lexicon, though no boundary splits them: a dash typed as two hyphens ("Darcy--that", "mad--": 6.8 %
# of the distinct words of 13 Gutenberg novels, 0.24 % of their words) and a hyphen at either end ("see-")
DASHED = re.compile("--|^-|-$")
MAX_WORD_CHARS = 40                    # longer runs are not words anyone completes (URLs, base64, ...)
ENCODING = "front-zlib-base64"
FRONT = 0x30                           # a line starts with chr(FRONT + n), n the code points shared with the word before
MAX_LEXICON_BYTES = 32 * 1024 * 1024   # decompressed: a file claiming more is refused (a zip bomb)
MAX_LEXICON_WORDS = 2_000_000          # and more words than this (a bomb of newlines) are never split out


# Code points that Python 3.11's unicodedata (Unicode 14.0) leaves unassigned and Unicode 15.0-17.0 made
# punctuation, symbols or separators (new emoji, the Symbols for Legacy Computing Supplement, ...): boundaries,
# as a JavaScript engine with Unicode 17 (Node 20, current browsers) classifies them, so that a word typed
# before a new emoji ends there in both. A Python with newer tables finds them assigned and classifies them itself.
NEWER_BOUNDARIES_UNICODE = "17.0"
NEWER_BOUNDARY_RANGES = (
    (0x1B4E, 0x1B4F), (0x1B7F, 0x1B7F), (0x20C1, 0x20C1), (0x2427, 0x2429), (0x2B96, 0x2B96), (0x2FFC, 0x2FFF),
    (0x31E4, 0x31E5), (0x31EF, 0x31EF), (0xFBC3, 0xFBD2), (0xFD90, 0xFD91), (0xFDC8, 0xFDCE), (0x10D6E, 0x10D6E),
    (0x10D8E, 0x10D8F), (0x10ED0, 0x10ED8), (0x113D4, 0x113D5), (0x113D7, 0x113D8), (0x11B00, 0x11B09),
    (0x11BE1, 0x11BE1), (0x11F43, 0x11F4F), (0x16D6D, 0x16D6F), (0x1CC00, 0x1CCEF), (0x1CCFA, 0x1CCFC),
    (0x1CD00, 0x1CEB3), (0x1CEBA, 0x1CED0), (0x1CEE0, 0x1CEF0), (0x1E5FF, 0x1E5FF), (0x1F6D8, 0x1F6D8),
    (0x1F6DC, 0x1F6DC), (0x1F774, 0x1F77F), (0x1F7D9, 0x1F7D9), (0x1F8B2, 0x1F8BB), (0x1F8C0, 0x1F8C1),
    (0x1F8D0, 0x1F8D8), (0x1FA54, 0x1FA57), (0x1FA75, 0x1FA77), (0x1FA87, 0x1FA8A), (0x1FA8E, 0x1FA8F),
    (0x1FAAD, 0x1FAAF), (0x1FABB, 0x1FABF), (0x1FAC6, 0x1FAC6), (0x1FAC8, 0x1FAC8), (0x1FACD, 0x1FACF),
    (0x1FADA, 0x1FADC), (0x1FADF, 0x1FADF), (0x1FAE8, 0x1FAEA), (0x1FAEF, 0x1FAEF), (0x1FAF7, 0x1FAF8),
    (0x1FBCB, 0x1FBEF), (0x1FBFA, 0x1FBFA),
)
_NEWER_STARTS = tuple(first for first, _ in NEWER_BOUNDARY_RANGES)


def _newer_boundary(char: str) -> bool:
    """Whether `char` (unassigned in this Python's Unicode) is a boundary in Unicode NEWER_BOUNDARIES_UNICODE."""
    at = bisect.bisect_right(_NEWER_STARTS, ord(char)) - 1
    return at >= 0 and ord(char) <= NEWER_BOUNDARY_RANGES[at][1]


def default_is_boundary(char: str) -> bool:
    """Whitespace, punctuation and symbols end a word; apostrophes and hyphens do not."""
    answer = _BOUNDARY.get(char)
    if answer is None:   # (a keystroke asks about a dozen times: the Unicode lookup is 5x a dict's)
        category = unicodedata.category(char)
        answer = char not in WORD_JOINERS and (char.isspace() or category[0] in "PSZ" or category == "Cc"
                                               or (category == "Cn" and _newer_boundary(char)))
        if len(_BOUNDARY) < CACHED_BOUNDARY_CHARS and len(char) == 1:
            _BOUNDARY[char] = answer
    return answer


CACHED_BOUNDARY_CHARS = 1 << 12   # characters whose answer is remembered (process-wide; single dict operations)
_BOUNDARY: dict[str, bool] = {}


def prefix_range(words: list[str], prefix: str) -> tuple[int, int]:
    """[lo, hi): the words of `words` (sorted in code point order) that start with `prefix` (two binary searches)."""
    lo = bisect.bisect_left(words, prefix)
    if not prefix:
        return lo, len(words)
    last = ord(prefix[-1])
    if last < 0x10FFFF:   # every word that starts with prefix sorts before prefix with its last code point + 1
        return lo, bisect.bisect_left(words, prefix[:-1] + chr(last + 1), lo)
    hi = lo
    while hi < len(words) and words[hi].startswith(prefix):
        hi += 1
    return lo, hi


def word_spans(text: str, is_boundary: Callable[[str], bool]) -> list[tuple[int, int]]:
    """(start, end) of every maximal run of word characters that a boundary character text[end] follows."""
    spans, start = [], None
    for i, char in enumerate(text):
        if is_boundary(char):
            if start is not None:
                spans.append((start, i))
            start = None
        elif start is None:
            start = i
    return spans


class Lexicon:
    """A sorted set of words: membership, whether a string starts some word, and which characters continue it."""

    def __init__(self, words: Iterable[str]):
        self.words = sorted(set(words))   # code point order, as JavaScript's compareCodePoints
        if self.words and (not self.words[0] or any("\n" in w for w in self.words)):
            raise CompactLMError("a lexicon's words are non-empty and hold no newline")
        self._set = frozenset(self.words)

    @classmethod
    def from_text(cls, text: str, is_boundary: Callable[[str], bool] = default_is_boundary) -> "Lexicon":
        """The words of `text` (already normalized) that a boundary ends, leaving out any next to `<unk>` (U+FFFD).

        The same words as `word_spans` less the DASHED ones, found by one regular expression over the text's boundary
        characters (a training split of a million characters takes a fraction of a second)."""
        boundaries = "".join(sorted(c for c in set(text) if is_boundary(c)))
        if not boundaries:
            return cls([])
        words = (match.group() for match in re.finditer(f"[^{re.escape(boundaries)}]+", text)
                 if match.end() < len(text) and match.end() - match.start() <= MAX_WORD_CHARS
                 and text[match.end()] != UNK_TEXT and not (match.start() and text[match.start() - 1] == UNK_TEXT))
        return cls(word for word in words if not DASHED.search(word))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._set

    def starts_word(self, prefix: str) -> bool:
        """Whether some word begins with `prefix` (every string begins the words of a non-empty lexicon)."""
        at = bisect.bisect_left(self.words, prefix)
        return at < len(self.words) and self.words[at].startswith(prefix)

    def next_chars(self, prefix: str) -> set[str]:
        """The code points that follow `prefix` in some word (one binary search per distinct one)."""
        words, length, found = self.words, len(prefix), set()
        at = bisect.bisect_left(words, prefix)
        while at < len(words) and words[at].startswith(prefix):
            if len(words[at]) == length:   # the prefix itself is a word
                at += 1
                continue
            char = words[at][length]
            found.add(char)
            if char == "\U0010ffff":   # the last code point: no word goes on with a later one
                break
            at = bisect.bisect_left(words, prefix + chr(ord(char) + 1), at)   # past the words going on with char
        return found

    def _front_coded(self) -> bytes:
        """The sorted words, one per line, each as chr(FRONT + n) and its rest, n the code points (at most
        MAX_WORD_CHARS) it shares with the word before; UTF-8."""
        lines, previous = [], ""
        for word in self.words:
            shared, limit = 0, min(len(word), len(previous), MAX_WORD_CHARS)
            while shared < limit and word[shared] == previous[shared]:
                shared += 1
            lines.append(chr(FRONT + shared) + word[shared:])
            previous = word
        return "\n".join(lines).encode("utf-8")

    def fits(self) -> bool:
        """Whether a reader takes this lexicon (at most MAX_LEXICON_WORDS words, MAX_LEXICON_BYTES inflated)."""
        return len(self.words) <= MAX_LEXICON_WORDS and len(self._front_coded()) <= MAX_LEXICON_BYTES

    def to_json(self) -> dict:
        """The metadata value: the sorted words front-coded, one per line, zlib-compressed, base64."""
        data = zlib.compress(self._front_coded(), 9)
        return {"encoding": ENCODING, "words": len(self.words), "data": base64.b64encode(data).decode("ascii")}

    @classmethod
    def from_json(cls, value, where: str) -> "Lexicon":
        """The lexicon of a metadata value, or a one-line CompactLMError naming `where` (the file).

        web/compact_lm.js's Lexicon.fromMetadata accepts and refuses the same values with the same messages."""
        count = value.get("words") if isinstance(value, dict) else None
        # a whole number as JSON gives it (JavaScript cannot tell 2.0 from 2)
        whole = isinstance(count, (int, float)) and not isinstance(count, bool) and count == count // 1
        if not isinstance(value, dict) or value.get("encoding") != ENCODING or not isinstance(value.get("data"), str) \
                or not whole or not 0 <= count <= MAX_LEXICON_WORDS:
            raise CompactLMError(f"{where} has a damaged lexicon (expected encoding {ENCODING!r}, words from 0 to "
                                 f"{MAX_LEXICON_WORDS:,} and data)")
        count = int(count)
        try:
            packed = base64.b64decode(value["data"].encode("ascii"), validate=True)
            inflater = zlib.decompressobj()
            raw = inflater.decompress(packed, MAX_LEXICON_BYTES)
            if inflater.unconsumed_tail:
                raise CompactLMError(f"{where} has a damaged lexicon (over {MAX_LEXICON_BYTES:,} bytes inflated)")
            # the stream must end the data: its last 4 bytes are the Adler-32 of what it inflates to (the check
            # web/compact_lm.js makes, as Node's DecompressionStream lets bytes after the end pass)
            if not inflater.eof or packed[-4:] != zlib.adler32(raw).to_bytes(4, "big"):
                raise zlib.error("cut off, or bytes after its end")
            text = raw.decode("utf-8")
        except (UnicodeError, binascii.Error, zlib.error):
            raise CompactLMError(f"{where} has a damaged lexicon (not the base64 of a zlib stream of UTF-8 text)") from None
        damaged = f"{where} has a damaged lexicon (its words are not {count:,} sorted distinct words)"
        if (text.count("\n") + 1 if text else 0) != count:   # counted before anything is split out
            raise CompactLMError(damaged)
        words, previous = [], ""
        for line in text.split("\n") if text else []:
            # a writer shares at most MAX_WORD_CHARS: more would let a few bytes rebuild a huge word
            shared = ord(line[0]) - FRONT if line else -1
            if not 0 <= shared <= min(len(previous), MAX_WORD_CHARS) or len(line) < 2:
                raise CompactLMError(damaged)
            previous = previous[:shared] + line[1:]
            words.append(previous)
        if any(a >= b for a, b in zip(words, words[1:])):
            raise CompactLMError(damaged)
        return cls(words)


def model_lexicon(info: dict, where: str) -> Lexicon | None:
    """The lexicon a model's metadata carries (None for a file without one)."""
    value = info.get("lexicon")
    return None if value is None else Lexicon.from_json(value, where)


def lexicon_size(info: dict) -> dict | None:
    """How many words the lexicon in a model's metadata holds and the bytes its JSON value takes (None: no lexicon);
    not decoded."""
    value = info.get("lexicon")
    if not isinstance(value, dict):
        return None
    return {"words": value.get("words"), "bytes": len(json.dumps(value))}
