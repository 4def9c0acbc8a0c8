"""`compact-lm demo`: the whole pipeline on the bundled corpus (or `--corpus`), start to finish, in a few minutes.

    train a GRU -> evaluate -> prune (keep 0.5) + fine-tune -> int8 (full and pruned)
    -> ONNX step + sequence graphs of all four -> verify each against NumPy (what `verify` checks)
    -> profile all eight runtimes side by side -> tables, plots, example completions in DIR
    -> the live demo page for the pruned int8 model in DIR/web (compact-lm web; serve it: compact-lm serve DIR/web)

DIR's `demo.json` is written first (status "running") and last (status "done", every figure), so a
folder that holds a demo, finished or not, is recognised and never overwritten without --force.
"""
from __future__ import annotations

import json
import sys
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from compact_lm.errors import CompactLMError, Interrupted, SettingError
from compact_lm.fileio import atomic_write

from .profile import ProfileConfig

MARKER = "demo.json"
TRAIN_DIR = "train"
FINETUNE_TEMPORARIES = "compact-lm-finetune-*"   # tools.prune fine-tunes in such a folder and removes it
MODELS = ("model", "model-int8", "pruned", "pruned-int8")   # file stems: .npz, .onnx (step), -seq.onnx
WEB_DIR = "web"            # the live demo's site (compact-lm web) for WEB_MODEL
WEB_MODEL = "pruned-int8"
REPORT_FILES = (MARKER, "demo.md", "verify.json", "profile.json", "profile.md", "profile.png")
# 4 minutes of training puts the whole demo at about 5 minutes on a 2-core machine, with a margin under
# 6 minutes for a busier one (the timings: docs/experiments.md, "The demo's settings").
DEFAULT_MINUTES = 4.0
DEMO_PROFILE = ProfileConfig(step_calls=1000, completions=100, keystrokes=500, turns=10, limit=2000, probe_rounds=1)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budgets of the demo; the defaults are the real demo, tests pass tiny ones."""

    corpus: tuple[str, ...] = ()       # training text files (empty: the bundled Alice, which the settings were chosen on)
    minutes: float = DEFAULT_MINUTES   # training budget (wall clock)
    steps: int | None = None           # a step budget instead of minutes (deterministic; for tests)
    embed: int = 64
    hidden: int = 256
    # 64 streams a step, not the trainer's 16: on Alice with lr 2e-2, 2 of 3 demo runs at 16 had a loss spike
    # (val bpc 6.7 at step 800) before recovering; every run at 64 was smooth (docs/experiments.md)
    batch: int = 64
    seq_len: int = 128
    eval_every: int = 100
    # Alice's training split is 133k characters: H=256 memorizes it, so the demo regularizes more than
    # the trainer's defaults (the 4-minute runs that chose this: docs/experiments.md).
    dropout: float = 0.3
    weight_drop: float = 0.3
    # (the learning rate is the trainer's default, lr 2e-2 decaying to 0: on Alice it beat the 5e-3 these
    # settings were chosen with, docs/experiments.md)
    keep: float = 0.5                  # fraction of hidden units the pruned model keeps
    finetune_fraction: float = 0.2     # fine-tuning on this fraction of the characters training read
    # BLAS threads for training. One: OpenBLAS threads wait on each other when a core is busy elsewhere,
    # which slows a shared machine down several times over (measured: docs/experiments.md); on an idle
    # 2-core machine 2 threads could gain at most 2x.
    threads: int = 1
    verify_chars: int = 2000           # characters of the test text each export is verified on
    examples: int = 4                  # example prefixes shown
    profile: ProfileConfig = DEMO_PROFILE

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", tuple(str(path) for path in self.corpus))
        if not (math.isfinite(self.minutes) and self.minutes > 0):
            raise SettingError("minutes", "{minutes} must be a positive number, got {got}", got=self.minutes)
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise CompactLMError(f"demo steps must be a whole number >= 1, got {self.steps!r}")
        if not 0 < self.keep < 1:
            raise CompactLMError(f"demo keep fraction must be in (0, 1), got {self.keep}")
        if not 0 < self.finetune_fraction <= 1:
            raise CompactLMError(f"demo fine-tuning fraction must be in (0, 1], got {self.finetune_fraction}")


def file_names() -> list[str]:
    """Every model file the demo writes at the top of DIR."""
    return [f"{stem}{suffix}" for stem in MODELS for suffix in (".npz", ".onnx", "-seq.onnx")]


def prepare_folder(out: Path, force: bool) -> None:
    """Refuse a folder with a demo in it (unless `force`, which removes the demo's own files only) or with other files."""
    if out.exists() and not out.is_dir():
        raise SettingError("out_dir", "{out_dir} {out} is a file, not a folder", out=out)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SettingError("out_dir", "{out_dir} {out} is not empty and holds no demo: choose a new or empty folder", out=out)
        if not force:
            raise SettingError("out_dir", "{out_dir} {out} already holds a demo: pass {force} to replace it, or choose another folder", out=out)
        for name in (*file_names(), *REPORT_FILES, "curves.png"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TRAIN_DIR, ignore_errors=True)
        for leftover in out.glob(FINETUNE_TEMPORARIES):   # from a demo killed while fine-tuning
            shutil.rmtree(leftover, ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingError("out_dir", "{out_dir} {out}: cannot create the folder ({reason})", out=out, reason=error.strerror or error) from None


def write_json(path: Path, data: dict) -> None:
    """Pretty JSON, written atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, ensure_ascii=False).encode()))


class Stages:
    """One progress line per stage, with the time since the demo began."""

    def __init__(self, log):
        self.log, self.began = log, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.log(f"[{self.elapsed():6.1f}s] demo: {message}")

    def elapsed(self) -> float:
        """Seconds since the demo began."""
        return time.perf_counter() - self.began


def corpus_name(config: DemoConfig) -> str:
    """The training text as the demo's lines name it."""
    if not config.corpus:
        return "the bundled corpus"
    names = [Path(path).name for path in config.corpus]
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"


def check_corpus(config: DemoConfig) -> None:
    """A one-line CompactLMError unless `config.corpus` can be read and holds a window for each of the demo's streams."""
    from compact_lm.config import TrainConfig
    from compact_lm.data import SAVE_AS_UTF8, read_corpus
    text = read_corpus(list(config.corpus), utf8_hint=SAVE_AS_UTF8)   # (demo has no --encoding-errors)
    # the training split (the first 90 %) must give each of the `batch` streams one window of seq_len characters
    need, train_share = (config.batch + 1) * config.seq_len, TrainConfig().split[0]
    need_all = math.ceil(need / train_share)
    if int(round(len(text) * train_share)) < need:
        raise CompactLMError(f"--corpus: {corpus_name(config)} has {len(text):,} characters; the demo trains "
                             f"{config.batch} streams of {config.seq_len} on the first 90 % and needs about "
                             f"{need_all:,} (compact-lm train takes smaller --batch and --seq-len)")


def train(config: DemoConfig, out: Path, progress: bool, log):
    """Train the GRU on `config.corpus` (the bundled one if empty); returns (trainer, best model with val and test
    metrics)."""
    from compact_lm.config import TrainConfig
    from compact_lm.trainer import Trainer
    budget = {"steps": config.steps} if config.steps is not None else {"minutes": config.minutes}
    train_config = TrainConfig(cell="gru", embed=config.embed, hidden=config.hidden, batch=config.batch,
                               seq_len=config.seq_len, eval_every=config.eval_every, dropout=config.dropout,
                               weight_drop=config.weight_drop, corpus=config.corpus, **budget)
    trainer = Trainer(train_config, out / TRAIN_DIR, progress=progress, log=log)
    try:
        return trainer, trainer.run().model
    except Interrupted:   # (the trainer's own message names --resume, which the demo does not take)
        raise Interrupted(f"interrupted while training, at step {trainer.step}: run the same command with --force "
                          "to start the demo over") from None


def prune(model, trainer, config: DemoConfig, out: Path, progress: bool, log):
    """Keep `config.keep` of the hidden units, then fine-tune (distilling from the full model) on a fraction of the
    characters `trainer`'s run read."""
    from .prune import CALIBRATION_CHARS, finetune_batch, finetune_budget, finetune_config, prune_model, target_sizes
    train = trainer.corpus.train
    streams = finetune_batch(config.batch, config.seq_len, len(train))
    steps = finetune_budget(trainer.step, config.batch, config.finetune_fraction, streams)
    finetune = finetune_config(model, steps, train_chars=len(train))
    sizes = target_sizes(model.config.hidden_sizes, keep=config.keep)
    return prune_model(model, sizes, finetune_steps=steps, train_config=finetune,
                       calibration_ids=train[-CALIBRATION_CHARS:], work_dir=out, progress=progress, log=log)


def export_all(models: dict, out: Path) -> None:
    """Each model as a step graph STEM.onnx and a sequence graph STEM-seq.onnx."""
    from compact_lm.export import export_model
    for stem, model in models.items():
        export_model(model, out / f"{stem}.onnx")
        export_model(model, out / f"{stem}-seq.onnx", sequence=True)


def verify(stem: str, model, out: Path, ids) -> dict:
    """Check STEM.onnx + STEM-seq.onnx against the NumPy model with `compact-lm verify`'s routine."""
    from compact_lm.opener import open_model
    from compact_lm.verify import TOLERANCE, verify_export
    step, sequence = out / f"{stem}.onnx", out / f"{stem}-seq.onnx"
    check = verify_export(model, open_model(step, sequence=sequence), ids, model_name=f"{stem}.npz",
                          exported_name=str(step))
    failures = [] if check.ok else [f"max |delta log-prob| {check.max_abs_diff:.3g} exceeds {TOLERANCE:g}"]
    return {"model": f"{stem}.npz", "onnx": step.name, "sequence": sequence.name, "chars": check.chars,
            "precision": model.precision, "ok": check.ok, "failures": failures, "max_abs_diff": check.max_abs_diff,
            "top1_agreement": min(r.top1_agreement for r in check.results),
            "check": "max |delta log-prob| (step at batch 1 and 4, sequence)",
            "details": [r.to_json() for r in check.results], "tolerance": TOLERANCE}


def write_web(out: Path, val_bpc: float, log) -> dict | None:
    """The live demo's site for the pruned int8 model (compact-lm web), or None (with a line why) if it cannot be written."""
    from compact_lm.web import serve_command, write_site
    try:
        site = write_site(out / f"{WEB_MODEL}.onnx", out / WEB_DIR, sequence=out / f"{WEB_MODEL}-seq.onnx",
                          measured={"val_bpc": val_bpc, "how": "measured by compact-lm demo on the validation split"},
                          log=log)
    except CompactLMError as error:   # the demo's models and tables stand without the page
        log(f"demo: no web page: {error}")
        return None
    return {"dir": str(out / WEB_DIR), "serve": serve_command(out / WEB_DIR), "ort": site["ort"]}


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(), *, force: bool = False,
             progress: bool = True, log=print) -> dict:
    """Run every stage into `out_dir`; returns the summary that demo.json holds."""
    from threadpoolctl import threadpool_limits
    from compact_lm.metrics import evaluate_ids
    from compact_lm.trainer import evaluated_part
    from .demo_report import demo_markdown, example_completions, results_table
    from .profile import open_variant, profile_files
    from .profile_report import write_outputs
    from .quantize import quantize_model
    out = Path(out_dir)
    if config.corpus:   # a missing, unreadable or too short text fails here, before the folder is touched
        check_corpus(config)
    prepare_folder(out, force)
    stage = Stages(log)
    summary = {"status": "running", "config": asdict(config), "out": str(out)}
    write_json(out / MARKER, summary)

    stage(f"train a GRU E={config.embed} H={config.hidden} on {corpus_name(config)} for "
          + (f"{config.steps} steps" if config.steps is not None else f"{config.minutes:g} minutes"))
    with threadpool_limits(limits=config.threads):
        trainer, model = train(config, out, progress, log)
        metrics = model.info["metrics"]
        corpus = trainer.corpus
        stage(f"evaluate: {trainer.step} steps, val {metrics['val']['bpc']:.4f} bpc, test {metrics['test']['bpc']:.4f} bpc")
        stage(f"prune to keep {config.keep:g} of the hidden units + fine-tune on "
              f"{config.finetune_fraction:.0%} of the characters training read")
        try:
            pruned = prune(model, trainer, config, out, progress, log)
        except Interrupted:   # (prune's own message asks for a plain rerun, which the demo refuses without --force)
            raise Interrupted("interrupted while fine-tuning the pruned model: run the same command with --force to "
                              "start the demo over") from None
    stage(f"pruned: hidden {list(pruned.config.hidden_sizes)}, val "
          f"{pruned.info['metrics']['val']['bpc']:.4f} bpc; quantize both to int8")
    models = {"model": model, "model-int8": quantize_model(model), "pruned": pruned, "pruned-int8": quantize_model(pruned)}
    for stem, m in models.items():
        m.save(out / f"{stem}.npz")
    stage("export ONNX step and sequence graphs (fp32 and int8)")
    export_all(models, out)
    stage(f"verify each export against NumPy on {config.verify_chars:,} test characters")
    test_ids = corpus.test[-config.verify_chars:]
    checks = [verify(stem, m, out, test_ids) for stem, m in models.items()]
    write_json(out / "verify.json", {"checks": checks})
    failed = [c for c in checks if not c["ok"]]
    if failed:
        raise CompactLMError(f"verify: {failed[0]['onnx']} does not match {failed[0]['model']}: {failed[0]['failures'][0]}")
    paths = [out / f"{stem}{suffix}" for suffix in (".npz", ".onnx") for stem in MODELS]
    # a large corpus's splits are scored on their start, as training's evaluations (evaluated_part): the whole
    # 450k-character test split of a 9 MB corpus took 8 runtimes 100 s, its validation split 90 s
    val, test = evaluated_part(corpus.val), evaluated_part(corpus.test)
    val_cut = len(val) < len(corpus.val)
    stage("validation bpc of the 8 runtimes (NumPy / onnxruntime x fp32 / int8 x full / pruned)"
          + (f" on the split's first {len(val) - 1:,} characters" if val_cut else ""))
    with threadpool_limits(limits=config.profile.threads):
        val_bpc = {path.name: evaluate_ids(open_variant(path).backend, val).bpc for path in paths}
    stage("profile the 8 runtimes side by side")
    test_text = corpus.vocab.decode(test)
    source = f"the test split of {'alice.txt' if not config.corpus else corpus_name(config)}"
    if len(test) < len(corpus.test):
        source = f"the first {len(test_text):,} characters of {source}"
    report = profile_files(paths, test_text, text_source=source, config=config.profile, log=log)
    write_outputs(report, out)
    if (out / TRAIN_DIR / "curves.png").exists():   # the training curves (written with matplotlib only)
        shutil.copyfile(out / TRAIN_DIR / "curves.png", out / "curves.png")
    stage("examples and tables")
    examples = example_completions([out / "model.onnx", out / "pruned-int8.onnx"], test_text, config.examples,
                                   k=config.profile.k, beam=config.profile.beam)
    stage(f"web page for {WEB_MODEL}.onnx in {out / WEB_DIR}")
    web = write_web(out, val_bpc[f"{WEB_MODEL}.onnx"], log)
    summary.update(status="done", elapsed_s=stage.elapsed(), train_steps=trainer.step,
                   train={"val_bpc": metrics["val"]["bpc"], "test_bpc": metrics["test"]["bpc"],
                          "chars_per_second": metrics["chars_per_second"], "elapsed_s": metrics["elapsed_s"]},
                   pruned_hidden_sizes=list(pruned.config.hidden_sizes), finetune_steps=pruned.info["pruning"][-1].get("finetune_steps", 0),
                   val_bpc=val_bpc, web=web, verify=[{k: v for k, v in c.items() if k != "details"} for c in checks],
                   results=asdict(results_table(report, val_bpc, val_chars=len(val) - 1 if val_cut else None)),
                   examples=examples, profile=report.to_json())
    atomic_write(out / "demo.md", lambda f: f.write(demo_markdown(summary, report).encode()))
    summary["files"] = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if not p.name.startswith("."))
    write_json(out / MARKER, summary)
    stage(f"done in {stage.elapsed() / 60:.1f} minutes: everything is in {out}")
    return summary


