"""Character vocabulary: text <-> token ids, with `<unk>` for anything unseen."""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

UNK_TOKEN = "<unk>"
UNK_ID = 0
START_TEXT = "\n"          # what a model has seen before the first typed character (a line begins)
# What `decode` writes for `<unk>`: U+FFFD, the Unicode replacement character.
UNK_TEXT = "\ufffd"
ENCODE_CHUNK = 1 << 20   # characters encoded at a time


def normalize(text: str, *, nfc: bool = True, lowercase: bool = False) -> str:
    """Apply the vocabulary's text normalization (Unicode NFC, optional lowercasing)."""
    if nfc:
        text = unicodedata.normalize("NFC", text)
    if lowercase:
        # Code point by code point, as a runtime lowercases each keystroke: str.lower() alone would turn a capital
        # sigma ending a word into the final form (Final_Sigma: "ΟΔΟΣ" -> "οδος"), which a typed "Σ" never becomes.
        # Final_Sigma is the only context rule str.lower() applies, so mapping Σ to σ first removes it.
        text = text.replace("\u03a3", "\u03c3").lower()
    return text


def foreign_text_note(ids: np.ndarray, what: str) -> str | None:
    """A note for stderr when most of a text (its ids) is outside the vocabulary (a model of another language or
    script): figures measured on `<unk>` say little."""
    unknown = int(np.count_nonzero(ids == UNK_ID))
    if 2 * unknown <= len(ids):
        return None
    return (f"note: {unknown:,} of the {len(ids):,} characters of {what} are outside the model's vocabulary; "
            "give --text FILE, a text in the model's language, for figures that count")


def _codepoints(text: str) -> np.ndarray:
    """Code points of `text` as uint32, without a Python loop (lone surrogates included)."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


@dataclass(frozen=True)
class Vocab:
    """Token id -> character; id 0 is `<unk>`, the rest are single characters in code point order."""

    chars: tuple[str, ...]
    nfc: bool = True
    lowercase: bool = False

    def __post_init__(self) -> None:
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("every vocabulary entry must be one character")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocabulary entries must be distinct")
        points = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        order = np.argsort(points)
        object.__setattr__(self, "_sorted_points", points[order])
        object.__setattr__(self, "_sorted_ids", (order + 1).astype(np.int64))

    @classmethod
    def build(cls, text: str, *, min_count: int = 1, nfc: bool = True, lowercase: bool = False) -> "Vocab":
        """Vocabulary of every character seen at least `min_count` times in `text` (normalized)."""
        counts = Counter(normalize(text, nfc=nfc, lowercase=lowercase))
        kept = sorted(c for c, n in counts.items() if n >= min_count)
        return cls(tuple(kept), nfc=nfc, lowercase=lowercase)

    @property
    def size(self) -> int:
        """Number of token ids, `<unk>` included."""
        return len(self.chars) + 1

    @property
    def tokens(self) -> list[str]:
        """The vocabulary as saved in metadata: index = token id."""
        return [UNK_TOKEN, *self.chars]

    @property
    def id_dtype(self) -> type:
        """Smallest unsigned dtype that holds every id (uint8 up to 256 ids)."""
        return np.uint8 if self.size <= 256 else np.uint16 if self.size <= 65536 else np.uint32

    def normalize(self, text: str) -> str:
        """Normalize text the way the training text was normalized."""
        return normalize(text, nfc=self.nfc, lowercase=self.lowercase)

    def encode(self, text: str, *, normalized: bool = False) -> np.ndarray:
        """Token ids of `text` (normalized first unless `normalized`); unseen characters map to `<unk>`.

        Works through the text in chunks, so the temporaries stay small next to the compact result.
        """
        if not normalized:
            text = self.normalize(text)
        ids = np.zeros(len(text), dtype=self.id_dtype)
        if len(self._sorted_points) == 0:
            return ids
        last = len(self._sorted_points) - 1
        for start in range(0, len(text), ENCODE_CHUNK):
            points = _codepoints(text[start:start + ENCODE_CHUNK])
            slot = np.minimum(np.searchsorted(self._sorted_points, points), last)
            found = self._sorted_points[slot] == points
            ids[start:start + len(points)] = np.where(found, self._sorted_ids[slot], UNK_ID)
        return ids

    def decode(self, ids) -> str:
        """Text of token ids; `<unk>` becomes U+FFFD."""
        table = (UNK_TEXT, *self.chars)
        return "".join(table[int(i)] for i in ids)

    def to_json(self) -> dict:
        """The vocabulary fields stored in model metadata."""
        return {"vocab": self.tokens, "unk_id": UNK_ID, "nfc": self.nfc, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, meta: dict) -> "Vocab":
        """Rebuild a vocabulary from model metadata (checks its shape)."""
        tokens = meta.get("vocab")
        if not isinstance(tokens, list) or not tokens or tokens[0] != UNK_TOKEN or meta.get("unk_id") != UNK_ID:
            raise ValueError("metadata 'vocab' must be a list starting with '<unk>' (unk_id 0)")
        return cls(tuple(tokens[1:]), nfc=bool(meta.get("nfc", True)), lowercase=bool(meta.get("lowercase", False)))
