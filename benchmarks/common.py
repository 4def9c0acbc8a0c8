"""Helpers the benchmark scripts share: where the data is, and what BLAS numpy runs on."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def corpus(name: str) -> Path:
    """A corpus from ../shared/data (the benchmark corpora are not shipped with the package)."""
    path = SHARED_DATA / name
    if not path.exists():
        raise SystemExit(f"benchmark corpus {path} not found (expected ../shared/data beside the repository)")
    return path


def blas_description() -> str:
    """Which BLAS numpy uses, its kernel and threads, and the OpenBLAS environment overrides."""
    import numpy  # noqa: F401  (threadpoolctl lists only the BLAS libraries already loaded)
    from threadpoolctl import threadpool_info
    parts = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')} kernel, "
             f"{i.get('num_threads')} thread(s))" for i in threadpool_info() if i.get("user_api") == "blas"]
    overrides = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    text = "numpy BLAS: " + ("; ".join(parts) or "unknown")
    if overrides:
        text += f"; environment sets {overrides} (unset both to let OpenBLAS pick its native kernel)"
    return text


def machine_cpu_seconds() -> float:
    """CPU seconds every process of this machine has been busy since boot (Linux /proc/stat: user, nice,
    system, irq, softirq; idle and iowait left out): the difference across a run counts every process it
    started, Ray's own included, and anything else that ran meanwhile (so run on a quiet machine)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_search(argv: list[str], out: Path) -> dict:
    """`compact-lm search ... --out OUT` in a fresh process (a fresh local Ray): its wall time, the machine's
    busy CPU seconds meanwhile, and its search.json."""
    import json
    import subprocess
    import sys
    import time
    began, busy = time.perf_counter(), machine_cpu_seconds()
    subprocess.run([sys.executable, "-m", "compact_lm", "search", *argv, "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    measured = {"wall_s": time.perf_counter() - began, "machine_cpu_s": machine_cpu_seconds() - busy}
    return {**measured, "summary": json.loads((out / "search.json").read_text(encoding="utf-8"))}


def runs_folder(out: str | None, prefix: str, space: dict) -> tuple[Path, Path]:
    """The folder for a benchmark's searches (`out`, or a new temporary one) and the space file written in it."""
    import json
    import tempfile
    root = Path(out or tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    space_file = root / "space.json"
    space_file.write_text(json.dumps(space), encoding="utf-8")
    return root, space_file
