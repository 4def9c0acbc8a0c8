"""Atomic writes and safe loading of `.npz` containers (never unpickles, metadata is JSON)."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, BinaryIO

import numpy as np

from .errors import CompactLMError

METADATA_KEY = "metadata"
# mkstemp creates files 0600; a written model should get the mode open() would give it (0666 & ~umask)
_UMASK = os.umask(0)
os.umask(_UMASK)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (resolving links and relative parts)."""
    return Path(a).resolve() == Path(b).resolve()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through `write(fileobj)` into a temporary sibling, fsync, then `os.replace`.

    A crash or a full disk at any point leaves either the old file or the new one, never a mix.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise CompactLMError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise CompactLMError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    """Save named arrays plus a JSON metadata document (a 0-d string array) atomically."""
    if METADATA_KEY in arrays:
        raise ValueError(f"array name {METADATA_KEY!r} is reserved")
    payload = dict(arrays)
    payload[METADATA_KEY] = np.array(json.dumps(metadata, ensure_ascii=False, allow_nan=False))
    atomic_write(path, lambda handle: np.savez(handle, **payload))


def load_npz(path: str | os.PathLike, what: str = "model") -> tuple[dict[str, np.ndarray], dict]:
    """Load a `.npz` written by `save_npz`: arrays and metadata, with a one-line error for any defect."""
    path = Path(path)
    if not path.exists():
        raise CompactLMError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise CompactLMError(f"{what} file {path} is a folder, not a file")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise CompactLMError(f"cannot read {what} file {path}: {error.strerror or error}") from None
    if magic != b"PK\x03\x04":
        raise CompactLMError(f"{path} is not a valid {what} file (truncated or not an .npz)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if METADATA_KEY not in names:
                raise CompactLMError(f"{path} is not a compact-lm {what} file (no metadata entry)")
            arrays = {name: archive[name] for name in names}
    except CompactLMError:
        raise
    except PermissionError:
        raise CompactLMError(f"cannot read {what} file {path}: permission denied") from None
    except ValueError as error:
        if "pickle" in str(error).lower() or "object" in str(error).lower():
            raise CompactLMError(f"{path} contains object arrays, which compact-lm never loads") from None
        raise CompactLMError(f"{path} is not a valid {what} file: {error}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise CompactLMError(f"{path} is not a valid {what} file (truncated or not an .npz): {error}") from None
    raw = arrays.pop(METADATA_KEY)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise CompactLMError(f"{path} has a malformed metadata entry")
    try:
        metadata = json.loads(str(raw))
    except json.JSONDecodeError as error:
        raise CompactLMError(f"{path} has metadata that is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise CompactLMError(f"{path} has metadata that is not a JSON object")
    for name, array in arrays.items():
        if array.dtype.kind == "O":
            raise CompactLMError(f"{path} contains object arrays, which compact-lm never loads")
    return arrays, metadata
