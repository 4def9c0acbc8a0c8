"""Everything of `compact-lm search` that talks to Ray: importing it, starting or joining a cluster, running
the Tuner (for a resume, on the trials the earlier attempts left unfinished: search_resume), one progress line
per trial change, and reading each trial's results back.

Ray is imported here only inside functions, so nothing else in compact-lm needs it.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import time
from pathlib import Path

from compact_lm.errors import CompactLMError, Interrupted, SettingError

INSTALL_HINT = 'pip install "compact-lm[search]"'
MAX_FAILURES = 3                    # a lost worker's trial restarts from its checkpoint this many times
# checkpoints kept per trial (older ones are deleted): a kill can cut the newest short, and a resume then
# continues from the one before it (search_resume)
CHECKPOINTS_KEPT = 2
ASHA_GRACE_PERCENT = 25             # ASHA compares trials at 25 % and 50 % of their training budget...
ASHA_REDUCTION = 2                  # ...and stops those worse than the median at that point
ASHA_METRIC = ("val_bpc", "min")
DEFAULT_CONNECT_TIMEOUT = 10.0


def require_ray() -> None:
    """A one-line CompactLMError if Ray Tune is not installed."""
    try:
        import ray  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError:
        raise CompactLMError(f"compact-lm search needs Ray Tune, an optional extra: {INSTALL_HINT}") from None


def _host_port(address: str) -> tuple[str, int]:
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise SettingError("address", "{address} {value}: expected auto, HOST:PORT or ray://HOST:PORT", value=address)
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float) -> None:
    """Fail in one line, within `timeout` seconds, if nothing answers at the address (Ray itself would retry)."""
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.timeout:
        raise CompactLMError(f"cannot reach a Ray cluster at {address}: no answer within {timeout:g} s") from None
    except OSError as error:
        raise CompactLMError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}") from None


@contextlib.contextmanager
def ray_session(address: str | None, cpus: int | None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """A local Ray for the run (`cpus` CPUs, None: what Ray detects, container limits included; no dashboard), or the cluster at `address`; shut down after, if ours
    (a Ray this process already runs is used as it is). Yields the CPUs it offers (= trials at once)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no usage reports from a user's search
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")        # Tune's own tables stay off (verbose=0)
    if address is not None:
        probe(address, connect_timeout)
        # a TCP answer is not yet Ray (a firewall or proxy may accept anything): bound Ray's own connection
        # attempts (about one a second) by the same time-out
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(max(1, math.ceil(connect_timeout))))
    import ray
    # our progress lines say what happened (a lost worker, a failed trial: its error is in search.md); Ray's own
    # log lines would repeat it with stack traces
    logging.getLogger("ray").setLevel(logging.CRITICAL)
    ours = not ray.is_initialized()
    if ours:
        options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                       configure_logging=False)
        try:
            with _quiet_stderr():
                if address is None:   # "local": a new Ray, even if `ray start` runs one on this machine
                    ray.init(address="local", num_cpus=cpus, **options)
                else:
                    ray.init(address=address, **options)
        except Exception as error:   # ConnectionError, RuntimeError, ...: Ray words them in many ways
            reason = " ".join(str(error).split())[:300]
            if address is None:
                raise CompactLMError(f"cannot start a local Ray: {reason}") from None
            raise CompactLMError(f"cannot connect to a Ray cluster at {address} (tried for about {connect_timeout:g} s): "
                                 f"{reason}") from None
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        if ours:
            ray.shutdown()


@contextlib.contextmanager
def _quiet_stderr():
    """Ray prints set-up notices straight to file descriptor 2 while it starts; keep our stderr to our lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ------------------------------------------------------------------------------------------ progress
_PROGRESS = {"log": None, "began": time.perf_counter(), "total": 0, "resumed": set()}


def configure_progress(log, total: int) -> None:
    """Where the progress lines go (None: nowhere). Module state, not the callback's own: Tune pickles its
    callbacks with the experiment, and a restored experiment must print through this run's `log` and clock."""
    _PROGRESS.update(log=log, began=time.perf_counter(), total=total, resumed=set())


def _state(trial) -> str:
    """A trial's state in the progress line's words."""
    if trial.status == "TERMINATED":
        return "done" if (trial.last_result or {}).get("final") else "stopped early"
    return {"RUNNING": "running", "ERROR": "failed"}.get(trial.status, "waiting")


