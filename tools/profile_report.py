"""The tables of a profile run (plain text and markdown from the same rows), its JSON and its plot."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from compact_lm.complete_eval import ACCURACY_AFTER
from compact_lm.fileio import atomic_write, png_bytes

from .profile import ProfileReport


@dataclass(frozen=True)
class Table:
    """A titled table of strings; the first `left` columns are left-aligned, the rest right-aligned."""

    title: str
    header: list[str]
    rows: list[list[str]]
    left: int = 1


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _hidden(sizes: list[int]) -> str:
    return "x".join(str(h) for h in sizes)


def describe(report: ProfileReport) -> str:
    """One line: what was measured, on what, against what."""
    c = report.config
    return (f"{len(report.variants)} file(s) on {report.text_source or 'the text'}: {report.text_chars:,} characters "
            f"(typing: the first {report.typed_chars:,}); {c.threads} thread(s), beam {c.beam}, top-{c.k}; "
            f"reference: {report.reference}")


def latency_table(report: ProfileReport) -> Table:
    """Step latency in microseconds, completion and keystroke latency in ms."""
    beam = report.config.beam
    header = ["variant", "runtime", "precision", "hidden", "step@1 p50 us", "p90", "p99", f"step@{beam} p50 us",
              "p90", "p99", "complete p50 ms", "p99", "keystroke p50 ms", "p99"]
    rows = []
    for v in report.variants:
        lat = v.latency_ms
        rows.append([v.label, v.runtime, v.precision, _hidden(v.hidden_sizes),
                     *(f"{getattr(lat[kind], p) * 1e3:.1f}" for kind in ("step_1", "step_beam") for p in ("p50", "p90", "p99")),
                     *(f"{getattr(lat[kind], p):.3f}" for kind in ("complete", "keystroke") for p in ("p50", "p99"))])
    return Table(f"latency (warm, runners taking turns in {report.config.turns} blocks; complete = prefix of "
                 f"{report.config.prefix_chars} characters from scratch + word search)", header, rows, left=4)


def speedup_table(report: ProfileReport) -> Table:
    """Reference p50 / variant p50 for every latency figure."""
    beam = report.config.beam
    header = ["variant", "step@1", f"step@{beam}", "complete", "keystroke", "first suggestion"]
    kinds = ("step_1", "step_beam", "complete", "keystroke", "first_suggestion")
    rows = [[v.label, *(f"{v.speedup[k]:.2f}x" for k in kinds)] for v in report.variants]
    return Table(f"speed-up over {report.reference} (its p50 / this p50; > 1 is faster)", header, rows)


def footprint_table(report: ProfileReport) -> Table:
    """File size and start-up cost in a fresh process."""
    header = ["variant", "file bytes", "import ms", "load ms", "first suggestion ms", "peak RSS MiB", "model's share MiB"]
    rows = []
    for v in report.variants:
        s = v.startup
        rows.append([v.label, f"{v.file_bytes:,}", f"{s['import_ms']:.1f}", f"{s['load_ms']:.1f}",
                     f"{s['first_suggestion_ms']:.1f}", f"{s['peak_rss_kb'] / 1024:.1f}",
                     f"{(s['peak_rss_kb'] - s['runtime_rss_kb']) / 1024:.1f}"])
    return Table(f"size and start-up (a fresh process per file, median of {report.config.probe_rounds}; "
                 "first suggestion = load + first complete; model's share = peak RSS - RSS before loading)",
                 header, rows)


def quality_table(report: ProfileReport) -> Table:
    """bpc, bytes, keystroke savings and accuracy of every variant, and of the two n-gram baselines."""
    k = report.config.k
    header = ["variant", "bytes", "bpc", "keystroke savings",
              *(f"{name}@{n}" for n in ACCURACY_AFTER for name in ("top-1", f"top-{k}"))]

    def row(label: str, size: int, bpc: float, typing: dict) -> list[str]:
        accuracy = [_percent(typing[key][str(n)]) for n in ACCURACY_AFTER for key in ("top1_accuracy", "topk_accuracy")]
        return [label, f"{size:,}", f"{bpc:.4f}", _percent(typing["keystroke_savings"]), *accuracy]

    rows = [row(v.label, v.file_bytes, v.bpc, v.typing) for v in report.variants]
    title = ""
    b = report.baseline
    if b is not None:
        rows.append(row(f"baseline: {b['name']}", b["bytes"], b["bpc"], b["typing"]))
        m = b.get("matched")
        if m is not None:
            rows.append(row(f"size-matched baseline: {m['name']}", m["bytes"], m["bpc"], m["typing"]))
            title = (f"; n-gram bytes: its tables in the compact encoding of compact_lm/ngram.py ({b['encoding']}): "
                     f"full {b['contexts']:,} contexts + {b['ngrams']:,} n-grams, size-matched {m['contexts']:,} + "
                     f"{m['ngrams']:,}, the best held-out bpc within {m['matched_to']}'s {m['fit']['budget_bytes']:,} bytes")
    return Table(f"quality (bpc on {report.text_chars:,} characters; typing {report.typed_chars:,} with top-{k} "
                 f"completion, accepting one costs a keystroke; @n: after n typed characters of a word{title})",
                 header, rows)


def tables(report: ProfileReport) -> list[Table]:
    """Every table of the profile, in print order."""
    return [latency_table(report), speedup_table(report), footprint_table(report), quality_table(report)]


def render_text(table: Table) -> str:
    """Aligned plain-text columns."""
    widths = [max(len(cell) for cell in column) for column in zip(table.header, *table.rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i < table.left else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([table.title, line(table.header), *(line(r) for r in table.rows)])


def render_markdown(table: Table) -> str:
    """A markdown table with its title in bold above it."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    align = ["---" if i < table.left else "---:" for i in range(len(table.header))]
    return "\n".join([f"**{table.title}**", "", line(table.header), line(align), *(line(r) for r in table.rows)])


