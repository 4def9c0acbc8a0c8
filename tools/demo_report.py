"""What the demo prints and writes: the results table, the verification table, example completions."""
from __future__ import annotations

import numpy as np

from compact_lm.autocomplete import Autocompleter
from compact_lm.complete_eval import word_spans
from compact_lm.repl import quoted

from .profile import ProfileReport
from .profile_report import Table, format_markdown, render_markdown, render_text

EXAMPLE_TYPED = 2     # characters of the word typed before the suggestions of an example
EXAMPLE_SHOWN = 40    # characters of context shown before the cursor (the model gets the profile's prefix length)
ACCURACY_AT = "2"     # the results table's accuracy: after this many typed characters


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def results_table(report: ProfileReport, val_bpc: dict[str, float], val_chars: int | None = None) -> Table:
    """One row per variant (bpc, size, latency, typing figures) and the n-gram baselines' rows (full, size-matched;
    their bytes in ngram.py's compact encoding). `val_chars`: the validation characters scored, when not the split."""
    k = report.config.k
    header = ["variant", "runtime", "precision", "hidden", "file bytes", "val bpc", "test bpc", "step@1 p50 us",
              "keystroke p50 ms", "p99 ms", "speed-up", "keystroke savings", f"top-1@{ACCURACY_AT}",
              f"top-{k}@{ACCURACY_AT}"]
    rows = []
    for v in report.variants:
        typing, keystroke = v.typing, v.latency_ms["keystroke"]
        rows.append([v.label, v.runtime, v.precision, "x".join(map(str, v.hidden_sizes)), f"{v.file_bytes:,}",
                     f"{val_bpc[v.label]:.4f}", f"{v.bpc:.4f}", f"{v.latency_ms['step_1'].p50 * 1e3:.1f}",
                     f"{keystroke.p50:.3f}", f"{keystroke.p99:.3f}", f"{v.speedup['keystroke']:.2f}x",
                     _percent(typing["keystroke_savings"]), _percent(typing["top1_accuracy"][ACCURACY_AT]),
                     _percent(typing["topk_accuracy"][ACCURACY_AT])])
    if report.baseline is not None:
        baselines = [("baseline", report.baseline)]
        if report.baseline.get("matched") is not None:
            baselines.append(("size-matched baseline", report.baseline["matched"]))
        for kind, b in baselines:   # bytes: the n-gram's tables in ngram.py's compact encoding
            rows.append([f"{kind}: {b['name']}", "python", "-", "-", f"{b['bytes']:,}" if "bytes" in b else "-", "-",
                         f"{b['bpc']:.4f}", "-", "-", "-", "-", _percent(b["typing"]["keystroke_savings"]),
                         _percent(b["typing"]["top1_accuracy"][ACCURACY_AT]),
                         _percent(b["typing"]["topk_accuracy"][ACCURACY_AT])])
    scored = "" if val_chars is None else f"val bpc on the validation split's first {val_chars:,} characters, "
    return Table(f"results ({scored}test text {report.text_chars:,} characters, typing {report.typed_chars:,}; keystroke = "
                 f"type a character + top-{k} completions, one thread; speed-up of the keystroke p50 over "
                 f"{report.reference}; accuracy after {ACCURACY_AT} typed characters of a word)", header, rows, left=4)


def verify_table(checks: list[dict]) -> Table:
    """One row per export: what was compared and how close it came."""
    rows = [[c["onnx"], c["sequence"], c["model"], c["precision"], f"{c['chars']:,}", f"{c['max_abs_diff']:.2e}",
             f"{c['tolerance']:g}", f"{c['top1_agreement']:.2%}", "ok" if c["ok"] else "FAILED"] for c in checks]
    return Table("verification against NumPy (as `compact-lm verify`: free-running, step at batch 1 and 4, sequence)",
                 ["step graph", "sequence graph", "model", "precision", "characters", "max |d log p|", "tolerance",
                  "top-1 agree", "result"], rows, left=4)


def example_completions(paths, text: str, count: int, *, k: int, beam: int, context: int = 64) -> list[dict]:
    """The top-k completions of each model at `count` words of `text`, after EXAMPLE_TYPED of their characters."""
    completers = {str(getattr(p, "name", p)): Autocompleter(str(p), beam=beam) for p in paths}
    first = next(iter(completers.values()))
    text = first.normalize(text)
    words = [(s, e) for s, e in word_spans(text, first.is_boundary) if e - s > EXAMPLE_TYPED + 1]
    if not words:
        return []
    picks = np.unique(np.linspace(0, len(words) - 1, count + 2).round().astype(int)[1:-1]) if count else []
    examples = []
    for index in picks:
        start, end = words[index]
        cursor = start + EXAMPLE_TYPED
        prefix = text[max(0, cursor - context):cursor]
        examples.append({"prefix": prefix, "actual": text[cursor:end + 1],
                         "suggestions": {name: [[s.text, s.prob] for s in c.complete(prefix, k)]
                                         for name, c in completers.items()}})
    return examples


def example_lines(examples: list[dict]) -> list[str]:
    """Each example: the end of its prefix, what followed in the text, and every model's suggestions."""
    lines = [f"example completions (after {EXAMPLE_TYPED} typed characters of a word; | marks the cursor):"]
    if not examples:
        lines.append(f"  (none: the test split has no word of more than {EXAMPLE_TYPED + 1} characters followed by a boundary)")
    for example in examples:
        shown = example["prefix"][-EXAMPLE_SHOWN:].replace("\n", "\u23ce")
        lines.append(f"  ...{shown}|   (the text goes on: {quoted(example['actual'])})")
        width = max(len(name) for name in example["suggestions"])
        for name, suggestions in example["suggestions"].items():
            shown_suggestions = " | ".join(f"{quoted(t)} {p:.0%}" for t, p in suggestions) or "(none)"
            lines.append(f"      {name:<{width}}  {shown_suggestions}")
    return lines


def _table(data: dict) -> Table:
    return Table(data["title"], data["header"], data["rows"], data.get("left", 1))


def headline(summary: dict) -> list[str]:
    """Training and pruning in two lines."""
    train = summary["train"]
    return [f"trained {summary['train_steps']} steps in {train['elapsed_s']:.0f} s "
            f"({train['chars_per_second']:,.0f} characters/s): val {train['val_bpc']:.4f} bpc, test {train['test_bpc']:.4f} bpc",
            f"pruned to hidden {summary['pruned_hidden_sizes']} and fine-tuned {summary['finetune_steps']} steps; "
            f"whole demo {summary['elapsed_s'] / 60:.1f} minutes"]


def format_summary(summary: dict) -> str:
    """What `compact-lm demo` prints at the end."""
    parts = ["\n".join(headline(summary)), render_text(verify_table(summary["verify"])),
             render_text(_table(summary["results"])), "\n".join(example_lines(summary["examples"])),
             f"files in {summary['out']}: " + ", ".join(summary["files"])]
    return "\n\n".join(parts) + "\n"


def demo_markdown(summary: dict, report: ProfileReport) -> str:
    """demo.md: the headline, verification, results, examples and the full profile."""
    examples = "\n".join(example_lines(summary["examples"]))
    parts = ["# compact-lm demo", "\n".join(f"- {line}" for line in headline(summary)),
             render_markdown(verify_table(summary["verify"])), render_markdown(_table(summary["results"])),
             f"```\n{examples}\n```", "## Profile", format_markdown(report)]
    return "\n\n".join(parts)
