"""``argparse`` types that validate a value at parse time, so a bad option is a one-line usage error before any work.

Each raises ``argparse.ArgumentTypeError`` with a short reason; :mod:`featherface.cli` prints it as
``featherface COMMAND: error: argument --threads: must be an integer >= 1, got '0'``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from featherface.devices import check_device

__all__ = ["add_detection_options", "resize_spec", "positive_int", "non_negative_int", "positive_float", "non_negative_float", "probability",
           "open_unit_interval", "open_unit_interval_excl", "percentile", "device", "port", "check_device",
           "frame_size"]



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


def _checked(name: str, parse: Callable[[str], Any], ok: Callable[[Any], bool], need: str) -> Callable[[str], Any]:
    """An argparse type: ``parse`` the text, then require ``ok(value)`` ("must be ``need``, got '...'")."""

    def check(text: str) -> Any:
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return value

    check.__name__ = check.__qualname__ = name
    return check


positive_int = _checked("positive_int", _int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _checked("non_negative_int", _int, lambda v: v >= 0, "an integer >= 0 (0 = off)")
positive_float = _checked("positive_float", _float, lambda v: v > 0, "a number > 0")
non_negative_float = _checked("non_negative_float", _float, lambda v: v >= 0, "a number >= 0 (0 = off)")
probability = _checked("probability", _float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
open_unit_interval = _checked("open_unit_interval", _float, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
#: A share strictly between 0 and 1.
open_unit_interval_excl = _checked("open_unit_interval_excl", _float, lambda v: 0.0 < v < 1.0,
                                   "strictly between 0 and 1")
percentile = _checked("percentile", _float, lambda v: 0.0 < v <= 100.0, "a percentile in (0, 100]")
port = _checked("port", _int, lambda v: 0 <= v <= 65535, "a port number 0..65535 (0: any free port)")


def device(text: str) -> str:
    reason = check_device(text)
    if reason:
        raise argparse.ArgumentTypeError(reason)
    return str(text).strip()


def frame_size(text: str) -> tuple[int, int]:
    """An image size written ``WxH`` as resolutions are (``640x480``: 640 wide, 480 high) → ``(height, width)``.
    The one size spelling of the command line and the scripts."""
    try:
        w, h = (int(v) for v in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 640x480, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"sizes must be > 0, got {text!r}")
    return h, w


def resize_spec(text: str) -> str:
    """``--resize``: ``'original'`` (or ``none``) or a longest side in pixels, at least 32 (returned as text)."""
    if text.strip().lower() in ("original", "none"):
        return "original"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'original' or a longest side in pixels, got {text!r}") from None
    if n < 32:
        raise argparse.ArgumentTypeError(f"longest side must be >= 32 pixels, got {text!r}")
    return str(n)


def add_detection_options(p: argparse.ArgumentParser) -> None:
    """The detector options ``detect`` and ``detect-batch`` share: --score, --nms, --resize, --max-side,
    --max-megapixels (same types, defaults and help)."""
    p.add_argument("--score", type=probability, default=0.5, help="score threshold in [0, 1] (default 0.5)")
    p.add_argument("--nms", type=open_unit_interval, default=0.4, help="NMS IoU threshold in (0, 1] (default 0.4)")
    p.add_argument("--resize", type=resize_spec, default="original",
                   help="'original' or the longest side in pixels, >= 32 (default original)")
    p.add_argument("--max-side", type=non_negative_int, default=2560,
                   help="never exceed this longest side (memory guard; 0 = off; default 2560)")
    p.add_argument("--max-megapixels", type=non_negative_float, default=100.0,
                   help="refuse images whose decode needs more megapixels, before decoding (0 = off; default 100)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--backend``, as ``detect`` and ``eval`` take them (resolved by
    :func:`featherface.resolve.resolve_model_source`, run by :class:`featherface.api.FaceDetector`)."""
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="a shipped model name (featherface_v2: the default, fast; featherface_v1: most accurate; "
                        "`featherface models` lists them), a checkpoint (.pth, ours or upstream V1) or a raw .onnx "
                        "export")
    add_backend_option(p)


def add_backend_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--backend`` (auto / onnxruntime / torch / openvino), as ``detect`` and ``eval`` take it."""
    p.add_argument("--backend", choices=("auto", "onnxruntime", "torch", "openvino"), default="auto",
                   help="auto (default): ONNX Runtime for shipped models and .onnx files, PyTorch for .pth files; "
                        "openvino (optional, pip install openvino): the same .onnx file, compiled per image size "
                        "(~0.3 s each; for many frames of one size)")


def backend_arg(value: str | None) -> str | None:
    """``--backend`` as :class:`featherface.api.FaceDetector` takes it (``auto`` -> ``None``)."""
    return None if value in (None, "auto") else value


def set_overrides(items: list[str] | None, key_form: str = "KEY") -> dict:
    """``--set KEY=VALUE`` options as a dict, each value read as a TOML value (``3`` → int, ``true`` → bool,
    ``[1, 2]`` → list), falling back to the plain string (``ssh=factorised``). One parser for ``train`` and ``info``;
    a malformed item is a one-line error naming it."""
    import tomllib

    from featherface.errors import FeatherFaceError

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise FeatherFaceError(f"--set expects {key_form}=VALUE, got {item!r}")
        key, text = (part.strip() for part in item.split("=", 1))
        try:
            out[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text
    return out
