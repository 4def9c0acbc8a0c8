"""The NumPy trainer: stateful truncated BPTT over B streams, AdamW, checkpoints, exact resume.

Files in the output folder:
  model.npz      the best model so far by validation bpc (what you ship)
  state.npz      the full training state: current weights, optimizer moments, carried hidden
                 state, RNG state, data position, step, history (what --resume reads)
  history.json / history.csv   one row per evaluation;  curves.png with the plot extra
Every file is written atomically, so an interruption at any moment leaves the last good ones.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .data import REPLACE_HINT, StreamBatcher, read_corpus, split_ids
from .errors import Interrupted, SettingError, TrainingDiverged
from .fileio import atomic_write, load_npz, png_bytes, save_npz
from .lexicon import Lexicon
from .model import Model
from .network import head_log_probs, init_params, loss_and_grads, run_hidden, zero_state
from .optim import SGD, AdamW, FlatParams, clip_global_norm, lr_at
from .vocab import Vocab, normalize

STATE_KIND = "compact-lm-train-state"
STATE_FORMAT_VERSION = 1
MODEL_FILE, STATE_FILE = "model.npz", "state.npz"
RUN_FILES = (MODEL_FILE, STATE_FILE, "history.json", "history.csv", "curves.png")   # what a run writes in its folder
# memorizing_note: (evaluations in a row, bpc above the best validation bpc, validation minus training bpc at the
# last). Slow: 5 evaluations 0.05 above (a run that generalizes wanders up to ~0.15 between two evaluations, not for
# long; 3 or 4 evaluations fired on a tinyshakespeare run at batch 8). Steep, for short runs with few evaluations: 2
# evaluations 0.15 above with validation 0.5 over training (Alice at the trainer's defaults: val 1.98 -> 2.17 -> 2.26,
# train 0.81). Neither fires on 20 other runs' histories (docs/experiments.md, "The memorizing note").
# The evaluations during training score at most this many characters of the validation split (its start): on a 9 MB
# corpus the whole split (900k characters) took ~10 s an evaluation, a fifth of the time between two; 256k characters
# tell checkpoints apart to ~0.001 bpc. The best model's val figures are then taken on the whole split (finish).
EVAL_CHARS = 1 << 18


def evaluated_part(sequence):
    """The start of a split or text that an evaluation scores: its first character (context) and EVAL_CHARS more."""
    return sequence[:EVAL_CHARS + 1]
MEMORIZING_RULES = ((5, 0.05, 0.0), (2, 0.15, 0.5))


@dataclass
class Corpus:
    """The encoded splits and the vocabulary built from the training split."""

    vocab: Vocab
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    digest: str          # sha256 of the encoded ids: a resumed run must see the same data


def prepare_corpus(config: TrainConfig, vocab: Vocab | None = None, *, utf8_hint: str = REPLACE_HINT) -> Corpus:
    """Read, normalize, split by fraction, build the vocabulary from the training split, encode."""
    raw = read_corpus(list(config.corpus), encoding_errors=config.encoding_errors, utf8_hint=utf8_hint)
    text = normalize(raw, nfc=config.nfc, lowercase=config.lowercase)
    n_train = int(round(len(text) * config.split[0]))
    if vocab is None:
        vocab = Vocab.build(text[:n_train], min_count=config.min_count, nfc=config.nfc, lowercase=config.lowercase)
        if vocab.size < 2:   # <unk> alone: nothing to learn, and every later use of the model would fail
            raise SettingError("min_count", "{min_count} {got}: no character of the training split occurs that "
                               "often (the vocabulary would hold <unk> alone)", got=config.min_count)
    ids = vocab.encode(text, normalized=True)
    del text
    train, val, test = split_ids(ids, config.split)
    digest = hashlib.sha256(ids.tobytes()).hexdigest()
    return Corpus(vocab, train, val, test, digest)


@dataclass
class TrainResult:
    """What `train` returns."""

    model: Model                 # the best model by validation bpc, with test metrics
    history: list[dict]
    out_dir: Path


def _decay_names(names) -> set[str]:
    """Weight decay applies to matrices (embedding, W_ih, W_hh, head), not to biases."""
    return {n for n in names if n.endswith("weight") or "weight_" in n}


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:      # not the main thread: no handler, Ctrl-C behaves as usual
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _refuse_a_file(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SettingError("out_dir", "{out_dir} {path} is a file, not a folder", path=out_dir)


def _check_writable(out_dir: Path) -> bool:
    """Create `out_dir` if needed (True: it was created now); a one-line SettingError if it cannot be written."""
    created = not out_dir.exists()
    _refuse_a_file(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingError("out_dir", "{out_dir} {path}: cannot create the folder ({reason})", path=out_dir, reason=error.strerror or error) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SettingError("out_dir", "{out_dir} {path}: the folder is not writable", path=out_dir)
    return created


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files that a killed process left mid-write (atomic_write's `.NAME.*.tmp`)."""
    for name in RUN_FILES:
        for leftover in folder.glob(f".{name}.*.tmp"):
            try:
                leftover.unlink()
            except OSError:
                pass


