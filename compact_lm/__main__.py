"""`python -m compact_lm` is the `compact-lm` command."""
from .cli import entry_point

entry_point()
