"""Atomic writes, hashing and JSON.

Every artifact fyexport writes goes to ``.fyexport-<name>.<random>.tmp`` in the same
folder and is renamed over the final name only once it is complete, so an interrupted run
never leaves a half-written file under a real name; errors name the final name.  Only
temporaries named so are ever cleaned up: a user's own ``.notes.tmp`` is not fyexport's.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import FyexportError, InputError


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success,
    delete it on any failure (including KeyboardInterrupt).  Failures to write name
    ``path`` (never the hidden temporary): a folder in the way, a missing permission and a
    full disk each give one line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, so the output cannot be written there",
                         "Give a file name (or remove that folder)")
    tmp = _temporary_beside(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FyexportError(f"{path}: writer produced no file")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is not None and str(e.filename) not in (str(tmp), str(path)):
            raise  # about another file (one the writer read), not this output
        raise write_error(path, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


TEMP_PREFIX, TEMP_SUFFIX = ".fyexport-", ".tmp"  # what makes a temporary recognisably fyexport's


def _temporary_beside(path: Path, named: Path | None = None) -> Path:
    """A new empty temporary in ``path``'s folder (made if needed), named after ``path``;
    failures are one line naming ``named`` (default ``path``)."""
    named = named or path
    _make_folder(path.parent, named)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise write_error(named, e) from e
    os.close(fd)
    return Path(tmp)


def _make_folder(folder: Path, named: Path) -> None:
    """Create ``folder`` and its parents; failures are one line naming ``named``."""
    for a in (folder, *folder.parents):  # the nearest existing path: it must be a folder
        if a.exists():
            if not a.is_dir():
                raise InputError(f"{named}: cannot write here ({a} is a file, not a folder)",
                                 "Give another output path")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(named, e) from e


def writable_folder(folder) -> Path:
    """``folder``, made with its parents and checked writable (a temporary created there and
    removed), so work that ends in writing there fails at once, in one line, when it cannot
    (no permission, a read-only disk, a file in the way): call it before the work."""
    folder = Path(folder)
    _temporary_beside(folder / "probe", named=folder).unlink()
    return folder


def write_error(path, e: OSError) -> FyexportError:
    """The one-line error for failing to write ``path`` (disk full: 1; the user's choice of
    place, a folder in the way or no permission: 2)."""
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return FyexportError(f"{path}: disk full while writing", "Free some space and rerun; nothing was left "
                             "half-written")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
        return InputError(f"{path}: cannot write here ({why})", "Check the folder's permissions, or give another "
                          "output path")
    if e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return InputError(f"{path}: cannot write here ({why}: a file or folder is in the way)",
                          "Give another output path")
    return FyexportError(f"{path}: cannot write ({why})")


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_torch(path, obj) -> Path:
    """``torch.save(obj)`` to ``path``, atomically and byte-reproducibly: serialised in memory
    first (``torch.save`` to a file names the archive's records after the file, here a random
    temporary name, and a failed write surfaces as a RuntimeError of its zip writer), then
    written like any artifact, so a full disk gives the usual one line."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


def recorded_path(src, out) -> str:
    """How an artifact written to ``out`` records the file ``src`` it came from: relative to
    ``out``'s folder when inside it (identical builds in two folders give identical bytes),
    else as the user gave it."""
    src_s = str(src)
    try:
        rel = Path(os.path.abspath(src_s)).relative_to(Path(os.path.abspath(out)).parent)
    except ValueError:
        return src_s
    return rel.as_posix()


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj) -> str:
    """JSON text of a report (numpy scalars and arrays, and paths, allowed)."""
    return json.dumps(obj, indent=2, default=json_default)


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise FyexportError(f"{path}: cannot read JSON ({e})")


LOCK_FILE = ".fyexport.lock"
BUILD_MANIFEST = "manifest.json"  # the name pipeline.manifest writes


def is_build_folder(folder) -> bool:
    """Whether ``folder`` is a fyexport build's: it holds a build's lock file or its
    ``manifest.json`` (a JSON object recording the fyexport version and the stages)."""
    f = Path(folder)
    if (f / LOCK_FILE).is_file():
        return True
    try:
        with open(f / BUILD_MANIFEST, "rb") as fh:
            head = fh.read(1 << 20)
        d = json.loads(head)
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "fyexport" in d and "stages" in d


@contextlib.contextmanager
def folder_lock(folder, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (a lock file in it) for the duration; a second
    holder fails at once with one line naming the first (its pid and ``what``)."""
    import fcntl

    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(folder, e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise FyexportError(f"{folder}: another build is running in this folder ({held})",
                                "Wait for it to finish, or give another -o")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def cleanup_temporaries(folder) -> int:
    """Remove fyexport's own temporaries (``.fyexport-*.tmp``) left by a killed run in
    ``folder``; nothing else is touched.  Returns how many were removed."""
    n = 0
    for p in Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n
