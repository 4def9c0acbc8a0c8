"""Atomic writes and safe loading of `.npz` containers (never unpickles, metadata is JSON)."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, BinaryIO

import numpy as np

from .errors import CompactLMError

METADATA_KEY = "metadata"
# Refuse before reading any data: a model or training state is a few MB; 2 GiB of arrays is never ours,
# and a header that declares more than that (a "1 TB array") must not make np.load try to allocate it.
MAX_TOTAL_BYTES = 2 * 1024 ** 3
# The only array dtypes save_npz ever writes (float32/float64 weights and optimizer state, int8 weights);
# the metadata entry alone is UTF-8 bytes (a 1-d uint8 array; files written before 2026-12-06 hold a 0-d unicode
# string, 4 bytes per character: a model's lexicon took 170 KB there). Anything else (object, void, strings
# elsewhere) is refused.
ARRAY_DTYPES = frozenset({np.dtype("<f4"), np.dtype("<f8"), np.dtype("|i1")})
# mkstemp creates files 0600; a written model should get the mode open() would give it (0666 & ~umask)
_UMASK = os.umask(0)
os.umask(_UMASK)


def check_file(path: Path, label: str) -> None:
    """A one-line CompactLMError unless `path` exists and is not a folder (`label`: "corpus file", ...)."""
    if not path.exists():
        raise CompactLMError(f"{label} {path} does not exist")
    if path.is_dir():
        raise CompactLMError(f"{label} {path} is a folder, not a file")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (resolving links and relative parts)."""
    return Path(a).resolve() == Path(b).resolve()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], mode: int | None = None) -> None:
    """Write a file through `write(fileobj)` into a temporary sibling, fsync, then `os.replace`.

    A crash or a full disk at any point leaves either the old file or the new one, never a mix. The file
    gets `mode` (default: what open() would give it, 0666 & ~umask). A symbolic link is written through (its
    target is replaced); anything there that is not a regular file (a folder, /dev/null) is refused.
    """
    atomic_write_all([(path, write)], mode)


def atomic_write_all(files: list[tuple[str | os.PathLike, Callable[[BinaryIO], None]]], mode: int | None = None) -> None:
    """atomic_write for several files that go together: none is replaced unless all are written.

    Each is written to its temporary sibling first and only then renamed into place, so a failure (a folder
    that cannot be written, a full disk) replaces none of them."""
    targets = [_write_target(Path(path)) for path, _ in files]
    written: list[str] = []   # temporary files not yet renamed into place
    current = targets[0] if targets else None   # the file being written (what an error names)
    try:
        for current, (_, write) in zip(targets, files):
            folder = current.parent if str(current.parent) else Path(".")
            fd, tmp_name = tempfile.mkstemp(prefix=f".{current.name}.", suffix=".tmp", dir=folder)
            written.append(tmp_name)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o666 & ~_UMASK if mode is None else mode)
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        for current in targets:   # (a rename within a folder does not fail for lack of space)
            os.replace(written[0], current)
            del written[0]
    except BaseException as error:
        for tmp_name in written:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
        if isinstance(error, OSError):
            raise CompactLMError(f"cannot write {current}: {error.strerror or error}") from None
        raise


