"""One trial of `compact-lm search`: the function Ray Tune runs in a worker process (one CPU, one BLAS thread).

    train (compact_lm.trainer.Trainer) -> at every evaluation: report val bpc to Tune with a checkpoint of the
    trainer's own files (state.npz, model.npz, history.json) -> the candidates of the best model
    (search_candidates.make_candidates) -> a last report with candidates.json and the best fitting files.

A trial that Tune restores (a lost worker) gets its latest checkpoint back, and so does a trial that
`search --resume` runs again after the driver died (its spec names an earlier attempt's checkpoint): the trainer's files go into a fresh folder and `Trainer(..., resume=True)` continues
bit-exactly, as `compact-lm train --resume` does. Scheduler decisions (ASHA) use `budget_percent`, which only
the evaluations before the last one carry, so a trial is never stopped after its training is paid for.
The test split is never read here: the driver scores the chosen model on it once.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from compact_lm.config import TrainConfig
from compact_lm.errors import CompactLMError, Interrupted, TrainingDiverged
from compact_lm.trainer import MODEL_FILE, STATE_FILE, Trainer, TrainResult

from .prune import finetune_batch, finetune_budget
from .search_candidates import Budget, candidate_stem, make_candidates, rank_key
from .search_estimate import oversized

FINAL_FILE = "candidates.json"
CPU_FILE = "cpu.json"   # the trial's CPU seconds so far, carried across a restore
CHECKPOINT_FILES = (STATE_FILE, MODEL_FILE, "history.json", CPU_FILE)


def split_texts(config: TrainConfig) -> tuple[str, str, str]:
    """The training, validation and test text of a run, normalized: the characters of its id splits."""
    from compact_lm.data import read_corpus, split_ids
    from compact_lm.vocab import normalize
    text = normalize(read_corpus(list(config.corpus), encoding_errors=config.encoding_errors),
                     nfc=config.nfc, lowercase=config.lowercase)
    positions = split_ids(range(len(text)), config.split)   # one id per character: the same cuts
    return tuple(text[part.start:part.stop] for part in positions)


class ReportingTrainer(Trainer):
    """The trainer, telling Tune each evaluation's val bpc with a checkpoint of its files; no test split."""

    def __init__(self, *args, report, resumed_from: int | None = None, cpu=lambda: 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._report = report
        self.resumed_from = resumed_from   # the checkpoint's step this run continues from (None: from scratch)
        self.cpu_seconds = cpu             # the trial's CPU seconds so far, restored part included

    def budget_percent(self) -> float:
        """How much of the training budget is spent, 0-100 (steps, or minutes)."""
        total = self.total_steps()
        if total is not None:
            return 100.0 * self.step / total
        return 100.0 * self.elapsed / (self.config.minutes * 60.0)

    def evaluate(self) -> dict:
        row = super().evaluate()
        self._report(self, row)
        return row

    def finish(self) -> TrainResult:
        """The best model with its val figures only: unlike Trainer.finish, no test split (the search scores it
        once, for its report) and no wall-clock figures (a shipped file's bytes must not vary with them)."""
        best = self.best if self.best is not None else self.current_model()
        best.save(self.out_dir / MODEL_FILE)
        return TrainResult(best, self.history, self.out_dir)


TEMP_PREFIXES = ("compact-lm-trial-", "compact-lm-checkpoint-")
PID_FILE = "owner.pid"


def _work_folder(prefix: str):
    """A temporary folder holding a pid file (so a later trial can tell it was left by a dead process)."""
    folder = tempfile.TemporaryDirectory(prefix=prefix)
    (Path(folder.name) / PID_FILE).write_text(str(os.getpid()), encoding="ascii")
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_folders(root: str | None = None) -> None:
    """Remove this user's trial and checkpoint folders in the temporary folder whose owning process is gone
    (a worker or driver that died skips its clean-up). Folders without a pid file are left alone."""
    root = Path(root or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for folder in entries:
        if not folder.name.startswith(TEMP_PREFIXES):
            continue
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.lstat().st_uid != os.getuid():
                continue
            pid = int((folder / PID_FILE).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _report(metrics: dict, files: dict[str, Path]) -> None:
    """tune.report with a checkpoint holding copies of `files` (name -> path)."""
    from ray import tune
    with _work_folder("compact-lm-checkpoint-") as work:
        staging = Path(work) / "checkpoint"   # the pid file stays outside the checkpoint
        staging.mkdir()
        for name, path in files.items():
            shutil.copyfile(path, staging / name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))


def _evaluation_reporter(spec: dict):
    crash_after = spec.get("crash_after_step")   # tests: a lost worker, once, after this step's checkpoint

    def report(trainer: ReportingTrainer, row: dict) -> None:
        metrics = {"val_bpc": row["val_bpc"], "train_bpc": row["train_bpc"], "step": trainer.step,
                   "resumed_from": trainer.resumed_from, "cpu_s": trainer.cpu_seconds()}
        if not trainer.done():
            metrics["budget_percent"] = trainer.budget_percent()
        _write_cpu(trainer.out_dir, metrics["cpu_s"])
        files = {name: trainer.out_dir / name for name in CHECKPOINT_FILES if (trainer.out_dir / name).exists()}
        _report(metrics, files)
        if crash_after is not None and trainer.resumed_from is None and trainer.step >= crash_after:
            os._exit(1)
    return report


def _write_cpu(run: Path, seconds: float) -> None:
    (run / CPU_FILE).write_text(json.dumps({"cpu_s": seconds}), encoding="ascii")


def _read_cpu(run: Path) -> float:
    """CPU seconds a restored checkpoint had spent (0 without the file)."""
    try:
        return float(json.loads((run / CPU_FILE).read_text(encoding="ascii"))["cpu_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _restore(run: Path, restore_from: str | None = None) -> tuple[int | None, dict | None]:
    """This trial's latest checkpoint into `run`: Tune's (a lost worker's trial, restarted in this attempt), else
    `restore_from` (an earlier attempt's, for `search --resume`). Returns (step it holds, its final record if
    training was done)."""
    from ray import tune
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and restore_from:
        checkpoint = tune.Checkpoint(restore_from)
    if checkpoint is None:
        return None, None
    try:
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            if (folder / FINAL_FILE).exists():
                final = json.loads((folder / FINAL_FILE).read_text(encoding="utf-8"))
                run.mkdir(parents=True, exist_ok=True)
                for name in os.listdir(folder):
                    shutil.copyfile(folder / name, run / name)
                return final["steps"], final
            run.mkdir(parents=True, exist_ok=True)
            for name in CHECKPOINT_FILES:
                if (folder / name).exists():
                    shutil.copyfile(folder / name, run / name)
    except (OSError, ValueError, KeyError):
        # the checkpoint is gone or damaged: training is deterministic, so starting over gives the same model
        shutil.rmtree(run, ignore_errors=True)
        return None, None
    from compact_lm.fileio import load_npz
    return int(load_npz(run / STATE_FILE, "training state")[1]["step"]), None


def run_trial(params: dict) -> None:
    """Ray Tune trainable: one trial's spec is params["trial"] (a plain JSON object made by search.plan_trials)."""
    from threadpoolctl import threadpool_limits
    spec = params["trial"]
    config = TrainConfig.from_json(spec["train_config"])
    budget = Budget(spec["max_bytes"], spec["max_keystroke_ms"])
    remove_stale_folders()
    began = time.process_time()   # this worker's CPU: training, evaluations, candidates, Tune's reporting
    with threadpool_limits(limits=1), _work_folder("compact-lm-trial-") as work:
        run = Path(work) / "run"
        resumed_from, final = _restore(run, spec.get("restore_from"))
        if final is None:
            spent = _read_cpu(run)
            final = _train_and_measure(spec, config, budget, run, resumed_from,
                                       cpu=lambda: spent + time.process_time() - began)
        files = {FINAL_FILE: run / FINAL_FILE}
        if final.get("best"):
            stem = candidate_stem(final["best"]["keep"], final["best"]["precision"])
            files.update({f"{stem}{suffix}": run / f"{stem}{suffix}" for suffix in (".npz", ".onnx")})
        best = final.get("best") or {}
        _report({"val_bpc": final["val_bpc"], "step": final["steps"], "final": 1, "fits": final["fits"],
                 "cpu_s": final.get("cpu_s"), "diverged": 1 if final.get("diverged") else 0, "error": final.get("error"),
                 "best_bytes": best.get("bytes"), "best_savings": best.get("savings"), "best_p50_ms": best.get("p50_ms"),
                 "resumed_from": resumed_from}, files)


def _train_and_measure(spec: dict, config: TrainConfig, budget: Budget, run: Path, resumed_from: int | None,
                       cpu=lambda: 0.0) -> dict:
    """Train (or continue), then make and measure the candidates; writes candidates.json in `run`.
    `cpu()`: the trial's CPU seconds so far."""
    final = {"trial": spec["index"], "architecture": spec["architecture"], "train_config": config.to_json()}
    trainer = None
    try:
        trainer = ReportingTrainer(config, run, resume=resumed_from is not None, progress=False, log=lambda _: None,
                                   report=_evaluation_reporter(spec), resumed_from=resumed_from, cpu=cpu)
        if trainer.corpus.digest != spec["corpus_sha256"]:
            raise CompactLMError("the corpus read on this node differs from the driver's (give every node the same "
                                 "files)")
        model = trainer.run().model
    except Interrupted:
        raise
    except TrainingDiverged as error:   # a finding about this trial, not a lost worker: no retry
        return _failed(run, final, trainer.step, error, cpu(), kind="diverged")
    except CompactLMError as error:   # another finding of compact-lm's about this trial: recorded, not retried
        return _failed(run, final, trainer.step if trainer else (resumed_from or 0), error, cpu())
    val_bpc = model.info["metrics"]["val"]["bpc"]
    folder = run / "candidates"
    folder.mkdir(exist_ok=True)
    streams = finetune_batch(config.batch, config.seq_len, len(trainer.corpus.train))
    finetune_steps = finetune_budget(trainer.step, config.batch, spec["finetune_fraction"], streams)
    try:
        rows, skipped = make_candidates(model, keeps=spec["keeps"], precisions=spec["precisions"],
                                        finetune_steps=finetune_steps,
                                        train_ids=trainer.corpus.train, val_ids=trainer.corpus.val,
                                        val_text=split_texts(config)[1], typing_chars=spec["typing_chars"],
                                        folder=folder,
                                        too_big=oversized(model, spec["keeps"], spec["precisions"], spec["max_bytes"]))
    except Interrupted:
        raise
    except CompactLMError as error:   # the same on any worker: recorded, not retried
        return _failed(run, final, trainer.step, error, cpu())
    for row in rows:
        row["fits"] = budget.fits(row)
    fitting = sorted((r for r in rows if r["fits"]), key=lambda r: rank_key(r, spec["objective"]))
    best = fitting[0] if fitting else None
    if best is not None:
        stem = candidate_stem(best["keep"], best["precision"])
        for suffix in (".npz", ".onnx"):
            shutil.copyfile(folder / f"{stem}{suffix}", run / f"{stem}{suffix}")
    final.update(steps=trainer.step, val_bpc=val_bpc, history=trainer.history, candidates=rows,
                 oversized=skipped, fits=len(fitting), best=best, cpu_s=cpu())
    _write_final(run, final)
    return final


def _failed(run: Path, final: dict, step: int, error: CompactLMError, cpu_s: float, kind: str = "error") -> dict:
    """A trial that ended in a CompactLMError (`kind` "diverged", or "error": its candidates could not be made,
    ...): a final record without a model (val_bpc None) and the reason under `kind`, so Tune does not retry it."""
    run.mkdir(parents=True, exist_ok=True)
    final.update(steps=step, val_bpc=None, candidates=[], fits=0, best=None, cpu_s=cpu_s)
    final[kind] = " ".join(str(error).split())[:300]
    _write_final(run, final)
    return final


def _write_final(run: Path, final: dict) -> None:
    from compact_lm.fileio import atomic_write
    text = json.dumps(final, indent=1, allow_nan=False)
    atomic_write(run / FINAL_FILE, lambda f: f.write(text.encode()))
