"""The one exception type for a user's mistake: the CLI prints its message on one line and exits 1."""


class CompactLMError(Exception):
    """A problem with the user's input or environment, explained in one line (no traceback)."""


class TrainingDiverged(CompactLMError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(CompactLMError):
    """Ctrl-C during training: the state was saved and the run can be resumed."""


class SettingError(CompactLMError):
    """A bad value of one named setting (a TrainConfig field, a function argument).

    `template` names settings as {name}: the library spells them as Python does (`lr`, `out_dir`), the
    command line as its flags (`--lr`, `--out`). The user's own text (paths, values) comes in `values`
    and is never read as a setting name. A template that does not name `setting` is prefixed with it:
    SettingError("lr", "must be positive") reads "lr: must be positive".
    """

    def __init__(self, setting: str, template: str, **values):
        self.setting, self.values = setting, values
        self.template = template if "{" + setting + "}" in template else "{" + setting + "}: " + template
        super().__init__(self.worded(lambda name: name))

    def settings(self) -> list[str]:
        """The settings the message names."""
        import string
        return [name for _, name, _, _ in string.Formatter().parse(self.template)
                if name is not None and name not in self.values]

    def worded(self, word) -> str:
        """The message with every setting spelled by word(name)."""
        return self.template.format(**{name: word(name) for name in self.settings()}, **self.values)

    def __reduce__(self):
        return _rebuild_setting_error, (self.setting, self.template, self.values)


def _rebuild_setting_error(setting: str, template: str, values: dict) -> SettingError:
    return SettingError(setting, template, **values)