def check_writable(path: str | os.PathLike) -> None:
    """A one-line CompactLMError now, before any work, if `path` could not be written: a folder or device there, or
    no folder to hold it."""
    folder = _write_target(Path(path)).parent
    if not folder.is_dir():
        raise CompactLMError(f"cannot write {path}: {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CompactLMError(f"cannot write {path}: the folder {folder} is not writable")


def _write_target(path: Path) -> Path:
    """Where writing `path` goes: a symbolic link's target; a one-line error for anything but a regular file."""
    try:
        target = Path(os.path.realpath(path)) if path.is_symlink() else path   # (written through, as an editor does)
        if target.exists() and not target.is_file():   # a folder, a device (/dev/null), a pipe: never replaced
            raise CompactLMError(f"cannot write {path}: it is {'a folder' if target.is_dir() else 'not a regular file'}")
    except OSError as error:   # a folder on the way that may not be searched
        raise CompactLMError(f"cannot write {path}: {error.strerror or error}") from None
    return target


def png_bytes(figure) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi, tight); the figure is closed."""
    import io
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _metadata_layout(dtype: np.dtype, shape: tuple) -> bool:
    """Whether a metadata entry has a layout save_npz writes: UTF-8 bytes, or (older files) a 0-d unicode string."""
    return (dtype == np.uint8 and len(shape) == 1) or (dtype.kind == "U" and shape == ())


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    """Save named arrays plus a JSON metadata document (its UTF-8 bytes, a uint8 array) atomically."""
    if METADATA_KEY in arrays:
        raise ValueError(f"array name {METADATA_KEY!r} is reserved")
    payload = dict(arrays)
    text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    # a lone surrogate (a file name that was not UTF-8, as Python decodes it) becomes its JSON escape \udcXX,
    # which reads back as the same string
    payload[METADATA_KEY] = np.frombuffer(text.encode("utf-8", "backslashreplace"), dtype=np.uint8)
    atomic_write(path, lambda handle: np.savez(handle, **payload))


def _member_error(path: Path, what: str, member: str, reason: str) -> CompactLMError:
    return CompactLMError(f"{path} is not a valid {what} file: entry {member!r} {reason}")


def check_npz_headers(path: Path, what: str = "model") -> None:
    """Check every member's .npy header (dtype, shape, declared size) without reading any array data.

    np.load trusts a header's shape and allocates it before reading; a crafted header could ask for
    terabytes. Each member must be a `.npy` whose declared size fits the zip member exactly, with a
    dtype compact-lm writes, and all members together must stay under MAX_TOTAL_BYTES. Raises
    CompactLMError (one line, naming the file); zip-level damage propagates as zipfile/OSError.
    """
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise _member_error(path, what, name, "is not an .npy array")
            # the uncompressed size comes from the central directory; reading checks it (and the CRC)
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise CompactLMError(f"{path} is not a valid {what} file: its arrays exceed "
                                     f"{MAX_TOTAL_BYTES // 1024 ** 3} GiB uncompressed")
            with archive.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version in ((2, 0), (3, 0)):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                except (ValueError, SyntaxError, TypeError, EOFError) as error:
                    reason = " ".join(str(error).split())[:120]
                    raise _member_error(path, what, name, f"has a damaged .npy header: {reason}") from None
                header_size = member.tell()
            key = name[:-len(".npy")]
            if dtype.hasobject:
                raise CompactLMError(f"{path} contains object arrays, which compact-lm never loads")
            if key == METADATA_KEY:
                if not _metadata_layout(dtype, shape):
                    raise CompactLMError(f"{path} has a malformed metadata entry")
            elif dtype not in ARRAY_DTYPES:
                raise _member_error(path, what, name, f"has dtype {dtype}, expected float32, float64 or int8")
            if not all(isinstance(n, int) and n >= 0 for n in shape):
                raise _member_error(path, what, name, f"has an invalid shape {shape}")
            # Python ints: a product of huge dimensions cannot overflow here as it would in int64
            declared = dtype.itemsize
            for n in shape:
                declared *= n
            if declared > MAX_TOTAL_BYTES:
                raise _member_error(path, what, name, f"declares {declared} bytes of data "
                                    f"(shape {shape}), more than {MAX_TOTAL_BYTES // 1024 ** 3} GiB")
            if header_size + declared != info.file_size:
                raise _member_error(path, what, name, f"declares shape {shape} of {dtype} ({declared} bytes) "
                                    f"but holds {info.file_size - header_size} bytes of data")


def load_npz(path: str | os.PathLike, what: str = "model") -> tuple[dict[str, np.ndarray], dict]:
    """Load a `.npz` written by `save_npz`: arrays and metadata, with a one-line error for any defect."""
    path = Path(path)
    check_file(path, f"{what} file")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise CompactLMError(f"cannot read {what} file {path}: {error.strerror or error}") from None
    if magic != b"PK\x03\x04":
        raise CompactLMError(f"{path} is not a valid {what} file (truncated or not an .npz)")
    try:
        check_npz_headers(path, what)
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
        reason = " ".join(str(error).split())[:200]
        raise CompactLMError(f"{path} is not a valid {what} file: {reason}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, zlib.error) as error:
        reason = " ".join(str(error).split())[:200]
        raise CompactLMError(f"{path} is not a valid {what} file (truncated or not an .npz): {reason}") from None
    except (NotImplementedError, RuntimeError) as error:
        # zipfile: a damaged header can claim an unknown compression method or encryption
        reason = " ".join(str(error).split())[:200]
        raise CompactLMError(f"{path} is not a valid {what} file (damaged zip entry): {reason}") from None
    raw = arrays.pop(METADATA_KEY)
    if not _metadata_layout(raw.dtype, raw.shape):
        raise CompactLMError(f"{path} has a malformed metadata entry")
    try:
        metadata = json.loads(str(raw) if raw.dtype.kind == "U" else raw.tobytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CompactLMError(f"{path} has metadata that is not UTF-8 text") from None
    except ValueError as error:   # (JSONDecodeError; an integer of over 4300 digits)
        raise CompactLMError(f"{path} has metadata that is not valid JSON: {error}") from None
    except RecursionError:
        raise CompactLMError(f"{path} has metadata nested too deeply to read") from None
    if not isinstance(metadata, dict):
        raise CompactLMError(f"{path} has metadata that is not a JSON object")
    for name, array in arrays.items():
        if array.dtype.kind == "O":
            raise CompactLMError(f"{path} contains object arrays, which compact-lm never loads")
    return arrays, metadata
