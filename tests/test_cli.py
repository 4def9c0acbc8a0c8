"""The command line: each command works, and each bad input gets one line, a non-zero exit, no traceback."""
import json
import subprocess
import sys

import numpy as np
import pytest

from compact_lm import load
from cli_helpers import assert_one_line_error, run

TINY_ARGS = ["--embed", "8", "--hidden", "16", "--batch", "4", "--seq-len", "16", "--eval-every", "10", "--quiet"]


def test_train_eval_sample_info(tmp_path, small_corpus, capsys):
    code, out, _ = run(capsys, "train", "--corpus", small_corpus, *TINY_ARGS, "--steps", "20", "--out", tmp_path / "run")
    assert code == 0 and "val:" in out and "test:" in out
    model_path = tmp_path / "run" / "model.npz"
    code, out, _ = run(capsys, "eval", model_path, "--text", small_corpus, "--json")
    result = json.loads(out)
    assert code == 0 and set(result) == {"nats", "bpc", "perplexity", "chars", "unknown"}
    assert result["chars"] == len(small_corpus.read_text(encoding="utf-8")) - 1
    code, out, _ = run(capsys, "sample", model_path, "--prompt", "Alice", "--length", "30", "--seed", "3")
    assert code == 0 and out.startswith("Alice") and len(out.rstrip("\n")) == 35
    code, out, _ = run(capsys, "info", model_path, "--json")
    info = json.loads(out)
    assert code == 0 and info["params"] == load(model_path).num_params
    assert info["tensors"]["rnn.weight_hh_l0"]["shape"] == [48, 16]


def test_info_names_the_lexicons_bytes_and_a_pruned_models_steps(tiny_model_path, tmp_path, capsys):
    from compact_lm.export import export_model
    model = load(tiny_model_path)
    stored = len(json.dumps(model.info["lexicon"]))
    export_model(model, tmp_path / "m.onnx")
    for path in (tiny_model_path, tmp_path / "m.onnx"):
        code, out, _ = run(capsys, "info", path)
        assert code == 0 and f"lexicon: {model.info['lexicon']['words']:,} words of its training text, {stored:,} bytes" in out
    model.info["pruning"] = [{"round": 1, "finetune_steps": 3}, {"round": 2, "finetune_steps": 4}]
    model.info["steps"] = 4
    model.save(tmp_path / "pruned.npz")
    assert "bytes on disk, pruned, then fine-tuned 7 steps" in run(capsys, "info", tmp_path / "pruned.npz")[1]
    model.info["pruning"] = [{"round": 1}]
    model.save(tmp_path / "pruned.npz")
    assert "bytes on disk, 4 training steps, then pruned" in run(capsys, "info", tmp_path / "pruned.npz")[1]


def test_a_perplexity_past_float_range_is_inf_and_null_in_json(tmp_path, tiny_model_path, capsys):
    from compact_lm.metrics import Metrics
    diverged = Metrics(nats=1e6, chars=10, unknown=0)   # a run at lr 1e6 scored about this
    assert diverged.perplexity == float("inf") and diverged.to_json()["perplexity"] is None
    assert Metrics(nats=700.0, chars=10, unknown=0).to_json()["perplexity"] > 1e300
    model = load(tiny_model_path)
    model.params["head.bias"][1] = 1e9   # the second character takes every bit of the mass
    model.save(tmp_path / "diverged.npz")
    (tmp_path / "text.txt").write_text(model.vocab.decode([2, 3, 2, 3]))
    code, out, _ = run(capsys, "eval", tmp_path / "diverged.npz", "--text", tmp_path / "text.txt")
    assert code == 0 and out.rstrip().endswith("perplexity inf")
    assert json.loads(run(capsys, "eval", tmp_path / "diverged.npz", "--text", tmp_path / "text.txt", "--json")[1])["perplexity"] is None


def test_sampling_is_reproducible_with_a_seed(tiny_model_path, capsys):
    first = run(capsys, "sample", tiny_model_path, "--length", "50", "--seed", "7")[1]
    second = run(capsys, "sample", tiny_model_path, "--length", "50", "--seed", "7")[1]
    assert first == second


