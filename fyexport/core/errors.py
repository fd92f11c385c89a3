"""One error type for problems the user can fix, one for our own bugs.

Every user-facing failure raises :class:`FyexportError` (or :class:`InputError` for
bad input, which the CLI maps to exit code 2).  The CLI prints ``error: <message>``
on one line and exits without a traceback unless ``--verbose`` is given.  Messages
name the file or option at fault and say what to do.
"""
from __future__ import annotations


class FyexportError(Exception):
    """A failure the user can act on.  Exit code 1 unless a subclass says otherwise."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        self.message = message.rstrip(".")
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f". {self.hint.rstrip('.')}."
        else:
            text += "."
        # One line, always: collapse whatever a wrapped library put in the message.
        return " ".join(text.split())


class InputError(FyexportError):
    """Bad input: a missing or unreadable file, a wrong file type, a bad option value."""

    exit_code = 2


class GateError(FyexportError):
    """A quality gate (for example the mAP drop after INT8) failed; artifacts are kept."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, summary: dict | None = None):
        super().__init__(message, hint)
        self.summary = summary  # the build's report, still worth showing above the one line


def name_fields(text: str | None, names: dict) -> str | None:
    """``text`` with each field reference (```recover.batch```) replaced by what ``names``
    calls it (the flag of the command run), or by the bare field name."""
    import re

    if not text:
        return text
    return re.sub(r"`([\w.]+)`", lambda m: names.get(m.group(1), m.group(1)), text)


class InternalError(Exception):
    """A bug in fyexport itself, never the user's fault.  Always shown with a traceback."""


def check_file(path, what: str = "file", suffixes: tuple[str, ...] | None = None):
    """Return ``Path(path)`` after checking it is a readable, non-empty file.

    Args:
        path: the path the user gave.
        what: how to call it in the message ("checkpoint", "ONNX model", ...).
        suffixes: accepted suffixes (lower case, with the dot), or None for any.
    """
    import os
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such {what}", "Check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a {what}")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: {what} is not readable", "Check its permissions")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: {what} is empty (0 bytes)", "The file was probably cut off; copy it again")
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{p}: expected a {what} ({', '.join(suffixes)}), got '{p.suffix or 'no suffix'}'")
    return p
