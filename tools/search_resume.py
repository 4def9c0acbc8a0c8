"""`search --resume` without unpickling: what the earlier runs of a search left in its storage, read as JSON and
as the trainer's own checkpoint files, never through Tune's `Tuner.restore` (which unpickles its saved state).

Each run of one search is an *attempt*, a Tune experiment of its own in the storage: `search` (the first), then
`search-2`, `search-3`, ... (one per `--resume`). To resume, every trial of the plan is looked up in them, the
newest attempt first:

  done          its newest complete checkpoint holds candidates.json (training and measurements finished): the
                record is kept as it is, never run or measured again;
  stopped early an attempt's saved state (experiment_state-*.json, its plain JSON fields only: a trial's status
                and folder) says TERMINATED and no checkpoint holds candidates.json: ASHA stopped it;
  failed        the state says ERROR (Tune gave up after its restarts): kept, with error.txt's last line;
  to run        anything else (running, waiting, or no saved state yet): it runs again in the new attempt,
                continuing from its newest complete checkpoint (the trainer's files: bit-exact), if it has one.

Tune saves an attempt's state every 10 s or so, so the checkpoints can be newer than the state: a trial that
finished after the last save is found done by its checkpoint; one stopped after it runs again from its newest
checkpoint (the new attempt's ASHA judges it again).
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

EXPERIMENT = "search"   # the first attempt's name; later ones are search-2, search-3, ...
CHECKPOINT_PREFIX = "checkpoint_"
STATUS_STOPPED, STATUS_FAILED = "TERMINATED", "ERROR"   # Tune's words; TERMINATED without candidates: stopped


def _filesystem(storage: str):
    """(pyarrow filesystem, root path) of a local folder or a URI that Ray's storage reads (s3://, gs://, ...)."""
    import pyarrow.fs
    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), str(Path(storage).resolve())


@dataclass
class Storage:
    """A search's storage, listed and read through pyarrow (local folders and object stores alike)."""

    uri: str
    fs: object = field(init=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.fs, self.root = _filesystem(self.uri)

    def _names(self, path: str, kind: str) -> list[str]:
        import pyarrow.fs
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == getattr(pyarrow.fs.FileType, kind))

    def folders(self, path: str) -> list[str]:
        """Names of the folders in `path` (none if it does not exist)."""
        return self._names(path, "Directory")

    def files(self, path: str) -> list[str]:
        """Names of the files in `path`."""
        return self._names(path, "File")

    def read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def location(self, path: str) -> str:
        """What a worker opens: the local path, or the URI with the store's scheme."""
        if "://" not in self.uri:
            return path
        scheme = self.uri.split("://", 1)[0]
        return f"{scheme}://{path}"


def attempts(storage: Storage) -> list[str]:
    """The attempts saved in the storage, oldest first: search, search-2, search-3, ..."""
    names = storage.folders(storage.root)
    found = [n for n in names if n == EXPERIMENT or (n.startswith(EXPERIMENT + "-") and n[len(EXPERIMENT) + 1:].isdigit())]
    return sorted(found, key=lambda n: 1 if n == EXPERIMENT else int(n[len(EXPERIMENT) + 1:]))


def next_attempt(storage_uri: str) -> str:
    """The experiment name of a new attempt in this storage."""
    done = attempts(Storage(storage_uri))
    if not done:
        return EXPERIMENT
    last = done[-1]
    return f"{EXPERIMENT}-{1 + (1 if last == EXPERIMENT else int(last[len(EXPERIMENT) + 1:]))}"


def has_trials(storage_uri: str) -> bool:
    """Whether any attempt in the storage saved a trial's folder."""
    storage = Storage(storage_uri)
    return any(n.startswith("trial-") for a in attempts(storage) for n in storage.folders(storage.path(a)))


def _statuses(storage: Storage, attempt: str) -> dict[str, str]:
    """{trial folder: status} from the attempt's newest saved state, reading only its plain JSON fields
    (the state's trial entries are JSON text; the pickled values inside them are never decoded)."""
    folder = storage.path(attempt)
    states = [n for n in storage.files(folder) if n.startswith("experiment_state-") and n.endswith(".json")]
    if not states:
        return {}
    try:
        state = json.loads(storage.read(f"{folder}/{max(states)}"))
        out = {}
        for entry in state.get("trial_data", []):
            trial = json.loads(entry[0])
            name = trial.get("custom_dirname") or trial.get("relative_logdir")
            if isinstance(name, str) and isinstance(trial.get("status"), str):
                out[name] = trial["status"]
        return out
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}   # a format this reader does not know: every unfinished trial runs again from its checkpoint


