"""`compact-lm search`: which model to ship under a byte budget (and a keystroke latency budget), found by
training many small models on Ray Tune and measuring each one's shipped candidates.

    SearchConfig -> plan_trials: `trials` architectures drawn from the SearchSpace with the seed, each a
    TrainConfig; the corpus, the splits and the byte budget checked before anything starts
    -> search_ray.run_tuner: one Tune trial per architecture (search_trial.run_trial), as many at once as
    the cluster has CPUs, ASHA stopping poor ones on their val bpc
    -> search_report: every trial's candidates, the best fitting one as DIR/best.npz + DIR/best.onnx,
    scored once on the test split; search.md, search.json, search.png.

`search(config, out_dir)` is the Python API; DIR/search.json holds the config, so `--resume` needs only DIR.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from compact_lm.config import TrainConfig
from compact_lm.errors import CompactLMError, SettingError
from compact_lm.fileio import atomic_write

from .search_candidates import OBJECTIVES
from .search_space import SearchSpace, describe

MARKER = "search.json"
MARKER_FORMAT = "compact-lm-search"
FORMAT_VERSION = 2   # 2: architectures that cannot fit are passed over in the draw; resume reads attempts
DEFAULT_MINUTES = 5.0
SCHEDULERS = ("asha", "none")
TEXT_FILES = ("validation.txt", "test.txt")


@dataclass(frozen=True)
class SearchConfig:
    """Everything that decides a search's results; saved in DIR/search.json. Where it runs (local Ray or a
    cluster's address, CPUs, storage) is not part of it: the same config gives the same trials anywhere."""

    max_bytes: int                        # the shipped .onnx step graph may take at most this many bytes
    max_keystroke_ms: float | None = None # ... and its keystroke p50 at most this (None: no latency limit)
    corpus: tuple[str, ...] = ()          # empty: the bundled corpus
    trials: int = 20
    minutes_per_trial: float | None = None   # the training budget of each trial (default DEFAULT_MINUTES)...
    steps_per_trial: int | None = None       # ... or in steps (deterministic)
    objective: str = "savings"            # savings (keystroke savings, higher is better) or bpc (val bpc, lower)
    scheduler: str = "asha"               # asha (stop poor trials early) or none (every trial runs its budget)
    space: SearchSpace = field(default_factory=SearchSpace)
    eval_every: int = 200                 # trainer steps between evaluations (= reports to Tune + checkpoints)
    typing_chars: int = 2000              # characters of the validation split typed to measure each candidate
    finetune_fraction: float = 0.2        # a pruned candidate fine-tunes on this fraction of the characters its training read
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.space, dict):
            object.__setattr__(self, "space", SearchSpace.from_json(self.space))
        # absolute: trials run in Tune's trial folders, maybe on other machines with the same files
        object.__setattr__(self, "corpus", tuple(str(Path(c).resolve()) for c in self.corpus))
        if self.minutes_per_trial is None and self.steps_per_trial is None:
            object.__setattr__(self, "minutes_per_trial", DEFAULT_MINUTES)
        self.validate()

    def validate(self) -> None:
        """One-line error naming the first nonsensical setting."""
        def whole(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SettingError(name, "must be a whole number >= {minimum} (got {got!r})", minimum=minimum, got=value)

        for name in ("max_bytes", "trials", "eval_every", "typing_chars"):
            whole(name, 1)
        whole("seed", 0)
        if self.minutes_per_trial is not None and self.steps_per_trial is not None:
            raise SettingError("minutes_per_trial", "give {minutes_per_trial} or {steps_per_trial}, not both")
        if self.steps_per_trial is not None:
            whole("steps_per_trial", 1)
        for name in ("minutes_per_trial", "max_keystroke_ms"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SettingError(name, "must be a positive number (got {got!r})", got=value)
        if not (isinstance(self.finetune_fraction, (int, float)) and 0.0 <= self.finetune_fraction <= 1.0):
            raise SettingError("finetune_fraction", "must be between 0 and 1 (got {got!r})", got=self.finetune_fraction)
        if self.objective not in OBJECTIVES:
            raise SettingError("objective", "choose savings or bpc (got {got!r})", got=self.objective)
        if self.scheduler not in SCHEDULERS:
            raise SettingError("scheduler", "choose asha or none (got {got!r})", got=self.scheduler)

    def budget(self) -> dict:
        """The training budget of each trial, as TrainConfig settings."""
        if self.steps_per_trial is not None:
            return {"steps": self.steps_per_trial}
        return {"minutes": float(self.minutes_per_trial)}

    def to_json(self) -> dict:
        """Plain JSON fields."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(corpus=list(self.corpus), space=self.space.to_json())
        return out

    @classmethod
    def from_json(cls, data: dict) -> "SearchConfig":
        """Rebuild from JSON, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["corpus"] = tuple(kwargs.get("corpus", ()))
        return cls(**kwargs)


@dataclass
class Plan:
    """The trials of a search and the data they are measured on."""

    specs: list[dict]        # one JSON object per trial: what search_trial.run_trial gets
    corpus: object           # trainer.Corpus: vocabulary and the id splits
    texts: tuple[str, str, str]   # training, validation, test text (normalized)


SEARCH_BATCH = 64   # streams per trial unless the space's fixed settings say otherwise


def trial_config(config: SearchConfig, architecture: dict) -> TrainConfig:
    """The TrainConfig of one trial: the space's fixed settings, the architecture, the budget and the seed."""
    # 64 streams unless the space fixes another batch: the search's reports every eval_every steps (ASHA's rungs)
    # and its figures (docs/search.md) were measured there; the trainer's default, 16, is a 10-minute run's
    settings = {"batch": SEARCH_BATCH, **config.space.fixed, **architecture, "corpus": config.corpus, "seed": config.seed,
                "eval_every": config.eval_every, **config.budget()}
    if "split" in settings:
        if not isinstance(settings["split"], (list, tuple)):
            raise CompactLMError(f"the search space's fixed settings: split must be a list of the train, val and test "
                                 f"fractions, got {settings['split']!r}")
        settings["split"] = tuple(settings["split"])
    try:
        return TrainConfig(**settings)
    except SettingError as error:
        raise CompactLMError(f"the search space's fixed settings: {error}") from None
    except TypeError as error:
        raise CompactLMError(f"the search space's fixed settings: {error}") from None


def plan_trials(config: SearchConfig, *, crash_after: dict | None = None) -> Plan:
    """Draw the trials and check everything that can be checked before training: the corpus is long enough
    (a window per stream, a word to complete in the validation and test splits) and some candidate can fit
    the byte budget. `crash_after` (tests only): {trial index: step after which its worker dies once}."""
    from compact_lm.autocomplete import default_is_boundary
    from compact_lm.complete_eval import word_spans
    from compact_lm.data import SAVE_AS_UTF8, StreamBatcher
    from compact_lm.lexicon import Lexicon
    from compact_lm.trainer import prepare_corpus
    from .search_estimate import can_fit, check_byte_budget
    from .search_trial import split_texts
    # the corpus, its vocabulary and the splits do not depend on the architecture
    first = trial_config(config, config.space.architectures()[0])
    corpus = prepare_corpus(first, utf8_hint=SAVE_AS_UTF8)   # (search has no --encoding-errors)
    try:
        StreamBatcher(corpus.train, first.batch, first.seq_len)
    except CompactLMError:
        need = (first.batch + 1) * first.seq_len
        raise CompactLMError(f"the corpus is too short: its training split has {len(corpus.train):,} characters, "
                             f"fewer than one window per stream (batch {first.batch} x seq_len {first.seq_len} needs "
                             f"{need:,}); use a longer corpus or smaller batch and seq_len in the space's fixed settings") from None
    texts = split_texts(first)
    for name, text in (("validation", texts[1]), ("test", texts[2])):
        if not word_spans(text, default_is_boundary):
            raise CompactLMError(f"the corpus is too short: its {name} split ({len(text):,} characters) holds no "
                                 "complete word to type; use a longer corpus")
    if not word_spans(texts[1][:config.typing_chars], default_is_boundary):
        raise SettingError("typing_chars", "{typing_chars} {value}: the first {value} characters of the validation "
                           "split hold no complete word to type; type more characters", value=config.typing_chars)
    lexicon = Lexicon.from_text(corpus.vocab.decode(corpus.train)).to_json()   # what every trained model carries
    check_byte_budget(config, [first], corpus.vocab, lexicon)
    # an architecture none of whose candidates can fit is passed over: it would only spend a trial
    shapes: dict[tuple, bool] = {}   # dropout does not change a file's bytes

    def fits(architecture: dict) -> bool:
        shape = tuple(architecture[k] for k in ("cell", "layers", "embed", "hidden"))
        if shape not in shapes:
            shapes[shape] = can_fit(config, trial_config(config, architecture), corpus.vocab, lexicon)
        return shapes[shape]
    architectures = config.space.sample(config.trials, config.seed, accept=fits)
    configs = [trial_config(config, a) for a in architectures]
    common = {"keeps": list(config.space.keeps), "precisions": list(config.space.precisions),
              "max_bytes": config.max_bytes, "max_keystroke_ms": config.max_keystroke_ms, "objective": config.objective,
              "typing_chars": config.typing_chars, "finetune_fraction": config.finetune_fraction,
              "corpus_sha256": corpus.digest}
    specs = []
    for index, (architecture, train_config) in enumerate(zip(architectures, configs), 1):
        spec = {"index": index, "label": describe(architecture), "architecture": architecture,
                "train_config": train_config.to_json(), **common}
        if crash_after and index in crash_after:
            spec["crash_after_step"] = crash_after[index]
        specs.append(spec)
    return Plan(specs, corpus, texts)


# --------------------------------------------------------------------------------- the output folder
def read_marker(out: Path) -> dict:
    """DIR/search.json of an earlier search (one-line errors if there is none)."""
    path = out / MARKER
    if not path.exists():
        raise SettingError("resume", "{out} holds no search to resume ({marker} is missing)", out=out, marker=MARKER)
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompactLMError(f"{path} is damaged: {error}") from None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        raise CompactLMError(f"{path} is not a compact-lm search file")
    if marker.get("version") != FORMAT_VERSION:
        raise CompactLMError(f"{path} is of search format version {marker.get('version')!r}; this compact-lm reads {FORMAT_VERSION}")
    return marker


def check_new_folder(out: Path) -> None:
    """A new search goes into a new or empty folder; one with a search in it needs --resume."""
    if out.exists() and not out.is_dir():
        raise SettingError("out_dir", "{out_dir} {out} is a file, not a folder", out=out)
    if (out / MARKER).exists():
        raise SettingError("out_dir", "{out_dir} {out} already holds a search; pass {resume} to continue it, "
                                      "or choose another folder", out=out)
    if out.exists() and any(out.iterdir()):
        raise SettingError("out_dir", "{out_dir} {out} is not empty: choose a new or empty folder", out=out)


def resume_config(out: Path, given: dict | None = None) -> SearchConfig:
    """The config saved in DIR; settings in `given` (field -> value, space fields under "space") must match it."""
    saved = SearchConfig.from_json(read_marker(out)["config"])
    for name, value in (given or {}).items():
        if name == "space":
            for key, choice in value.items():
                have = saved.space.to_json()[key]
                if list(choice) != have and choice != have:
                    raise SettingError(key, "{" + key + "} differs from the search being resumed ({have} there); "
                                       "leave it out", have=have)
            continue
        have = getattr(saved, name)
        if name == "corpus":
            value = tuple(str(Path(c).resolve()) for c in value)
        if value != have:
            raise SettingError(name, "{" + name + "} differs from the search being resumed ({have!r} there); leave it "
                               "out", have=have)
    return saved


def write_json(path: Path, data: dict) -> None:
    """Pretty JSON, written atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False).encode()))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def search(config: SearchConfig | None, out_dir: str | Path, *, resume: bool = False, address: str | None = None,
           cpus: int | None = None, storage: str | None = None, connect_timeout: float | None = None,
           log=_stderr, _crash_after: dict | None = None) -> dict:
    """Run a search into `out_dir` (or, with `resume`, finish the one there); returns what search.json holds.

    `address`: None starts a local Ray with `cpus` CPUs (default: what Ray detects); "auto", "HOST:PORT" or
    "ray://HOST:PORT" joins a running cluster (a TCP probe first, `connect_timeout` seconds). `storage`: where
    Tune keeps the trials' checkpoints (default DIR/ray; a shared folder or a URI for a multi-machine cluster).
    Raises CompactLMError, after writing the tables, if no candidate met the budget."""
    from .search_ray import (DEFAULT_CONNECT_TIMEOUT, check_experiment, configure_progress, ray_session,
                             require_ray, run_tuner)
    from .search_report import build_report
    require_ray()
    began = time.perf_counter()
    out = Path(out_dir).resolve()
    if resume:
        saved = read_marker(out)
        config = resume_config(out, None if config is None else {
            f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "space"})
        if storage is None and not saved.get("storage_default"):   # the default one moves with DIR
            storage = saved["storage"]
    else:
        if config is None:
            raise CompactLMError("a new search needs a SearchConfig")
        check_new_folder(out)
    default_storage = storage is None
    storage = storage or str(out / "ray")
    plan = plan_trials(config, crash_after=_crash_after)
    labels = [spec["label"] for spec in plan.specs]
    if resume and saved.get("trials_planned") not in (None, labels):
        raise CompactLMError("the trials drawn now differ from those the search began with (another compact-lm "
                             "version?): finish it with that version, or start a new search")
    if resume and plan.corpus.digest != saved.get("corpus_sha256"):
        raise CompactLMError("the corpus differs from the one the search began on")
    check_experiment(storage, resume=resume, saved_storage=saved.get("storage") if resume else None)
    with ray_session(address, cpus, DEFAULT_CONNECT_TIMEOUT if connect_timeout is None else connect_timeout) as cluster_cpus:
        out.mkdir(parents=True, exist_ok=True)
        marker = {"format": MARKER_FORMAT, "version": FORMAT_VERSION, "status": "running", "config": config.to_json(),
                  "storage": storage, "storage_default": default_storage, "trials_planned": labels,
                  "corpus_sha256": plan.corpus.digest}
        write_json(out / MARKER, marker)
        for name, text in zip(TEXT_FILES, plan.texts[1:]):
            atomic_write(out / name, lambda f, text=text: f.write(text.encode("utf-8")))
        budget = f"{config.max_bytes:,} bytes" + ("" if config.max_keystroke_ms is None
                                                  else f" and a keystroke p50 of {config.max_keystroke_ms:g} ms")
        log(f"search: {'resuming ' if resume else ''}{len(plan.specs)} trials, "
            + (f"{config.steps_per_trial:,} steps" if config.steps_per_trial else f"{config.minutes_per_trial:g} minutes")
            + f" each, {cluster_cpus} at a time ({'local Ray' if address is None else address}); budget {budget}; "
            f"objective {config.objective}; scheduler {config.scheduler}")
        if len(plan.specs) < config.trials:
            log(f"note: the search space holds {len(plan.specs)} architectures that can fit the budget, fewer than "
                f"{config.trials} trials: each runs once")
        configure_progress(log, len(plan.specs))
        try:
            outcomes = run_tuner(plan.specs, storage, scheduler=config.scheduler, resume=resume)
        finally:
            configure_progress(None, 0)
        summary = build_report(config, plan, outcomes, out, marker, elapsed_s=time.perf_counter() - began)
    write_json(out / MARKER, summary)
    if summary["best"] is None:
        raise CompactLMError(summary["failure"])
    return summary
