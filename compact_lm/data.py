"""Corpora: read UTF-8 text files (.gz too), split contiguously, batch as B carried streams."""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import CompactLMError, SettingError
from .fileio import check_file

DEFAULT_CORPUS = "alice.txt"


def check_recorded_corpus(train_config: dict | None) -> None:
    """A SettingError naming the first of a model's recorded training texts (its train_config's) that is not found
    here: `train` records them as given, relative to the folder it ran in, so another folder needs them given again."""
    missing = [path for path in (train_config or {}).get("corpus", []) if not Path(path).exists()]
    if missing:
        raise SettingError("corpus", "the model was trained on {path}, which is not found here (paths are recorded as "
                           "given to train, from the folder it ran in): give {corpus} FILE", path=missing[0])


def default_corpus_path() -> Path:
    """Path of the bundled default corpus (Alice's Adventures in Wonderland, public domain)."""
    return Path(str(resources.files("compact_lm") / "data" / DEFAULT_CORPUS))


MAX_TEXT_BYTES = 1 << 30   # per text file, decompressed: a bigger one would not fit in memory as ids (8 bytes each)
REPLACE_HINT = "pass --encoding-errors replace to substitute U+FFFD"
SAVE_AS_UTF8 = "save it as UTF-8"          # for commands without --encoding-errors


def read_text(path: str | os.PathLike, *, encoding_errors: str = "strict", what: str = "corpus file",
              utf8_hint: str = REPLACE_HINT) -> str:
    """Read one UTF-8 text file (gzip if it ends in .gz); errors name the file and the byte offset.

    `utf8_hint` ends the invalid-UTF-8 message: commands without --encoding-errors give their own."""
    path = Path(path)
    check_file(path, what)
    try:   # at most MAX_TEXT_BYTES + 1: a device (/dev/zero), an endless pipe or a gzip bomb ends here too
        with (gzip.open(path) if path.suffix == ".gz" else path.open("rb")) as file:
            raw = file.read(MAX_TEXT_BYTES + 1)
    except PermissionError:
        raise CompactLMError(f"cannot read {what} {path}: permission denied") from None
    except (OSError, EOFError, zlib.error) as error:
        raise CompactLMError(f"cannot read {what} {path}: {error}") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise CompactLMError(f"{what} {path} is larger than {MAX_TEXT_BYTES >> 30} GiB{' uncompressed' if path.suffix == '.gz' else ''}"
                             " (the most compact-lm reads: split it, or train on a part)")
    try:
        return raw.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise CompactLMError(
            f"{what} {path} is not valid UTF-8 at byte {error.start} (line {line}); {utf8_hint}") from None


def read_corpus(paths: list[str | os.PathLike] | None, *, encoding_errors: str = "strict",
                utf8_hint: str = REPLACE_HINT) -> str:
    """Read and join corpus files with a newline between them; no paths means the bundled corpus."""
    paths = list(paths) if paths else [default_corpus_path()]
    texts = [read_text(p, encoding_errors=encoding_errors, utf8_hint=utf8_hint) for p in paths]
    for path, text in zip(paths, texts):
        if not text:
            raise CompactLMError(f"corpus file {path} is empty")
    return "\n".join(texts)


def split_ids(ids: np.ndarray, fractions: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous train / val / test slices by fraction (the characters are never shuffled)."""
    n = len(ids)
    n_train = int(round(n * fractions[0]))
    n_val = int(round(n * fractions[1]))
    return ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]


@dataclass
class StreamBatcher:
    """B contiguous streams over the training ids, cut into windows of T steps.

    Stream b of an epoch reads ids[offset + b*L : offset + (b+1)*L + 1], L = (N - 1 - offset) // B,
    so the hidden state of window w carries exactly into window w + 1. Each epoch draws a new
    offset in [0, T) from the trainer's generator, so window edges move between epochs.
    """

    ids: np.ndarray
    batch: int
    seq_len: int
    epoch: int = 0
    window: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        if self.windows_for(self.seq_len - 1) < 1:
            need = (self.batch + 1) * self.seq_len
            raise CompactLMError(
                f"the training split has {len(self.ids):,} character{'' if len(self.ids) == 1 else 's'}, fewer than one window for every "
                f"stream (--batch {self.batch} x --seq-len {self.seq_len} needs {need}): "
                "use a longer corpus or smaller --batch/--seq-len")

    def windows_for(self, offset: int) -> int:
        """Number of full windows per epoch when the streams start at `offset`."""
        stream_len = (len(self.ids) - 1 - offset) // self.batch
        return stream_len // self.seq_len

    @property
    def windows_per_epoch(self) -> int:
        """Windows in the current epoch."""
        return self.windows_for(self.offset)

    def start_epoch(self, rng: np.random.Generator) -> None:
        """Begin a new epoch at a random offset in [0, T)."""
        self.offset = int(rng.integers(0, self.seq_len))
        self.window = 0

    def next_window(self) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of the next window, time-major [T, B] int64."""
        stream_len = (len(self.ids) - 1 - self.offset) // self.batch
        starts = self.offset + stream_len * np.arange(self.batch) + self.window * self.seq_len
        index = starts[None, :] + np.arange(self.seq_len + 1)[:, None]
        block = self.ids[index].astype(np.int64)
        self.window += 1
        return block[:-1], block[1:]

    @property
    def epoch_done(self) -> bool:
        """True when every window of the current epoch has been served."""
        return self.window >= self.windows_per_epoch

    def position(self) -> dict:
        """Where the data stream stands, for a bit-exact resume."""
        return {"epoch": self.epoch, "window": self.window, "offset": self.offset}

    def restore(self, position: dict) -> None:
        """Return to a saved position."""
        self.epoch, self.window, self.offset = int(position["epoch"]), int(position["window"]), int(position["offset"])
