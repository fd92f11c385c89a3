"""The build folder's ``manifest.json``: every artifact with its sha256, the stage that made
it, the settings, the exact command, the build's status and the accuracy gate's numbers (``gate``).

``status`` is ``running`` while a build works, then ``done``, ``failed-gate`` (the accuracy
gate failed; artifacts kept), ``failed`` or ``interrupted``.  Each stage records the key
that hashes its inputs and settings, so a rerun whose key and output hashes match is a
cache hit (see :mod:`fyexport.pipeline.build`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import InputError, InternalError
from ..core.log import G_LOGGER

MANIFEST = "manifest.json"
STATUSES = ("running", "done", "failed-gate", "failed", "interrupted")


@dataclass
class StageRecord:
    key: str
    status: str  # done | cached | skipped
    outputs: dict = field(default_factory=dict)  # label -> {path, sha256, bytes}
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


class Manifest:
    """The manifest of one build folder: what the previous run left, and this run's record."""

    def __init__(self, folder, command: str, settings: dict, version: str):
        self.folder = Path(folder)
        self.command, self.settings, self.version = command, settings, version
        self.previous = self._read_previous()
        self.stages: dict[str, StageRecord] = {}
        self.status = "running"
        self.gate: dict | None = None  # the accuracy gate's numbers, once measured

    def _read_previous(self) -> dict:
        p = self.folder / MANIFEST
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except ValueError:
            G_LOGGER.warning(f"{p}: unreadable manifest; every stage reruns")
            return {}

    def previous_stage(self, name: str) -> dict | None:
        return (self.previous.get("stages") or {}).get(name)

    def record(self, name: str, rec: StageRecord) -> None:
        self.stages[name] = rec

    def to_dict(self) -> dict:
        artifacts = [{"path": o["path"], "sha256": o["sha256"], "bytes": o["bytes"], "stage": name, "artifact": label}
                     for name, rec in self.stages.items() for label, o in rec.outputs.items()]
        return {"fyexport": self.version, "status": self.status, "command": self.command,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": self.settings,
                "stages": {k: asdict(v) for k, v in self.stages.items()}, "artifacts": artifacts,
                **({"gate": self.gate} if self.gate is not None else {})}

    def save(self, status: str | None = None) -> None:
        from ..core.artifacts import write_json

        if status is not None:
            if status not in STATUSES:
                raise InternalError(f"unknown build status {status!r}")
            self.status = status
        write_json(self.folder / MANIFEST, self.to_dict())


def read_manifest(folder) -> dict:
    from ..core.artifacts import read_json

    p = Path(folder) / MANIFEST
    if not p.exists():
        raise InputError(f"{folder}: no {MANIFEST} (not a fyexport build folder)")
    return read_json(p)


def render_manifest(d: dict, con=None) -> None:
    from rich.table import Table

    from ..core.log import table_console

    con = con or table_console()
    con.print(f"[bold]build[/bold] status {d.get('status')}  fyexport {d.get('fyexport')}  {d.get('created')}")
    con.print(f"[bold]command[/bold] {d.get('command')}")
    t = Table(title="artifacts")
    for c in ("artifact", "stage", "path", "bytes", "sha256"):
        t.add_column(c)
    for a in d.get("artifacts", []):
        t.add_row(a["artifact"], a["stage"], a["path"], f"{a['bytes']:,}", a["sha256"][:16] + "...")
    con.print(t)
    s = Table(title="stages")
    for c in ("stage", "status", "seconds", "key"):
        s.add_column(c)
    for k, v in d.get("stages", {}).items():
        s.add_row(k, v["status"], str(v["seconds"]), (v["key"] or "")[:12])
    con.print(s)
