"""Devices and threads: is a torch device usable here (one check for the API, checkpoint loading and the command
line; torch is imported only for devices other than the CPU), and :func:`torch_threads`, the one way library code
changes torch's thread count (for a block, restored after it)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

__all__ = ["check_device", "torch_threads"]

_DEVICE = re.compile(r"(cpu|cuda|mps|xpu|meta)(:\d+)?")


def check_device(text: str) -> str | None:
    """``None`` when ``text`` names a torch device that exists on this machine, else the reason it cannot be used."""
    name = str(text).strip().lower()
    if name == "cpu":
        return None
    if not _DEVICE.fullmatch(name):
        return f"unknown device {text!r} (use cpu, cuda, cuda:N or mps)"
    import torch

    kind, _, index = name.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            return (f"device {text!r} requested but CUDA is not available here (no NVIDIA GPU or driver, or a CPU-only "
                    "torch build); use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            return f"device {text!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return f"device {text!r} requested but Apple MPS is not available here; use --device cpu"
    elif kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        if xpu is None or not xpu.is_available():
            return f"device {text!r} requested but no Intel XPU is available here; use --device cpu"
    elif kind == "meta":
        return "device 'meta' holds no data and cannot run a model; use --device cpu"
    return None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (``None``: unchanged), restoring the previous count, so
    that a library call never changes the process-wide setting."""
    import torch

    before = torch.get_num_threads()
    if threads is not None and int(threads) != before:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
