"""`compact-lm search` on Ray Tune: a tiny search ships a model that fits its budget and whose figures the
other commands reproduce; the same search on a separate Ray cluster, with a lost worker and a killed driver,
resumes and gives the same models bit for bit; bad input ends in one line before anything starts."""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run
from compact_lm.config import TrainConfig
from compact_lm.opener import open_model
from compact_lm.tools.search import SearchConfig, plan_trials
from compact_lm.tools.search_estimate import lower_bound_bytes
from compact_lm.tools.search_space import SearchSpace

# two cells x two sizes of tiny models, a few dozen steps each: the whole search takes seconds of training
TINY_SPACE = {"cells": ["gru", "rnn"], "layers": [1], "embed": [8], "hidden": [16, 32], "dropout": [0.0],
              "keeps": [1.0, 0.5], "precisions": ["int8", "fp32"],
              "fixed": {"batch": 4, "seq_len": 16, "warmup_steps": 2, "lr": 0.01}}
MAX_BYTES = 29_000   # the tiny models (about 2-20 kB) and the bundled corpus's lexicon (9 kB) that each carries
TYPED = 300
TINY = ["--trials", "3", "--steps-per-trial", "30", "--eval-every", "10", "--typing-chars", str(TYPED),
        "--max-bytes", str(MAX_BYTES)]
MEASURED_TIMES = ("p50_ms", "p90_ms")   # the only figures that differ between two runs of one search