def test_sampling_draws_each_character_before_stepping_to_the_next(tiny_model_path):
    from compact_lm.sample import generate, sample
    model = load(tiny_model_path)
    backend, steps = model.backend(), []
    step = backend.step
    backend.step = lambda ids, state: (steps.append(1), step(ids, state))[1]
    chars = generate(backend, model.vocab, length=40, seed=5)
    first = next(chars)
    assert len(first) == 1 and not steps   # shown before any model step for the next one
    assert first + "".join(chars) == sample(model.backend(), model.vocab, length=40, seed=5)


@pytest.mark.parametrize("command", [["info"], ["info", "--json"], ["sample", "--length", "5"], ["--help"]])
def test_output_that_cannot_be_written_is_one_line(tiny_model_path, command):
    # /dev/full: every write fails with ENOSPC; what is buffered fails at exit, where the entry point words it
    with open("/dev/full", "w") as full:
        model = [] if command[0].startswith("-") else [str(tiny_model_path)]
        done = subprocess.run([sys.executable, "-c", "from compact_lm.cli import entry_point; entry_point()",
                               command[0], *model, *command[1:]], stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == "compact-lm: error: No space left on device (writing the output)"


def test_resume_takes_unspecified_settings_from_the_saved_run(tmp_path, small_corpus, capsys, monkeypatch):
    from compact_lm.trainer import Trainer
    args = ["train", "--corpus", small_corpus, *TINY_ARGS, "--steps", "20", "--lr", "0.02"]
    assert run(capsys, *args, "--out", tmp_path / "straight")[0] == 0
    original = Trainer.train_step

    def interrupt_at_15(self):
        loss = original(self)
        if self.step == 15:
            raise KeyboardInterrupt
        return loss

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_15)
    assert run(capsys, *args, "--out", tmp_path / "split")[0] == 130
    monkeypatch.setattr(Trainer, "train_step", original)
    # only --out and --resume: every other setting (--lr 0.02, sizes, corpus) comes from the saved run
    code, _, err = run(capsys, "train", "--out", tmp_path / "split", "--resume", "--quiet")
    assert code == 0, err
    a, b = load(tmp_path / "straight" / "model.npz"), load(tmp_path / "split" / "model.npz")
    assert all(np.array_equal(a.params[n], b.params[n]) for n in a.params)


def test_python_dash_m_runs_the_cli(tiny_model_path):
    done = subprocess.run([sys.executable, "-m", "compact_lm", "info", str(tiny_model_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "gru model" in done.stdout


def test_bad_input_from_a_subprocess_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "compact_lm", "eval", str(tmp_path / "nope.npz"), "--text", "x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------ bad input
# test_bad_input_table.py runs every row of docs/cli.md's table (exit code and message); the tests here check
# other inputs, other commands, or more than the table does (no folder left behind).
def test_missing_corpus(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--corpus", tmp_path / "nope.txt", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "nope.txt does not exist")
    assert not (tmp_path / "run").exists()          # a refused run leaves no empty folder behind


def test_corpus_shorter_than_one_window(tmp_path, capsys):
    (tmp_path / "short.txt").write_text("a short text")
    code, _, err = run(capsys, "train", "--corpus", tmp_path / "short.txt", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "fewer than one window", "--batch 16 x --seq-len 128")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, fragment", [
    ("--hidden", "0", "--hidden"),
    ("--lr", "-1", "--lr: must be a positive number"),
    ("--lr", "abc", "--lr"),
    ("--dropout", "1.5", "--dropout: must be between"),
    ("--weight-decay", "-0.1", "--weight-decay"),
    ("--label-smoothing", "0.9", "--label-smoothing"),
    ("--minutes", "-5", "--minutes"),
    ("--lr", "nan", "--lr"),
])
def test_nonsensical_hyperparameters(tmp_path, small_corpus, capsys, flag, value, fragment):
    code, _, err = run(capsys, "train", "--corpus", small_corpus, flag, value, "--out", tmp_path / "run")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_output_folder_not_writable(tmp_path, small_corpus, capsys):
    (tmp_path / "a_file").write_text("x")
    code, _, err = run(capsys, "train", "--corpus", small_corpus, "--out", tmp_path / "a_file" / "run")
    assert_one_line_error(code, err, "--out", "cannot create the folder")


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    (b"", "truncated or not an .npz"),
    (b"plain text, not a zip", "truncated or not an .npz"),
])
def test_bad_model_files(tmp_path, capsys, content, fragment):
    path = tmp_path / "model.npz"
    if content is not None:
        path.write_bytes(content)
    for command in (["eval", path, "--text", path], ["sample", path], ["info", path]):
        code, _, err = run(capsys, *command)
        assert_one_line_error(code, err, "model.npz", fragment)


