"""The context cache: each learned word with the model's state where it began, weighed by context and recency."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_lm.autocomplete import Autocompleter
from compact_lm.context_cache import ContextCache
from compact_lm.lexicon import prefix_range
from compact_lm.user_words import UserWords
from conftest import random_model

TEXT = "the cat sat on a mat. the dog ran to the cat!\n"


def completer(words=None, **options) -> Autocompleter:
    return Autocompleter(random_model("gru", (8,), embed=6, text=TEXT + "xyzqwkj", seed=3), user_words=words, **options)


def held(*words) -> UserWords:
    dictionary = UserWords()
    for word in words:
        dictionary.learn(word)
    return dictionary


def keep(cache: ContextCache, state: np.ndarray, word: str, dictionary: UserWords) -> tuple[int, int]:
    """Learn `word` and keep its use with `state`, as a session does."""
    return cache.add(state, word, dictionary.learn(word).arrival, dictionary)


def test_shares_follow_the_rule():
    rng = np.random.default_rng(0)
    cache, words = ContextCache(size=8, theta=10.0, half_life=3.0), ["tea", "ten", "tea", "cat", "tent"]
    states = [rng.standard_normal((1, 6)).astype(np.float32) for _ in words]
    dictionary = UserWords()
    for state, word in zip(states, words):
        keep(cache, state, word, dictionary)
    query = rng.standard_normal((1, 6)).astype(np.float32)
    unit = lambda v: v.ravel().astype(np.float64) / np.linalg.norm(v.astype(np.float64))
    weight = {}
    for age, (state, word) in enumerate(reversed(list(zip(states, words)))):
        weight[word] = weight.get(word, 0.0) + math.exp(10.0 * unit(state) @ unit(query) - age * math.log(2) / 3.0)
    continuing = {w: v for w, v in weight.items() if w.startswith("te")}
    total = sum(continuing.values())
    got = cache.continuing(query, "te", 5, dictionary)
    assert [w for w, _ in got] == sorted(continuing, key=lambda w: -continuing[w])
    np.testing.assert_allclose([s for _, s in got], [continuing[w] / total for w, _ in got], rtol=1e-5)


def test_the_oldest_use_goes_when_the_cache_is_full():
    cache, state, dictionary = ContextCache(size=2), np.ones((1, 4), np.float32), UserWords()
    first = keep(cache, state, "alpha", dictionary)
    keep(cache, state, "beta", dictionary)
    keep(cache, state, "gamma", dictionary)   # takes alpha's slot
    assert {w for w, _ in cache.continuing(state, "", 5, dictionary)} == {"beta", "gamma"}
    cache.remove(first)   # the slot holds gamma now: nothing is taken back
    assert {w for w, _ in cache.continuing(state, "", 5, dictionary)} == {"beta", "gamma"}


def test_a_word_taken_back_is_not_proposed():
    cache, state, dictionary = ContextCache(size=4), np.ones((1, 4), np.float32), UserWords()
    use = keep(cache, state, "alpha", dictionary)
    keep(cache, state, "beta", dictionary)
    cache.remove(use)
    assert [w for w, _ in cache.continuing(state, "", 5, dictionary)] == ["beta"]


def test_a_word_the_dictionary_forgot_is_never_proposed():
    cache, state, dictionary = ContextCache(), np.ones((1, 4), np.float32), UserWords()
    keep(cache, state, "alpha", dictionary)
    keep(cache, state, "beta", dictionary)
    assert {w for w, _ in cache.continuing(state, "", 5, dictionary)} == {"alpha", "beta"}
    dictionary.forget("alpha")
    assert cache.continuing(state, "", 5, dictionary) == [("beta", 1.0)]
    dictionary.clear()
    assert cache.continuing(state, "", 5, dictionary) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab\U0010ffff\ud7ff\ue000", min_size=1, max_size=4), unique=True),
       st.text(alphabet="ab\U0010ffff\ud7ff\ue000", max_size=3))
def test_the_prefix_range_is_every_word_that_starts_with_the_prefix(words, prefix):
    words = sorted(words)
    lo, hi = prefix_range(words, prefix)
    assert words[lo:hi] == [w for w in words if w.startswith(prefix)]


def test_a_session_keeps_the_state_where_each_word_began():
    ac = completer(UserWords(), context_cache=True)
    session = ac.session()
    for char in "the cat ":
        session.type(char)
    probe = ac.session()
    probe.type("the ")   # pasted: one run, the same state
    expected = probe.state()[0][-1][0]
    row = session._cache._vectors[1].astype(np.float64)
    want = expected.ravel().astype(np.float64) / np.linalg.norm(expected.astype(np.float64))
    np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-6)
    assert session._cache.added == 2


def test_a_word_begun_inside_a_paste_is_learned_but_not_kept_with_a_state():
    words = UserWords()
    session = completer(words, context_cache=True).session()
    session.type("the cat ")   # "the" begins where the paste does (a checkpoint); "cat" inside it
    assert "cat" in words and session._cache.added == 1 and session._cache._sorted == ["the"]


def test_backspace_over_the_boundary_takes_the_cached_use_back():
    words = UserWords()
    words.learn("xyzzy")   # known before: taking the use back leaves it in the dictionary
    session = completer(words, context_cache=True).session()
    for char in "xyzzy ":
        session.type(char)
    session.backspace(1)
    assert "xyzzy" in words and session._cache.continuing(session._state_at(0), "", 3, words) == []


NEAR, FAR = np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)


def test_a_forgotten_word_learned_again_starts_afresh():
    """Its uses before the forget no longer count, even with no completion in between: learned again in another
    context, it weighs as a new word."""
    cache, dictionary = ContextCache(), UserWords()
    for _ in range(5):
        keep(cache, NEAR, "zyx", dictionary)
    keep(cache, FAR, "zyb", dictionary)
    assert dict(cache.continuing(NEAR, "zy", 3, dictionary))["zyx"] > 0.99
    dictionary.forget("zyx")
    keep(cache, FAR, "zyx", dictionary)   # learned again before the next completion
    shares = dict(cache.continuing(NEAR, "zy", 3, dictionary))
    assert shares.keys() == {"zyx", "zyb"} and 0.49 < shares["zyx"] < 0.51


def test_a_word_a_take_back_puts_back_gets_its_uses_back():
    """A word pushed out of a full dictionary, then put back when the word that pushed it out is taken back (a
    backspace), counts its earlier uses again."""
    cache, dictionary = ContextCache(), UserWords(max_words=2)
    keep(cache, NEAR, "zyx", dictionary)
    keep(cache, FAR, "zyb", dictionary)
    dictionary.learn("zyb")                 # zyx is now the word of least weight
    undo = dictionary.learn("zyc")          # pushes zyx out
    use = cache.add(FAR, "zyc", undo.arrival, dictionary)
    assert "zyx" not in dict(cache.continuing(NEAR, "zy", 3, dictionary))
    dictionary.unlearn(undo)
    cache.remove(use)
    assert dict(cache.continuing(NEAR, "zy", 3, dictionary))["zyx"] > 0.99


def test_uses_count_again_when_the_dictionary_comes_back():
    """Another dictionary (Session.user_words replaced) hides this one's words; the first one back, they count."""
    cache, mine, other = ContextCache(), UserWords(), UserWords()
    keep(cache, NEAR, "zyx", mine)
    assert cache.continuing(NEAR, "zy", 3, other) == []
    assert [w for w, _ in cache.continuing(NEAR, "zy", 3, mine)] == ["zyx"]