def _complete(storage: Storage, path: str, names: list[str], spec: dict) -> bool:
    """Whether a checkpoint folder holds every file a resume needs, each readable (.npz: zip CRCs; the best
    candidate's .onnx: the bytes it was measured at), and was made by this trial (its architecture)."""
    from .search_candidates import candidate_stem
    from .search_trial import CHECKPOINT_FILES, FINAL_FILE
    needed = [FINAL_FILE] if FINAL_FILE in names else [n for n in CHECKPOINT_FILES[:3]]
    try:
        if FINAL_FILE in names:
            final = json.loads(storage.read(f"{path}/{FINAL_FILE}"))
            if final.get("architecture") != spec.get("architecture"):
                return False
            best = final.get("best")
            if best:
                stem = candidate_stem(best["keep"], best["precision"])
                needed += [f"{stem}.npz", f"{stem}.onnx"]
                if f"{stem}.onnx" in names and len(storage.read(f"{path}/{stem}.onnx")) != best["bytes"]:
                    return False
        if not all(n in names for n in needed):
            return False
        for name in needed:
            data = storage.read(f"{path}/{name}")
            if name.endswith(".json"):
                json.loads(data)
            elif name.endswith(".npz"):
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    if archive.testzip() is not None:
                        return False
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return False
    return True


def _last_result(storage: Storage, folder: str) -> dict:
    """The trial's last reported metrics (result.json: one JSON object per line), plain values only."""
    try:
        lines = [line for line in storage.read(f"{folder}/result.json").decode("utf-8").splitlines() if line.strip()]
        last = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return {k: v for k, v in last.items() if isinstance(v, (int, float, str, type(None)))}


def _error_line(storage: Storage, folder: str) -> str:
    """The last line of the error Tune wrote as text (error.txt); error.pkl is never read."""
    try:
        lines = [l for l in storage.read(f"{folder}/error.txt").decode("utf-8", "replace").splitlines() if l.strip()]
    except OSError:
        return "no error recorded"
    return lines[-1].strip()[:300] if lines else "no error recorded"


@dataclass
class StoredCheckpoint:
    """A trial's last checkpoint, read without Ray's objects leaking out."""

    checkpoint: object

    def read_json(self, name: str) -> dict | None:
        with self.checkpoint.as_directory() as folder:
            path = Path(folder) / name
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def copy(self, name: str, destination: Path) -> None:
        from compact_lm.fileio import atomic_write
        with self.checkpoint.as_directory() as folder:
            data = (Path(folder) / name).read_bytes()
        atomic_write(destination, lambda f: f.write(data))


@dataclass
class Recovered:
    """What the earlier attempts settled, and what the new attempt must run."""

    outcomes: list[dict]    # settled trials, as search_ray._outcome makes them
    to_run: list[dict]      # specs to run, each with "restore_from" (a checkpoint's location) when it has one


def recover(storage_uri: str, specs: list[dict]) -> Recovered:
    """Look every planned trial up in the attempts of `storage_uri` (see the module's docstring)."""
    from ray import tune
    from .search_trial import FINAL_FILE
    storage = Storage(storage_uri)
    names = attempts(storage)
    statuses = {a: _statuses(storage, a) for a in names}
    outcomes, to_run = [], []
    for spec in specs:
        trial = f"trial-{spec['index']:03d}"
        newest, final_at, status, status_folder = None, None, None, None
        for attempt in reversed(names):
            folder = storage.path(attempt, trial)
            if status is None and trial in statuses[attempt]:
                status, status_folder = statuses[attempt][trial], folder
            if newest is None:
                checkpoints = sorted((n for n in storage.folders(folder) if n.startswith(CHECKPOINT_PREFIX)), reverse=True)
                for name in checkpoints:
                    path = f"{folder}/{name}"
                    files = storage.files(path)
                    if _complete(storage, path, files, spec):
                        newest = (path, folder)
                        final_at = path if FINAL_FILE in files else None
                        break
        if final_at is not None:
            checkpoint = StoredCheckpoint(tune.Checkpoint(final_at, filesystem=storage.fs))
            outcomes.append({"spec": spec, "metrics": _last_result(storage, newest[1]),
                             "final": checkpoint.read_json(FINAL_FILE), "error": None, "checkpoint": checkpoint})
        elif status == STATUS_STOPPED:
            outcomes.append({"spec": spec, "metrics": _last_result(storage, status_folder), "final": None,
                             "error": None, "checkpoint": None})
        elif status == STATUS_FAILED:
            outcomes.append({"spec": spec, "metrics": _last_result(storage, status_folder), "final": None,
                             "error": _error_line(storage, status_folder), "checkpoint": None})
        else:
            to_run.append({**spec, "restore_from": storage.location(newest[0]) if newest else None})
    return Recovered(outcomes, to_run)
