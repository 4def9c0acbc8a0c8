"""Corpus reading, contiguous splits and the carried-stream batcher."""
import gzip

import numpy as np
import pytest

from compact_lm.data import StreamBatcher, read_corpus, read_text, split_ids
from compact_lm.errors import CompactLMError


def test_gzip_corpus_reads_like_plain(tmp_path):
    (tmp_path / "a.txt").write_text("héllo\n", encoding="utf-8")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress("héllo\n".encode()))
    assert read_text(tmp_path / "a.txt.gz") == read_text(tmp_path / "a.txt") == "héllo\n"


def test_invalid_utf8_names_file_and_byte(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\nfine\xff more")
    with pytest.raises(CompactLMError, match=r"bad.txt is not valid UTF-8 at byte 7 \(line 2\).*--encoding-errors"):
        read_text(path)
    assert read_text(path, encoding_errors="replace") == "ok\nfine\ufffd more"


def test_a_text_larger_than_the_limit_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    import compact_lm.data as data
    monkeypatch.setattr(data, "MAX_TEXT_BYTES", 1000)
    (tmp_path / "fits.txt").write_text("a" * 1000)
    assert read_text(tmp_path / "fits.txt") == "a" * 1000
    (tmp_path / "big.txt").write_text("a" * 1001)
    with pytest.raises(CompactLMError, match=r"corpus file .*big.txt is larger than 0 GiB"):
        read_text(tmp_path / "big.txt")
    (tmp_path / "bomb.txt.gz").write_bytes(gzip.compress(b"a" * 10**7))   # 10 KB on disk
    with pytest.raises(CompactLMError, match=r"bomb.txt.gz is larger than 0 GiB uncompressed"):
        read_text(tmp_path / "bomb.txt.gz")


def test_several_files_join_with_newline(tmp_path):
    (tmp_path / "a.txt").write_text("ab")
    (tmp_path / "b.txt").write_text("cd")
    assert read_corpus([tmp_path / "a.txt", tmp_path / "b.txt"]) == "ab\ncd"


def test_split_is_contiguous_and_complete():
    ids = np.arange(1000)
    train, val, test = split_ids(ids, (0.9, 0.05, 0.05))
    assert (len(train), len(val), len(test)) == (900, 50, 50)
    assert np.array_equal(np.concatenate([train, val, test]), ids)


def test_windows_carry_on_from_each_other():
    ids = np.arange(10_000) % 251
    batcher = StreamBatcher(ids.astype(np.uint8), batch=4, seq_len=8)
    batcher.start_epoch(np.random.default_rng(0))
    first_inputs, first_targets = batcher.next_window()
    second_inputs, _ = batcher.next_window()
    assert first_inputs.shape == (8, 4)
    assert np.array_equal(first_targets[:-1], first_inputs[1:])         # targets are inputs shifted by one
    assert np.array_equal(second_inputs[0], first_targets[-1])           # window 2 continues window 1


def test_each_epoch_draws_a_new_offset():
    batcher = StreamBatcher(np.zeros(10_000, np.uint8), batch=4, seq_len=64)
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(10):
        batcher.start_epoch(rng)
        offsets.add(batcher.offset)
    assert len(offsets) > 1 and max(offsets) < 64


def test_too_short_for_one_window_is_refused():
    with pytest.raises(CompactLMError, match="fewer than one window"):
        StreamBatcher(np.zeros(100, np.uint8), batch=64, seq_len=128)