def test_a_word_learned_into_another_dictionary_is_not_proposed_from_this_one():
    """Session.user_words replaced, a word learned into the other, then the first one back: not in it, not proposed."""
    cache, mine, other = ContextCache(), UserWords(), UserWords()
    keep(cache, NEAR, "zyb", mine)
    cache.continuing(NEAR, "zy", 3, mine)
    keep(cache, NEAR, "zyx", other)
    assert [w for w, _ in cache.continuing(NEAR, "zy", 3, mine)] == ["zyb"]


def test_a_take_back_does_not_bring_back_a_word_forgotten_since():
    """The word a learn evicted, learned again and forgotten before the learn is taken back, stays forgotten."""
    cache, dictionary = ContextCache(), UserWords(max_words=2)
    keep(cache, NEAR, "zyx", dictionary)
    keep(cache, FAR, "zyb", dictionary)
    dictionary.learn("zyb")
    undo = dictionary.learn("zyc")   # pushes zyx out
    dictionary.forget("zyb")
    dictionary.learn("zyx")
    dictionary.forget("zyx")
    dictionary.unlearn(undo)
    assert "zyx" not in dictionary and cache.continuing(NEAR, "zy", 3, dictionary) == []


def test_javascript_has_the_same_settings():
    import re
    from pathlib import Path
    from compact_lm import context_cache
    source = (Path(__file__).resolve().parents[1] / "web" / "compact_lm.js").read_text(encoding="utf-8")
    found = re.search(r"CONTEXT_THETA = ([\d.]+), CONTEXT_HALF_LIFE = ([\d.]+), CONTEXT_SIZE = (\d+), "
                      r"CONTEXT_POOLED = (\d+);", source)
    assert found, "the context cache's settings not found in web/compact_lm.js"
    assert (float(found[1]), float(found[2]), int(found[3]), int(found[4])) == (
        context_cache.THETA, context_cache.HALF_LIFE, context_cache.SIZE, context_cache.POOLED)


