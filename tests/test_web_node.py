"""web/compact_lm.js gives the Python Autocompleter's suggestions: Python writes golden cases
(tests/web_golden.py: fp32 and int8; GRU, LSTM, RNN; 2 layers of unequal size; with and without a sequence
graph; a lowercase vocabulary; damaged files; Unicode), Node replays them (`node --test web/test/`).

Needs Node 20+ and web/node_modules (installed here with `npm ci --ignore-scripts` when missing); skipped,
with the reason, only when neither can be had.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from web_golden import write_goldens

WEB = Path(__file__).resolve().parents[1] / "web"


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def node_for_web() -> str:
    """The node executable, with web/node_modules installed (npm ci --ignore-scripts if missing)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: web/compact_lm.js's tests need Node 20+")
    major = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 20:
        pytest.skip(f"node {major} is too old: web/compact_lm.js's tests need Node 20+")
    if not (WEB / "node_modules" / "onnxruntime-node").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("web/node_modules is missing and npm is not installed to run `npm ci --ignore-scripts`")
        # --ignore-scripts: onnxruntime-node's install script downloads from outside the registry; its CPU
        # binaries ship in the package
        result = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=WEB,
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.skip(f"web/node_modules is missing and `npm ci --ignore-scripts` failed: {_tail(result.stderr)}")
    return node


def test_javascript_autocompleter_reproduces_python(node_for_web, tmp_path, alice_text, tiny_model_path):
    started = time.perf_counter()
    summary = write_goldens(tmp_path, alice_text, tiny_model_path)
    written = time.perf_counter()
    env = {**os.environ, "COMPACT_LM_GOLDEN": str(tmp_path)}
    result = subprocess.run([node_for_web, "--test", "--test-concurrency=2", "test/"], cwd=WEB, env=env,
                            capture_output=True, text=True, timeout=600)
    print(f"golden cases {summary} written in {written - started:.1f} s; node --test {time.perf_counter() - written:.1f} s")
    assert result.returncode == 0, f"node --test web/test/ failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout, result.stdout
    assert "# skipped 0" in result.stdout, f"Node skipped golden tests:\n{result.stdout}"