def saved_train_config(out_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig of the run saved in out_dir (what resuming it continues)."""
    state_path = Path(out_dir) / STATE_FILE
    _refuse_a_file(Path(out_dir))
    if not state_path.exists():
        raise SettingError("resume", "{state_path} does not exist (nothing to resume)", state_path=state_path)
    try:
        return TrainConfig.from_json(load_npz(state_path, "training state")[1]["train_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise SettingError("resume", "{state_path} is not a compact-lm training state ({error})", state_path=state_path, error=error) from None


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """Names of the settings in which two configs differ."""
    a, b = saved.to_json(), given.to_json()
    return [k for k in a if a[k] != b.get(k)]


class Trainer:
    """One training run; `run()` trains until the budget is spent, checkpointing at every evaluation."""

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True, log=None, init_model: Model | None = None, teacher: Model | None = None):
        """`init_model` (or the file `config.init`) gives the starting weights, sizes and vocabulary;
        `teacher` (or `config.teacher`) is distilled from with weight `config.distill`."""
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.log = log or (lambda message: print(message, file=sys.stderr))
        state_path = self.out_dir / STATE_FILE
        saved = None
        if resume:
            _refuse_a_file(self.out_dir)
            if not state_path.exists():
                raise SettingError("resume", "{state_path} does not exist (nothing to resume)", state_path=state_path)
            saved = load_npz(state_path, "training state")
            saved_meta = saved[1]
            if saved_meta.get("kind") != STATE_KIND or saved_meta.get("format_version") != STATE_FORMAT_VERSION:
                raise SettingError("resume", "{state_path} is not a compact-lm training state of this version", state_path=state_path)
            saved_config = TrainConfig.from_json(saved_meta["train_config"])
            differs = config_differences(saved_config, config)
            if differs:
                details = ", ".join(f"{k}: saved {saved_config.to_json()[k]!r} vs given {config.to_json()[k]!r}"
                                    for k in differs)
                raise SettingError("resume", "the config does not match the saved run ({details})", details=details)
        elif state_path.exists():
            raise SettingError("out_dir", "{out_dir} {path} already holds a run; pass {resume} to continue it "
                                          "or choose another folder", path=self.out_dir)
        else:   # a folder with a run's files but no run (a copied model, say): they would be overwritten
            found = [name for name in RUN_FILES if (self.out_dir / name).exists()]
            if found:
                raise SettingError("out_dir", "{out_dir} {path} holds {name} but no run to resume: choose another "
                                              "folder (nothing is overwritten)", path=self.out_dir, name=found[0])

        if init_model is None and config.init:
            from .opener import open_model
            init_model = open_model(config.init)
        if init_model is not None:
            init_model = init_model.as_float(SettingError("init", "{init} {path}: an int8 model cannot be trained; start from the float model", path=config.init))
        if teacher is None and config.teacher:
            from .opener import open_model
            teacher = open_model(config.teacher)
        if teacher is not None:
            teacher = teacher.as_float(SettingError("teacher", "an int8 model cannot teach; use the float model"))
        if config.distill > 0 and teacher is None:
            raise SettingError("distill", "{distill} needs {teacher} MODEL")
        vocab = Vocab.from_json(saved[1]) if saved else init_model.vocab if init_model else None
        self.corpus = prepare_corpus(config, vocab)
        if saved and saved[1].get("data_sha256") != self.corpus.digest:
            raise SettingError("resume", "the corpus differs from the one the run started on")
        if teacher is not None and teacher.vocab != self.corpus.vocab:
            raise SettingError("teacher", "the teacher's vocabulary differs from the model's")
        self.teacher = teacher if config.distill > 0 else None
        self.batcher = StreamBatcher(self.corpus.train, config.batch, config.seq_len)
        # the words of the training split, which every saved model carries for word completion (lexicon.py)
        lexicon = Lexicon.from_text(self.corpus.vocab.decode(self.corpus.train))
        self._lexicon = lexicon.to_json() if lexicon.fits() else None
        if self._lexicon is None:
            self.log(f"note: the training split has {len(lexicon):,} distinct words, more than a lexicon holds: "
                     "the model carries none (completion uses the model alone)")
        # only now, once the settings, files and corpus are known good: a refused run leaves no empty folder
        self._created_out_dir = _check_writable(self.out_dir)
        if len(self.corpus.val) < 2:
            self.log("note: the validation split is empty; model.npz will hold the latest weights")
        self.dtype = np.dtype(config.dtype)
        self.rng = np.random.default_rng(config.seed)
        if init_model is not None:
            self.model_config = init_model.config
            params = {n: np.array(v, dtype=self.dtype) for n, v in init_model.params.items()}
        else:
            self.model_config = config.model_config(self.corpus.vocab.size)
            params = init_params(self.model_config, self.rng, self.dtype, config.init_scale)
        self.flat = FlatParams(params, _decay_names(params))
        if config.optimizer == "adamw":
            self.optimizer = AdamW(self.flat, beta1=config.beta1, beta2=config.beta2, weight_decay=config.weight_decay)
        else:
            self.optimizer = SGD(self.flat, momentum=config.momentum, weight_decay=config.weight_decay)
        self.step = 0
        self.elapsed = 0.0          # the budget's clock: training steps and evaluations
        self.train_seconds = 0.0    # training steps alone: what the speed is measured on
        self.decay_start_s: float | None = None   # elapsed seconds when the warm-up ended (None: not yet)
        self.chars_seen = 0
        self.history: list[dict] = []
        self.best_val = math.inf
        self.carry = zero_state(self.model_config, config.batch, self.dtype)
        self.teacher_carry = zero_state(self.teacher.config, config.batch, self.dtype) if self.teacher else []
        self._loss_sum, self._loss_count = 0.0, 0
        self.best: Model | None = None          # the best model so far by validation bpc
        if saved:
            remove_stale_temporaries(self.out_dir)
            self._restore(*saved)
            if self.best is not None:           # model.npz may predate the state if a kill fell between
                self.best.save(self.out_dir / MODEL_FILE)
        else:
            self.batcher.start_epoch(self.rng)

    # ------------------------------------------------------------------ budget and schedule
    def total_steps(self) -> int | None:
        """Steps the run will take, when the budget is in steps or epochs."""
        c = self.config
        if c.steps is not None:
            return c.steps
        if c.epochs is not None:
            return max(1, int(round(c.epochs * self.batcher.windows_for(0))))
        return None

    def progress_fraction(self) -> float:
        """How far the cosine decay is, 0 -> 1: counted from the end of the warm-up, not from step 0,
        so the decay starts at the peak lr. Steps (or epochs): (step - warmup) / (total - warmup).
        Minutes: seconds since the warm-up ended / the seconds of the budget left at that moment
        (`decay_start_s`, the elapsed time when the first post-warm-up step began, saved with the state)."""
        warmup = self.config.warmup_steps
        total = self.total_steps()
        if total is not None:
            return (self.step - warmup) / max(total - warmup, 1)
        budget = self.config.minutes * 60.0
        start = self.decay_start_s if self.decay_start_s is not None else 0.0
        if budget - start <= 0.0:
            return 1.0
        return (self.elapsed - start) / (budget - start)

    def done(self) -> bool:
        """Whether the budget is spent."""
        total = self.total_steps()
        if total is not None:
            return self.step >= total
        return self.elapsed >= self.config.minutes * 60.0

    # ------------------------------------------------------------------ one step
    def train_step(self) -> float:
        """One window: forward, BPTT, clip, update. Returns the window's plain NLL in nats."""
        # a diverging run overflows on its way to inf or NaN: the checks below say so in one line, without
        # numpy's warnings in front of it
        with np.errstate(over="ignore", invalid="ignore"):
            return self._train_step()

    def _train_step(self) -> float:
        c = self.config
        if self.batcher.epoch_done:
            self.batcher.epoch += 1
            self.batcher.start_epoch(self.rng)
            self.carry = zero_state(self.model_config, c.batch, self.dtype)
            if self.teacher:
                self.teacher_carry = zero_state(self.teacher.config, c.batch, self.dtype)
        inputs, targets = self.batcher.next_window()
        teacher_probs = None
        if self.teacher:
            hidden, self.teacher_carry = run_hidden(self.teacher.params, self.teacher.config, inputs,
                                                    self.teacher_carry, self.teacher.table())
            teacher_probs = np.exp(head_log_probs(self.teacher.params, hidden.reshape(-1, hidden.shape[-1])))
        result = loss_and_grads(self.flat.views, self.model_config, inputs, targets, self.carry,
                                dropout=c.dropout, weight_drop=c.weight_drop, label_smoothing=c.label_smoothing,
                                rng=self.rng, teacher_probs=teacher_probs, distill=c.distill)
        if not math.isfinite(result.loss):
            raise TrainingDiverged(f"training diverged at step {self.step + 1}: the loss is {result.loss}")
        self.flat.set_grads(result.grads)
        norm = clip_global_norm(self.flat.grad, c.clip)
        if not math.isfinite(norm):
            raise TrainingDiverged(f"training diverged at step {self.step + 1}: the gradient norm is {norm}")
        if self.step == c.warmup_steps and self.decay_start_s is None:
            self.decay_start_s = self.elapsed     # the cosine's clock starts here (minute budgets)
        lr = lr_at(self.progress_fraction(), self.step, lr=c.lr, warmup_steps=c.warmup_steps,
                   min_lr_ratio=c.min_lr_ratio)
        self.optimizer.step(lr)
        self.carry = result.state
        self.step += 1
        self.chars_seen += inputs.size
        self._loss_sum += result.nll
        self._loss_count += 1
        self.last_lr = lr
        return result.nll

    # ------------------------------------------------------------------ evaluation and files
    def current_model(self) -> Model:
        """The current weights as a Model (copies)."""
        params = {n: np.array(v, copy=True) for n, v in self.flat.views.items()}
        return Model(self.model_config, self.corpus.vocab, params, self._model_info())

    def _model_info(self, metrics: dict | None = None) -> dict:
        return {"steps": self.step, "train_config": self.config.to_json(),
                "metrics": metrics or {}, "chars_seen": self.chars_seen,
                **({"lexicon": self._lexicon} if self._lexicon is not None else {})}

    def evaluate(self) -> dict:
        """Validation metrics of the current weights; checkpoint; returns the history row."""
        model = self.current_model()
        row = {"step": self.step, "epoch": self.batcher.epoch, "chars": self.chars_seen,
               "lr": getattr(self, "last_lr", 0.0), "elapsed_s": round(self.elapsed, 3),
               "train_nats": self._loss_sum / max(self._loss_count, 1)}
        row["train_bpc"] = row["train_nats"] / math.log(2)
        self._loss_sum, self._loss_count = 0.0, 0
        if len(self.corpus.val) >= 2:
            val = model.evaluate_ids(evaluated_part(self.corpus.val))
            row.update(val_nats=val.nats, val_bpc=val.bpc, val_perplexity=val.to_json()["perplexity"])
            improved = val.bpc < self.best_val
        else:
            improved = True
        self.history.append(row)
        if improved:
            self.best_val = row.get("val_bpc", math.inf)
            model.info["metrics"] = {"val": {k[4:]: v for k, v in row.items() if k.startswith("val_")},
                                     "train_nats": row["train_nats"]}
            self.best = model
        # state.npz first: it holds the best weights too, so a kill between the two writes loses
        # nothing (resume rewrites model.npz from it)
        self.save_state()
        if improved:
            model.save(self.out_dir / MODEL_FILE)
        self.write_history()
        return row

    def save_state(self) -> None:
        """Write everything a bit-exact resume needs."""
        arrays = {f"param.{n}": v for n, v in self.flat.views.items()}
        if self.best is not None:
            arrays.update({f"best.{n}": v for n, v in self.best.params.items()})
        arrays.update(self.optimizer.state_arrays())
        for prefix, carry in (("carry", self.carry), ("teacher", self.teacher_carry)):
            for k, layer in enumerate(carry):
                for s, value in enumerate(layer):
                    arrays[f"{prefix}.l{k}.s{s}"] = value
        meta = {"kind": STATE_KIND, "format_version": STATE_FORMAT_VERSION, "train_config": self.config.to_json(),
                "step": self.step, "optimizer_t": self.optimizer.t, "elapsed": self.elapsed,
                "train_seconds": self.train_seconds,
                "decay_start_s": self.decay_start_s,
                "chars_seen": self.chars_seen, "best_val": None if math.isinf(self.best_val) else self.best_val,
                "rng": self.rng.bit_generator.state, "data": self.batcher.position(), "history": self.history,
                "data_sha256": self.corpus.digest, "loss_sum": self._loss_sum, "loss_count": self._loss_count,
                "last_lr": getattr(self, "last_lr", 0.0),
                # (its lexicon is the run's, rebuilt on resume: not stored twice)
                "best_info": {k: v for k, v in self.best.info.items() if k != "lexicon"} if self.best is not None else None}
        meta.update(self.corpus.vocab.to_json())
        save_npz(self.out_dir / STATE_FILE, arrays, meta)

    def _restore(self, arrays: dict, meta: dict) -> None:
        try:
            for name in self.flat.names:
                self.flat.views[name][...] = arrays[f"param.{name}"]
            self.optimizer.load_state(arrays, int(meta["optimizer_t"]))
            self.carry = [tuple(arrays[f"carry.l{k}.s{s}"].copy() for s in range(len(layer)))
                          for k, layer in enumerate(self.carry)]
            self.teacher_carry = [tuple(arrays[f"teacher.l{k}.s{s}"].copy() for s in range(len(layer)))
                                  for k, layer in enumerate(self.teacher_carry)]
            self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])
            self.train_seconds = float(meta.get("train_seconds", self.elapsed))   # (older states: the budget's clock)
            # a state saved before this key existed: its minute-budget cosine ran from 0 s, keep it so
            decay_start = meta.get("decay_start_s", 0.0 if self.step > self.config.warmup_steps else None)
            self.decay_start_s = None if decay_start is None else float(decay_start)
            self.chars_seen = int(meta["chars_seen"])
            self.best_val = math.inf if meta["best_val"] is None else float(meta["best_val"])
            self.rng.bit_generator.state = meta["rng"]
            self.batcher.restore(meta["data"])
            self.history = list(meta["history"])
            self._loss_sum, self._loss_count = float(meta["loss_sum"]), int(meta["loss_count"])
            self.last_lr = float(meta["last_lr"])
            if meta.get("best_info") is not None:
                best = {name: arrays[f"best.{name}"] for name in self.flat.names}
                # the run's lexicon (not in the state; a state saved before models carried one gets it too)
                info = {k: v for k, v in meta["best_info"].items() if k != "lexicon"}
                if self._lexicon is not None:
                    info["lexicon"] = self._lexicon
                self.best = Model(self.model_config, self.corpus.vocab, best, info)
        except (KeyError, ValueError, TypeError) as error:
            raise SettingError("resume", "{path} is damaged ({error})", path=self.out_dir / STATE_FILE, error=error) from None

    def write_history(self) -> None:
        """history.json, history.csv and (with matplotlib) curves.png."""
        atomic_write(self.out_dir / "history.json",
                     lambda f: f.write(json.dumps(self.history, indent=1).encode()))
        if self.history:
            keys = list(dict.fromkeys(k for row in self.history for k in row))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
            atomic_write(self.out_dir / "history.csv", lambda f: f.write(buffer.getvalue().encode()))
        _plot_history(self.history, self.out_dir / "curves.png")

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        """Train until the budget is spent; evaluate on test with the best weights; return them."""
        c = self.config
        bar = _progress_bar(self.total_steps(), self.step, self.progress)
        # without a terminal there is no bar (a log file would get a line per update): a line per evaluation
        lines = self.progress and (bar is None or bar.disable)
        last_row = self.history[-1] if self.history else {}
        noted = False   # memorizing_note is given once per run
        try:
            with _StopFlag() as stop:
                while not self.done():
                    started = time.perf_counter()
                    nll = self.train_step()
                    spent = time.perf_counter() - started
                    self.elapsed += spent
                    self.train_seconds += spent
                    evaluate_now = self.step % c.eval_every == 0 or self.done()
                    if evaluate_now:
                        started = time.perf_counter()
                        last_row = self.evaluate()
                        self.elapsed += time.perf_counter() - started
                        if lines:
                            self.log(_progress_line(last_row, self.total_steps(), self.speed()))
                        note = None if noted else memorizing_note(self.history)
                        if note is not None:
                            noted = True
                            if bar is not None and not bar.disable:
                                bar.write(note, file=sys.stderr)
                            else:
                                self.log(note)
                    if bar is not None:
                        bar.update(1)
                        val_bpc = last_row.get("val_bpc")
                        bar.set_postfix(loss=f"{nll / math.log(2):.3f}bpc",
                                        val="-" if val_bpc is None else f"{val_bpc:.3f}",
                                        cps=f"{self.speed():,.0f}", refresh=False)
                    if stop.requested:
                        self.save_state()
                        raise Interrupted(f"interrupted at step {self.step}; state saved in {self.out_dir / STATE_FILE}; "
                                          "run the same command with --resume to continue")
        except TrainingDiverged:
            # diverged before its first checkpoint: the folder this run made holds nothing, and goes
            if self._created_out_dir and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()
            raise
        finally:
            if bar is not None:
                bar.close()
        return self.finish()

    def speed(self) -> float:
        """Characters per second of training steps (evaluations and checkpoints not counted)."""
        return self.chars_seen / max(self.train_seconds, 1e-9)

    def finish(self) -> TrainResult:
        """Score the best model on the test split and save it with every metric."""
        best = self.best if self.best is not None else self.current_model()
        metrics = dict(best.info.get("metrics", {}))
        if len(evaluated_part(self.corpus.val)) < len(self.corpus.val):   # chosen on its start: figures on the whole
            metrics["val"] = best.evaluate_ids(self.corpus.val).to_json()
        if len(self.corpus.test) >= 2:
            metrics["test"] = best.evaluate_ids(self.corpus.test).to_json()
        metrics["elapsed_s"] = self.elapsed
        metrics["train_s"] = self.train_seconds
        metrics["chars_per_second"] = self.speed()
        best.info["metrics"] = metrics
        best.save(self.out_dir / MODEL_FILE)
        return TrainResult(best, self.history, self.out_dir)


