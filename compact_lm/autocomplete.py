"""Autocomplete on any Backend: next characters, beam-searched word completions, keystroke sessions.

    ac = Autocompleter("model.onnx")              # or a .npz path, a loaded model, any Backend
    ac.complete("Alice was b", k=3)               # [Suggestion(text='eginning', prob=0.31), ...]
    session = ac.session()
    session.type("Alice was b"); session.suggestions(3); session.backspace(); session.next_chars(3)
    session.accept(session.suggestions(1)[0]); session.type(",")   # "Alice was beginning," (no space before ,)

The text the model sees is a newline (as at the start of a line) followed by what was typed, normalized as
the vocabulary says: NFC (a letter and the combining marks typed after it compose into one character, as
in the training text: a session that sees a mark compose runs the model again from before that letter),
then lowercasing code point by code point; typing a text key by key and pasting it give the same ids.
Characters outside the vocabulary become `<unk>`.

A word completion is a run of word characters that a boundary character (whitespace and punctuation
by default) ends; its text is the rest of the word without that boundary, and its probability is the
word's probability of ending there, whatever boundary follows:
    p(w | prefix) = sum over boundaries b of prod_i p(c_i | prefix c_<i) * p(b | prefix w),
so the k suggestions are k different words, each at least one character long: the word as typed,
complete, is what the space bar gives (as a suggestion it would take a slot and save nothing). Beam
search keeps the `beam` most likely unfinished words; all of them advance in one batched `step` per
character. The search stops when no unfinished word is
more likely than the k-th best finished one: extending a word only lowers its probability mass, so
that cut loses nothing. Ties sort by text (code point order). While the word being typed holds a
character outside the vocabulary the model gives no word completion (next characters still come).

With a lexicon (compact_lm/lexicon.py: a model file carries the words of its training split) the search
keeps to the lexicon's words while the typed part of the word starts one of them: a beam extends only by a
character that continues some word, and only whole words finish. If that gives fewer than k words, the
model's other words fill the rest (chosen after them; every list is shown most likely first).
A word typed outside the lexicon is completed by the model alone. The probabilities are the model's, not
renormalized over the lexicon.

With `user_words` (compact_lm.user_words.UserWords, or a path to its JSON file) sessions learn the words
typed and completions mix the model's words with the user's (the rule is in user_words.py); a word
holding an unknown character then gets the user's words alone. With `context_cache=True` a learning
session also keeps the model's state where each learned word began, and weighs the user's words by how
alike the contexts are (context_cache.py).

This module imports numpy (and onnxruntime when given an .onnx path) and nothing heavier.
"""
from __future__ import annotations

import math
import os
import unicodedata
from dataclasses import dataclass

import numpy as np

from .context_cache import ContextCache
from .errors import CompactLMError
from .lexicon import MAX_WORD_CHARS, Lexicon, default_is_boundary
from .user_words import UserWords, open_user_words
from .vocab import START_TEXT, UNK_ID, Vocab

# At most this many characters run through the model when several arrive at once (a paste, a
# recomputation); the state starts afresh before them. Measured (benchmarks/autocomplete_latency.py
# --context-check, GRU E=64 H=256, 2000 steps on tinyshakespeare): cutting the context to 64 / 128 /
# 256 characters moves next-character log-probabilities by 1e-3 / 5e-5 / 1e-6 on average, the last
# being float rounding. 1024 leaves room for models with a longer memory, and a 1 MB paste costs
# one run over 1024 characters instead of seconds over all of them.
CONTEXT_CHARS = 1024
MAX_CHECKPOINTS = 1 << 14   # per session: states kept for free backspace (~1.3 KB each at H=256)
CACHED_CHARS = 1 << 12      # distinct characters whose normalization and ids are remembered
CACHED_PREFIXES = 1 << 15   # lexicon prefixes whose next characters are remembered (V bytes each; all dropped when full)
LEARNED_UNDO = 64           # per session: the last learned words a backspace over their boundary takes back
# NFC composes a base character with what is typed after it (e + U+0323 + U+0302 -> U+1EC7; decomposed text
# comes from macOS pastes and some Vietnamese and Yoruba keyboards): a "joiner" may change the character before
# it. Joiners: the code points whose decomposition starts with a nonzero combining class (found without a class
# table, as JavaScript can: canonical ordering moves them before U+0345, the one mark of the highest class, 240),
# and the starters (class 0) that are the second half of a canonical composition: Hangul vowel and final jamo, and
# these (tests/test_autocomplete.py checks the list against unicodedata).
JOINING_STARTERS = frozenset(map(chr, (
    0x09BE, 0x09D7, 0x0B3E, 0x0B56, 0x0B57, 0x0BBE, 0x0BD7, 0x0CC2, 0x0CD5, 0x0CD6, 0x0D3E, 0x0D57, 0x0DCF, 0x0DDF,
    0x102E, 0x1B35, 0x11127, 0x1133E, 0x11357, 0x114B0, 0x114BA, 0x114BD, 0x115AF, 0x11930,
    *range(0x1161, 0x1176), *range(0x11A8, 0x11C3))))
