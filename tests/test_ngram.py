"""The n-gram baseline: proper distributions, the Kneser-Ney recursion as written, the Backend protocol,
its size in the compact encoding, count cut-offs and the size-matched fit."""
import itertools
from collections import Counter

import numpy as np
import pytest

from compact_lm.autocomplete import Autocompleter
from compact_lm.errors import CompactLMError
from compact_lm.ngram import CONTEXT_BYTES, NgramBackend, discounts, fit_to_bytes
from compact_lm.vocab import Vocab


@pytest.fixture(scope="module")
def alice_backend(alice_text):
    text = alice_text[:20000]
    vocab = Vocab.build(text)
    return NgramBackend(vocab.encode(text), vocab, order=6)


def test_discounts_follow_chen_and_goodman():
    # counts of counts n1..n4 = 3, 2, 1, 1: Y = 3/7, D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3 = 3 - 4Y n4/n3
    d = discounts(np.array([1, 1, 1, 2, 2, 3, 4]))
    y = 3 / 7
    np.testing.assert_allclose(d, [0, 1 - 2 * y * 2 / 3, 2 - 3 * y * 1 / 2, 3 - 4 * y * 1 / 1])
    np.testing.assert_allclose(discounts(np.array([5, 5, 7])), [0, 0.5, 0.5, 0.5])   # no n1, n2: the fallback


@pytest.mark.parametrize("order", [1, 2, 3, 5, 7])
def test_every_distribution_sums_to_one(alice_text, order):
    text = alice_text[:20000]
    vocab = Vocab.build(text)
    backend = NgramBackend(vocab.encode(text), vocab, order=order)
    rng = np.random.default_rng(order)
    contexts = [vocab.encode(text[i:i + order - 1]) for i in rng.integers(0, 19000, 20)]
    contexts += [rng.integers(0, vocab.size, order - 1) for _ in range(20)]   # mostly never seen
    contexts += [np.array([], dtype=np.int64), np.array([3])[:order - 1]]
    for context in contexts:
        padded = np.full(order - 1, -1)
        if len(context):
            padded[order - 1 - len(context):] = context
        probs = backend.distribution(padded)
        assert probs.shape == (vocab.size,) and probs.min() > 0
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    log_probs, _ = backend.run(vocab.encode(text[:300])[None, :], backend.initial_state(1))
    np.testing.assert_allclose(np.exp(log_probs.astype(np.float64)).sum(-1), 1.0, atol=1e-5)


def reference_probability(ids, vocab_size, order, context, word):
    """Interpolated modified Kneser-Ney written out with Counters, straight from the module docstring."""
    grams = {m: Counter(tuple(ids[i:i + m]) for i in range(len(ids) - m + 1)) for m in range(1, order + 1)}
    counts = {order: grams[order]}
    for m in range(1, order):   # continuation counts: distinct characters seen before each m-gram
        counts[m] = Counter(gram[1:] for gram in grams[m + 1])
    p = 1.0 / vocab_size
    for m in range(1, min(len(context) + 1, order) + 1):
        history = tuple(context[len(context) - (m - 1):]) if m > 1 else ()
        followers = {gram[-1]: c for gram, c in counts[m].items() if gram[:-1] == history}
        if not followers:
            continue
        d = discounts(np.array(list(counts[m].values())))
        total = sum(followers.values())
        gamma = sum(d[min(c, 3)] for c in followers.values()) / total
        seen = followers.get(word, 0)
        p = max(seen - d[min(seen, 3)], 0.0) / total + gamma * p
    return p


def test_matches_the_recursion_written_out():
    text = "abracadabra cadabra abracad arba abra. " * 3 + "dab cab"
    vocab = Vocab.build(text)
    ids = [int(i) for i in vocab.encode(text)]
    order = 3
    backend = NgramBackend(np.array(ids), vocab, order=order)
    for length in (0, 1, 2):
        for context in itertools.product(range(vocab.size), repeat=length):
            padded = np.array([-1] * (order - 1 - length) + list(context))
            got = backend.distribution(padded)
            want = [reference_probability(ids, vocab.size, order, list(context), w) for w in range(vocab.size)]
            np.testing.assert_allclose(got, want, rtol=1e-12)


