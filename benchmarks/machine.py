"""Helpers for timing on a shared machine: pause a background job while timing, read the load average."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator


@contextlib.contextmanager
def paused(pid: int | None, settle_s: float = 2.0) -> Iterator[None]:
    """SIGSTOP ``pid`` and its direct children (a training run and its data-loader workers) for the duration,
    SIGCONT them afterwards, even on error. ``None``: do nothing."""
    if pid is None:
        yield
        return
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids = [int(pid), *map(int, kids)]
    for q in pids:
        os.kill(q, signal.SIGSTOP)
    time.sleep(settle_s)
    try:
        yield
    finally:
        for q in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(q, signal.SIGCONT)


def load_average() -> str:
    """The 1-minute load average, formatted ("n/a" where the OS has none)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"