def test_states_are_pooled_unit_by_unit_modulo_pooled():
    from compact_lm import context_cache
    state = np.arange(1, 2 * context_cache.POOLED + 6, dtype=np.float32)[None, :]   # not a multiple of POOLED
    pooled = np.zeros(context_cache.POOLED)
    for unit, value in enumerate(state.ravel()):
        pooled[unit % context_cache.POOLED] += value
    np.testing.assert_allclose(context_cache._unit(state), pooled / np.linalg.norm(pooled), rtol=1e-6)


def test_states_are_pooled_in_float64():
    from compact_lm import context_cache
    state = np.zeros((1, 3 * context_cache.POOLED), dtype=np.float32)
    state[0, 0], state[0, context_cache.POOLED], state[0, 2 * context_cache.POOLED], state[0, 1] = 1e8, 1.0, -1e8, 1.0
    # 1e8 + 1 - 1e8: 1 in float64, 0 in float32
    np.testing.assert_allclose(context_cache._unit(state)[:2], [math.sqrt(0.5)] * 2, rtol=1e-6)


def test_many_words_under_one_prefix_match_a_brute_force_sum():
    from compact_lm import context_cache
    rng = np.random.default_rng(3)
    words = [f"a{i:02d}" for i in range(60)]   # more than 8 k continue "" and "a": the NumPy path
    cache, held, uses = ContextCache(size=100, half_life=50.0), UserWords(max_words=100), []
    for _ in range(150):
        word, state = words[rng.integers(60)], rng.standard_normal((1, 70)).astype(np.float32)
        keep(cache, state, word, held)
        uses = (uses + [(word, context_cache._unit(state))])[-100:]   # the ring keeps the last 100
    query = rng.standard_normal((1, 70)).astype(np.float32)
    weights = {}
    for age, (word, vector) in enumerate(reversed(uses)):
        cosine = float(vector.astype(np.float64) @ context_cache._unit(query).astype(np.float64))
        weights[word] = weights.get(word, 0.0) + math.exp(10.0 * cosine - age * math.log(2.0) / 50.0)
    for prefix in ("", "a", "a1"):
        chosen = {w: v for w, v in weights.items() if w.startswith(prefix)}
        expected = sorted(chosen, key=lambda w: (-chosen[w], w))[:4]
        found = cache.continuing(query, prefix, 4, held)
        assert [w for w, _ in found] == expected
        np.testing.assert_allclose([p for _, p in found], [chosen[w] / sum(chosen.values()) for w in expected], rtol=1e-5)


def test_a_state_of_at_most_pooled_units_is_only_scaled():
    from compact_lm import context_cache
    state = np.array([[3.0, 4.0]], dtype=np.float32)
    np.testing.assert_array_equal(context_cache._unit(state), np.array([0.6, 0.8], dtype=np.float32))


def test_eval_complete_refuses_the_cache_without_learning(tiny_model_path, tmp_path, capsys):
    from cli_helpers import run
    text = tmp_path / "t.txt"
    text.write_text("Alice was beginning to get very tired.\n")
    code, _, err = run(capsys, "eval-complete", tiny_model_path, "--text", text, "--context-cache")
    assert code != 0 and "--context-cache" in err and "--learn" in err and len(err.strip().splitlines()) == 1


def test_the_saved_dictionary_is_the_same_with_or_without_the_cache(tmp_path):
    documents = []
    for cache in (False, True):
        words = UserWords(tmp_path / f"w{cache}.json")
        session = completer(words, context_cache=cache).session()
        for char in TEXT * 2:
            session.type(char)
        words.save()
        documents.append(json.loads(words.path.read_text()))
    assert documents[0] == documents[1]


def test_off_by_default_and_without_learning():
    assert completer(UserWords()).session()._cache is None
    session = completer(None, context_cache=True).session()
    for char in "xyzzy x":
        session.type(char)
    assert session._cache.added == 0 and session._context(1, "x", 4) is None


