"""`compact-lm profile`: several files of one model (NumPy fp32 / int8, onnxruntime fp32 / int8, pruned
or not) measured side by side in one run, against the NumPy fp32 reference.

For each file:
  latency    warm wall time per call, runners taking turns in blocks (profile_timing.py):
             one `step` at batch 1 and at the beam width; `complete(prefix, k)` over prefixes of
             the text (half ending inside a word, half at a boundary; the prefix is run from
             scratch, then the word search; a step graph runs it one `session.run` per character,
             since each file is profiled on its own); one keystroke of a session (type a
             character, then the top-k completions), typing the text;
  start-up   in a fresh process per file (profile_probe.py): import, load, first suggestion, peak RSS;
  size       file bytes;
  quality    bits per character of the text, and keystroke savings / top-1 / top-k accuracy of
             the typing simulation behind `eval-complete` on its first `limit` characters, with the
             n-gram baselines trained on the models' training split: the full one and the best one
             within the smallest file's bytes (sizes in ngram.py's compact encoding).
Speed-up = the reference's p50 / the variant's p50, the reference being the first NumPy fp32 file.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from compact_lm.autocomplete import Autocompleter
from compact_lm.complete_eval import simulate_typing, training_ids
from compact_lm.errors import CompactLMError, SettingError
from compact_lm.metrics import evaluate_ids
from compact_lm.trainer import evaluated_part
from compact_lm.vocab import foreign_text_note

from .profile_probe import run_probe
from .profile_timing import (LatencyStats, completion_runner, completion_prefixes, keystroke_runner,
                             measure_in_turns, step_runner)

DEFAULT_TEXT_FRACTION = 0.05    # default text: the last 5% of the bundled corpus (its test split)
LATENCY_KINDS = ("step_1", "step_beam", "complete", "keystroke")
PROBE_FIELDS = ("import_ms", "load_ms", "first_suggestion_ms", "peak_rss_kb", "runtime_rss_kb")


@dataclass(frozen=True)
class ProfileConfig:
    """How much to measure; the defaults take about 10 s per variant at H=256."""

    threads: int = 1              # BLAS threads for NumPy, intra-op threads for onnxruntime
    beam: int = 4                 # beam width of the word search (and the batch of the second step figure)
    k: int = 3                    # completions asked per call
    step_calls: int = 2000        # timed calls per variant, for each of the two step figures
    completions: int = 200        # timed `complete` calls per variant
    keystrokes: int = 1000        # timed keystrokes per variant
    turns: int = 10               # blocks each runner's calls are split into (runners alternate per block)
    limit: int = 3000             # characters typed for keystroke savings and accuracy
    probe_rounds: int = 3         # fresh processes per variant for the start-up figures (medians)
    prefix_chars: int = 64        # characters before the cursor that `complete` gets
    baseline: bool = True         # also type the text with the n-gram baseline
    order: int | None = None      # n-gram order (None: complete_eval's default)
    corpus: tuple[str, ...] = ()  # the training text, if not at the paths in the models' metadata

    def __post_init__(self) -> None:
        for name in ("threads", "beam", "k", "step_calls", "completions", "keystrokes", "turns", "limit",
                     "probe_rounds", "prefix_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CompactLMError(f"profile setting {name} must be a whole number >= 1, got {value!r}")


@dataclass
class Variant:
    """One file opened for profiling: its backend and what it is."""

    path: Path
    label: str
    runtime: str                  # "numpy" or "onnxruntime"
    precision: str                # "fp32" or "int8"
    graph: str                    # "npz", or the ONNX graph kind: "step" / "sequence"
    backend: object
    vocab: object
    hidden_sizes: tuple[int, ...]
    cell: str
    train_config: dict | None
    file_bytes: int


@dataclass
class VariantReport:
    """Everything measured for one variant (latency in ms, RSS in KiB)."""

    label: str
    path: str
    runtime: str
    precision: str
    graph: str
    cell: str
    hidden_sizes: list[int]
    file_bytes: int
    latency_ms: dict[str, LatencyStats]
    startup: dict[str, float]
    bpc: float
    typing: dict
    speedup: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """Plain JSON fields."""
        out = asdict(self)
        out["latency_ms"] = {name: stats.to_json() for name, stats in self.latency_ms.items()}
        return out


@dataclass
class ProfileReport:
    """A whole profile run: settings, text, reference, one report per variant, the n-gram baseline."""

    config: ProfileConfig
    text_source: str
    text_chars: int
    typed_chars: int
    reference: str
    variants: list[VariantReport]
    baseline: dict | None
    environment: dict

    def to_json(self) -> dict:
        """The object `compact-lm profile --json` prints."""
        return {"config": asdict(self.config), "text": self.text_source, "text_chars": self.text_chars,
                "typed_chars": self.typed_chars, "reference": self.reference,
                "variants": [v.to_json() for v in self.variants], "baseline": self.baseline,
                "environment": self.environment}


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise CompactLMError(f"{path} does not exist")
    if path.is_dir():
        raise CompactLMError(f"{path} is a folder, not a model file")
    if not os.access(path, os.R_OK):
        raise CompactLMError(f"cannot read {path}: permission denied")


def open_variant(path: str | os.PathLike, *, threads: int = 1) -> Variant:
    """Open a model file for profiling: .onnx with onnxruntime (fp32 or int8 by its metadata), else NumPy."""
    from compact_lm.opener import open_model
    path = Path(path)
    _check_readable(path)
    model = open_model(path, threads=threads)
    return Variant(path, path.name, model.runtime, model.precision, model.graph, model.backend(), model.vocab,
                   model.config.hidden_sizes, model.config.cell, model.info.get("train_config"), path.stat().st_size)


def vocabulary_difference(a, b) -> str | None:
    """How two vocabularies differ, in a few words (None if they are the same)."""
    if a == b:
        return None
    if a.nfc != b.nfc or a.lowercase != b.lowercase:
        return f"normalization nfc={a.nfc}, lowercase={a.lowercase} vs nfc={b.nfc}, lowercase={b.lowercase}"
    if a.size != b.size:
        return f"{a.size} vs {b.size} entries"
    return f"both {a.size} entries, but different characters"


def check_one_vocabulary(variants: list[Variant]) -> None:
    """All variants must read text the same way (else their figures do not compare): one-line error naming the pair."""
    first = variants[0]
    for other in variants[1:]:
        difference = vocabulary_difference(first.vocab, other.vocab)
        if difference:
            raise CompactLMError(f"{other.path} has another vocabulary than {first.path} ({difference}): "
                                 "profile files of one model, trained on one text")


def _labels(variants: list[Variant]) -> None:
    """File names as labels; the full path given where two names collide."""
    names = [v.path.name for v in variants]
    for v in variants:
        if names.count(v.path.name) > 1:
            v.label = str(v.path)


def reference_index(variants: list[Variant]) -> int:
    """The first NumPy fp32 variant (the reference of every speed-up), else the first variant."""
    for index, v in enumerate(variants):
        if v.runtime == "numpy" and v.precision == "fp32":
            return index
    return 0


def _median_probe(results: list[dict]) -> dict[str, float]:
    return {name: float(statistics.median(r[name] for r in results)) for name in PROBE_FIELDS}


def _baseline(variants: list[Variant], completer_of, ids: np.ndarray, typed: str, config: ProfileConfig, log) -> dict | None:
    """bpc, size and typing figures of the full n-gram baseline on the models' training split (None if that
    text is not here); with it under "matched", the same for the best n-gram within the smallest file's
    bytes (ngram.fit_to_bytes, chosen on a held-out slice of the training split)."""
    from compact_lm.ngram import NgramBackend, check_order, fit_to_bytes
    train_config = next((v.train_config for v in variants if v.train_config is not None), None)
    vocab = variants[0].vocab
    try:
        train = training_ids(train_config, vocab, list(config.corpus) or None)
    except CompactLMError as error:
        if config.corpus:
            raise
        worded = error.worded(lambda name: f"--{name}") if isinstance(error, SettingError) else str(error)
        log(f"note: no n-gram baseline ({worded})")
        return None
    order = check_order(config.order, vocab.size)
    smallest = min(variants, key=lambda v: v.file_bytes)
    result = {}
    for key, ngram in (("full", NgramBackend(train, vocab, order)), ("matched", fit_to_bytes(train, vocab, smallest.file_bytes))):
        report = simulate_typing(completer_of(ngram), typed, config.k)
        result[key] = {"name": ngram.name, "train_chars": int(len(train)), **ngram.size_info(),
                       "bpc": float(-ngram.log2_probs(ids).mean()), "typing": report.to_json()}
        if ngram.fit is not None:
            result[key].update(matched_to=smallest.label, fit=ngram.fit)
    return {**result["full"], "matched": result["matched"]}


def open_variants(paths: list[str | os.PathLike], threads: int) -> list[Variant]:
    """Open every file once (no duplicates), all with one vocabulary; labels are the file names."""
    if not paths:
        raise CompactLMError("give at least one model file")
    resolved = [Path(p).resolve() for p in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise CompactLMError(f"{paths[index]} is given twice")
    variants = [open_variant(p, threads=threads) for p in paths]
    check_one_vocabulary(variants)
    _labels(variants)
    return variants


def measure_latency(variants: list[Variant], completers: dict, ids: np.ndarray, text: str, prefixes: list[str],
                    config: ProfileConfig, stage) -> dict[str, dict[str, LatencyStats]]:
    """label -> kind -> warm latency, every kind measured with the variants taking turns."""
    latency: dict[str, dict[str, LatencyStats]] = {v.label: {} for v in variants}

    def record(kind: str, runners: dict, calls: int) -> None:
        for name, stats in measure_in_turns(runners, calls, config.turns).items():
            latency[name][kind] = stats

    stage(f"step latency at batch 1 and {config.beam}")
    for kind, batch in (("step_1", 1), ("step_beam", config.beam)):
        record(kind, {v.label: step_runner(v.backend, ids, batch) for v in variants}, config.step_calls)
    stage(f"word completion latency over {len(prefixes)} prefixes")
    record("complete", {name: completion_runner(c, prefixes, config.k) for name, c in completers.items()},
           config.completions)
    stage(f"keystroke latency (type a character + top-{config.k} completions)")
    record("keystroke", {name: keystroke_runner(c, text, config.k) for name, c in completers.items()},
           config.keystrokes)
    return latency


def measure_startup(variants: list[Variant], prefix: str, config: ProfileConfig) -> dict[str, dict[str, float]]:
    """label -> median start-up figures over `probe_rounds` fresh processes (the variants taking turns)."""
    probes: dict[str, list[dict]] = {v.label: [] for v in variants}
    for _ in range(config.probe_rounds):
        for v in variants:
            probes[v.label].append(run_probe(str(v.path), threads=config.threads, beam=config.beam, prefix=prefix))
    return {label: _median_probe(results) for label, results in probes.items()}


def profile_files(paths: list[str | os.PathLike], text: str, *, text_source: str = "",
                  config: ProfileConfig = ProfileConfig(), log=None) -> ProfileReport:
    """Measure every file on `text`, side by side; see the module docstring for what is measured."""
    from threadpoolctl import threadpool_limits
    log = log or (lambda message: None)
    began = time.perf_counter()

    def stage(message: str) -> None:
        log(f"[{time.perf_counter() - began:6.1f}s] profile: {message}")

    variants = open_variants(paths, config.threads)
    vocab = variants[0].vocab
    start = evaluated_part(text)   # bpc over 9 MB took 8 files 190 s; a text's start tells files apart as well
    if len(start) < len(text):
        text, text_source = start, f"the first {len(start):,} characters of {text_source or 'the text'}"
    if config.baseline:   # before any measuring: a bad --order fails now, not at the end
        from compact_lm.ngram import check_order
        check_order(config.order, vocab.size)
    ids = vocab.encode(text)
    if len(ids) < 2:
        raise CompactLMError(f"the text {text_source} needs at least 2 characters")
    note = foreign_text_note(ids, text_source or "the text")
    if note:
        log(note)

    def completer_of(backend) -> Autocompleter:
        return Autocompleter(backend, beam=config.beam, vocab=vocab)

    completers = {v.label: completer_of(v.backend) for v in variants}
    first = next(iter(completers.values()))
    prefixes = [p for p, _ in completion_prefixes(text, first.is_boundary, config.completions, config.prefix_chars)]
    if not prefixes:
        raise CompactLMError(f"the text {text_source} has no word to complete (it needs word and boundary characters)")
    typed = text[:config.limit]
    with threadpool_limits(limits=config.threads):
        stage(f"{len(variants)} file(s) on {len(text):,} characters")
        latency = measure_latency(variants, completers, ids, text, prefixes, config, stage)
        stage(f"start-up in fresh processes ({config.probe_rounds} per file)")
        startup = measure_startup(variants, prefixes[0], config)
        stage(f"quality: bpc on {len(ids):,} characters, typing {len(typed):,}")
        reports = [VariantReport(label=v.label, path=str(v.path), runtime=v.runtime, precision=v.precision,
                                 graph=v.graph, cell=v.cell, hidden_sizes=list(v.hidden_sizes),
                                 file_bytes=v.file_bytes, latency_ms=latency[v.label], startup=startup[v.label],
                                 bpc=evaluate_ids(v.backend, ids).bpc,
                                 typing=simulate_typing(completers[v.label], typed, config.k).to_json())
                   for v in variants]
        baseline = None
        if config.baseline:
            stage("n-gram baseline")
            baseline = _baseline(variants, completer_of, ids, typed, config, log)
    reference = reports[reference_index(variants)]
    for r in reports:
        r.speedup = {kind: reference.latency_ms[kind].p50 / r.latency_ms[kind].p50 for kind in LATENCY_KINDS}
        r.speedup["first_suggestion"] = reference.startup["first_suggestion_ms"] / r.startup["first_suggestion_ms"]
    stage("done")
    return ProfileReport(config, text_source, len(text), len(typed), reference.label, reports, baseline,
                         environment())


def environment() -> dict:
    """Versions and CPU count, so a table can be read later."""
    import platform
    import onnxruntime
    return {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "cpus": os.cpu_count(), "machine": platform.machine()}


def default_text() -> tuple[str, str]:
    """The last DEFAULT_TEXT_FRACTION of the bundled corpus, and a name for it."""
    from compact_lm.data import default_corpus_path
    path = default_corpus_path()
    text = path.read_text(encoding="utf-8")
    start = int(round(len(text) * (1 - DEFAULT_TEXT_FRACTION)))
    return text[start:], f"{path.name} (last {DEFAULT_TEXT_FRACTION:.0%})"