def _cli(*argv, env=None, timeout=240, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compact_lm", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, **options)


def _without_times(candidates: list[dict]) -> list[dict]:
    return [{k: v for k, v in c.items() if k not in MEASURED_TIMES} for c in candidates]


def _differences(a: list[dict], b: list[dict]) -> list[str]:
    """What differs between two runs' candidates (for the assertion's message)."""
    return [f"{x['keep']} {x['precision']} {k}: {x[k]!r} vs {y.get(k)!r}" for x, y in zip(a, b) for k in x
            if x[k] != y.get(k)] + ([f"{len(a)} vs {len(b)} candidates"] if len(a) != len(b) else [])


@pytest.fixture(scope="module", autouse=True)
def private_tmpdir(tmp_path_factory):
    """TMPDIR (Ray's sessions, the trials' work folders) under pytest's temporary folder, so that a worker or
    driver a test kills leaves nothing in /tmp. Short: Ray's socket paths must stay under 108 characters."""
    import tempfile
    folder = tmp_path_factory.getbasetemp() / "t"
    folder.mkdir(exist_ok=True)
    saved, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), None
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_dir
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.json"
    path.write_text(json.dumps(TINY_SPACE), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_search(tmp_path_factory, space_file):
    """The tiny search on a local Ray with one CPU (trials one after another, so ASHA sees them in one order)."""
    out = tmp_path_factory.mktemp("search") / "out"
    done = _cli("search", "--space", space_file, *TINY, "--cpus", "1", "--out", out)
    assert done.returncode == 0, done.stderr
    return out, done, json.loads((out / "search.json").read_text(encoding="utf-8"))


def test_a_tiny_search_ships_a_model_within_the_budget_that_info_eval_and_eval_complete_reproduce(local_search, capsys):
    out, done, summary = local_search
    best = summary["best"]
    assert summary["status"] == "done" and best is not None
    onnx = out / "best.onnx"
    assert best["bytes"] == onnx.stat().st_size <= MAX_BYTES
    assert open_model(out / "best.npz").config.hidden_sizes == tuple(best["hidden_sizes"])
    code, printed, _ = run(capsys, "info", onnx, "--json")
    info = json.loads(printed)
    assert code == 0 and info["file_bytes"] == best["bytes"] and info["hidden_sizes"] == best["hidden_sizes"]
    assert info["int8"] == (best["precision"] == "int8")
    code, printed, _ = run(capsys, "eval", onnx, "--text", out / "validation.txt", "--json")
    assert code == 0 and json.loads(printed)["bpc"] == best["val_bpc"]
    code, printed, _ = run(capsys, "eval-complete", onnx, "--text", out / "validation.txt", "--limit", TYPED, "--json")
    typed = json.loads(printed)
    assert code == 0 and typed["keystroke_savings"] == best["savings"] and typed["model_bytes"] == best["bytes"]
    # the test split was scored for the report, on its own text
    assert 0 < best["test_bpc"] < 10 and best["test_typed_chars"] == TYPED
    assert (out / "test.txt").read_text(encoding="utf-8") != (out / "validation.txt").read_text(encoding="utf-8")
    assert f"best: {onnx}" in done.stdout


def test_the_search_keeps_every_candidate_chooses_the_best_fitting_one_and_reports_the_front(local_search):
    out, done, summary = local_search
    trials = summary["trials"]
    assert [t["trial"] for t in trials] == [1, 2, 3]
    assert {t["status"] for t in trials} <= {"done", "stopped early"}
    finished = [t for t in trials if t["status"] == "done"]
    stopped = [t for t in trials if t["status"] == "stopped early"]
    # ASHA stopped a trial whose val bpc trailed at its first rung, before its budget was spent
    assert stopped and all(t["steps"] < 30 and t["stopped_at_percent"] < 100 and not t["candidates"] for t in stopped)
    assert summary["counts"]["done"] == len(finished) and summary["counts"]["stopped early"] == len(stopped)
    candidates = [{"trial": t["trial"], **c} for t in finished for c in t["candidates"]]
    # 2 keeps x 2 precisions: measured, or not made since their shapes alone exceed the budget
    assert all(t["steps"] == 30 and len(t["candidates"]) + len(t["oversized"]) == 4 for t in finished)
    assert all(o["min_bytes"] > MAX_BYTES for t in finished for o in t["oversized"])
    assert all(c["fits"] == (c["bytes"] <= MAX_BYTES) for c in candidates)   # no latency limit was given
    fitting = [c for c in candidates if c["fits"]]
    top = max(c["savings"] for c in fitting)
    assert summary["best"]["savings"] == top
    assert summary["best"]["bytes"] == min(c["bytes"] for c in fitting if c["savings"] == top)   # ties: the smaller file
    assert any(f["bytes"] == summary["best"]["bytes"] for f in summary["front"])
    front = summary["front"]
    assert [c["bytes"] for c in front] == sorted(c["bytes"] for c in front)
    assert all(b["savings"] > a["savings"] for a, b in zip(front, front[1:]))
    assert all(not (c["bytes"] <= f["bytes"] and c["savings"] > f["savings"]) for f in front for c in candidates)
    table = (out / "search.md").read_text(encoding="utf-8")
    assert "## Front" in table and table.count("| stopped early") == len(stopped)
    assert f"typing the first {TYPED:,} characters of the validation split" in table
    try:
        import matplotlib  # noqa: F401
        has_matplotlib = True
    except ImportError:
        has_matplotlib = False
    assert (out / "search.png").exists() == has_matplotlib
    # one progress line per change: each trial started, then done or stopped early
    lines = done.stderr.splitlines()
    for t in trials:
        assert sum(f"trial {t['trial']}/3 " in line and " started" in line for line in lines) == 1, done.stderr
        assert sum(f"trial {t['trial']}/3 " in line and ("done:" in line or "stopped early at" in line)
                   for line in lines) == 1, done.stderr


def test_the_config_is_saved_and_the_byte_estimate_is_a_close_lower_bound(local_search, space_file):
    out, _, summary = local_search
    config = SearchConfig.from_json(summary["config"])
    assert config == SearchConfig(max_bytes=MAX_BYTES, trials=3, steps_per_trial=30, eval_every=10, typing_chars=TYPED,
                                  space=SearchSpace.from_json(TINY_SPACE))
    best = open_model(out / "best.npz")
    vocab, lexicon = best.vocab, best.info["lexicon"]   # every trial's model carries the corpus's lexicon
    for t in (t for t in summary["trials"] if t["status"] == "done"):
        train_config = TrainConfig.from_json(t["train_config"])   # each trial's whole config is saved
        assert train_config.to_json() == t["train_config"] and train_config.cell == t["architecture"]["cell"]
        for c in t["candidates"]:
            bound = lower_bound_bytes(train_config, vocab, c["keep"], c["precision"], lexicon)
            assert bound <= c["bytes"] < bound + 3000, (t["label"], c["keep"], c["precision"])


def test_a_candidate_whose_shapes_exceed_the_budget_is_not_made(tiny_model_path, tmp_path):
    from compact_lm.tools.search_candidates import make_candidates
    from compact_lm.tools.search_estimate import oversized
    model = open_model(tiny_model_path)
    config = TrainConfig.from_json(model.info["train_config"])
    half, whole = (lower_bound_bytes(config, model.vocab, keep, "int8", model.info["lexicon"]) for keep in (0.5, 1.0))
    ids = model.vocab.encode("the cat sat on the mat. " * 20)
    rows, skipped = make_candidates(model, keeps=[1.0, 0.5], precisions=["int8"], finetune_steps=2, train_ids=ids,
                                    val_ids=ids, val_text="the cat sat on the mat. " * 4, typing_chars=60,
                                    folder=tmp_path, too_big=oversized(model, [1.0, 0.5], ["int8"], (half + whole) // 2))
    assert [(r["keep"], r["precision"]) for r in rows] == [(0.5, "int8")] and rows[0]["bytes"] <= (half + whole) // 2
    assert skipped == [{"keep": 1.0, "precision": "int8", "min_bytes": whole}]
    assert not (tmp_path / "keep1-int8.onnx").exists()


# ------------------------------------------------------------------------------------ a real cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _checkpoints(storage: Path) -> dict[str, list[Path]]:
    return {trial.name: sorted(trial.glob("checkpoint_*")) for trial in sorted(storage.glob("trial-*"))}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:   # deleted meanwhile (Tune keeps the newest two)
        return float("inf")


DRIVER = """
import json, sys
from compact_lm.tools.search import SearchConfig, search
from compact_lm.tools.search_space import SearchSpace
config = SearchConfig(**json.loads(sys.argv[1]))
search(config, sys.argv[2], address=sys.argv[3], _crash_after={1: 10})   # trial 1's worker dies once after step 10
"""


def test_on_a_ray_cluster_a_lost_worker_and_a_killed_driver_resume_to_the_same_models(local_search, tmp_path):
    """`ray start --head` in a subprocess; the search joins it with --address; trial 1's worker dies after a
    checkpoint (Tune restores it); the driver gets kill -9 while a trial is unfinished; `--resume` finishes
    without re-running or re-measuring finished trials; every model is bit for bit the local run's."""
    _, _, local = local_search
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),  # this test's own cluster
           "RAY_USAGE_STATS_ENABLED": "0"}
    head_log = tmp_path / "head.log"
    with open(head_log, "w") as log:
        head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                                 "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    drivers = []
    try:
        _wait_for(lambda: "Ray runtime started" in head_log.read_text(), 90, "the Ray head")
        address = f"127.0.0.1:{port}"
        out = tmp_path / "out"
        config = {"max_bytes": MAX_BYTES, "trials": 3, "steps_per_trial": 30, "eval_every": 10, "typing_chars": TYPED,
                  "scheduler": "none", "space": TINY_SPACE}   # no ASHA: every trial trains its whole budget
        first_log = tmp_path / "first.log"
        with open(first_log, "w") as log:
            first = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(config), str(out), address],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        drivers.append(first)
        storage = out / "ray" / "search"

        seen = {}   # trial folder -> when the driver printed that the trial was done

        def mid_search():
            """Trials the driver recorded as done (a `done:` line, and its experiment state saved since) and
            another one unfinished with a checkpoint: the moment to kill the driver."""
            for line in first_log.read_text().splitlines():
                if " done: " in line:
                    seen.setdefault(f"trial-{int(line.split('trial ')[1].split('/')[0]):03d}", time.time())
            states = list(storage.glob("experiment_state-*.json"))
            saved = max((s.stat().st_mtime for s in states), default=0.0)
            finished = {name for name, when in seen.items() if saved > when}
            # ... and the state saved after a checkpoint of the unfinished trial appeared, so the killed driver's
            # saved state names a checkpoint of it (else --resume would start it over, not resume it)
            unfinished = {name for name, found in _checkpoints(storage).items()
                          if found and name not in seen and any(_mtime(c) < saved for c in found)}
            return (finished, unfinished) if finished and unfinished and first.poll() is None else None

        finished, unfinished = _wait_for(mid_search, 120, "a finished and an unfinished trial")
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = {name: json.loads(next(c / "candidates.json" for c in _checkpoints(storage)[name]
                                        if (c / "candidates.json").exists()).read_text()) for name in finished}
        resumed = _cli("search", "--out", out, "--resume", "--address", address, env=env)
        assert resumed.returncode == 0, resumed.stderr
    finally:
        for process in drivers:
            if process.poll() is None:
                process.kill()
        head.send_signal(signal.SIGTERM)   # `ray start --block` stops the processes it started
        head.wait(timeout=60)
    first_run = first_log.read_text()
    assert any(line.startswith("[") and "trial 1/3 (" in line and "failed; retrying from its last checkpoint" in line for line in first_run.splitlines()), first_run
    assert "resumed from its checkpoint at step" in resumed.stderr, resumed.stderr
    import re
    kept = re.search(r"resume: (\d+) trials kept from the earlier runs \((\d+) done", resumed.stderr)
    assert kept and int(kept[2]) >= len(finished), resumed.stderr   # read back, not run again
    assert (out / "ray" / "search-2").is_dir()   # the resume is an attempt of its own
    summary = json.loads((out / "search.json").read_text(encoding="utf-8"))
    trials = {f"trial-{t['trial']:03d}": t for t in summary["trials"]}
    assert [t["status"] for t in trials.values()] == ["done"] * 3
    for name, final in before.items():   # finished before the kill: not run again, not even re-measured
        assert trials[name]["candidates"] == final["candidates"]
    # the local run's models, bit for bit: every trial both runs finished, and the shared steps of the one ASHA stopped
    for t in local["trials"]:
        if t["status"] == "done":
            mine, theirs = (_without_times(c) for c in (trials[f"trial-{t['trial']:03d}"]["candidates"], t["candidates"]))
            assert mine == theirs, (t["trial"], _differences(mine, theirs))
        else:
            history = {h["step"]: h["val_bpc"] for h in trials[f"trial-{t['trial']:03d}"]["history"]}
            assert history[t["steps"]] == t["val_bpc"]
    assert summary["best"]["bytes"] <= MAX_BYTES and (out / "best.onnx").stat().st_size == summary["best"]["bytes"]


