"""The one exception type for a user's mistake: the CLI prints its message on one line and exits 1."""


class CompactLMError(Exception):
    """A problem with the user's input or environment, explained in one line (no traceback)."""


class TrainingDiverged(CompactLMError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""
