"""Kill -9 at several moments, inside checkpoint writes too: files stay loadable, resume is bit-exact."""
import subprocess
import sys
import time

import numpy as np

from compact_lm.fileio import load_npz
from compact_lm import load

KILLS_AT_WRITES = 6      # each while a checkpoint write is open
KILLS_AT_RANDOM = 3      # each at a random moment (start-up, training, evaluation or a write)
# The child trains through the real CLI, with os.replace slowed by 30 ms: every atomic write then has a
# wide window between "temporary file complete" and "renamed into place", where a kill must lose nothing.
DRIVER = ("import os, sys, time; rename = os.replace; "
          "os.replace = lambda a, b: (time.sleep(0.03), rename(a, b))[1]; "
          "from compact_lm.cli import main; sys.exit(main(sys.argv[1:]))")


def _train_command(corpus, out, resume=False):
    command = [sys.executable, "-c", DRIVER, "train", "--corpus", str(corpus), "--embed", "8", "--hidden", "16",
               "--batch", "4", "--seq-len", "16", "--steps", "40", "--eval-every", "1", "--dropout", "0.2",
               "--quiet", "--out", str(out)]
    return command + (["--resume"] if resume else [])


def _temporaries(out):
    return {p.name for p in out.iterdir() if p.name.endswith(".tmp")} if out.exists() else set()


def _kill_at_write(out, process, writes: int, timeout=60.0) -> bool:
    """Kill the process while its `writes`-th checkpoint write (counted by temporary files) is open."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        current = _temporaries(out)
        seen |= current
        if len(seen) >= writes and current:
            process.kill()
            process.wait()
            return True
        time.sleep(0.001)
    return False


def test_kill_9_anywhere_then_resume_ends_bit_identical(tmp_path, small_corpus):
    straight = tmp_path / "straight"
    subprocess.run(_train_command(small_corpus, straight), check=True, timeout=300, capture_output=True)
    killed = tmp_path / "killed"
    rng = np.random.default_rng(0)
    for kill in range(KILLS_AT_RANDOM + KILLS_AT_WRITES):
        process = subprocess.Popen(_train_command(small_corpus, killed, (killed / "state.npz").exists()),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill < KILLS_AT_RANDOM:
            # early in the run (a resumed run still has most of its 40 steps, over a second, ahead)
            time.sleep(rng.uniform(0.3, 1.5))
            assert process.poll() is None, "the run finished before its random kill"
            process.kill()
            process.wait()
        else:
            assert _kill_at_write(killed, process, writes=int(rng.integers(1, 6))), f"kill {kill} found no write"
            assert _temporaries(killed)               # the kill did land inside a write
        # whatever was interrupted, every file present loads (never half-written)
        for name, what in (("model.npz", "model"), ("state.npz", "state")):
            if (killed / name).exists():
                load_npz(killed / name, what)
    done = subprocess.run(_train_command(small_corpus, killed, resume=True), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert _temporaries(killed) == set()              # the resumed run cleared what the kills left
    a, b = load(straight / "model.npz"), load(killed / "model.npz")
    assert all(np.array_equal(a.params[n], b.params[n]) for n in a.params)
    state_a, state_b = load_npz(straight / "state.npz", "state")[0], load_npz(killed / "state.npz", "state")[0]
    assert all(np.array_equal(state_a[n], state_b[n]) for n in state_a)
