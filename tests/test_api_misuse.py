"""The Python API's mistakes: each a one-line CompactLMError naming the argument, never a wrong result."""
import threading
import time

import numpy as np
import pytest

from compact_lm import open_model
from compact_lm.autocomplete import Autocompleter
from compact_lm.errors import CompactLMError
from compact_lm.user_words import UserWords
from conftest import random_model

TEXT = "the quick brown fox jumps over the lazy dog\n" * 8


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "model.npz"
    random_model(text=TEXT).save(path)
    return path


@pytest.mark.parametrize("threads", [0, 2.5, "2", True])
def test_threads_must_be_a_whole_number_of_at_least_one(model_path, threads):
    with pytest.raises(CompactLMError, match="threads must be a whole number >= 1"):
        open_model(model_path, threads=threads)


@pytest.mark.parametrize("path", [None, b"model.onnx", ""])
def test_a_model_must_be_a_file_path(path):
    with pytest.raises(CompactLMError, match="model must be a file path"):
        open_model(path)


def test_context_cache_must_be_true_or_false(model_path):
    with pytest.raises(CompactLMError, match="context_cache must be True or False"):
        Autocompleter(model_path, context_cache="no")


def test_a_session_given_a_path_for_its_words_learns_into_that_file(model_path, tmp_path):
    session = Autocompleter(model_path).session()
    session.user_words = tmp_path / "words.json"
    session.type("quick fox ")
    session.user_words.save()
    assert UserWords(tmp_path / "words.json").words() == ["fox", "quick"]


def test_threads_may_be_a_numpy_integer(model_path):
    assert open_model(model_path, threads=np.int64(2)).vocab is not None


def test_a_path_in_a_folder_that_cannot_be_searched_is_one_line(tmp_path, monkeypatch):
    from pathlib import Path
    from compact_lm.fileio import atomic_write

    def denied(self):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "is_symlink", denied)
    with pytest.raises(CompactLMError, match="cannot write .*: Permission denied"):
        atomic_write(tmp_path / "locked" / "x.json", lambda handle: handle.write(b"x"))


def test_user_words_in_a_missing_folder_are_refused_before_any_learning(tmp_path):
    with pytest.raises(CompactLMError, match="does not exist"):
        UserWords(tmp_path / "missing" / "words.json")


def test_learn_takes_a_string():
    with pytest.raises(CompactLMError, match="learn\\(\\) takes a word"):
        UserWords().learn(None)


def test_ids_outside_the_vocabulary_are_refused_not_wrapped(model_path):
    with pytest.raises(CompactLMError, match="ids to evaluate must be whole numbers from 0"):
        open_model(model_path).evaluate_ids(np.array([1, 2, -5]))


def test_a_slower_earlier_save_never_replaces_a_later_one(tmp_path, monkeypatch):
    from compact_lm import fileio
    words = UserWords(tmp_path / "words.json")
    words.learn("alpha")
    write, calls = fileio.atomic_write, []

    def slow_first(path, writer, mode=None):
        calls.append(path)
        if len(calls) == 1:   # the first save's write only
            time.sleep(0.3)
        write(path, writer, mode)
    monkeypatch.setattr(fileio, "atomic_write", slow_first)
    first = threading.Thread(target=words.save)
    first.start()
    time.sleep(0.05)
    words.learn("bravo")
    words.save()
    first.join()
    assert sorted(UserWords(tmp_path / "words.json").words()) == ["alpha", "bravo"]


def test_user_words_take_numpy_numbers_as_the_completer_does():
    words = UserWords(max_words=np.int64(5), half_life=np.float32(3.0))
    assert (words.max_words, words.half_life) == (5, 3.0)