def _last_error_line(trial) -> str:
    """The last line of the error Tune recorded for a trial (its exception), or a note that there is none."""
    try:
        lines = [line for line in Path(trial.error_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, TypeError):
        return "no error recorded"
    return lines[-1].strip()[:200] if lines else "no error recorded"


def _line(trials, message: str, trial=None, now: str | None = None) -> None:
    """Print `message` with the counts; `trial` is counted as `now` (Tune updates its status after the callback)."""
    log = _PROGRESS["log"]
    if log is None:
        return
    counts = dict.fromkeys(("running", "done", "stopped early", "failed", "waiting"), 0)
    for t in trials:
        counts[now if t is trial and now else _state(t)] += 1
    listed = ", ".join(f"{n} {name}" for name, n in counts.items())
    log(f"[{time.perf_counter() - _PROGRESS['began']:7.1f}s] {message}  ({listed})")


def _name(trial) -> str:
    spec = trial.config["trial"]
    return f"trial {spec['index']}/{_PROGRESS['total'] or '?'} ({spec['label']})"


def _progress(event: str, trials, trial, result: dict | None = None) -> None:
    """One trial change, as a progress line (or none)."""
    if event == "start":
        _line(trials, f"{_name(trial)} started", trial, "running")
    elif event == "result":
        resumed = result.get("resumed_from")
        if resumed is not None and trial.trial_id not in _PROGRESS["resumed"]:
            _PROGRESS["resumed"].add(trial.trial_id)
            _line(trials, f"{_name(trial)} resumed from its checkpoint at step {resumed}")
    elif event == "complete":
        last = trial.last_result or {}
        if last.get("final"):
            if last.get("val_bpc") is None and last.get("diverged"):
                what = f"diverged at step {last.get('step')}"
            elif last.get("val_bpc") is None:
                what = f"failed at step {last.get('step')}: {last.get('error')}"
            elif last.get("best_bytes") is not None:
                what = (f"done: {last['step']} steps, val {last['val_bpc']:.4f} bpc; best fitting candidate "
                        f"{last['best_bytes']:,} bytes, {last['best_savings']:.1%} savings, p50 {last['best_p50_ms']:.3f} ms")
            else:
                what = f"done: {last['step']} steps, val {last['val_bpc']:.4f} bpc; no candidate fits the budget"
        else:
            what = (f"stopped early at step {last.get('step')} ({last.get('budget_percent', 0):.0f} % of its budget), "
                    f"val {last.get('val_bpc', float('nan')):.4f} bpc")
        if last.get("cpu_s") is not None:
            what += f"; {last['cpu_s']:,.0f} CPU s"
        _line(trials, f"{_name(trial)} {what}", trial, "done" if last.get("final") else "stopped early")
    elif event == "recover":
        _line(trials, f"{_name(trial)} failed; retrying from its last checkpoint", trial, "waiting")
    elif event == "error":
        _line(trials, f"{_name(trial)} failed after {MAX_FAILURES} restarts: {_last_error_line(trial)}", trial, "failed")


def _progress_callback():
    """Tune's Callback for the progress lines. Tune pickles it into the experiment (cloudpickle, this class by
    value): it keeps nothing itself and calls module functions (pickled by reference), so a restored experiment
    prints through this run's settings."""
    from ray.tune import Callback

    class Progress(Callback):
        """One line per trial change: started, lost and restarted, resumed, done, stopped early, failed."""

        def on_trial_start(self, iteration, trials, trial, **info):
            _progress("start", trials, trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            _progress("result", trials, trial, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            _progress("complete", trials, trial)

        def on_trial_recover(self, iteration, trials, trial, **info):
            _progress("recover", trials, trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            _progress("error", trials, trial)

    return Progress()


# ------------------------------------------------------------------------------------------ tuning
def check_experiment(storage: str, *, resume: bool, saved_storage: str | None = None) -> None:
    """Refuse, in one line, a resume that would silently start over (no trial was saved in `storage`, yet the
    search's own storage holds some) and a new search into a storage that already holds a search's trials."""
    from .search_resume import has_trials
    if resume:
        if not has_trials(storage) and saved_storage and saved_storage != storage and has_trials(saved_storage):
            raise CompactLMError(f"cannot resume: {storage} holds no trials of this search, but trials were saved in "
                                 f"{saved_storage}; pass the storage the search began with (--storage), or start a "
                                 "new search in a new folder")
        return
    if has_trials(storage):
        raise CompactLMError(f"the storage {storage} already holds a search's trials (another search?): choose another "
                             "--storage or remove it")


def trial_name(trial) -> str:
    """A trial's name and folder: trial-001 (module-level: Tune pickles it into every trial's saved state)."""
    return f"trial-{trial.config['trial']['index']:03d}"


def run_tuner(specs: list[dict], storage: str, *, scheduler: str, resume: bool) -> list[dict]:
    """Run every trial (with `resume`: those the earlier attempts in `storage` left unfinished, each from its
    newest checkpoint; the others are read back as they were) as a new attempt; returns each trial's outcome."""
    from ray import tune
    from .search_resume import next_attempt, recover
    from .search_trial import run_trial
    settled = []
    if resume:
        recovered = recover(storage, specs)
        settled, specs = recovered.outcomes, recovered.to_run
        if _PROGRESS["log"] is not None:
            kinds = ["diverged" if (o["final"] or {}).get("diverged") else
                     "failed" if o["error"] or (o["final"] or {}).get("error") else
                     "done" if o["final"] else "stopped early" for o in settled]
            counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("done", "stopped early", "diverged", "failed")
                               if k in kinds)
            _PROGRESS["log"](f"resume: {len(settled)} trials kept from the earlier runs ({counts or 'none'}), "
                             f"{len(specs)} to run")
        if not specs:
            return settled
    trainable = tune.with_resources(run_trial, {"cpu": 1})
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler
        chosen = ASHAScheduler(time_attr="budget_percent", metric=ASHA_METRIC[0], mode=ASHA_METRIC[1], max_t=100,
                               grace_period=ASHA_GRACE_PERCENT, reduction_factor=ASHA_REDUCTION)
    else:
        from ray.tune.schedulers import FIFOScheduler
        chosen = FIFOScheduler()
    tuner = tune.Tuner(
        trainable, param_space={"trial": tune.grid_search(specs)},
        # reuse_actors: the next trial runs in a finished trial's worker (a trial keeps nothing in its process),
        # saving a process start per trial
        tune_config=tune.TuneConfig(scheduler=chosen, num_samples=1, reuse_actors=True,
                                    trial_dirname_creator=trial_name, trial_name_creator=trial_name),
        run_config=tune.RunConfig(name=next_attempt(storage), storage_path=storage, verbose=0, callbacks=[_progress_callback()],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)))
    # Ctrl-C: Tune catches SIGINT, saves the experiment, stops the trials and returns normally (its trials then
    # read as terminated, and one that never reported has no config). A partial set of trials must not make a
    # report: Tune's handler, on a SIGINT, puts back the one it found, so `_sigint` installed here tells.
    with _sigint() as caught:
        grid = tuner.fit()
    if caught() or _interrupted(grid):
        raise Interrupted("interrupted: run the same command with --resume to continue")
    by_index = {spec["index"]: spec for spec in specs}
    return settled + [_outcome(result, by_index) for result in grid]


@contextlib.contextmanager
def _sigint():
    """Yields a function telling whether Tune caught a SIGINT during the block. Tune (in the main thread,
    unless TUNE_DISABLE_SIGINT_HANDLER is set) replaces the SIGINT handler by its own while it runs and, on a
    SIGINT, restores the one it replaced: ours, then still installed after fit(). Without Tune's handler ours
    raises KeyboardInterrupt, as Python's default one does."""
    import signal
    import threading

    def ours(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, ours)
    tune_catches = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") or 0)
    state = {"caught": False}
    try:
        yield lambda: state["caught"]
    finally:
        state["caught"] = tune_catches and signal.getsignal(signal.SIGINT) is ours
        signal.signal(signal.SIGINT, previous)


def _interrupted(grid) -> bool:
    """Whether some trial did not end (done, stopped early or failed): fit() returned after a Ctrl-C."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None)
    if trials is not None:
        return any(trial.status not in ("TERMINATED", "ERROR") for trial in trials)
    return any(result.error is None and not (result.metrics or {}).get("final") for result in grid)


def _trial_index(result) -> int | None:
    """A trial's index from its folder name (trial-001), whether or not it ever reported."""
    path = str(getattr(result, "path", "") or "").rstrip("/")
    name = path.rsplit("/", 1)[-1]
    if name.startswith("trial-") and name[len("trial-"):].isdigit():
        return int(name[len("trial-"):])
    return None


def _outcome(result, by_index: dict[int, dict]) -> dict:
    """One trial as plain data: its spec, last metrics, error, and its final record (candidates.json) if any."""
    from .search_resume import StoredCheckpoint
    from .search_trial import FINAL_FILE
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float, str, type(None)))}
    checkpoint = StoredCheckpoint(result.checkpoint) if result.checkpoint is not None else None
    final = checkpoint.read_json(FINAL_FILE) if checkpoint is not None and metrics.get("final") else None
    error = None
    if result.error is not None:
        error = " ".join(str(result.error).split())[-300:]
    spec = (result.config or {}).get("trial") or by_index.get(_trial_index(result))
    if spec is None:
        raise CompactLMError(f"Ray Tune returned a trial this search did not plan ({getattr(result, 'path', '?')})")
    return {"spec": spec, "metrics": metrics, "final": final, "error": error,
            "checkpoint": checkpoint}
