"""Vocabulary: round trips, <unk>, normalization, compact ids."""
import unicodedata

import numpy as np
from hypothesis import given, settings, strategies as st

from compact_lm.vocab import UNK_ID, UNK_TEXT, Vocab, normalize


def test_round_trip_of_in_vocabulary_text():
    vocab = Vocab.build("hello, world\n")
    text = "low, hell\nword"
    assert vocab.decode(vocab.encode(text)) == text


def test_unseen_characters_become_unk():
    vocab = Vocab.build("abc")
    ids = vocab.encode("abz")
    assert ids.tolist()[2] == UNK_ID and vocab.decode(ids) == "ab" + UNK_TEXT


def test_min_count_maps_rare_characters_to_unk():
    vocab = Vocab.build("aaab", min_count=2)
    assert vocab.chars == ("a",)
    assert vocab.encode("ab").tolist() == [1, UNK_ID]


def test_nfc_by_default_and_optional():
    decomposed = "e\u0301"                      # e + combining acute
    assert Vocab.build(decomposed).chars == ("\u00e9",)
    assert Vocab.build(decomposed, nfc=False).chars == ("e", "\u0301")


def test_lowercase_option():
    vocab = Vocab.build("Ab", lowercase=True)
    assert vocab.chars == ("a", "b") and vocab.encode("AB").tolist() == vocab.encode("ab").tolist()


@given(st.text(alphabet="ΣΟΔσςİA. \u0301", max_size=12))
def test_lowercasing_is_per_code_point_as_when_typing(text):
    """A capital sigma ending a word lowercases to σ, as typed key by key (str.lower() would give ς)."""
    assert normalize(text, nfc=False, lowercase=True) == "".join(char.lower() for char in text)


def test_ids_are_stored_compactly():
    assert Vocab.build("abc").encode("abc").dtype == np.uint8
    assert Vocab.build("".join(chr(0x4E00 + i) for i in range(300))).encode("x").dtype == np.uint16


def test_metadata_round_trip():
    vocab = Vocab.build("Hello <unk> world", lowercase=True)
    again = Vocab.from_json(vocab.to_json())
    assert again == vocab and again.tokens[0] == "<unk>"


@settings(max_examples=500, deadline=None)
@given(corpus=st.text(min_size=1), text=st.text())
def test_any_string_encodes_and_known_text_round_trips(corpus, text):
    vocab = Vocab.build(corpus)
    ids = vocab.encode(text)
    assert len(ids) == len(vocab.normalize(text))
    known = "".join(c for c in unicodedata.normalize("NFC", corpus))
    assert vocab.decode(vocab.encode(known, normalized=True)) == known


def test_chunked_encoding_equals_one_pass(monkeypatch):
    import compact_lm.vocab as vocab_module
    vocab = Vocab.build("the quick brown fox")
    text = "the lazy dog, the quick fox! " * 7
    whole = vocab.encode(text)
    monkeypatch.setattr(vocab_module, "ENCODE_CHUNK", 5)
    assert np.array_equal(vocab.encode(text), whole)
