"""The one exception type for a user's mistake: the CLI prints its message on one line and exits 1."""


class CompactLMError(Exception):
    """A problem with the user's input or environment, explained in one line (no traceback)."""


class TrainingDiverged(CompactLMError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(CompactLMError):
    """Ctrl-C during training: the state was saved and the run can be resumed."""


class SettingError(CompactLMError):
    """A bad value of one named setting (a TrainConfig field, a function argument).

    `message` names settings as {name}: the library spells them as Python does (`lr`, `out_dir`), the
    command line as its flags (`--lr`, `--out`). A message that does not name `setting` is prefixed
    with it: SettingError("lr", "must be positive") reads "lr: must be positive".
    """

    def __init__(self, setting: str, message: str):
        self.setting = setting
        self.message = message if "{" + setting + "}" in message else "{" + setting + "}: " + message
        super().__init__(self.worded(lambda name: name))

    def worded(self, word) -> str:
        """The message with every setting spelled by word(name)."""
        import re
        return re.sub(r"\{([a-z_]+)\}", lambda match: word(match.group(1)), self.message)
