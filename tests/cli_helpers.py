"""Running the CLI in-process in tests, and the one-line-error check every bad-input test makes."""
from compact_lm.cli import main


def run(capsys, *argv):
    """Run `compact-lm ARGV` in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    """A non-zero exit, exactly one line on stderr, no traceback, and every fragment in that line."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