def test_truncated_model_file(tmp_path, tiny_model_path, capsys):
    data = tiny_model_path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) - 100])
    code, _, err = run(capsys, "info", tmp_path / "cut.npz")
    assert_one_line_error(code, err, "cut.npz")


def test_model_with_wrong_format_version(tmp_path, tiny_model_path, capsys):
    with np.load(tiny_model_path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("metadata").tobytes().decode("utf-8"))
    meta["format_version"] = 2
    np.savez(tmp_path / "v2.npz", metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    code, _, err = run(capsys, "info", tmp_path / "v2.npz")
    assert_one_line_error(code, err, "format version 2")


def test_model_with_object_arrays(tmp_path, tiny_model_path, capsys):
    with np.load(tiny_model_path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["payload"] = np.array([print], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    code, _, err = run(capsys, "info", tmp_path / "evil.npz")
    assert_one_line_error(code, err, "object arrays")


def test_resume_with_mismatched_config(tmp_path, small_corpus, capsys):
    out = tmp_path / "run"
    run(capsys, "train", "--corpus", small_corpus, *TINY_ARGS, "--steps", "10", "--out", out)
    code, _, err = run(capsys, "train", "--corpus", small_corpus, *TINY_ARGS, "--steps", "10", "--cell", "lstm",
                       "--out", out, "--resume")
    assert_one_line_error(code, err, "--resume", "cell: saved 'gru' vs given 'lstm'")


def test_resume_without_a_saved_run(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--out", tmp_path / "empty", "--resume")
    assert_one_line_error(code, err, "--resume", "nothing to resume")


def test_eval_text_missing(tiny_model_path, tmp_path, capsys):
    code, _, err = run(capsys, "eval", tiny_model_path, "--text", tmp_path / "none.txt")
    assert_one_line_error(code, err, "none.txt does not exist")


def test_unknown_command_line_option(capsys):
    code, _, err = run(capsys, "train", "--hiden", "5", "--out", "x")
    assert_one_line_error(code, err, "unrecognized arguments: --hiden")
    assert err.startswith("compact-lm train: error:")   # the command's own parser, as docs/cli.md says


def test_training_without_a_terminal_logs_a_line_per_evaluation(tmp_path, small_corpus):
    done = subprocess.run([sys.executable, "-m", "compact_lm", "train", "--corpus", str(small_corpus),
                           *[a for a in TINY_ARGS if a != "--quiet"], "--steps", "20", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 10/20", "step 20/20"]
    assert "val " in lines[-1] and "chars/s" in lines[-1]


def test_complete_reads_a_long_prefix_from_a_file_or_stdin(tiny_model_path, tmp_path, capsys, monkeypatch):
    import io
    prefix = "Alice was beginning to get very tired of sitting by her sister on the bank, " * 3000 + "and of hav"
    (tmp_path / "prefix.txt").write_text(prefix, encoding="utf-8")
    expected = run(capsys, "complete", tiny_model_path, prefix[-2000:])[1]
    assert run(capsys, "complete", tiny_model_path, "--prefix-file", tmp_path / "prefix.txt")[1] == expected
    monkeypatch.setattr(sys, "stdin", io.StringIO(prefix + "\n"))   # as `echo` sends it: the newline is not typed
    assert run(capsys, "complete", tiny_model_path, "--prefix-file", "-")[1] == expected


def test_complete_needs_exactly_one_prefix(tiny_model_path, tmp_path, capsys):
    code, _, err = run(capsys, "complete", tiny_model_path)
    assert_one_line_error(code, err, "PREFIX", "--prefix-file")
    assert code == 2   # a usage error, as argparse's own


def test_complete_takes_its_options_before_the_prefix_too(tiny_model_path, capsys):
    after = run(capsys, "complete", tiny_model_path, "Alice w", "-k", "2", "--next")
    assert after[0] == 0 and run(capsys, "complete", tiny_model_path, "-k", "2", "--next", "Alice w") == after
    dash = run(capsys, "complete", tiny_model_path, "--", "-Alice w")
    assert dash[0] == 0 and run(capsys, "complete", tiny_model_path, "-k", "3", "--", "-Alice w") == dash


def test_library_errors_name_the_setting_and_the_cli_names_the_flag(tmp_path, small_corpus, capsys):
    from compact_lm import CompactLMError, TrainConfig
    with pytest.raises(CompactLMError, match=r"^warmup_steps: must be >= 0"):
        TrainConfig(warmup_steps=-1)
    code, _, err = run(capsys, "train", "--corpus", small_corpus, "--warmup-steps", "-1", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "--warmup-steps: must be >= 0")


def test_the_users_own_text_in_an_error_is_never_read_as_a_setting(tmp_path, small_corpus, capsys):
    (tmp_path / "run{resume}").write_text("a file, not a folder", encoding="utf-8")
    code, _, err = run(capsys, "train", "--corpus", small_corpus, "--steps", "1", "--out", tmp_path / "run{resume}")
    assert_one_line_error(code, err, f"--out {tmp_path / 'run{resume}'} is a file, not a folder")


def test_a_setting_is_worded_as_the_flag_of_the_command_that_ran(tiny_model_path, tmp_path, capsys):
    code, _, err = run(capsys, "prune", tiny_model_path, "--keep", "0.5", "--finetune-steps", "2",
                       "--finetune-lr", "-1", "--out", tmp_path / "p.npz")
    assert_one_line_error(code, err, "--finetune-lr: must be a positive number (got -1.0)")


def test_train_says_which_step_its_model_file_holds(tmp_path, small_corpus, capsys):
    import re
    code, out, _ = run(capsys, "train", "--corpus", small_corpus, *TINY_ARGS, "--steps", "30", "--out", tmp_path / "run")
    kept = load(tmp_path / "run" / "model.npz").info["steps"]
    line = next(line for line in out.splitlines() if line.startswith("model:"))
    assert code == 0
    assert (f"step {kept} of 30" in line) if kept != 30 else line.endswith("30 steps)")
    assert re.search(r"\d[\d,]* parameters", line)


def test_ctrl_c_while_a_command_loads_is_one_line(monkeypatch, capsys):
    import compact_lm.cli as cli

    def interrupted(argv=None):
        raise KeyboardInterrupt   # as Ctrl-C during the import of the command's module
    monkeypatch.setattr(cli, "build_parser", interrupted)
    monkeypatch.setattr(sys, "argv", ["compact-lm", "train"])
    with pytest.raises(SystemExit) as stop:
        cli.entry_point()
    assert stop.value.code == 130 and capsys.readouterr().err == "compact-lm: interrupted\n"


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["--bogus"], 2), (["info"], 2)])
def test_a_closed_stdout_changes_no_exit_code(args, code):
    import os
    done = subprocess.run([sys.executable, "-c", "from compact_lm.cli import entry_point; entry_point()", *args],
                          stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert done.returncode == code and "Traceback" not in done.stderr


def test_a_usage_error_that_cannot_be_told_still_exits_2():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", "from compact_lm.cli import entry_point; entry_point()",
                               "--bogus"], stdout=subprocess.PIPE, stderr=full)
    assert done.returncode == 2