def test_run_equals_steps_and_streams_are_independent(alice_backend, alice_text):
    vocab = alice_backend.vocab
    a, b = vocab.encode(alice_text[500:530]), vocab.encode(alice_text[9000:9030])
    whole, state = alice_backend.run(np.stack([a, b]), alice_backend.initial_state(2))
    alone, _ = alice_backend.run(b[None, :], alice_backend.initial_state(1))
    np.testing.assert_array_equal(whole[1], alone[0])
    step_state = alice_backend.initial_state(2)
    for t in range(len(a)):
        log_probs, step_state = alice_backend.step(np.array([a[t], b[t]]), step_state)
        np.testing.assert_array_equal(log_probs, whole[:, t])
    np.testing.assert_array_equal(step_state[0][0], state[0][0])
    np.testing.assert_array_equal(state[0][0][0], a[-5:])   # the state is the context: the last order-1 ids


def test_predicts_what_the_text_repeats():
    text = "the cat sat on the mat. " * 20
    vocab = Vocab.build(text)
    completer = Autocompleter(NgramBackend(vocab.encode(text), vocab, order=5))
    best = completer.complete("the m", k=1)[0]
    assert best.text == "at" and best.prob > 0.5   # the rest of the word, whatever boundary ends it
    assert completer.complete("the cat ", k=1)[0].text == "sat"


@pytest.mark.parametrize("ids, order, message", [
    (np.arange(5) % 3, 0, "order must be a whole number"),
    (np.array([1, 2]), 3, "needs at least 3 ids"),
    (np.array([1, 2, 9]), 2, r"ids in \[0, 4\)"),
])
def test_bad_settings_are_clear_errors(ids, order, message):
    with pytest.raises(CompactLMError, match=message):
        NgramBackend(ids, Vocab.build("abc"), order=order)


def test_an_order_too_high_for_the_vocabulary_is_refused():
    vocab = Vocab(tuple(chr(0x4e00 + i) for i in range(5000)))
    with pytest.raises(CompactLMError, match="too high"):
        NgramBackend(np.arange(100) % 5000, vocab, order=6)


@pytest.mark.parametrize("cutoff, contexts, ngrams", [
    # "abracadabra", order 3. Trigrams abr x2, bra x2, rac, aca, cad, ada, dab: 7 n-grams over the 7
    # contexts ab br ra ac ca ad da. Order 2 (suffixes of those): br ra ac ca ad da ab, contexts b r a c d.
    # Order 1: a b c d r after the one empty context. 13 contexts, 19 n-grams.
    (1, 7 + 5 + 1, 7 + 7 + 5),
    # cut-off 2: abr bra (contexts ab br); bigrams seen twice: ab br ra (contexts a b r); unigrams all kept
    (2, 2 + 3 + 1, 2 + 3 + 5),
])
def test_bytes_are_counted_from_the_tables(cutoff, contexts, ngrams):
    vocab = Vocab.build("abracadabra")
    backend = NgramBackend(vocab.encode("abracadabra"), vocab, order=3, cutoff=cutoff)
    assert (backend.contexts, backend.ngrams) == (contexts, ngrams)
    assert backend.bytes == contexts * CONTEXT_BYTES + ngrams * 3 == {1: 187, 2: 90}[cutoff]   # 1-byte word + float16
    assert backend.size_info() == {"order": 3, "cutoff": cutoff, "pruned_to": None, "contexts": contexts, "ngrams": ngrams,
                                   "bytes": backend.bytes, "encoding": "10 B per context + 3 B per n-gram"}


@pytest.mark.parametrize("order, cutoff, max_bytes", [(1, 1, None), (3, 1, None), (5, 1, None), (5, 3, None),
                                                      (7, 2, None), (7, 8, None), (5, 1, 20000), (7, 1, 3000)])
