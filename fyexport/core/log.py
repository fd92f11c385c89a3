"""The one logger and the one progress helper.

``G_LOGGER`` writes human messages to stderr through rich (or JSON lines with
``--log-json``), so stdout stays free for tables and ``--json`` documents.
Progress bars go through :func:`progress`, which honours ``--quiet`` and the JSON
mode, and shows ETA.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Iterator

from .errors import name_fields

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}


class Logger:
    def __init__(self) -> None:
        self.level = INFO
        self.json = False
        self.quiet = False
        self._console = None
        self._once: set[str] = set()
        self.field_names: dict = {}  # {field: flag} of the command running (messages name fields)

    # -- configuration -------------------------------------------------
    def configure(self, verbose: bool = False, quiet: bool = False, log_json: bool = False) -> None:
        self.level = DEBUG if verbose else (WARNING if quiet else INFO)
        self.quiet = quiet
        self.json = log_json

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._console

    # -- messages ------------------------------------------------------
    def log(self, level: int, msg, **fields) -> None:
        if level < self.level:
            return
        if callable(msg):
            msg = msg()
        msg = name_fields(str(msg), self.field_names)
        if self.json:
            rec = {"time": round(time.time(), 3), "level": _NAMES[level], "msg": str(msg)}
            rec.update(fields)
            sys.stderr.write(json.dumps(rec, default=str) + "\n")
            sys.stderr.flush()
            return
        style = {DEBUG: "dim", INFO: "", WARNING: "yellow", ERROR: "bold red"}[level]
        prefix = {DEBUG: "", INFO: "", WARNING: "warning: ", ERROR: "error: "}[level]
        self.console.print(f"{prefix}{msg}", style=style or None, markup=False)

    def debug(self, msg, **f) -> None:
        self.log(DEBUG, msg, **f)

    def info(self, msg, **f) -> None:
        self.log(INFO, msg, **f)

    def warning(self, msg, once: bool = False, **f) -> None:
        if once:
            key = str(msg)
            if key in self._once:
                return
            self._once.add(key)
        self.log(WARNING, msg, **f)

    def error(self, msg, **f) -> None:
        self.log(ERROR, msg, **f)

    def event(self, name: str, **fields) -> None:
        """A machine-readable record (only emitted in JSON mode)."""
        if self.json:
            rec = {"time": round(time.time(), 3), "level": "event", "event": name}
            rec.update(fields)
            sys.stderr.write(json.dumps(rec, default=str) + "\n")
            sys.stderr.flush()

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.json)


G_LOGGER = Logger()


def table_console():
    """A console for result tables on stdout: wide enough for the tables when piped."""
    import shutil

    from rich.console import Console

    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((160, 24)).columns, 160)
    return Console(width=width)


class _Bar:
    """A handle returned by :func:`progress` to advance and annotate a bar."""

    def __init__(self, prog, task) -> None:
        self._prog, self._task = prog, task

    def advance(self, n: float = 1) -> None:
        if self._prog is not None:
            self._prog.advance(self._task, n)

    def update(self, **kw) -> None:
        if self._prog is not None:
            desc = kw.pop("description", None)
            if desc is not None:
                kw["description"] = desc
            self._prog.update(self._task, **kw)

    def set_postfix(self, text: str) -> None:
        if self._prog is not None:
            self._prog.update(self._task, info=text)


class _LineBar(_Bar):
    """Progress for logs (stderr is not a terminal): a plain line every ``every`` seconds."""

    def __init__(self, description: str, total, every: float = 30.0) -> None:
        super().__init__(None, None)
        self.desc, self.total, self.every = description, total, every
        self.done, self.info = 0.0, ""
        self.t0 = self.last = time.time()

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.time()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def update(self, **kw) -> None:
        if "total" in kw:
            self.total = kw["total"]

    def set_postfix(self, text: str) -> None:
        self.info = text

    def _line(self, now: float) -> None:
        el = now - self.t0
        if self.total:
            eta = el / max(self.done, 1e-9) * (self.total - self.done)
            G_LOGGER.info(f"{self.desc}: {self.done:.0f}/{self.total:.0f} ({100 * self.done / self.total:.0f}%), "
                          f"{el:.0f} s, eta {eta:.0f} s {self.info}".rstrip())
        else:
            G_LOGGER.info(f"{self.desc}: {self.done:.0f} done, {el:.0f} s {self.info}".rstrip())


@contextlib.contextmanager
def progress(description: str, total: float | None) -> Iterator[_Bar]:
    """A rich progress bar with ETA; periodic log lines when stderr is not a terminal;
    nothing when quiet or logging JSON."""
    if not G_LOGGER.show_progress:
        yield _Bar(None, None)
        return
    if not G_LOGGER.console.is_terminal:
        bar = _LineBar(description, total)
        yield bar
        if time.time() - bar.t0 >= bar.every:
            bar._line(time.time())
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*cols, console=G_LOGGER.console, transient=False) as prog:
        task = prog.add_task(description, total=total, info="")
        yield _Bar(prog, task)


@contextlib.contextmanager
def native_output_silenced(enabled: bool = True) -> Iterator[None]:
    """Silence C/C++ libraries that print straight to fd 1/2 (onnxsim, ORT), unless verbose."""
    import os

    if not enabled or G_LOGGER.level <= DEBUG:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
