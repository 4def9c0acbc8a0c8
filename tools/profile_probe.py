"""Start-up cost of one model in a fresh Python process: import, load, first suggestion, peak memory.

Each variant runs in its own subprocess (`python -c CHILD_CODE FILE THREADS BEAM PREFIX`) so that one
runtime's allocations, imports and thread pools do not inflate another's peak RSS, and so that
"first suggestion" is what an app pays at start-up: importing the runtime, opening the file, and
the first `complete`. The child imports only what the runtime (`compact_lm.autocomplete`) needs:
numpy, plus onnxruntime for an .onnx file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from compact_lm.errors import CompactLMError

PROBE_TIMEOUT_S = 120
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _max_rss_kb() -> int:
    """Peak resident set size of this process so far, in KiB.

    On Linux from /proc/self/status (VmHWM), not getrusage: Linux carries ru_maxrss across fork and
    exec, so a child started by a big parent reports the parent's peak (measured: every variant
    showed the profiling process's 83 MiB). VmHWM belongs to the address space exec made afresh.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)   # macOS reports bytes


# the clock starts before anything of compact_lm (or numpy) is imported
CHILD_CODE = ("import time; began = time.perf_counter(); "
              "from compact_lm.tools.profile_probe import main; main(began)")


def probe(path: str, threads: int, beam: int, prefix: str, began: float) -> dict:
    """In this fresh process, timed from `began`: import the runtime, open `path`, complete `prefix`.

    Times in ms, RSS in KiB; `runtime_rss_kb` is the peak before the model is opened."""
    clock = time.perf_counter
    from compact_lm.autocomplete import Autocompleter, open_backend
    from compact_lm.opener import is_onnx_file
    if is_onnx_file(Path(path)):
        import compact_lm.ort_backend  # noqa: F401  (onnxruntime: part of this runtime's import cost)
    else:
        import compact_lm.model  # noqa: F401
    imported = clock()
    rss_runtime = _max_rss_kb()   # the interpreter and the runtime's libraries, before any model
    backend = open_backend(path, threads=threads)
    loaded = clock()
    completer = Autocompleter(backend, beam=beam)
    suggestions = completer.complete(prefix, 3)
    done = clock()
    return {"import_ms": (imported - began) * 1e3, "load_ms": (loaded - imported) * 1e3,
            "first_suggestion_ms": (done - imported) * 1e3, "peak_rss_kb": _max_rss_kb(),
            "runtime_rss_kb": rss_runtime, "suggestions": [s.text for s in suggestions]}


def main(began: float) -> None:
    """Child entry point: argv = FILE THREADS BEAM PREFIX; prints one JSON object (or {"error": ...})."""
    path, threads, beam, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    try:
        result = probe(path, threads, beam, prefix, began)
    except CompactLMError as error:
        result = {"error": str(error)}
    print(json.dumps(result))


def run_probe(path: str, *, threads: int = 1, beam: int = 4, prefix: str = "") -> dict:
    """Run `probe` for `path` in a fresh interpreter (BLAS capped at `threads`) and return its figures."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    command = [sys.executable, "-c", CHILD_CODE,
               str(path), str(threads), str(beam), prefix]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CompactLMError(f"{path}: the start-up probe took longer than {PROBE_TIMEOUT_S} s") from None
    lines = finished.stdout.strip().splitlines()
    if finished.returncode != 0 or not lines:
        reason = (finished.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise CompactLMError(f"{path}: the start-up probe failed in a fresh process ({reason})")
    result = json.loads(lines[-1])
    if "error" in result:
        raise CompactLMError(f"{path}: {result['error']}")
    return result
