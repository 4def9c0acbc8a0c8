"""`compact-lm repl`: word suggestions that update with every keystroke, or per line without a terminal.

In a terminal the line discipline is switched to cbreak mode (termios via `tty`: no echo, no line
buffering, Ctrl-C still interrupts) and restored on exit. Keys: characters type, Backspace deletes,
Tab accepts the first suggestion (Session.accept: the word and a space; punctuation such as , . ! ?
typed next replaces that space), Enter types a newline, Ctrl-D quits; escape sequences (arrows) are
ignored. The suggestions are distinct words (the rest of the word being typed). Without a terminal
every input line is a prefix and gets one line of suggestions.

With the Autocompleter's user_words (`--user-words FILE`), the words typed to a boundary are learned and
the file is saved (atomically) at every newline and on exit.
"""
from __future__ import annotations

import codecs
import json
import os
import shutil
import sys
import unicodedata

from .autocomplete import Autocompleter, Session, Suggestion

QUIT, BACKSPACES, ACCEPT, ENTER = "\x04", ("\x7f", "\x08"), "\t", ("\r", "\n")
VISIBLE = {" ": "\u2423", "\n": "\u23ce", "\t": "\u21e5"}   # how boundary characters are shown


def printable(text: str) -> str:
    """`text` safe to write to any UTF-8 terminal: lone surrogates become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def quoted(text: str) -> str:
    """`text` as a JSON string (escapes visible), safe to print."""
    return json.dumps(text, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def format_suggestions(suggestions: list[Suggestion]) -> str:
    """One line: each completion quoted with its probability."""
    return " | ".join(f"{quoted(s.text)} {s.prob:.1%}" for s in suggestions) or "(no suggestion)"


def shown(text: str) -> str:
    """A completion as the terminal shows it: boundary characters as visible symbols."""
    return printable("".join(VISIBLE.get(c, c) if c in VISIBLE or unicodedata.category(c) != "Cc" else "\ufffd"
                             for c in text))


def run_lines(completer: Autocompleter, lines, out, k: int) -> None:
    """Without a terminal: each line (without its newline) is a prefix; print its suggestions."""
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        prefix = line[:-1] if line.endswith("\n") else line
        prefix = prefix[:-1] if prefix.endswith("\r") else prefix
        if completer.user_words is None:
            suggestions = completer.complete(prefix, k)
        else:   # a session, so that the line's finished words are learned
            session = completer.session()
            session.type(prefix)
            suggestions = session.suggestions(k)
            _save(completer)
        out.write(f"{quoted(prefix)} -> {format_suggestions(suggestions)}\n")
        out.flush()


def _save(completer: Autocompleter) -> None:
    """Write the user's words to their file, if they have one."""
    if completer.user_words is not None and completer.user_words.path is not None:
        completer.user_words.save()


def without_escape_sequences(keys: str) -> str:
    """Drop terminal escape sequences (arrows, function keys) and keep every other key of the read.

    CSI: ESC [ parameters, then one final byte in @..~; SS3: ESC O x; otherwise ESC x.
    """
    kept, i = [], 0
    while i < len(keys):
        if keys[i] != "\x1b":
            kept.append(keys[i])
            i += 1
        elif keys[i + 1:i + 2] == "[":
            i += 2
            while i < len(keys) and not "@" <= keys[i] <= "~":
                i += 1
            i += 1
        else:
            i += 3 if keys[i + 1:i + 2] == "O" else 2
    return "".join(kept)


def apply_keys(session: Session, keys: str, k: int) -> bool:
    """Apply what one read from the terminal returned; False when the user quits."""
    for key in without_escape_sequences(keys):
        if key == QUIT:
            return False
        if key in BACKSPACES:
            session.backspace()
        elif key == ACCEPT:
            suggestions = session.suggestions(k)
            if suggestions:
                session.accept(suggestions[0])
        elif key in ENTER:
            session.type("\n")
        elif unicodedata.category(key) != "Cc":
            session.type(key)
    return True


def render(session: Session, suggestions: list[Suggestion], width: int) -> str:
    """Redraw the current line: its typed tail, then the suggestions dimmed, cursor after the typed text."""
    hint = "   " + "  ".join(f"{shown(s.text) or VISIBLE[' ']} {s.prob:.1%}" for s in suggestions)
    if not suggestions and session.in_unknown_word():
        hint = "   (the word holds a character outside the vocabulary: no completion)"
    line = session.text.rsplit("\n", 1)[-1]
    room = max(width - len(hint) - 1, 8)
    tail = printable("".join(c if unicodedata.category(c) != "Cc" else "\ufffd" for c in line[-room:]))
    hint = hint[:max(width - len(tail) - 1, 0)]
    return f"\r\x1b[K{tail}\x1b[2m{hint}\x1b[0m" + (f"\x1b[{len(hint)}D" if hint else "")


def run_terminal(completer: Autocompleter, fd: int, out, k: int) -> None:
    """Read keys from the terminal `fd` in cbreak mode and redraw the suggestions after each."""
    import termios
    import tty
    saved = termios.tcgetattr(fd)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    session = completer.session()
    try:
        tty.setcbreak(fd)
        out.write("type; Tab accepts the first suggestion (and a space), Ctrl-D quits\n")
        while True:
            lines_before = session.text.count("\n")
            width = shutil.get_terminal_size().columns
            out.write(render(session, session.suggestions(k), width))
            out.flush()
            data = os.read(fd, 1024)
            if not data or not apply_keys(session, decoder.decode(data), k):
                break
            if session.text.count("\n") > lines_before:   # keep the finished line as typed, start a new one
                out.write("\r\x1b[K" + printable(session.text.rsplit("\n", 1)[0].rsplit("\n", 1)[-1]) + "\n")
                _save(completer)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)   # first: a failed save must not leave the terminal raw
        out.write("\n")
        out.flush()
        _save(completer)   # also after Ctrl-C


def repl(completer: Autocompleter, k: int = 3, stdin=None, out=None) -> None:
    """Interactive suggestions in a terminal, else one line of suggestions per input line."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if out is None else out
    _save(completer)   # the words file is writable (and exists) before any typing
    if stdin.isatty():
        run_terminal(completer, stdin.fileno(), out, k)
    else:
        run_lines(completer, getattr(stdin, "buffer", stdin), out, k)