# ------------------------------------------------------------------------------------ bad input
def test_a_byte_budget_no_candidate_can_meet_is_refused_before_anything_starts(space_file, tmp_path, capsys):
    code, _, err = run(capsys, "search", "--space", space_file, *TINY, "--max-bytes", "2000", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "no candidate of the search space fits --max-bytes 2,000: the smallest are rnn L1 "
                          "E8 H16 keep 0.5 int8 (at least ", "raise --max-bytes")
    assert not (tmp_path / "o").exists()


def test_a_budget_no_trained_candidate_met_lists_the_closest_in_one_line():
    from compact_lm.tools.search_report import failure_message
    config = SearchConfig(max_bytes=10_000, max_keystroke_ms=0.01)
    rows = [{"trial": 1, "status": "done"}, {"trial": 2, "status": "stopped early"}]
    made = [{"trial": 1, "label": "gru L1 E8 H16 d0", "keep": keep, "precision": p, "bytes": size, "p50_ms": ms}
            for keep, p, size, ms in ((1.0, "fp32", 30_000, 0.05), (0.5, "int8", 9_000, 0.08), (0.5, "fp32", 12_000, 0.02))]
    message = failure_message(config, rows, made, Path("out"))
    assert "\n" not in message
    # nearest first: the largest ratio to a limit decides (0.02 / 0.01 = 2 beats 0.05 / 0.01 = 5 and 0.08 / 0.01 = 8)
    assert message.startswith("no candidate met the budget (10,000 bytes, keystroke p50 0.01 ms); the closest: "
                              "trial 1 gru L1 E8 H16 d0 keep 0.5 fp32 (12,000 bytes, p50 0.020 ms), trial 1 gru L1 "
                              "E8 H16 d0 keep 1 fp32 (30,000 bytes, p50 0.050 ms), trial 1 gru L1 E8 H16 d0 keep 0.5 int8")
    assert failure_message(config, rows, [], Path("out")).startswith(
        "no trial finished its training and measurements (1 done, 1 stopped early)")


