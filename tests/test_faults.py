"""Kill -9 at random moments (checkpoint writes included): files stay loadable, resume is bit-exact."""
import os
import subprocess
import sys
import time

import numpy as np

from compact_lm.fileio import load_npz
from compact_lm.model import load

KILLS = 6


def _train_command(corpus, out, resume=False):
    # evaluation and checkpoint at every step: most of the run is spent writing files, so the
    # kills below land inside writes as often as not
    command = [sys.executable, "-m", "compact_lm", "train", "--corpus", str(corpus), "--embed", "8", "--hidden", "16",
               "--batch", "4", "--seq-len", "16", "--steps", "30", "--eval-every", "1", "--dropout", "0.2",
               "--quiet", "--out", str(out)]
    return command + (["--resume"] if resume else [])


def _files_are_whole(out):
    """Every file present must load (never half-written); returns the temporary files a kill left."""
    for name, what in (("model.npz", "model"), ("state.npz", "state")):
        if (out / name).exists():
            load_npz(out / name, what)
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")] if out.exists() else []


def _wait_for_a_write(out, process, timeout=30.0):
    """Poll until a temporary file appears in `out` (a write in progress) or the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and any(name.endswith(".tmp") for name in os.listdir(out)):
            return
        time.sleep(0.0002)


def test_kill_9_anywhere_then_resume_ends_bit_identical(tmp_path, small_corpus):
    straight = tmp_path / "straight"
    subprocess.run(_train_command(small_corpus, straight), check=True, timeout=300)
    killed = tmp_path / "killed"
    rng = np.random.default_rng(0)
    kills, kills_during_writes = 0, 0
    for attempt in range(40):
        resume = (killed / "state.npz").exists()
        process = subprocess.Popen(_train_command(small_corpus, killed, resume), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        if kills < KILLS:
            if kills % 2:
                # the moment a checkpoint write has begun (its temporary file exists)
                _wait_for_a_write(killed, process)
            else:
                # after start-up (imports take ~0.5 s), a random moment of the training loop
                time.sleep(0.6 + rng.uniform(0.0, 0.6))
            if process.poll() is None:
                process.kill()
                process.wait()
                kills += 1
                kills_during_writes += bool(_files_are_whole(killed))
                continue
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
        break
    assert kills == KILLS
    assert kills_during_writes >= 1          # at least one kill fell inside a checkpoint write
    assert _files_are_whole(killed) == []    # and the resumed run cleared what it left behind
    a, b = load(straight / "model.npz"), load(killed / "model.npz")
    assert all(np.array_equal(a.params[n], b.params[n]) for n in a.params)
    state_a, state_b = load_npz(straight / "state.npz", "state")[0], load_npz(killed / "state.npz", "state")[0]
    assert all(np.array_equal(state_a[n], state_b[n]) for n in state_a)