def test_eval_complete_reports_the_cache(tiny_model_path, tmp_path, capsys):
    from cli_helpers import run
    text = tmp_path / "t.txt"
    text.write_text("Alice was beginning to get very tired of sitting by her sister on the bank. Alice was tired.\n")
    code, out, _ = run(capsys, "eval-complete", tiny_model_path, "--text", text, "--learn", "--context-cache", "--json")
    result = json.loads(out)
    assert code == 0
    assert result["learning"]["context_cache"] is True and 0.0 <= result["learning"]["keystroke_savings"] < 1.0


def test_the_state_kept_is_the_last_layers_h():
    ac = Autocompleter(random_model("lstm", (6, 5), embed=4, text=TEXT, seed=1), user_words=UserWords(), context_cache=True)
    session = ac.session()
    for char in "the ":
        session.type(char)
    began = ac._root[1][-1][0].ravel().astype(np.float64)   # "the" began right after the start text
    np.testing.assert_allclose(session._cache._vectors[0], began / np.linalg.norm(began), rtol=1e-6, atol=1e-7)


def test_a_cache_that_knows_only_the_word_as_typed_leaves_it_to_the_dictionary():
    words = held("thermal", "thermal", "thermal")
    session = completer(words, context_cache=True).session()
    for char in "the the":
        session.type(char)
    assert session._context(3, "the", 4) is None   # the cache holds "the" alone: no completion of "the"
    assert "rmal" in [s.text for s in session.suggestions(3)]


def test_a_session_given_another_dictionary_proposes_none_of_the_old_ones_words():
    session = completer(UserWords(), context_cache=True).session()
    for char in "xyzzy ":
        session.type(char)
    session.suggestions(3)   # the cache has looked at the first dictionary
    session.user_words = held("xylophone")
    session.type("x")
    assert "yzzy" not in [s.text for s in session.suggestions(3)]


def test_repl_refuses_the_cache_without_user_words(tiny_model_path, capsys):
    from cli_helpers import run
    code, _, err = run(capsys, "repl", tiny_model_path, "--context-cache")
    assert code != 0 and "--context-cache" in err and "--user-words" in err and len(err.strip().splitlines()) == 1


def test_what_counts_matches_a_brute_force_over_random_sessions():
    """Random adds, take-backs, removes, forgets, clears and dictionary swaps, with completions skipped at random:
    every answer is the brute-force rule (a use counts iff the dictionary now holds its word in the stay it was added
    in: arrival equal), within float32 rounding."""
    import random
    from compact_lm import context_cache
    rng = random.Random(5)
    vocab = ["zaa", "zab", "zb", "zba", "zc"]
    for _ in range(150):
        size = rng.randint(1, 6)
        cache, dictionaries = ContextCache(size=size, half_life=5.0), [UserWords(max_words=3), UserWords(max_words=3)]
        held, ring, taken = dictionaries[0], [], []   # ring: [word, arrival, unit vector, time, kept] per add
        for _ in range(30):
            roll = rng.random()
            if roll < 0.5:
                word, state = rng.choice(vocab), np.array([[rng.gauss(0, 1) for _ in range(3)]], np.float32)
                undo = held.learn(word)
                use = cache.add(state, word, undo.arrival, held)
                ring = (ring + [[word, undo.arrival, context_cache._unit(state), cache.added, True]])[-size:]
                taken.append((held, undo, use, ring[-1]))
            elif roll < 0.6 and taken:
                owner, undo, use, entry = taken.pop()
                owner.unlearn(undo)
                cache.remove(use)
                entry[4] = False
            elif roll < 0.75 and ring:
                chosen = rng.choice(ring)
                cache.remove(((chosen[3] - 1) % size, chosen[3]))   # (slot, added), as add returned it
                chosen[4] = False
            elif roll < 0.85:
                held.forget(rng.choice(vocab))
            elif roll < 0.88:
                held.clear()
            elif roll < 0.95:
                held = dictionaries[1] if held is dictionaries[0] else dictionaries[0]
            if rng.random() < 0.3:
                continue
            query, prefix = np.array([[rng.gauss(0, 1) for _ in range(3)]], np.float32), rng.choice(["", "z", "za", "zb"])
            weights = {}
            for word, arrival, vector, time, kept in ring:
                if kept and word.startswith(prefix) and held.arrival(word) == arrival:
                    cosine = float(vector.astype(np.float64) @ context_cache._unit(query).astype(np.float64))
                    weights[word] = weights.get(word, 0.0) + math.exp(10.0 * cosine - (cache.added - time) * math.log(2) / 5.0)
            got = dict(cache.continuing(query, prefix, 20, held))
            assert got.keys() == weights.keys()
            total = sum(weights.values())
            for word, share in got.items():
                assert share == pytest.approx(weights[word] / total, rel=1e-4)