@pytest.mark.parametrize("address, fragment", [
    ("127.0.0.1:{closed}", "cannot reach a Ray cluster at 127.0.0.1:"),
    # TEST-NET-3 has no hosts; a firewall may still accept the connection, then Ray's own attempts time out
    ("203.0.113.1:6379", "a Ray cluster at 203.0.113.1:6379"),
    ("ray://127.0.0.1:{closed}", "cannot reach a Ray cluster at ray://127.0.0.1:"),
    ("nonsense", "--address nonsense: expected auto, HOST:PORT or ray://HOST:PORT"),
])
def test_an_unreachable_address_ends_in_one_line_within_the_time_out(address, fragment, space_file, tmp_path):
    address = address.format(closed=_free_port())
    # a subprocess with its own limit: a hang would fail the test instead of stalling it
    done = _cli("search", "--space", space_file, *TINY, "--address", address, "--connect-timeout", "1",
                "--out", tmp_path / "o", timeout=60)
    assert_one_line_error(done.returncode, done.stderr, fragment)
    assert done.returncode == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("chars, fragment", [
    (60, "the corpus is too short: its training split has 54 characters, fewer than one window per stream "
         "(batch 4 x seq_len 16 needs 80)"),
    (1200, "the corpus is too short: its validation split (60 characters) holds no complete word"),
])
def test_a_corpus_too_short_is_refused_in_one_line(chars, fragment, alice_text, space_file, tmp_path, capsys):
    corpus = tmp_path / "short.txt"
    text = alice_text[:chars] if chars < 100 else "x" * chars   # 1,200 characters and not one word boundary
    corpus.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "search", "--corpus", corpus, "--space", space_file, *TINY, "--out", tmp_path / "o")
    assert_one_line_error(code, err, fragment)


