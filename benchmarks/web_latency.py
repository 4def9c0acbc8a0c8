"""Keystroke latency of the JavaScript runtime against Python, side by side in one run (issue 14's bars).

    cd benchmarks && python web_latency.py --onnx M.onnx M-int8.onnx PRUNED-int8.onnx [--chars 2000]
    cd benchmarks && python web_latency.py --learning --onnx M-int8.onnx [--chars 10000]

For each .onnx step graph: per keystroke (type one character into a session + top-3 completions, beam 4)
p50 / p90 / p99 over --chars held-out characters, in Python onnxruntime, Node onnxruntime-node, Node
onnxruntime-web (WASM) and headless Chromium onnxruntime-web (WASM, one thread); session.run p50 at batch
1 and 4 in each; then the page of `compact-lm web` in Chromium: first load from 127.0.0.1 to the first
suggestion shown, and the bytes it transfers (runtime, model, page). Held-out text: tinyshakespeare's test
split (its last 5 %, never trained on). Needs `npm ci --ignore-scripts` in web/, chromium, playwright.

With --learning, instead: the JavaScript runtime's keystroke latency with learning on against off, on
onnxruntime-node (web/bench/learning.mjs): learning off, the user's words, and the user's words with the
context cache, typed side by side in turns of 500 keystrokes, as `compact-lm eval-complete --learn` does in
Python (issue 15's latency bar: p50 with learning on <= 1.2x off). Needs only Node and web/node_modules.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from common import REPO, blas_description, corpus

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def held_out_text(chars: int) -> str:
    """The first `chars` characters of tinyshakespeare's test split (the last 5 % of the file)."""
    text = corpus("tinyshakespeare.txt").read_text(encoding="utf-8")
    return text[int(len(text) * 0.95):][:chars]