def test_cut_off_and_pruned_models_are_proper_and_the_vectorized_scores_agree(alice_text, order, cutoff, max_bytes):
    text = alice_text[:20000]
    vocab = Vocab.build(text)
    ids = vocab.encode(text)
    backend = NgramBackend(ids, vocab, order=order, cutoff=cutoff, max_bytes=max_bytes)
    if cutoff > 1:
        assert backend.bytes < NgramBackend(ids, vocab, order=order).bytes
    if max_bytes:   # pruned as little as the budget allows: one n-gram more would not fit
        assert max_bytes - 13 < backend.bytes <= max_bytes and backend.max_bytes == max_bytes
        assert backend.name.endswith(f"pruned to {max_bytes:,} bytes")
    typed = vocab.encode(alice_text[30000:30400])
    context, want = np.full(max(order - 1, 0), -1), []
    for t in range(1, len(typed)):
        context = np.append(context, typed[t - 1])[1:] if order > 1 else context
        probs = backend.distribution(context)
        assert probs.min() > 0 and probs.sum() == pytest.approx(1.0, abs=1e-12)
        want.append(np.log2(probs[typed[t]]))
    np.testing.assert_allclose(backend.log2_probs(typed), want, rtol=1e-12)


def test_fit_to_bytes_keeps_to_the_budget_and_returns_the_best_candidate(alice_text):
    text = alice_text[:20000]
    vocab = Vocab.build(text)
    ids = vocab.encode(text)
    full = NgramBackend(ids, vocab)
    budget = full.bytes // 10
    chosen = fit_to_bytes(ids, vocab, budget)
    assert chosen.bytes <= budget and chosen.fit["budget_bytes"] == budget
    scored = [c for c in chosen.fit["candidates"] if c["heldout_bpc"] is not None]
    # every order tried at its smallest cut-off that fits, and pruned to the budget where the whole does not fit
    assert sorted({c["order"] for c in scored if c["pruned_to"] is None}) == list(range(1, 8))
    assert {c["order"] for c in scored if c["pruned_to"] == budget} == {o for o in range(1, 8)
                                                                       if NgramBackend(ids, vocab, o).bytes > budget}
    assert all(c["bytes"] <= budget for c in scored)
    assert all(c["bytes"] > budget for c in chosen.fit["candidates"] if c["heldout_bpc"] is None)
    best = min(scored, key=lambda c: (c["heldout_bpc"], c["bytes"]))
    assert chosen.size_info() == {k: v for k, v in best.items() if k != "heldout_bpc"}
    assert chosen.fit["heldout_bpc"] == best["heldout_bpc"]
    # the chosen model is estimated from all the ids (its size is the one checked); the score from the first 90 %
    settings = {"cutoff": best["cutoff"], "max_bytes": best["pruned_to"]}
    assert chosen.bytes == NgramBackend(ids, vocab, best["order"], **settings).bytes and chosen.train_chars == ids.size
    held = NgramBackend(ids[:18000], vocab, best["order"], **settings)
    assert -held.log2_probs(ids[18000:]).mean() == pytest.approx(best["heldout_bpc"], rel=1e-12)
    assert chosen.name.startswith(f"{chosen.order}-gram")
    assert fit_to_bytes(ids, vocab, 10 * full.bytes).bytes == full.bytes   # room for everything: the full 7-gram
    with pytest.raises(CompactLMError, match="no n-gram fits in 100 bytes"):
        fit_to_bytes(ids, vocab, 100)


def test_a_vocabulary_of_hundreds_of_characters_gets_the_highest_order_whose_keys_fit():
    # 600 characters: 600^7 > 2^62, so the default 7-gram cannot pack its keys; 6 characters fit
    rng = np.random.default_rng(0)
    text = "".join(chr(0x4E00 + int(i)) for i in rng.integers(0, 600, 30000)) + "".join(chr(0x4E00 + i) for i in range(600))
    vocab = Vocab.build(text)
    ids = vocab.encode(text)
    assert vocab.size > 600 and NgramBackend(ids, vocab).order == 6
    chosen = fit_to_bytes(ids, vocab, 50_000)
    assert chosen.bytes <= 50_000 and max(c["order"] for c in chosen.fit["candidates"]) == 6
    with pytest.raises(CompactLMError, match="n-gram order 7 is too high for 601 characters .at most 6"):
        NgramBackend(ids, vocab, order=7)