def format_text(report: ProfileReport) -> str:
    """What `compact-lm profile` prints."""
    return "\n\n".join([describe(report), *(render_text(t) for t in tables(report))]) + "\n"


def format_markdown(report: ProfileReport) -> str:
    """What `compact-lm profile --markdown` prints (and profile.md holds)."""
    return "\n\n".join([describe(report), *(render_markdown(t) for t in tables(report))]) + "\n"


def plot(report: ProfileReport) -> bytes | None:
    """PNG: bpc and keystroke p50 latency against file size, one point per variant (None without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"numpy": "tab:blue", "onnxruntime": "tab:orange"}
    markers = {"fp32": "o", "int8": "s"}
    # the NumPy and onnxruntime files of one model sit on one spot of the bpc plot: their labels go
    # above (NumPy) and below (onnxruntime) it
    offsets = {"numpy": (5, 5), "onnxruntime": (5, -16)}
    for v in report.variants:
        size_kb = v.file_bytes / 1024
        latency = v.latency_ms["keystroke"].p50
        style = dict(color=colors.get(v.runtime, "gray"), marker=markers.get(v.precision, "^"), s=60)
        offset = offsets.get(v.runtime, (5, 5))
        left.scatter(size_kb, v.bpc, **style)
        left.annotate(f"{v.label}: {latency:.2f} ms", (size_kb, v.bpc), fontsize=7, xytext=offset,
                      textcoords="offset points")
        right.scatter(size_kb, latency, **style)
        right.annotate(v.label, (size_kb, latency), fontsize=7, xytext=offset, textcoords="offset points")
    for axes, label in ((left, f"bits per character ({report.text_chars:,} characters)"),
                        (right, f"keystroke latency p50, ms (step + top-{report.config.k})")):
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))   # 100, 200, 500, 1000 KiB
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("file size (KiB, log scale)")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3, which="both")
        axes.margins(x=0.25, y=0.2)
    for runtime, color in colors.items():   # legend: colour = runtime, marker = precision
        right.scatter([], [], color=color, marker="o", label=runtime)
    for precision, marker in markers.items():
        right.scatter([], [], color="gray", marker=marker, label=precision)
    right.legend(fontsize=8)
    left.set_title("quality vs size (label: keystroke latency p50)", fontsize=9)
    right.set_title("latency vs size", fontsize=9)
    figure.tight_layout()
    return png_bytes(figure)


def write_outputs(report: ProfileReport, out_dir: str | Path, stem: str = "profile") -> list[Path]:
    """STEM.json, STEM.md and (with matplotlib) STEM.png in out_dir; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    atomic_write(written[0], lambda f: f.write(json.dumps(report.to_json(), indent=1).encode()))
    atomic_write(written[1], lambda f: f.write(format_markdown(report).encode()))
    image = plot(report)
    if image is not None:
        written.append(out / f"{stem}.png")
        atomic_write(written[-1], lambda f: f.write(image))
    return written
