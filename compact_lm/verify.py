"""Run two backends on the same text and measure how far apart they are (what `compact-lm verify` prints).

Works on any pair of Backends: the reference is normally NumpyBackend(model), the candidate an
OrtBackend of the exported file, fp32 or int8 (an int8 graph computes the NumPy int8 path's states bit
for bit, compact_lm/int8.py, so the same check and tolerance hold). For each mode (one stream step by
step, `batch` streams step by step, one stream as a single sequence call) both see the same ids from the
zero state, and we compare log-probabilities at every position:
    max |delta| = max over positions and vocabulary of |log p_ref - log p_cand|
    top-1 agreement = fraction of positions where both rank the same character first
    bpc = mean over positions t of -log p(id[t+1] | ids[..t]) / ln 2
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

import numpy as np

from .backends import Backend
from .errors import CompactLMError
from .model_file import ModelFile

TOLERANCE = 1e-4   # the export is correct when max |delta log-prob| stays below this


@dataclass(frozen=True)
class Comparison:
    """How one mode of the candidate compares with the reference."""

    mode: str
    batch: int
    positions: int
    max_abs_diff: float
    top1_agreement: float
    bpc_reference: float
    bpc_candidate: float

    @property
    def bpc_difference(self) -> float:
        """Candidate bpc minus reference bpc."""
        return self.bpc_candidate - self.bpc_reference

    def to_json(self) -> dict:
        """Plain JSON fields (bpc_difference included)."""
        return {**asdict(self), "bpc_difference": self.bpc_difference}


def streams(ids: np.ndarray, batch: int) -> np.ndarray:
    """Cut ids into `batch` contiguous streams of equal length: [batch, len(ids) // batch]."""
    length = len(ids) // batch
    return np.asarray(ids[:batch * length], dtype=np.int64).reshape(batch, length)


def run_stepwise(backend: Backend, ids: np.ndarray) -> np.ndarray:
    """Log-probabilities [B, T, V] from one `step` call per position."""
    state = backend.initial_state(ids.shape[0])
    columns = np.ascontiguousarray(ids.T)
    out = []
    for column in columns:
        log_probs, state = backend.step(column, state)
        out.append(np.asarray(log_probs, dtype=np.float64))
    return np.stack(out, axis=1)


def run_sequence(backend: Backend, ids: np.ndarray) -> np.ndarray:
    """Log-probabilities [B, T, V] from one `run` call."""
    return np.asarray(backend.run(ids, backend.initial_state(ids.shape[0]))[0], dtype=np.float64)


def bits_per_char(log_probs: np.ndarray, ids: np.ndarray) -> float:
    """Mean -log2 p of each next id: log_probs [B, T, V] scored against ids[:, 1:]."""
    picked = np.take_along_axis(log_probs[:, :-1], ids[:, 1:, None], axis=-1)
    return float(-picked.mean() / math.log(2))


def compare(mode: str, reference: np.ndarray, candidate: np.ndarray, ids: np.ndarray) -> Comparison:
    """The figures of one mode from both backends' log-probabilities [B, T, V] on ids [B, T]."""
    return Comparison(mode=mode, batch=ids.shape[0], positions=int(ids.size),
                      max_abs_diff=float(np.abs(reference - candidate).max()),
                      top1_agreement=float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
                      bpc_reference=bits_per_char(reference, ids), bpc_candidate=bits_per_char(candidate, ids))


def verify_backends(reference: Backend, candidate: Backend, ids: np.ndarray, *, sequence: bool,
                    batch: int = 4) -> list[Comparison]:
    """Step by step at batch 1 and `batch`, and (if `sequence`) as one sequence call at batch 1."""
    one = streams(ids, 1)
    many = streams(ids, batch)
    results = [compare("step", run_stepwise(reference, one), run_stepwise(candidate, one), one),
               compare("step", run_stepwise(reference, many), run_stepwise(candidate, many), many)]
    if sequence:
        results.append(compare("sequence", run_sequence(reference, one), run_sequence(candidate, one), one))
    return results


@dataclass
class Verification:
    """An exported file checked against the model it came from: every mode's figures and the verdict."""

    results: list[Comparison]
    chars: int
    int8: bool
    has_sequence: bool

    @property
    def max_abs_diff(self) -> float:
        """The worst |delta log-prob| over every mode."""
        return max(r.max_abs_diff for r in self.results)

    @property
    def ok(self) -> bool:
        """Whether the export matches within TOLERANCE."""
        return self.max_abs_diff <= TOLERANCE

    def table(self) -> list[str]:
        """One line per mode, as `compact-lm verify` prints it."""
        lines = [f"{'mode':<9} {'batch':>5} {'positions':>9} {'max |dlogp|':>11} {'top-1 agree':>11} "
                 f"{'bpc numpy':>9} {'bpc onnx':>9} {'d bpc':>9}"]
        for r in self.results:
            lines.append(f"{r.mode:<9} {r.batch:>5} {r.positions:>9,} {r.max_abs_diff:>11.2e} "
                         f"{r.top1_agreement:>11.2%} {r.bpc_reference:>9.4f} {r.bpc_candidate:>9.4f} "
                         f"{r.bpc_difference:>+9.1e}")
        return lines


def verify_export(model: ModelFile, exported: ModelFile, ids: np.ndarray, *, model_name: str = "the model",
                  exported_name: str = "the export") -> Verification:
    """Run `exported` (an .onnx opened with `open_model`, with its sequence graph if any) against the NumPy
    reference of `model` on `ids`; refuses a file that is not an export of that model."""
    if exported.format != "onnx":
        raise CompactLMError(f"{exported_name} is an .npz model file, not an exported .onnx graph: "
                             f"export it first (compact-lm export {exported_name} --out FILE.onnx)")
    model = model.require_arrays("verify")
    candidate = exported.backend()
    int8 = exported.precision == "int8"
    if int8 != (model.precision == "int8"):
        raise CompactLMError(f"{exported_name} is an {'int8' if int8 else 'fp32'} export and {model_name} a "
                             f"{'float' if int8 else 'quantized'} model: "
                             "verify an export against the model it came from")
    from .onnx_format import metadata_differences
    differences = metadata_differences(model.metadata(), exported.metadata())
    if differences:
        raise CompactLMError(f"{exported_name} was exported from another model than {model_name} "
                             f"({'; '.join(differences)})")
    if len(ids) < 8:
        raise CompactLMError("the text to verify on needs at least 8 characters (4 streams of 2)")
    results = verify_backends(model.backend(), candidate, ids, sequence=candidate.has_sequence_graph)
    return Verification(results, int(len(ids)), int8, candidate.has_sequence_graph)


# ----------------------------------------------------------------------------- compact-lm verify
VERIFY_CHARS = 2000   # characters compared by `verify` unless --chars says otherwise


def configure_verify(p) -> None:
    """Options of `compact-lm verify`."""
    from .cli import positive_int
    p.add_argument("model", metavar="MODEL")
    p.add_argument("onnx", metavar="FILE.onnx")
    p.add_argument("--sequence", metavar="FILE.onnx", help="a sequence graph of the same model to check too")
    p.add_argument("--text", metavar="FILE", help="text to compare on (default: the end of the bundled corpus)")
    p.add_argument("--chars", type=positive_int, default=VERIFY_CHARS,
                   help=f"characters of the text to use (default {VERIFY_CHARS})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_cmd_verify)


def _cmd_verify(args) -> int:
    import json
    from .data import SAVE_AS_UTF8, default_corpus_path, read_text
    from .opener import open_model
    from .vocab import foreign_text_note
    model = open_model(args.model).require_arrays("verify")
    exported = open_model(args.onnx, sequence=args.sequence)
    if args.text is None:   # the end of the bundled corpus (its test split)
        ids = model.vocab.encode(default_corpus_path().read_text(encoding="utf-8"))[-args.chars:]
        note = foreign_text_note(ids, "the bundled corpus")   # a model of another script: a check on <unk> alone
        if note:
            print(note, file=sys.stderr)
    else:
        ids = model.vocab.encode(read_text(args.text, what="--text", utf8_hint=SAVE_AS_UTF8))[:args.chars]
    if len(ids) < 8:
        source = f"--text {args.text}" if args.text is not None else f"--chars {args.chars}"
        raise CompactLMError(f"{source}: needs at least 8 characters (4 streams of 2)")
    check = verify_export(model, exported, ids, model_name=str(args.model), exported_name=str(args.onnx))
    if args.json:
        print(json.dumps({"model": str(args.model), "onnx": str(args.onnx), "chars": check.chars, "int8": check.int8,
                          "tolerance": TOLERANCE, "max_abs_diff": check.max_abs_diff, "ok": check.ok,
                          "results": [r.to_json() for r in check.results]}))
    else:
        kind = " int8" if check.int8 else ""
        print(f"{args.model} (NumPy{kind}) vs {args.onnx} (onnxruntime{kind}) on {check.chars:,} characters:")
        print("\n".join(check.table()))
        if not check.has_sequence:
            print("(no sequence graph: give --sequence FILE.onnx to check one)")
    if not check.ok:
        raise CompactLMError(f"max |delta log-prob| {check.max_abs_diff:.3g} exceeds {TOLERANCE:g}: "
                             f"{args.onnx} does not match {args.model}")
    if not args.json:
        print(f"ok: max |delta log-prob| {check.max_abs_diff:.2e} <= {TOLERANCE:g}")
    return 0
