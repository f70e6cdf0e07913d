"""``argparse`` types that validate a value at parse time, so a bad option is a one-line usage error before any work.

Each raises ``argparse.ArgumentTypeError`` with a short reason; :mod:`featherface.cli` prints it as
``featherface COMMAND: error: argument --threads: must be an integer >= 1, got '0'``.
"""

from __future__ import annotations

import argparse
import math
import re

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float", "probability",
           "open_unit_interval", "open_unit_interval_excl", "percentile", "device", "port", "check_device"]

_DEVICE = re.compile(r"(cpu|cuda|mps|xpu|meta)(:\d+)?")


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (0 = off), got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0 = off), got {text!r}")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def open_unit_interval(text: str) -> float:
    value = _float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535 (0: any free port), got {text!r}")
    return value


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


def device(text: str) -> str:
    reason = check_device(text)
    if reason:
        raise argparse.ArgumentTypeError(reason)
    return str(text).strip()


def open_unit_interval_excl(text: str) -> float:
    """A share strictly between 0 and 1."""
    value = _float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text!r}")
    return value


def percentile(text: str) -> float:
    value = _float(text)
    if not 0.0 < value <= 100.0:
        raise argparse.ArgumentTypeError(f"must be a percentile in (0, 100], got {text!r}")
    return value