# ------------------------------------------------------------------------------- compact-lm demo
def configure_demo(p) -> None:
    """Options of `compact-lm demo`."""
    from compact_lm.cli import number, output_path, positive_int
    p.add_argument("--out", dest="out_dir", type=output_path, default="runs/demo", metavar="DIR", help="output folder (default runs/demo)")
    p.add_argument("--corpus", nargs="+", metavar="FILE", default=None,
                   help="your training text instead of the bundled Alice (split 90 / 5 / 5 as train does; the settings "
                        "were chosen on Alice's 150 KB)")
    p.add_argument("--minutes", type=number, default=None,
                   help=f"training budget in minutes (default {DEFAULT_MINUTES:g}: the whole demo in about 5 minutes)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="BLAS threads for training (default 1: more threads slow down on a busy machine)")
    p.add_argument("--force", action="store_true", help="replace the demo already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the stage lines stay)")
    p.set_defaults(run=_cmd_demo)


def _cmd_demo(args) -> int:
    from .demo_report import format_summary
    config = DemoConfig() if args.minutes is None else DemoConfig(minutes=args.minutes)
    if args.corpus:
        config = replace(config, corpus=tuple(args.corpus))
    if args.threads is not None:
        config = replace(config, threads=args.threads)
    summary = run_demo(args.out_dir, config, force=args.force, progress=not args.quiet,
                       log=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_summary(summary), end="")
    if summary.get("web"):
        print(f"\nlive demo in the browser: {summary['web']['serve']}   (then open http://127.0.0.1:8000/)")
    return 0