def test_without_ray_the_command_says_how_to_install_it(tmp_path):
    probe = "import sys; sys.modules['ray'] = None; from compact_lm.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", probe, "search", "--max-bytes", "1000", "--out", tmp_path / "o"],
                          capture_output=True, text=True)
    assert_one_line_error(done.returncode, done.stderr, 'compact-lm search needs Ray Tune, an optional extra: '
                          'pip install "compact-lm[search]"')


def test_the_package_and_the_search_modules_import_no_ray():
    code = ("import sys, compact_lm.cli, compact_lm.tools.search, compact_lm.tools.search_commands, "
            "compact_lm.tools.search_ray, compact_lm.tools.search_trial, compact_lm.tools.search_report; "
            "print('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_folder_and_its_resume_are_checked(local_search, space_file, tmp_path, capsys):
    out, _, _ = local_search
    code, _, err = run(capsys, "search", "--space", space_file, *TINY, "--out", out)
    assert_one_line_error(code, err, "already holds a search; pass --resume to continue it")
    code, _, err = run(capsys, "search", "--out", out, "--resume", "--trials", "5")
    assert_one_line_error(code, err, "--trials differs from the search being resumed (3 there); leave it out")
    code, _, err = run(capsys, "search", "--out", tmp_path, "--resume")
    assert_one_line_error(code, err, "holds no search to resume (search.json is missing)")
    code, _, err = run(capsys, "search", "--space", space_file, "--out", tmp_path / "o")
    assert code == 2 and "the following arguments are required: --max-bytes" in err


def test_the_space_is_drawn_with_the_seed_without_repeats():
    space = SearchSpace.from_json(TINY_SPACE)
    assert len(space.architectures()) == 4
    drawn = space.sample(3, seed=0)
    assert drawn == space.sample(3, seed=0) and len({json.dumps(a) for a in drawn}) == 3
    assert len(space.sample(10, seed=0)) == 4   # never more than the space holds
    assert space.sample(4, seed=1) != space.sample(4, seed=0)


def test_architectures_that_cannot_fit_the_budget_are_passed_over_in_the_draw():
    space = SearchSpace.from_json({**TINY_SPACE, "hidden": [16, 32, 512]})
    config = SearchConfig(max_bytes=MAX_BYTES, trials=4, steps_per_trial=30, space=space)
    labels = [spec["label"] for spec in plan_trials(config).specs]
    # H512 (H256 at keep 0.5: over 100 KB) cannot fit 20,000 bytes: the four trials are the small ones
    assert sorted(labels) == sorted(f"{c} L1 E8 H{h} d0" for c in ("gru", "rnn") for h in (16, 32))


def test_every_trial_reports_its_cpu_time_and_the_table_sums_it(local_search):
    out, _, summary = local_search
    trials = summary["trials"]
    assert all(t["cpu_s"] > 0 for t in trials)
    assert summary["cpu_s"] == pytest.approx(sum(t["cpu_s"] for t in trials))
    # a finished trial trained 30 steps and measured 4 candidates: more CPU than one stopped at its first rung
    done = [t["cpu_s"] for t in trials if t["status"] == "done"]
    stopped = [t["cpu_s"] for t in trials if t["status"] == "stopped early"]
    assert min(done) > max(stopped)
    assert f"{summary['cpu_s'] / 60:.1f} CPU-minutes in the trials" in (out / "search.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("flags, fragment", [
    (["--cells", "transformer"], "--cells: unknown cell 'transformer'; choose from rnn, gru, lstm"),
    (["--keeps", "1.5"], "--keeps: every fraction must be in (0, 1] (got 1.5)"),
    (["--max-keystroke-ms", "-1"], "--max-keystroke-ms: must be a positive number (got -1.0)"),
    (["--finetune-fraction", "2"], "--finetune-fraction: must be between 0 and 1 (got 2.0)"),
])
def test_a_bad_setting_is_named_by_its_flag_in_one_line(flags, fragment, space_file, tmp_path, capsys):
    code, _, err = run(capsys, "search", "--space", space_file, *TINY, *flags, "--out", tmp_path / "o")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "o").exists()


