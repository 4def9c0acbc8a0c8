"""web/compact_lm.js gives the Python Autocompleter's suggestions: Python writes golden cases
(tests/web_golden.py: fp32 and int8; GRU, LSTM, RNN; 2 layers of unequal size; with and without a sequence
graph; a lowercase vocabulary; damaged files; Unicode), Node replays them (`node --test web/test/`).

Needs Node 20+ and web/node_modules (`cd web && npm ci --ignore-scripts`, as .ci/run does); skipped, with the
reason, without them.
"""
import os
import subprocess
import time

import pytest

from conftest import WEB, node_with_runtime
from web_golden import write_goldens


@pytest.fixture(scope="session")
def node_for_web() -> str:
    return node_with_runtime()


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
