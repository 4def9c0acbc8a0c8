"""docs/cli.md's training flags are TrainConfig's: one source for the flags, their defaults and meanings."""
import re
from pathlib import Path

from compact_lm.model_commands import train_flags, train_flags_markdown

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_the_train_flags_table_is_generated_from_train_config():
    block = re.search(r"<!-- train-options:start -->\n(.*?)<!-- train-options:end -->",
                      CLI_DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None, "docs/cli.md lost its train-options markers"
    assert block.group(1) == train_flags_markdown(), (
        "regenerate with: python -c 'from compact_lm.model_commands import train_flags_markdown as t; print(t())'")


def test_every_train_flag_help_states_the_train_config_default(capsys):
    from compact_lm.cli import build_parser
    import pytest
    with pytest.raises(SystemExit):
        build_parser(["train"]).parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, default, meaning in train_flags():
        assert flag in help_text
        assert " ".join(f"{meaning} (default {default})".split()) in help_text if default else meaning in help_text