def _trial_folder(attempt: Path, index: int, checkpoints: dict[int, dict[str, bytes]], results=({"step": 10},)):
    """A trial's folder as Tune leaves it: checkpoint_NNNNNN folders (name -> bytes) and result.json lines."""
    folder = attempt / f"trial-{index:03d}"
    for number, files in checkpoints.items():
        (folder / f"checkpoint_{number:06d}").mkdir(parents=True)
        for name, data in files.items():
            (folder / f"checkpoint_{number:06d}" / name).write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
    return folder


def _npz_bytes() -> bytes:
    import io
    import numpy as np
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(3))
    return buffer.getvalue()


def test_a_resume_reads_the_attempts_files_and_never_unpickles(tmp_path):
    """Done (candidates in a checkpoint), stopped early and failed trials are kept; an unfinished one runs again
    from its newest complete checkpoint (a truncated newer one is passed over); pickles are never loaded."""
    import pickle
    from compact_lm.tools.search_resume import next_attempt, recover
    storage = tmp_path / "ray"
    first = storage / "search"
    trainer_files = {"state.npz": _npz_bytes(), "model.npz": _npz_bytes(), "history.json": b"[]"}
    final = {"trial": 1, "architecture": {"cell": "gru"}, "steps": 30, "val_bpc": 2.5, "candidates": [], "fits": 0,
             "best": None}
    # trial 6 finished, but the kill cut its last checkpoint short: the chosen files are missing
    cut = {**final, "trial": 6, "best": {"keep": 1.0, "precision": "int8", "bytes": 100}}
    cut_short = _trial_folder(first, 6, {1: trainer_files, 2: {"candidates.json": json.dumps(cut).encode()}})
    _trial_folder(first, 1, {3: {"candidates.json": json.dumps(final).encode()}, 2: trainer_files},
                  results=({"step": 30, "final": 1},))
    _trial_folder(first, 2, {1: trainer_files}, results=({"step": 10, "budget_percent": 33.3, "val_bpc": 3.1},))
    failed = _trial_folder(first, 3, {})
    (failed / "error.txt").write_text("Traceback ...\nValueError: lost\n")
    unfinished = _trial_folder(first, 4, {1: trainer_files, 2: {**trainer_files, "state.npz": _npz_bytes()[:20]}})

    class Alarm:   # unpickling it would leave a file behind
        def __reduce__(self):
            return (Path.write_text, (tmp_path / "unpickled", "yes"))
    (first / "tuner.pkl").write_bytes(pickle.dumps(Alarm()))
    state = {"trial_data": [[json.dumps({"custom_dirname": f"trial-00{i}", "status": status,
                                         "storage": {"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps(Alarm()).hex()}}), "{}"]
                            for i, status in ((1, "TERMINATED"), (2, "TERMINATED"), (3, "ERROR"), (4, "RUNNING"))]}
    (first / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    specs = [{"index": i, "label": f"t{i}", "architecture": {"cell": "gru"}} for i in (1, 2, 3, 4, 5, 6)]
    recovered = recover(str(storage), specs)
    kept = {o["spec"]["index"]: o for o in recovered.outcomes}
    assert kept[1]["final"] == final and kept[1]["error"] is None
    assert kept[2]["final"] is None and kept[2]["metrics"]["budget_percent"] == 33.3 and kept[2]["error"] is None
    assert kept[3]["error"] == "ValueError: lost"
    assert [(s["index"], s["restore_from"]) for s in recovered.to_run] == [
        (4, str(unfinished / "checkpoint_000001")), (5, None), (6, str(cut_short / "checkpoint_000001"))]
    assert next_attempt(str(storage)) == "search-2"
    (storage / "search-3").mkdir()
    assert next_attempt(str(storage)) == "search-4"   # after the newest, whatever is missing between
    assert not (tmp_path / "unpickled").exists()


def test_a_connect_timeout_must_be_positive(space_file, tmp_path, capsys):
    for value in ("0", "-1"):
        code, _, err = run(capsys, "search", "--space", space_file, *TINY, "--address", "127.0.0.1:1",
                           "--connect-timeout", value, "--out", tmp_path / "o")
        assert code == 2 and "--connect-timeout: must be greater than 0" in err and "Traceback" not in err


def test_typing_chars_that_hold_no_complete_word_are_refused_in_one_line(space_file, tmp_path, capsys):
    index = TINY.index("--typing-chars")
    flags = TINY[:index] + ["--typing-chars", "2"] + TINY[index + 2:]
    code, _, err = run(capsys, "search", "--space", space_file, *flags, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "--typing-chars 2: the first 2 characters of the validation split hold no "
                          "complete word")
    assert not (tmp_path / "o").exists()


def test_a_trial_that_diverged_is_told_from_one_that_failed_otherwise():
    from compact_lm.tools.search_report import trial_rows
    base = {"steps": 5, "val_bpc": None, "candidates": [], "best": None, "cpu_s": 1.0}
    outcomes = [{"spec": {"index": i, "label": "gru L1 E8 H16 d0", "architecture": {}, "train_config": {}},
                 "metrics": {}, "final": {**base, **reason}, "error": None}
                for i, reason in ((1, {"diverged": "training diverged at step 5: the loss is nan"}),
                                  (2, {"error": "the corpus read on this node differs from the driver's"}))]
    assert [(r["status"], r["error"]) for r in trial_rows(outcomes)] == [
        ("diverged", "training diverged at step 5: the loss is nan"),
        ("failed", "the corpus read on this node differs from the driver's")]


def test_a_resume_that_would_start_over_and_a_used_storage_are_refused(tmp_path):
    from compact_lm.errors import CompactLMError
    from compact_lm.tools.search_ray import check_experiment
    saved = tmp_path / "saved"
    (saved / "search" / "trial-001").mkdir(parents=True)
    other = tmp_path / "other"
    with pytest.raises(CompactLMError, match="cannot resume: .*other holds no trials of this search, but trials were "
                                             "saved in .*saved; pass the storage"):
        check_experiment(str(other), resume=True, saved_storage=str(saved))
    check_experiment(str(other), resume=True, saved_storage=str(other))   # nothing saved yet: fine
    with pytest.raises(CompactLMError, match="the storage .*saved already holds a search's trials"):
        check_experiment(str(saved), resume=False)
    check_experiment(str(other), resume=False)


def test_an_interrupted_fit_is_told_from_a_finished_one():
    from types import SimpleNamespace
    from compact_lm.tools.search_ray import _interrupted
    def grid(*statuses):
        return SimpleNamespace(_experiment_analysis=SimpleNamespace(trials=[SimpleNamespace(status=s) for s in statuses]))
    assert not _interrupted(grid("TERMINATED", "ERROR"))
    assert _interrupted(grid("TERMINATED", "PENDING")) and _interrupted(grid("RUNNING"))


def test_stale_work_folders_of_dead_processes_are_removed(tmp_path):
    from compact_lm.tools.search_trial import PID_FILE, remove_stale_folders
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {name: tmp_path / name for name in ("compact-lm-trial-dead", "compact-lm-checkpoint-alive",
                                                  "compact-lm-trial-nopid", "other-dead")}
    for name, folder in folders.items():
        folder.mkdir()
        if "nopid" not in name:
            (folder / PID_FILE).write_text(str(os.getpid() if "alive" in name else dead.pid))
    remove_stale_folders(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compact-lm-checkpoint-alive", "compact-lm-trial-nopid",
                                                          "other-dead"]


def test_shipped_info_names_the_corpus_files_not_where_they_live():
    from compact_lm.tools.search_candidates import deterministic_info
    info = {"steps": 30, "metrics": {"val": {"bpc": 2.0}, "elapsed_s": 1.5},
            "train_config": {"corpus": ["/home/me/data/a.txt", "/srv/b.txt.gz"], "seed": 0},
            "source": {"train_config": {"corpus": ["/x/a.txt"]}, "corpus_sha256": "ab"}}
    out = deterministic_info(info)
    assert out["train_config"] == {"corpus": ["a.txt", "b.txt.gz"], "seed": 0}
    assert out["source"] == {"train_config": {"corpus": ["a.txt"]}, "corpus_sha256": "ab"}
    assert out["metrics"] == {"val": {"bpc": 2.0}}


def test_a_sigint_tune_caught_is_told_after_fit_returns():
    """Tune's handler, on SIGINT, puts back the handler it replaced and lets fit() return normally."""
    from compact_lm.tools.search_ray import _sigint

    def fit(interrupt: bool):
        replaced = signal.getsignal(signal.SIGINT)

        def tune_handler(signum, frame):
            signal.signal(signal.SIGINT, replaced)
        signal.signal(signal.SIGINT, tune_handler)
        if interrupt:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    before = signal.getsignal(signal.SIGINT)
    for interrupt in (False, True):
        with _sigint() as caught:
            fit(interrupt)
        assert caught() == interrupt and signal.getsignal(signal.SIGINT) is before


def test_trials_train_at_batch_64_unless_the_space_fixes_one():
    from compact_lm.tools.search import trial_config
    architecture = {"cell": "gru", "layers": 1, "embed": 16, "hidden": 32, "dropout": 0.0}
    assert trial_config(SearchConfig(max_bytes=100_000, space=SearchSpace()), architecture).batch == 64
    assert trial_config(SearchConfig(max_bytes=100_000, space=SearchSpace(fixed={"batch": 8})), architecture).batch == 8


def test_a_split_that_is_not_a_list_is_one_line():
    from compact_lm.errors import CompactLMError
    from compact_lm.tools.search import trial_config
    architecture = {"cell": "gru", "layers": 1, "embed": 16, "hidden": 32, "dropout": 0.0}
    with pytest.raises(CompactLMError, match=r"split must be a list of the train, val and test fractions, got 0\.9"):
        trial_config(SearchConfig(max_bytes=100_000, space=SearchSpace(fixed={"split": 0.9})), architecture)


def test_of_two_files_typing_the_same_the_smaller_is_chosen_and_on_the_front():
    from compact_lm.tools.search_report import choose_best, pareto_front
    fp32 = {"trial": 1, "bytes": 64_609, "savings": 0.3495, "val_bpc": 2.94518, "fits": True}
    int8 = {"trial": 1, "bytes": 31_579, "savings": 0.3495, "val_bpc": 2.94537, "fits": True}
    assert choose_best([fp32, int8], "savings") is int8 and pareto_front([fp32, int8]) == [int8]
    assert choose_best([fp32, int8], "bpc") is fp32