def memorizing_note(history: list[dict], rules=MEMORIZING_RULES) -> str | None:
    """A one-line note when, for some rule (n, margin, gap) of `rules`, the last n validation bpc all stayed `margin`
    above the best one, which came before them, the last one `gap` above its training bpc, and the training bpc fell
    since the best: the model is learning its training text by heart. Else None."""
    scored = [row for row in history if "val_bpc" in row]
    if not scored:
        return None
    best, last = min(scored, key=lambda row: row["val_bpc"]), scored[-1]
    if last["train_bpc"] >= best["train_bpc"]:   # training got no better either: not memorizing
        return None
    for evaluations, margin, gap in rules:
        recent = scored[-evaluations:]
        if (len(scored) > evaluations and last["val_bpc"] - last["train_bpc"] > gap
                and all(row is not best and row["val_bpc"] > best["val_bpc"] + margin for row in recent)):
            since = len(scored) - 1 - scored.index(best)
            return (f"note: validation bpc has stayed above its best ({best['val_bpc']:.3f} at step {best['step']}) for "
                    f"{since} evaluations, now {last['val_bpc']:.3f}, while training bpc fell from "
                    f"{best['train_bpc']:.3f} to {last['train_bpc']:.3f}: the model is learning its training text by "
                    f"heart. {MODEL_FILE} keeps the best weights; more --dropout or --weight-drop, a smaller --hidden or "
                    f"more text would generalize better")
    return None


def _progress_line(row: dict, total: int | None, chars_per_second: float) -> str:
    """One evaluation's figures, as a line for logs: step, train and val bpc, speed."""
    val = row.get("val_bpc")
    return (f"step {row['step']}{'' if total is None else f'/{total}'}: train {row['train_bpc']:.4f} bpc, "
            f"val {'-' if val is None else f'{val:.4f}'} bpc, {chars_per_second:,.0f} chars/s, "
            f"{row['elapsed_s']:.1f} s")


def _progress_bar(total: int | None, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # disable=None: no bar when stderr is not a terminal (a log file would get one line per update)
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr, disable=None)


def _plot_history(history: list[dict], path: Path) -> None:
    """Train and validation bpc against characters seen, if matplotlib is installed."""
    if not history:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    chars = [row["chars"] for row in history]
    axes.plot(chars, [row["train_bpc"] for row in history], label="train (running)")
    if "val_bpc" in history[0]:
        axes.plot(chars, [row["val_bpc"] for row in history], label="validation")
    axes.set_xlabel("characters seen")
    axes.set_ylabel("bits per character")
    axes.legend()
    axes.grid(alpha=0.3)
    image = png_bytes(figure)
    atomic_write(path, lambda f: f.write(image))