COMPOSING_CHARS = CONTEXT_CHARS   # typed code points looked back over for the base a joiner composes with
# typed code points looked back over for the word being typed: a word is at most MAX_WORD_CHARS characters once
# composed, and typed decomposed (a letter and two marks each) it may take three times as many
TYPED_WORD_CHARS = 4 * MAX_WORD_CHARS
# Typed right after an accepted suggestion, these replace its automatic space: "word" + "," gives "word,".
# Not the straight quotes ' and ": they open a quotation as often as they close one ("said 'tis", 'said "no').
ATTACHING_PUNCTUATION = frozenset(",.;:!?)]}\u2019\u201d\u00bb")


@dataclass(frozen=True)
class Suggestion:
    """Characters to append to what was typed and their probability.

    A word completion is the rest of the word, without the boundary that ends it; its probability is that
    of the word ending there, summed over every boundary character that can follow."""

    text: str
    prob: float


def _positive(name: str, value) -> int:
    """A whole number >= 1, or a one-line CompactLMError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CompactLMError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _check_text(name: str, text) -> str:
    if not isinstance(text, str):
        raise CompactLMError(f"{name} must be a string, got {type(text).__name__}")
    return text


def open_backend(model, *, threads: int = 1, sequence: str | os.PathLike | None = None, check_lexicon: bool = True):
    """A Backend for `model`: a model file path (`compact_lm.open_model`: .npz run by NumPy, .onnx by
    onnxruntime with `sequence`, the same model's sequence graph, for pasted text), a loaded model, or a Backend."""
    if isinstance(model, (str, os.PathLike)):
        from .opener import open_model
        return open_model(model, threads=threads, sequence=sequence, check_lexicon=check_lexicon).backend()
    if sequence is not None:
        raise CompactLMError("a sequence graph goes with an .onnx step graph")
    if all(callable(getattr(model, name, None)) for name in ("initial_state", "step", "run")):
        return model
    if callable(getattr(model, "backend", None)):
        return model.backend()
    raise CompactLMError(f"expected a model path, a loaded model or a Backend, got {type(model).__name__}")


class Autocompleter:
    """Next characters and word completions from any Backend; `session()` for keystroke-by-keystroke use.

    Thread-safe without a lock: after construction nothing here is written but two character caches and the
    lexicon's mask cache (single dict operations), every call works on its own arrays, and the Backend must
    accept concurrent calls (NumpyBackend and OrtBackend do: no buffers are kept between calls). One instance serves every thread
    of a server; each thread uses its own sessions.
    """

    def __init__(self, model, *, beam: int = 4, max_chars: int = 16, boundaries: str | None = None,
                 context_chars: int = CONTEXT_CHARS, vocab: Vocab | None = None, threads: int = 1,
                 sequence: str | os.PathLike | None = None, user_words: UserWords | str | os.PathLike | None = None,
                 lexicon: Lexicon | bool | None = True, context_cache: bool = False):
        self.user_words = user_words   # (a path is opened: see the property)
        if not isinstance(context_cache, (bool, np.bool_)):
            raise CompactLMError(f"context_cache must be True or False, got {context_cache!r}")
        self.context_cache = bool(context_cache)   # sessions that learn also weigh words by context (context_cache.py)
        # a file's lexicon is read only if it will be searched (a damaged one then fails here, naming the file)
        self.backend = open_backend(model, threads=threads, sequence=sequence,
                                    check_lexicon=lexicon is True and boundaries is None)
        self.vocab = vocab if vocab is not None else getattr(self.backend, "vocab", None)
        if not isinstance(self.vocab, Vocab):
            raise CompactLMError("the backend has no .vocab: pass vocab=")
        self.beam = _positive("beam", beam)
        self.max_chars = _positive("max_chars", max_chars)
        self.context_chars = _positive("context_chars", context_chars)
        self.vocab_size = int(self.backend.vocab_size)
        if self.vocab.size != self.vocab_size:
            raise CompactLMError(f"vocabulary has {self.vocab.size} entries, the backend {self.vocab_size}")
        if boundaries is None:
            self.is_boundary = default_is_boundary
        else:
            boundary_set = frozenset(_check_text("boundaries", boundaries))
            self.is_boundary = boundary_set.__contains__
        # the model's own lexicon was cut at the default boundaries: other boundaries go without it
        if lexicon is True:
            self.lexicon = getattr(self.backend, "lexicon", None) if boundaries is None else None
        elif lexicon is False or lexicon is None or isinstance(lexicon, Lexicon):
            self.lexicon = lexicon or None
        else:
            raise CompactLMError(f"lexicon must be True, False, None or a Lexicon, got {type(lexicon).__name__}")
        tokens = self.vocab.tokens
        self._char_of = ["", *self.vocab.chars]          # <unk> is never part of a suggestion
        boundary = np.array([i != UNK_ID and self.is_boundary(c) for i, c in enumerate(tokens)])
        self._boundary_ids = np.flatnonzero(boundary).astype(np.int64)
        if self._boundary_ids.size == 0:
            raise CompactLMError("no word-boundary character is in the model's vocabulary")
        # added to log-probabilities: -inf where a character may not extend a word / be suggested next
        self._word_mask = np.where(boundary, -np.inf, 0.0)
        self._word_mask[UNK_ID] = -np.inf
        self._next_mask = np.zeros(self.vocab_size)
        self._next_mask[UNK_ID] = -np.inf
        self._normalized: dict[str, str] = {}
        self._char_ids: dict[str, np.ndarray] = {}
        self._joining: dict[str, bool] = {}
        self._id_of = {c: i for i, c in enumerate(tokens) if i != UNK_ID}
        state = self.backend.initial_state(1)
        log_probs, state = self.backend.step(self.encode(START_TEXT)[-1:], state)
        # a checkpoint: (characters typed, state after them, log-probabilities of the next character)
        self._root = (0, state, log_probs[0])

    @property
    def user_words(self) -> UserWords | None:
        """The dictionary new sessions learn into (None: no learning); may be set to a UserWords, a path or None."""
        return self._user_words

    @user_words.setter
    def user_words(self, user_words: UserWords | str | os.PathLike | None) -> None:
        self._user_words = open_user_words(user_words)

    @property
    def lexicon(self) -> Lexicon | None:
        """The words completion searches first (None: the model alone); may be set to another Lexicon or None,
        even while other threads search (each search keeps the lexicon it started with)."""
        return self._lexicon_state[0]

    @lexicon.setter
    def lexicon(self, lexicon: Lexicon | None) -> None:
        if lexicon is not None and not isinstance(lexicon, Lexicon):
            raise CompactLMError(f"lexicon must be a Lexicon or None, got {type(lexicon).__name__}")
        self._lexicon_state = (lexicon or None, {})   # with its own mask cache, replaced in one assignment

    # ------------------------------------------------------------------------------ text -> ids
    def normalize(self, text: str) -> str:
        """`text` as the model's vocabulary asks: NFC over the whole text (a letter and the combining marks after it
        compose, as in the training text), then each code point on its own (lowercasing)."""
        if self.vocab.nfc and text and max(text) >= "\u0300":   # below U+0300 nothing composes
            text = unicodedata.normalize("NFC", text)
        table = {}
        cache = self._normalized
        for char in set(text):
            normalized = cache.get(char)
            if normalized is None:
                normalized = self.vocab.normalize(char)
                if len(cache) < CACHED_CHARS:
                    cache[char] = normalized
            if normalized != char:
                table[ord(char)] = normalized
        return text.translate(table) if table else text

    def encode(self, text: str) -> np.ndarray:
        """int64 token ids of `text` (normalized as `normalize` says; unknown characters -> `<unk>`)."""
        return self.vocab.encode(self.normalize(text), normalized=True).astype(np.int64)

    def _ids_of_char(self, char: str) -> np.ndarray:
        ids = self._char_ids.get(char)
        if ids is None:
            ids = self.encode(char)
            if len(self._char_ids) < CACHED_CHARS:
                self._char_ids[char] = ids
        return ids

    def _joins(self, char: str) -> bool:
        """Whether the typed code point `char` may compose with the one before it (NFC vocabularies only)."""
        if char < "\u0300" or not self.vocab.nfc:   # (nothing below U+0300 composes with what is before it)
            return False
        joins = self._joining.get(char)
        if joins is None:
            joins = joins_previous(char)
            if len(self._joining) < CACHED_CHARS:
                self._joining[char] = joins
        return joins

    def _group_start(self, chars: list[str], end: int) -> int:
        """Where the group that chars[end - 1] belongs to begins: its base character, the last code point before it
        that is not a joiner (at most COMPOSING_CHARS back)."""
        begin = end - 1
        while begin > 0 and end - begin < COMPOSING_CHARS and self._joins(chars[begin]):
            begin -= 1
        return begin

    def _recomposed_from(self, chars: list[str], end: int, text: str) -> int | None:
        """Where to run the model again from when `text`, typed after chars[:end], composes with the code points
        before it (NFC: U+0301 after "e" makes it one character); None when it does not (the common case)."""
        if not end or not text or not self._joins(text[0]):
            return None
        begin = self._group_start(chars, end)
        group, head = "".join(chars[begin:end]), text[:COMPOSING_CHARS]
        nfc = unicodedata.normalize
        if nfc("NFC", group + head) == nfc("NFC", group) + nfc("NFC", head):   # a mark with nothing to compose with
            return None
        return begin

    def _unknown_positions(self, chars: list[str], begin: int) -> list[int]:
        """Positions in chars[begin:] of typed code points that map to `<unk>`, `begin` at a base character: in a
        group of a base and its joiners whose composed text holds an `<unk>`, those unknown on their own (or, if none
        is, the last); none where the group composes into known characters."""
        found, end = [], len(chars)
        while begin < end:
            stop = begin + 1
            while stop < end and self._joins(chars[stop]):
                stop += 1
            if stop == begin + 1:
                if self._is_unknown(chars[begin]):
                    found.append(begin)
            elif UNK_ID in self.encode("".join(chars[begin:stop])).tolist():
                # (a code point may give two characters: U+095B is U+091C U+093C in NFC)
                own = [i for i in range(begin, stop) if self._is_unknown(chars[i])]
                found.extend(own or [stop - 1])
            begin = stop
        return found

    # ----------------------------------------------------------------------------- model calls
    def _advance(self, state: list, text: str) -> tuple[list, np.ndarray]:
        """(state, next-character log-probabilities) after `text` from `state`: one step for one id, else one run."""
        if len(text) > self.context_chars:   # only the last context_chars characters matter
            state = self._root[1]
            text = text[-self.context_chars:]
        ids = self._ids_of_char(text) if len(text) == 1 else self.encode(text)
        if ids.shape[0] == 1:
            log_probs, state = self.backend.step(ids, state)
            return state, log_probs[0]
        log_probs, state = self.backend.run(ids[None, :], state)
        return state, log_probs[0, -1]

    def _start(self, prefix: str) -> tuple[list, np.ndarray]:
        """(state, next-character log-probabilities) after `prefix` typed from the start."""
        prefix = _check_text("prefix", prefix)
        return self._advance(self._root[1], prefix) if prefix else self._root[1:]

    # ----------------------------------------------------------------------------- public API
    def session(self, user_words: UserWords | str | os.PathLike | None = ...) -> "Session":
        """A new keystroke session (empty text), learning into `user_words` (default: the Autocompleter's)."""
        return Session(self, self.user_words if user_words is ... else open_user_words(user_words))

    def next_chars(self, prefix: str, k: int = 3) -> list[Suggestion]:
        """The k most likely next characters after `prefix` (never `<unk>`), most likely first."""
        k = _positive("k", k)
        return self._next_chars(self._start(prefix)[1], k)

    def complete(self, prefix: str, k: int = 3, max_chars: int | None = None) -> list[Suggestion]:
        """The k most likely completions of the word being typed (the next word if `prefix` ends at a boundary);
        `max_chars` counts the boundary that ends a word too (so 1 gives none)."""
        k = _positive("k", k)
        max_chars = self.max_chars if max_chars is None else _positive("max_chars", max_chars)
        prefix = _check_text("prefix", prefix)
        start = len(prefix)
        while start and not self.is_boundary(prefix[start - 1]):
            start -= 1
        word = prefix[start:]
        typed = self.normalize(word)
        if any(self._is_unknown(char) for char in typed):   # no model completion (and no model call)
            return self._mix([], typed, k, unknown=True)
        state, log_probs = self._start(prefix)
        return self._mix(self._search(state, log_probs, k, max_chars, typed), typed, k)

    def _mix(self, suggestions: list[Suggestion], typed: str, k: int, unknown: bool = False,
             user_words: UserWords | None = ..., context: list[tuple[str, float]] | None = None) -> list[Suggestion]:
        """The model's completions of the typed part of the word (`typed`, normalized) mixed with the user's words
        that continue it: p = (1 - lam) p_model + lam * weight share (user_words.py; `context`: the context cache's
        (word, share) list in the dictionary's place); the user's alone for an unknown word."""
        user_words = self.user_words if user_words is ... else user_words
        if user_words is None:
            return suggestions
        # a session's words weighed by their contexts take the dictionary's place (context_cache.py); else k + 1
        # of the dictionary's words (the word as typed is no completion)
        found, lam = (context, user_words.share) if context else user_words.continuing(typed, k + 1)
        if not found:
            return suggestions
        if unknown:
            lam = 1.0
        keep, cut, is_boundary = 1.0 - lam, len(typed), self.is_boundary
        probs = {s.text: keep * s.prob for s in suggestions}
        users = []
        for candidate, share in found:
            text = candidate[cut:]
            # not the word as typed (no completion), nor a word that spans a boundary (a hand-edited entry, "New
            # York", or one whose normalization made a boundary character)
            if text and not any(map(is_boundary, text)):
                probs[text] = probs.get(text, 0.0) + lam * share
                users.append(text)
        # chosen as _search chooses: the lexicon's words and the user's first, then the model's other words (the
        # fill); shown most likely first
        lexicon = self.lexicon
        if lexicon is None or unknown or not lexicon.starts_word(typed):
            chosen = sorted(probs.items(), key=_most_likely_first)[:k]
        else:
            fill = {text for text in probs if typed + text not in lexicon}.difference(users)
            chosen = sorted(probs.items(), key=lambda item: (item[0] in fill, -item[1], item[0]))[:k]
            if fill:
                chosen.sort(key=_most_likely_first)
        return [Suggestion(text, prob) for text, prob in chosen]

    def _is_unknown(self, char: str) -> bool:
        """Whether the code point `char`, normalized on its own, maps to `<unk>`."""
        return UNK_ID in self._ids_of_char(char).tolist()

    def _next_chars(self, log_probs: np.ndarray, k: int) -> list[Suggestion]:
        scores = log_probs + self._next_mask
        k = min(k, scores.size - 1)   # every character but <unk>
        top = scores.argpartition(-k)[-k:]
        top = top[(-scores[top]).argsort(kind="stable")]
        return [Suggestion(self._char_of[i], math.exp(scores[i])) for i in top.tolist() if scores[i] > -np.inf]

    def _lexicon_mask(self, state: tuple, prefix: str) -> np.ndarray:
        """True for the characters that continue `prefix` in some word of `state`'s lexicon ([V] bool, kept)."""
        lexicon, masks = state
        mask = masks.get(prefix)
        if mask is None:
            mask = np.zeros(self.vocab_size, dtype=bool)
            mask[[self._id_of[c] for c in lexicon.next_chars(prefix) if c in self._id_of]] = True
            if len(masks) >= CACHED_PREFIXES:
                masks.clear()
            masks[prefix] = mask
        return mask

    def _search(self, state: list, log_probs: np.ndarray, k: int, max_chars: int, typed: str = "") -> list[Suggestion]:
        """The k most likely distinct words from (state, log_probs): the lexicon's words first, while `typed`
        (the part of the word already typed, normalized) starts one; if they are fewer than k, the model's
        other words fill the rest."""
        lexicon_state = self._lexicon_state
        lexicon = lexicon_state[0]
        if lexicon is None or not lexicon.starts_word(typed):
            return self._beam_search(state, log_probs, k, max_chars)
        found = self._beam_search(state, log_probs, k, max_chars, typed, lexicon_state)
        if len(found) < k:
            texts = {s.text for s in found}
            others = self._beam_search(state, log_probs, k + len(found), max_chars)
            found += [s for s in others if s.text not in texts][:k - len(found)]
            found.sort(key=_shown_order)
        return found

    def _beam_search(self, state: list, log_probs: np.ndarray, k: int, max_chars: int,
                     typed: str = "", lexicon_state: tuple | None = None) -> list[Suggestion]:
        """Beam search from (state, log_probs) to the k most likely distinct words (with `lexicon_state`, a
        (Lexicon, mask cache) pair, words that continue `typed` in it), each with its probability of ending
        whatever boundary character follows (log-sum-exp over the boundary columns, in float64)."""
        lexicon = lexicon_state[0] if lexicon_state is not None else None
        vocab_size, beam, boundary_ids = self.vocab_size, self.beam, self._boundary_ids
        char_of, word_mask = self._char_of, self._word_mask
        step = self.backend.step
        finished: list[tuple[float, str]] = []   # (-log p, text) of the best k so far: sorts best first, ties by text
        threshold = -math.inf                    # log p of the k-th finished word: nothing below it can enter
        texts = [""]
        scores = log_probs[None, :].astype(np.float64)   # [beams, V]: log p of each beam + its next character
        for depth in range(1, max_chars + 1):
            # a completion adds at least one character: the word as typed, complete, is the space bar's
            # (as a suggestion it would take a slot and save no keystroke)
            if depth > 1:
                added = False
                for value, text in zip(_end_log_probs(scores.take(boundary_ids, axis=1)).tolist(), texts):
                    # texts differ from each other and from every shorter word
                    if value > threshold and (lexicon is None or typed + text in lexicon):
                        finished.append((-value, text))
                        added = True
                if added:
                    finished.sort()
                    del finished[k:]
                    if len(finished) == k:
                        threshold = -finished[-1][0]
            if depth == max_chars:
                break
            flat_scores = scores + word_mask
            if lexicon is not None:   # only characters that continue a lexicon word (+ -inf for the others)
                flat_scores[~np.array([self._lexicon_mask(lexicon_state, typed + text) for text in texts])] = -np.inf
            flat_scores = flat_scores.ravel()
            top = flat_scores.argpartition(-beam)[-beam:] if flat_scores.size > beam else np.arange(flat_scores.size)
            # a beam's own log p bounds every word it can become: at or below the k-th finished word, it is dropped
            top = top[flat_scores[top] > threshold]   # also drops the -inf of boundaries and <unk>
            if not top.size:
                break
            parents, chars = np.divmod(top, vocab_size)
            texts = [texts[p] + char_of[c] for p, c in zip(parents.tolist(), chars.tolist())]
            state = [tuple([a[parents] for a in layer]) for layer in state]
            log_probs, state = step(chars, state)
            scores = log_probs + flat_scores[top][:, None]
        return [Suggestion(text, math.exp(-score)) for score, text in finished]


def joins_previous(char: str) -> bool:
    """Whether the code point `char` may compose with the one before it under NFC (a joiner: JOINING_STARTERS)."""
    nfd = unicodedata.normalize
    return char == "\u0345" or char in JOINING_STARTERS or nfd("NFD", "\u0345" + char) != "\u0345" + nfd("NFD", char)


def _most_likely_first(item: tuple[str, float]) -> tuple[float, str]:
    """How (text, probability) pairs are shown: most likely first, ties by text (code point order)."""
    return -item[1], item[0]


def _shown_order(suggestion: Suggestion) -> tuple[float, str]:
    """How a list is shown: most likely first, ties by text (code point order)."""
    return -suggestion.prob, suggestion.text


def _end_log_probs(ends: np.ndarray) -> np.ndarray:
    """log sum_j exp(ends[b, j]) for each row b (float64): the log p of each beam's word ending here.

    Summed left to right (an accumulation, never numpy's pairwise sum), the order web/compact_lm.js uses;
    exp and log may still differ from JavaScript's in the last bit."""
    top = ends.max(axis=1)
    if not np.isfinite(top).all():   # a backend that gives a row no boundary mass at all (never a softmax)
        finite = top > -np.inf
        safe = np.where(finite, top, 0.0)
        total = np.add.accumulate(np.exp(ends - safe[:, None]), axis=1)[:, -1]
        with np.errstate(divide="ignore"):
            return np.where(finite, safe + np.log(total), -np.inf)
    return top + np.log(np.add.accumulate(np.exp(ends - top[:, None]), axis=1)[:, -1])


class Session:
    """One person's typing: a stack of checkpoints, so typing a character costs one step and backspace none.

    Pasted text (several characters in one `type`) is one `run`, capped at the Autocompleter's
    context_chars; backspacing into it recomputes from the checkpoint before it (one `run`). At most
    MAX_CHECKPOINTS states are kept; a backspace past the oldest recomputes from the start of the context.
    A session belongs to one thread; several sessions may share an Autocompleter across threads.

    `accept(suggestion)` appends the suggestion and a space; text typed next that starts with attaching
    punctuation (ATTACHING_PUNCTUATION) replaces that space at no model call. `unknown` counts the typed
    characters that became `<unk>`; while the word being typed holds one, `suggestions` come from the user's
    words alone (none without them).

    With `user_words`, every word typed to a boundary is learned (pasted text too; an accept types its word
    and a space); a backspace that deletes that boundary takes the word back (for the last LEARNED_UNDO
    words), so a typo corrected before going on is not kept. The accept's space swapped for punctuation
    is the same boundary: the word is learned once. `user_words` may be set to None and back at any time
    (an editor does so while the caret moves: what the session types or deletes then changes nothing); a
    take-back goes to the dictionary the word was learned into, only while the session still uses it.
    With the Autocompleter's `context_cache`, each learned word is also kept with the model's state where it
    began (a word begun inside a paste has none), in this session's memory only (context_cache.py).
    """

    def __init__(self, completer: Autocompleter, user_words: UserWords | None = None):
        self.completer = completer
        self.user_words = user_words   # (a path is opened: see the property)
        self._learned: list[tuple] = []              # (where the boundary that ended it is, undo, cache slot, dictionary)
        # with the completer's context_cache: learned words with the state where each began (memory only)
        self._cache = ContextCache() if completer.context_cache else None
        self._chars: list[str] = []                  # code points typed so far
        self._stack: list[tuple] = [completer._root]  # checkpoints, lengths increasing
        self._unknown_at: list[int] = []             # positions of typed characters that became <unk>, increasing
        self._auto_space: int | None = None          # length of the text right after an accept's space

    @property
    def user_words(self) -> UserWords | None:
        """The dictionary this session learns into (None: it learns nothing); may be set to a UserWords, a path or
        None at any time."""
        return self._user_words

    @user_words.setter
    def user_words(self, user_words: UserWords | str | os.PathLike | None) -> None:
        self._user_words = open_user_words(user_words)

    @property
    def unknown(self) -> int:
        """How many characters of the text map to `<unk>` (outside the model's vocabulary)."""
        return len(self._unknown_at)

    @property
    def text(self) -> str:
        """Everything typed so far (as typed, before normalization)."""
        return "".join(self._chars)

    def type(self, text: str) -> None:
        """Append `text`: one model step for one character, one run for more."""
        text = _check_text("text", text)
        if not text:
            return
        if self._auto_space == len(self._chars) and text[0] in ATTACHING_PUNCTUATION:
            # "word " + "," -> "word,": the checkpoint before the space is on the stack; the word stays learned
            self._delete(1, swap=True)
        self._auto_space = None
        completer = self.completer
        start = len(self._chars)
        state, log_probs = self._advance_from(self._stack[-1], text)
        self._chars.extend(text)
        self._mark_unknown(start)
        self._push(state, log_probs)
        if self.user_words is not None:
            self._learn_from(start)

    def _advance_from(self, checkpoint: tuple, text: str) -> tuple[list, np.ndarray]:
        """(state, log-probabilities) after the typed text up to `checkpoint` and then `text` (the typed text after
        the checkpoint included); from an earlier checkpoint when `text` starts with a joiner that composes with
        what is before it (NFC: the model reads the composed character, as in the training text)."""
        chars, completer = self._chars, self.completer
        after = "".join(chars[checkpoint[0]:]) + text
        # (a paste leaves no checkpoint inside it: the one found may again be followed by a composing joiner)
        while (begin := completer._recomposed_from(chars, checkpoint[0], after)) is not None:
            checkpoint = self._checkpoint_at_or_before(begin)
            after = "".join(chars[checkpoint[0]:]) + text
        return completer._advance(checkpoint[1], after)

    def _checkpoint_at_or_before(self, length: int) -> tuple:
        """The last checkpoint of at most `length` characters (the root at worst)."""
        stack = self._stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] <= length:
                return stack[i]
        return stack[0]

    def _mark_unknown(self, start: int) -> None:
        """Record again which typed code points from `start` on map to `<unk>` (from the base character of the group
        of a base and its joiners that `start` falls in)."""
        completer, chars, unknown_at = self.completer, self._chars, self._unknown_at
        begin = completer._group_start(chars, start + 1) if completer._joins(chars[start]) else start
        while unknown_at and unknown_at[-1] >= begin:
            unknown_at.pop()
        if begin + 1 == len(chars):   # one code point (typing, key by key): the common case
            if completer._is_unknown(chars[begin]):
                unknown_at.append(begin)
        else:
            unknown_at.extend(completer._unknown_positions(chars, begin))

    def _learn_from(self, start: int) -> None:
        """Learn every word that a boundary typed at or after `start` ends (unless already learned there)."""
        chars, is_boundary = self._chars, self.completer.is_boundary
        for end in range(max(start, 1), len(chars)):
            if not is_boundary(chars[end]) or is_boundary(chars[end - 1]):
                continue
            if self._learned and self._learned[-1][0] == end:   # the accept's space, swapped for punctuation
                continue
            begin = end - 1
            while begin > 0 and not is_boundary(chars[begin - 1]) and end - begin <= TYPED_WORD_CHARS:
                begin -= 1
            if end - begin > TYPED_WORD_CHARS:   # (a shorter one that is too long composed: learn() refuses it)
                continue
            word = self.completer.normalize("".join(chars[begin:end]))
            undo = self.user_words.learn(word)
            if undo is not None:
                state = None if self._cache is None else self._state_at(begin)   # none inside a paste
                use = None if state is None else self._cache.add(state, word, undo.arrival, self.user_words)
                self._learned.append((end, undo, use, self.user_words))
                if len(self._learned) > 2 * LEARNED_UNDO:
                    del self._learned[:LEARNED_UNDO]

    def accept(self, suggestion: Suggestion | str) -> None:
        """Append a suggestion's text and a space; punctuation typed next (",.;:!?" closing quotes and brackets)
        replaces that space. Two model calls at most (the word, then the space), so the swap is free."""
        text = suggestion.text if isinstance(suggestion, Suggestion) else _check_text("suggestion", suggestion)
        self.type(text)
        self.type(" ")
        self._auto_space = len(self._chars)

    def keep_space(self) -> None:
        """After `accept`: its space stays, whatever is typed next (an editor whose own text kept it)."""
        self._auto_space = None

    def _push(self, state: list, log_probs: np.ndarray) -> None:
        self._stack.append((len(self._chars), state, log_probs))
        if len(self._stack) > 2 * MAX_CHECKPOINTS:   # drop the older half (the root stays)
            del self._stack[1:MAX_CHECKPOINTS + 1]

    def backspace(self, n: int = 1) -> None:
        """Delete the last n characters; restores a stored state (a model call only inside pasted text)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise CompactLMError(f"backspace count must be a whole number >= 0, got {n!r}")
        self._delete(int(n))

    def _delete(self, n: int, swap: bool = False) -> None:
        """Delete the last n characters; `swap`: the accept's space, replaced by punctuation (same boundary: its
        learned word stays, and stays on record)."""
        target = max(len(self._chars) - n, 0)
        if target == len(self._chars):
            return
        self._auto_space = None
        learned = self._learned
        while not swap and learned and learned[-1][0] >= target:   # the boundary that ended a learned word goes
            _, undo, use, words = learned.pop()
            # taken back from the dictionary it went into, while the session still learns into that one (another
            # dictionary may hold an entry that looks the same: another session's)
            if words is self.user_words:
                words.unlearn(undo)
                if use is not None:
                    self._cache.remove(use)
        cut_group = target and self.completer._joins(self._chars[target])   # a joiner goes, its base stays
        del self._chars[target:]
        unknown_at = self._unknown_at
        while unknown_at and unknown_at[-1] >= target:
            unknown_at.pop()
        if cut_group:
            self._mark_unknown(target - 1)
        stack = self._stack
        while stack[-1][0] > target:
            stack.pop()
        if stack[-1][0] < target:   # inside pasted text: recompute from the checkpoint before it
            self._push(*self._advance_from(stack[-1], ""))

    def suggestions(self, k: int = 3, max_chars: int | None = None) -> list[Suggestion]:
        """The k most likely completions of the word being typed (or of the next word at a boundary)."""
        completer = self.completer
        k = _positive("k", k)
        max_chars = completer.max_chars if max_chars is None else _positive("max_chars", max_chars)
        raw = self._typed_word()
        typed = completer.normalize(raw)
        context = self._context(len(raw), typed, k + 1)
        if self.in_unknown_word():
            return completer._mix([], typed, k, unknown=True, user_words=self.user_words, context=context)
        _, state, log_probs = self._stack[-1]
        return completer._mix(completer._search(state, log_probs, k, max_chars, typed), typed, k,
                              user_words=self.user_words, context=context)

    def _context(self, typed_chars: int, typed: str, k: int) -> list[tuple[str, float]] | None:
        """The context cache's k words continuing `typed` (of `typed_chars` code points as typed), or None: not
        learning, nothing kept, or the word began inside a paste (context_cache.py)."""
        if self.user_words is None or self._cache is None or not self._cache.added or typed_chars > TYPED_WORD_CHARS:
            return None
        state = self._state_at(len(self._chars) - typed_chars)
        found = [] if state is None else self._cache.continuing(state, typed, k, self.user_words)
        # only the word as typed (no completion): the dictionary's words are better than none
        return found if any(word != typed for word, _ in found) else None

    def _state_at(self, length: int) -> np.ndarray | None:
        """The last layer's h after the first `length` characters, if a checkpoint holds it (not inside a paste)."""
        stack = self._stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] <= length:
                return stack[i][1][-1][0] if stack[i][0] == length else None
        return None

    def _typed_word(self) -> str:
        """The characters after the last boundary (only the last TYPED_WORD_CHARS + 1: no word is longer)."""
        if self.user_words is None and self.completer.lexicon is None:
            return ""
        chars, is_boundary = self._chars, self.completer.is_boundary
        begin = len(chars)
        while begin > 0 and not is_boundary(chars[begin - 1]) and len(chars) - begin <= TYPED_WORD_CHARS:
            begin -= 1
        return "".join(chars[begin:])

    def in_unknown_word(self) -> bool:
        """Whether the word being typed (the characters after the last boundary) holds an unknown character."""
        if not self._unknown_at:
            return False
        chars, is_boundary = self._chars, self.completer.is_boundary
        for i in range(len(chars) - 1, self._unknown_at[-1] - 1, -1):
            if is_boundary(chars[i]):
                return False
        return True

    def next_chars(self, k: int = 3) -> list[Suggestion]:
        """The k most likely next characters (never `<unk>`)."""
        return self.completer._next_chars(self._stack[-1][2], _positive("k", k))

    def state(self) -> tuple[list, np.ndarray]:
        """The model state after the typed text and the log-probabilities of the next character."""
        return self._stack[-1][1], self._stack[-1][2]