def summary(times_ms: list[float]) -> dict:
    ordered = sorted(times_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]   # noqa: E731
    return {"n": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": statistics.fmean(ordered)}


def python_figures(model: Path, text: str, runs: int = 500) -> dict:
    """The same loop as web/bench/keystrokes.js, with compact_lm.Autocompleter on onnxruntime."""
    import numpy as np
    from compact_lm import Autocompleter
    started = time.perf_counter()
    completer = Autocompleter(str(model), beam=4, max_chars=16)
    create_ms = (time.perf_counter() - started) * 1e3
    session = completer.session()
    for char in text[:50]:
        session.type(char)
        session.suggestions(3)
    session.backspace(50)
    keystrokes = []
    for char in text:
        t0 = time.perf_counter()
        session.type(char)
        session.suggestions(3)
        keystrokes.append((time.perf_counter() - t0) * 1e3)
    run = {}
    for batch in (1, 4):
        ids, state = np.ones(batch, dtype=np.int64), completer.backend.initial_state(batch)
        for _ in range(20):
            completer.backend.step(ids, state)
        times = []
        for _ in range(runs // 10):   # in groups of 10 calls, as web/bench/keystrokes.js (the browser's clock)
            t0 = time.perf_counter()
            for _ in range(10):
                completer.backend.step(ids, state)
            times.append((time.perf_counter() - t0) * 1e3 / 10)
        run[f"batch{batch}"] = summary(times)
    import onnxruntime
    return {"runtime": "python onnxruntime", "ort": onnxruntime.__version__, "createMs": create_ms,
            "keystroke": summary(keystrokes), "run": run}


def node_figures(runtime: str, model: Path, text_path: Path, chars: int) -> dict:
    done = subprocess.run(["node", "bench/node.mjs", runtime, str(model), str(text_path), str(chars)],
                          cwd=REPO / "web", capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"node bench/node.mjs {runtime} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Site:
    """A site written by `compact-lm web` for one model, plus the benchmark page, served on 127.0.0.1."""

    def __init__(self, model: Path, text: str, folder: Path):
        from compact_lm.web import site_handler, write_site
        write_site(model, folder, log=lambda message: None)
        for name in ("bench.html", "keystrokes.js"):
            shutil.copy(REPO / "web" / "bench" / name, folder / name)
        (folder / "text.txt").write_text(text, encoding="utf-8")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), site_handler(folder, lambda message: None))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()


def chromium_figures(browser, site: Site, chars: int) -> dict:
    page = browser.new_page()
    page.goto(site.url + f"bench.html?model=model.onnx&chars={chars}")
    page.wait_for_function("window.__bench !== undefined", timeout=1_800_000)
    result = page.evaluate("window.__bench")
    page.close()
    if "error" in result:
        raise SystemExit(f"the benchmark page failed: {result['error']}")
    return result


FIRST_SUGGESTION = """
new MutationObserver((changes, observer) => {
  if (document.querySelector('#suggestions li')) { window.__firstSuggestion = performance.now(); observer.disconnect(); }
}).observe(document, {subtree: true, childList: true});
"""


def page_load(browser, site: Site, loads: int = 5) -> dict:
    """Fresh browser contexts (empty cache): navigation start to the first suggestion shown; bytes by kind."""
    times, transferred = [], {}
    for _ in range(loads):
        context = browser.new_context()
        context.add_init_script(FIRST_SUGGESTION)
        page = context.new_page()
        page.goto(site.url)
        first = None
        deadline = time.monotonic() + 60
        while first is None and time.monotonic() < deadline:   # the page's CSP forbids wait_for_function's eval
            page.wait_for_timeout(20)
            first = page.evaluate("() => window.__firstSuggestion")
        if first is None:
            raise SystemExit(f"{site.url}: no suggestion shown within 60 s")
        times.append(first)
        sizes = dict(page.evaluate("() => performance.getEntriesByType('navigation').concat("
                                   "performance.getEntriesByType('resource')).map(e => [e.name, e.encodedBodySize])"))
        transferred = {}
        for url, size in sizes.items():
            kind = "runtime" if "/ort/" in url else "model" if url.endswith(".onnx") else "page"
            transferred[kind] = transferred.get(kind, 0) + size
        context.close()
    return {"first_suggestion_ms": summary(times), "bytes": transferred}


def learning_figures(model: Path, text_path: Path, chars: int) -> dict:
    done = subprocess.run(["node", "bench/learning.mjs", str(model), str(text_path), str(chars)],
                          cwd=REPO / "web", capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"node bench/learning.mjs failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_learning(models: list[Path], text: str) -> None:
    """The --learning table: each model's three sessions, typed side by side in Node."""
    with tempfile.TemporaryDirectory() as tmp:
        text_path = Path(tmp) / "text.txt"
        text_path.write_text(text, encoding="utf-8")
        for model in models:
            figures = learning_figures(model.resolve(), text_path, len(text))
            off = figures["off"]["p50"]
            print(f"\n{model.name} ({model.stat().st_size:,} bytes), onnxruntime-node {figures['ort']['node']}, "
                  f"{figures['chars']:,} held-out characters typed side by side")
            print(f"{'learning':<26} {'keystroke p50':>13} {'p90':>7} {'p99':>7} {'x off':>6}  (ms)")
            for name, label in (("off", "off"), ("words", "the user's words"), ("cache", "+ the context cache")):
                k = figures[name]
                print(f"{label:<26} {k['p50']:>13.3f} {k['p90']:>7.3f} {k['p99']:>7.3f} {k['p50'] / off:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", nargs="+", required=True, metavar="MODEL.onnx", help="step graphs to measure")
    parser.add_argument("--chars", type=int, default=2000, help="held-out characters typed (default 2000)")
    parser.add_argument("--learning", action="store_true",
                        help="instead: JavaScript keystroke latency with learning on against off (Node)")
    args = parser.parse_args()
    text = held_out_text(args.chars)
    if args.learning:
        return print_learning([Path(model) for model in args.onnx], text)
    from playwright.sync_api import sync_playwright
    print(blas_description())
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        print(f"chromium {browser.version}; {len(text):,} held-out characters of tinyshakespeare typed per runtime")
        text_path = Path(tmp) / "text.txt"
        text_path.write_text(text, encoding="utf-8")
        for model in map(Path, args.onnx):
            site = Site(model.resolve(), text, Path(tmp) / model.stem)
            try:
                figures = [python_figures(model, text), node_figures("node", model.resolve(), text_path, args.chars),
                           node_figures("web", model.resolve(), text_path, args.chars),
                           chromium_figures(browser, site, args.chars)]
                load = page_load(browser, site)
            finally:
                site.close()
            python_p50 = figures[0]["keystroke"]["p50"]
            print(f"\n{model.name} ({model.stat().st_size:,} bytes)")
            print(f"{'runtime':<34} {'keystroke p50':>13} {'p90':>7} {'p99':>7} {'x python':>8} "
                  f"{'run b=1':>8} {'run b=4':>8} {'create':>8}  (ms)")
            for f in figures:
                k, r = f["keystroke"], f["run"]
                print(f"{f['runtime']:<34} {k['p50']:>13.3f} {k['p90']:>7.3f} {k['p99']:>7.3f} "
                      f"{k['p50'] / python_p50:>8.2f} {r['batch1']['p50']:>8.4f} {r['batch4']['p50']:>8.4f} "
                      f"{f['createMs']:>8.1f}")
            first = load["first_suggestion_ms"]
            print(f"page load to first suggestion: p50 {first['p50']:.0f} ms, max {max(first['p50'], first['p99']):.0f} ms "
                  f"over {first['n']} fresh loads; transferred "
                  + ", ".join(f"{kind} {size:,} B" for kind, size in sorted(load["bytes"].items()))
                  + f" (total {sum(load['bytes'].values()):,} B)")
            rows.append({"model": str(model), "bytes": model.stat().st_size, "figures": figures, "page_load": load})
        browser.close()
    out = Path(tempfile.gettempdir()) / "web_latency.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"\nwritten: {out.resolve()}")


if __name__ == "__main__":
    sys.exit(main())
