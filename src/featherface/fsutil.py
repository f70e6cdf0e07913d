"""Atomic file writes: write to a temporary file in the destination folder, then rename over the target.

A crash or a kill mid-write leaves either the old file or no file, never a half-written one. Details:

* the temporary file is created like ``open(path, "w")`` would create the target: permissions follow the umask
  (``0o666 & ~umask``), not ``mkstemp``'s 0600;
* it is named ``.<name>.ff<pid>-<random>.tmp[<suffix>]`` and removed when the write fails;
* a write killed by a signal cannot remove its temporary file, so every writer first removes the stale temporary
  files of earlier writes to the same target: those whose process is gone (or older than a day), and the
  ``mkstemp``-style ``.<name>.XXXXXXXX.tmp`` files of older versions once untouched for two minutes.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["plain", "AtomicFile", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_path",
           "remove_stale_temps", "reserve_temp", "commit_temp", "discard_temp", "pid_alive"]

_OURS = re.compile(r"ff(?P<pid>\d+)-[0-9a-f]+\.tmp(?:\.[A-Za-z0-9]+)?")
_LEGACY = re.compile(r"[A-Za-z0-9_]{8}\.tmp")  # tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")
_LEGACY_AGE_S = 120.0
_MAX_AGE_S = 24 * 3600.0


def pid_alive(pid: int) -> bool:
    """Whether a process with this id is running on this machine (a temp file's writer, say)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: trust the age rule there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files left next to ``path`` by earlier atomic writes that were killed; returns them."""
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(prefix):]
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        m = _OURS.fullmatch(rest)
        if m:
            stale = age > _MAX_AGE_S or not pid_alive(int(m.group("pid")))
        else:
            stale = bool(_LEGACY.fullmatch(rest)) and age > _LEGACY_AGE_S
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _create_temp(path: Path, suffix: str = "") -> tuple[int, Path]:
    """Create and open (O_EXCL) a new temporary file next to ``path``; mode 0o666 filtered by the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.ff{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")  # pragma: no cover


class AtomicFile:
    """A temporary file next to ``path`` that becomes ``path`` on :meth:`commit` (flush, fsync, rename) or disappears
    on :meth:`abort`. As a context manager: commit on success, abort on an exception."""

    def __init__(self, path: str | os.PathLike, *, text: bool = False, encoding: str = "utf-8",
                 fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        fd, self.tmp = _create_temp(self.path)
        try:
            self.fh: IO = os.fdopen(fd, "w", encoding=encoding, newline="") if text else os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise
        self.closed = False

    def commit(self) -> Path:
        if self.closed:
            return self.path
        try:
            self.fh.flush()
            if self.fsync:
                os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return self.path

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.fh.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temporary binary file next to ``path``, fsync it, then ``os.replace`` it into place."""
    with AtomicFile(path) as f:
        write(f.fh)
    return f.path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """``data`` into ``path`` atomically; ``fsync=False`` skips the flush to disk (bulk writes that are simply redone
    after a crash)."""
    with AtomicFile(path, fsync=fsync) as f:
        f.fh.write(data)
    return f.path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def reserve_temp(path: str | os.PathLike, *, keep_suffix: bool = True) -> Path:
    """An empty temporary file next to ``path`` for writers that need a file name (``cv2.VideoWriter``,
    ``onnx.save``); ``keep_suffix`` ends its name with ``path``'s suffix so such writers pick the right format.
    Finish with :func:`commit_temp` or :func:`discard_temp`."""
    path = Path(path)
    fd, tmp = _create_temp(path, path.suffix if keep_suffix else "")
    os.close(fd)
    return tmp


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """fsync ``tmp`` and rename it over ``path``."""
    try:
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        discard_temp(tmp)
        raise
    return Path(path)


def discard_temp(tmp: str | os.PathLike) -> None:
    try:
        Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = True) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: writer(tmp)``: ``tmp`` replaces ``p`` when the block succeeds and is removed when
    it raises."""
    tmp = reserve_temp(path, keep_suffix=keep_suffix)
    try:
        yield tmp
    except BaseException:
        discard_temp(tmp)
        raise
    commit_temp(tmp, path)


def plain(value: Any, *, finite: bool = False) -> Any:
    """``value`` as plain JSON-ready data: tuples and lists become lists and dicts are copied, recursively; with
    ``finite`` a NaN or infinite float becomes ``None`` (strict JSON). The one converter of configs, checkpoints,
    training state and reports."""
    if isinstance(value, (tuple, list)):
        return [plain(v, finite=finite) for v in value]
    if isinstance(value, dict):
        return {k: plain(v, finite=finite) for k, v in value.items()}
    if finite and isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value
