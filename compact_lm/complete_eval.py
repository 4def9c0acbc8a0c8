"""`compact-lm eval-complete`: simulate a person typing a text with word completion on, model vs n-gram.

After every keystroke the top-k completions of the current word are shown (distinct words, as
Session.suggestions gives them). When the rest of the word is among them, the person accepts it with
one keystroke (ACCEPT_KEYSTROKES, like pressing Tab), which types the rest of the word and a space:
- the text goes on with a space: that space was typed by the accept too;
- it goes on with attaching punctuation (ATTACHING_PUNCTUATION: ,.;:!? closing quotes and brackets):
  the person types it (its usual keystroke) and it replaces the automatic space for free;
- it goes on with anything else (a newline, a dash, ...): the person deletes the automatic space
  (DELETE_KEYSTROKES more), then types on.
The person accepts at the first place where accepting saves at least one keystroke. So
    keystroke savings = 1 - keystrokes / characters,
where every other character costs one keystroke. A word here is a maximal run of word characters
followed by a boundary (a word cut off by the end of the text cannot be completed and is typed).

Word completion accuracy after n typed characters (n = 1, 2, 3) counts the words longer than n:
top-1 when the right completion is the first suggestion, top-k when it is among the k shown.
Latency is the wall time of one keystroke: one model step plus the k completions.

With learning on (an Autocompleter with user_words), the session learns each word as its boundary is
typed, so the dictionary holds only what was typed before: no peeking ahead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .autocomplete import ATTACHING_PUNCTUATION, Autocompleter
from .errors import CompactLMError, SettingError
from .lexicon import word_spans  # noqa: F401 (re-exported: callers import it from here)

ACCEPT_KEYSTROKES = 1
DELETE_KEYSTROKES = 1   # removing the automatic space before a character that is neither a space nor attaching
ACCURACY_AFTER = (1, 2, 3)
# keystrokes per turn when completers are timed side by side (the model with and without learning): turns short
# enough that both see the same machine load, long enough that each runs with its own data in the CPU's caches
SIDE_BY_SIDE_BLOCK = 500


@dataclass(frozen=True)
class TypingReport:
    """What one simulated typing of a text measured."""

    chars: int                         # characters in the text (keystrokes without completion)
    words: int                         # words that completion could finish
    keystrokes: int                    # keystrokes with completion
    k: int
    top1_accuracy: dict                # typed characters ("1", "2", "3") -> fraction, None if no word is that long
    topk_accuracy: dict
    latency_ms: dict                   # p50, p90, p99, mean of one keystroke (step + suggestions)
    accepts: list = field(default_factory=list)   # (position, word end) of every accepted suggestion

    @property
    def keystroke_savings(self) -> float:
        """Fraction of keystrokes saved: 1 - keystrokes / chars."""
        return 1.0 - self.keystrokes / self.chars if self.chars else 0.0

    def to_json(self) -> dict:
        """The keys `eval-complete --json` prints for one model."""
        return {"keystroke_savings": self.keystroke_savings, "top1_accuracy": self.top1_accuracy,
                "topk_accuracy": self.topk_accuracy, "latency_ms": self.latency_ms, "chars": self.chars,
                "words": self.words, "keystrokes": self.keystrokes, "k": self.k}


def simulate_typing(completer: Autocompleter, text: str, k: int = 3) -> TypingReport:
    """Type `text` (normalized like the model's input) key by key with top-k word completion."""
    return simulate_typing_side_by_side([completer], text, k)[0]


def simulate_typing_side_by_side(completers: list[Autocompleter], text: str, k: int = 3,
                                 block: int = SIDE_BY_SIDE_BLOCK) -> list[TypingReport]:
    """simulate_typing for each completer, in turns of `block` keystrokes (each its own session; the one that
    went first goes last in the next turn, so each types 2 x block keys in a row but at the start and the end), so
    that their latencies are measured under the same machine load.
    In blocks rather than key by key: a completer typing alone runs with its own data in the CPU's caches, as it
    would in use (key by key, each would pay for the other's data: learning's extra arrays slowed the model
    without learning and shrank the ratio between them)."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise CompactLMError(f"block must be a whole number >= 1, got {block!r}")
    typists = [_Typist(completer, text, k) for completer in completers]
    # (each its own length: normalization may lengthen the text, as lowercasing "İ" does)
    positions = max((typist.positions for typist in typists), default=0)
    for turn, begin in enumerate(range(0, positions, block)):
        for typist in (typists if turn % 2 == 0 else typists[::-1]):
            typist.type(begin, min(begin + block, typist.positions))
    return [typist.report() for typist in typists]


class _Typist:
    """One session typing a text key by key: what it was shown after each key and how long each key took."""

    def __init__(self, completer: Autocompleter, text: str, k: int):
        self.text = text = completer.normalize(text)
        self.k = k
        self.spans = spans = word_spans(text, completer.is_boundary)
        self.word_at = np.full(len(text) + 1, -1)        # position -> word being typed there (completions asked)
        for index, (start, end) in enumerate(spans):
            self.word_at[start:end] = index
        self.ranks: list[list[int | None]] = [[] for _ in spans]   # per word: rank of the right completion after n chars
        self.latencies: list[float] = []
        self.session = completer.session()
        self.positions = len(text) + 1

    def type(self, begin: int, end: int) -> None:
        """Type the keys of positions [begin, end) (position p types text[p - 1], then asks for completions)."""
        text, word_at, spans, ranks, k = self.text, self.word_at, self.spans, self.ranks, self.k
        session, latencies, clock = self.session, self.latencies, time.perf_counter
        for position in range(begin, end):
            index = word_at[position]
            began = clock()
            if position:
                session.type(text[position - 1])
            if index < 0:
                continue
            shown = session.suggestions(k)
            latencies.append(clock() - began)
            start, end_of_word = spans[index]
            wanted = text[position:end_of_word]
            texts = [s.text for s in shown]
            ranks[index].append(texts.index(wanted) if wanted in texts else None)

    def report(self) -> TypingReport:
        """The keystrokes with completion (the cost model of this module's docstring), accuracy and latency."""
        text, spans, ranks = self.text, self.spans, self.ranks
        keystrokes = len(text)
        accepts = []
        for (start, end), word_ranks in zip(spans, ranks):
            after = text[end]   # the boundary that follows the word
            for typed, rank in enumerate(word_ranks):
                rest = end - (start + typed)   # characters the accept types, the automatic space aside
                if after == " ":
                    saved = rest + 1 - ACCEPT_KEYSTROKES
                elif after in ATTACHING_PUNCTUATION:
                    saved = rest - ACCEPT_KEYSTROKES
                else:
                    saved = rest - ACCEPT_KEYSTROKES - DELETE_KEYSTROKES
                if rank is not None and saved > 0:
                    keystrokes -= saved
                    accepts.append((start + typed, end))
                    break
        top1, topk = {}, {}
        for typed in ACCURACY_AFTER:
            counted = [r[typed] for r in ranks if len(r) > typed]
            top1[str(typed)] = sum(r == 0 for r in counted) / len(counted) if counted else None
            topk[str(typed)] = sum(r is not None for r in counted) / len(counted) if counted else None
        latency = {}
        if self.latencies:
            ms = np.array(self.latencies) * 1e3
            latency = {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                       "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}
        return TypingReport(chars=len(text), words=len(spans), keystrokes=keystrokes, k=self.k,
                            top1_accuracy=top1, topk_accuracy=topk, latency_ms=latency, accepts=accepts)


def training_ids(train_config: dict | None, vocab, corpus: list[str] | None) -> np.ndarray:
    """The ids of the model's training split (from `corpus` files if given, else the paths the model was trained on)."""
    from .config import TrainConfig
    from .data import SAVE_AS_UTF8, check_recorded_corpus
    from .trainer import prepare_corpus
    if train_config is None and not corpus:
        raise SettingError("corpus", "the model's metadata has no train_config (its training text is unknown): give {corpus} FILE")
    settings = dict(train_config or {})
    if corpus:
        settings["corpus"] = [str(c) for c in corpus]
    else:
        check_recorded_corpus(settings)
    settings.update(init=None, teacher=None, distill=0.0)   # irrelevant to the text and checked against files
    try:
        config = TrainConfig.from_json(settings)
    except TypeError as error:
        raise CompactLMError(f"the model's train_config is invalid: {error}") from None
    # (--encoding-errors is about --text: a corpus that is not UTF-8 must be saved as UTF-8, or read as trained)
    return prepare_corpus(config, vocab, utf8_hint=SAVE_AS_UTF8).train


def eval_complete(model_path: str, text: str, *, k: int = 3, corpus: list[str] | None = None,
                  order: int | None = None, beam: int = 4, max_chars: int = 16, learn: bool = False,
                  user_words: str | None = None, lexicon: bool = True, context_cache: bool = False,
                  text_source: str = "the text", baseline: bool = True, log=None) -> dict:
    """Keystroke savings, accuracy and latency of the model and of two n-gram baselines on `text`.

    "baseline": the full `order`-gram (default: ngram.check_order); "matched_baseline": the best n-gram whose tables take
    at most the model file's bytes (ngram.fit_to_bytes, chosen on a held-out slice of the training split).
    Both carry their sizes (contexts, ngrams, bytes in ngram.py's compact encoding). With `learn` (or a
    `user_words` file to start from, read and never written) also "learning": the model with a user
    dictionary that learns as the text is typed, in the same run, and its p50 latency over the model's (with
    `context_cache`, the session also weighs the words it learned by their contexts: context_cache.py).
    The model searches its lexicon first (`lexicon`; "lexicon" gives its words and its bytes in the file); the
    n-grams have none: their tables spell every word they have seen. `text_source` names the text in errors.
    `baseline=False`: the model alone (no training text needed). `log(message)` hears what is being done.
    """
    import os
    from .lexicon import lexicon_size
    from .ngram import NgramBackend, check_order, fit_to_bytes
    from .opener import open_model
    from .user_words import UserWords
    if context_cache and not (learn or user_words is not None):
        raise CompactLMError("--context-cache weighs the words learning finds: give --learn (or --user-words FILE)")
    model = open_model(model_path)
    backend, train_config = model.backend(), model.info.get("train_config")
    completer = Autocompleter(backend, beam=beam, max_chars=max_chars, lexicon=lexicon)
    # before any typing: without a word there is nothing to time or score (every figure would be NaN)
    if not word_spans(completer.normalize(text), completer.is_boundary):
        raise CompactLMError(f"{text_source} has no word to complete (it needs word and boundary characters)")
    order = check_order(order, completer.vocab.size)
    start_words = UserWords(user_words) if user_words is not None else None   # a bad file fails before any work
    log = log or (lambda message: None)
    # the training split before any typing: a text not found here fails now, not after the model's typing
    train = training_ids(train_config, completer.vocab, corpus) if baseline else None
    learning = None
    log(f"typing {len(text):,} characters with the model" + (" and with learning, side by side" if learn or user_words else ""))
    if not (learn or user_words is not None):
        report = simulate_typing(completer, text, k)
    else:
        words = start_words if start_words is not None else UserWords()
        words.path = None   # never written back
        learned_from = len(words)
        learner = Autocompleter(backend, beam=beam, max_chars=max_chars, user_words=words, lexicon=lexicon,
                                context_cache=context_cache)
        # side by side: the p50 ratio compares the two under the same machine load
        report, on = simulate_typing_side_by_side([completer, learner], text, k)
        learning = {**on.to_json(), "words_at_start": learned_from, "words_at_end": len(words), "context_cache": context_cache,
                    "p50_ratio": on.latency_ms["p50"] / report.latency_ms["p50"] if on.latency_ms and report.latency_ms else None}
    model_bytes = os.path.getsize(model_path)
    baselines = {}
    for key in ("baseline", "matched_baseline") if baseline else ():
        log(f"the {'full' if key == 'baseline' else 'size-matched'} n-gram baseline from the {len(train):,}-character "
            "training split" + (": counting, then typing" if key == "baseline" else f": fitting to {model_bytes:,} bytes, then typing"))
        ngram = NgramBackend(train, completer.vocab, order) if key == "baseline" else fit_to_bytes(train, completer.vocab, model_bytes)
        typing = simulate_typing(Autocompleter(ngram, beam=beam, max_chars=max_chars), text, k)
        baselines[key] = {"name": ngram.name, **ngram.size_info(), **typing.to_json()}
        if ngram.fit is not None:
            baselines[key]["fit"] = ngram.fit
    result = {"model": str(model_path), "model_bytes": model_bytes, **report.to_json(), **baselines}
    result["lexicon"] = None if completer.lexicon is None else lexicon_size(model.info)
    if learning is not None:
        result["learning"] = learning
    return result


def _percent(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.1%}"


def format_report(result: dict) -> str:
    """The human-readable table of `eval_complete`'s result."""
    k, after = result["k"], [str(n) for n in ACCURACY_AFTER]
    rows = [("model", result)]
    if "learning" in result:
        name = "model + learning the user's words" + (" + context" if result["learning"].get("context_cache") else "")
        rows.append((name, {**result["learning"], "model_bytes": result["model_bytes"]}))
    if "baseline" in result:
        rows.append((f"full: {result['baseline']['name']}", result["baseline"]))
    if "matched_baseline" in result:
        rows.append((f"size-matched: {result['matched_baseline']['name']}", result["matched_baseline"]))
    width = max(34, *(len(name) for name, _ in rows))
    header = " ".join(f"{'top1@' + n:>7} {f'top{k}@' + n:>7}" for n in after)
    lines = [f"{result['chars']:,} characters, {result['words']:,} completable words, top-{k} suggestions "
             f"(accepting one costs {ACCEPT_KEYSTROKES} keystroke; @n: after n typed characters)",
             f"{'':<{width}} {'bytes':>10} {'savings':>8} {header} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}"]
    for name, row in rows:
        size = row.get("model_bytes", row.get("bytes"))
        size = f"{size:>10,}" if size is not None else f"{'-':>10}"
        accuracy = " ".join(f"{_percent(row['top1_accuracy'][n])} {_percent(row['topk_accuracy'][n])}" for n in after)
        latency = " ".join(f"{row['latency_ms'].get(p, float('nan')):>7.3f}" for p in ("p50", "p90", "p99"))
        lines.append(f"{name:<{width}} {size} {row['keystroke_savings']:>8.1%} {accuracy} {latency}")
    lines.append("bytes: the model file" + ("; an n-gram's tables in the compact encoding of compact_lm/ngram.py"
                                            if "baseline" in result else ""))
    if "learning" in result:
        learning = result["learning"]
        ratio = "-" if learning["p50_ratio"] is None else f"{learning['p50_ratio']:.2f}x"
        lines.append(f"  learning: {learning['keystroke_savings'] - result['keystroke_savings']:+.1%} savings, "
                     f"p50 {ratio}; the dictionary held {learning['words_at_start']:,} words "
                     f"at the start and {learning['words_at_end']:,} at the end (learned only from the text typed before)")
    for name, row in rows[1:]:
        if "contexts" in row:
            lines.append(f"  {name}: {row['contexts']:,} contexts + {row['ngrams']:,} n-grams ({row['encoding']})"
                         + (f", {row['bytes'] / result['model_bytes']:.1f}x the model file" if result.get("model_bytes") else ""))
    lexicon = result.get("lexicon")
    if lexicon:
        lines.append(f"  model: searches its lexicon first, {lexicon['words']:,} words of its training text"
                     + (f" ({lexicon['bytes']:,} bytes of the file)" if lexicon["bytes"] else ""))
    fit = result.get("matched_baseline", {}).get("fit")
    if fit:
        scored = sum(c["heldout_bpc"] is not None for c in fit["candidates"])
        top = max(c["order"] for c in fit["candidates"])
        lines.append(f"  size-matched: the lowest held-out bpc ({fit['heldout_bpc']:.4f} on the last "
                     f"{fit['heldout_chars']:,} training characters) of {scored} candidates within "
                     f"{fit['budget_bytes']:,} bytes (orders 1-{top}, each cut off by count or pruned)")
    return "\n".join(lines)
