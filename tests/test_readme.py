"""The README stays a true, short map: its `compact-lm` commands run, its links to docs/ resolve, and it
has at most 200 lines.

The commands are taken from README.md as written: every line of a ```bash block, and every `code` span,
that starts with `compact-lm `. They run in README order, in-process, in one temporary folder that holds
the corpus file the README names (`my_text.txt`: the first 20,000 characters of the bundled corpus).
The only changes to a command are the substitutions in TINY, each a plain text replacement; everything
else runs exactly as written.
"""
import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from compact_lm.cli import main
from compact_lm.data import default_corpus_path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 200

# README text -> what the test runs instead. Only sizes, budgets and one stand-in file change.
TINY = {
    # a 10-minute GRU-256 becomes a GRU-16 trained for 30 steps (about a second)
    "--minutes 10": "--steps 30 --embed 8 --hidden 16 --batch 4 --seq-len 16 --eval-every 10 "
                    "--warmup-steps 2 --lr 1e-2 --threads 1 --quiet",
    # fine-tuning the pruned model: 4 steps instead of 500
    "--finetune-steps 500": "--finetune-steps 4 --quiet",
    # `compact-lm demo` writes runs/demo/; the workflow's int8 step graph stands in for the demo's
    "runs/demo/model-int8.onnx": "runs/mine/small.onnx",
}

# Commands the README shows but this test does not run, and why; their options are checked against --help.
NOT_RUN = {
    "demo": "about 5 minutes on the real sizes; tests/test_demo.py runs it with tiny ones",
    "serve": "serves until Ctrl-C; tests/test_web_page.py runs it on a free port and drives the page",
}

# What each command's output must show (stdout unless noted).
EXPECT = {
    "train": ["val:", "bpc"],
    "prune": ["parameters"],
    "quantize": ["int8"],
    "export": ["step graph", "sequence graph"],
    "verify": ["ok: max |delta log-prob|"],
    "complete": ["%"],
    "repl": [" -> ", "%"],
    "web": ["wrote the site"],
}
REPL_INPUT = "Alice was beginning to get ver\n"


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """Every `compact-lm ...` command of the README, in order: ```bash lines and `code` spans."""
    text = readme_text()
    commands = []
    for match in re.finditer(r"```(\w*)\n(.*?)```|`([^`\n]+)`", text, flags=re.S):
        if match.group(3) is not None:
            lines = [match.group(3)]
        elif match.group(1) in ("bash", "sh", "shell", "console"):
            lines = match.group(2).splitlines()
        else:
            continue
        commands += [line.strip() for line in lines if line.strip().startswith("compact-lm ")]
    return commands


COMMANDS = readme_commands()


def tiny(command: str) -> list[str]:
    """The command with TINY's substitutions, split as a POSIX shell would (comments dropped)."""
    for written, run_as in TINY.items():
        command = command.replace(written, run_as)
    return shlex.split(command, comments=True)


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """`compact-lm ARGV` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Each README command run in order in one folder: command -> (exit code, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("readme")
    corpus = default_corpus_path().read_text(encoding="utf-8")[:20000]
    (folder / "my_text.txt").write_text(corpus, encoding="utf-8")
    ran = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for command in COMMANDS:
            argv = tiny(command)[1:]
            if argv[0] in NOT_RUN:
                continue
            ran[command] = run_cli(argv, REPL_INPUT if argv[0] == "repl" else "")
    return ran


def test_the_readme_shows_the_workflow():
    names = [shlex.split(c, comments=True)[1] for c in COMMANDS]
    for name in ("train", "prune", "quantize", "export", "verify", "complete"):
        assert name in names, f"the README shows no `compact-lm {name}` command"
    assert set(names) <= set(EXPECT) | set(NOT_RUN), "a README command this test does not know: add it to EXPECT"


@pytest.mark.parametrize("command", [c for c in COMMANDS if shlex.split(c, comments=True)[1] not in NOT_RUN])
def test_readme_command_runs(results, command):
    code, out, err = results[command]
    assert code == 0, f"{command!r} (run as {tiny(command)!r}) exited {code}:\n{err}"
    argv = tiny(command)
    for fragment in EXPECT[argv[1]] + (["next characters:"] if "--next" in argv else []):
        assert fragment in out, f"{command!r}: {fragment!r} not in its output:\n{out}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if shlex.split(c, comments=True)[1] in NOT_RUN])
def test_readme_command_not_run_has_real_options(command):
    argv = shlex.split(command, comments=True)[1:]
    code, out, _ = run_cli([argv[0], "--help"])
    assert code == 0
    for option in (a for a in argv[1:] if a.startswith("--")):
        assert option in out, f"{command!r}: `compact-lm {argv[0]}` has no option {option}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lowercased, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def test_readme_links_to_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme_text())
    assert any(path.endswith(".md") for path, _ in links)
    for path, anchor in links:
        target = ROOT / path
        assert target.is_file(), f"README links to {path}, which does not exist"
        if anchor and path.endswith(".md"):
            assert anchor in _anchors(target.read_text(encoding="utf-8")), f"{path} has no heading #{anchor}"


def test_readme_is_at_most_200_lines():
    lines = len(readme_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_readme_shows_the_embedding_loop_verbatim():
    loop = ROOT / "docs" / "embed_loop.py"
    text = readme_text()
    marker = "<!-- docs/embed_loop.py -->\n```python\n"
    assert marker in text, "README: no ```python block right after the docs/embed_loop.py marker"
    shown = text.split(marker, 1)[1].split("\n```\n", 1)[0] + "\n"
    assert shown == loop.read_text(encoding="utf-8"), "README's embedding loop differs from docs/embed_loop.py"
