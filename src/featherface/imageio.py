"""Turn whatever the user gives us into a uint8 BGR ``[H, W, 3]`` array, or fail with a one-line error.

Accepted: a path (any format OpenCV decodes), a numpy array (``[H, W]`` grey, ``[H, W, 1|3|4]``; uint8, uint16 or
float in 0..255; BGR unless ``rgb=True``) or a PIL image. Grey, RGBA and 16-bit inputs are converted, not refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from featherface.errors import InputError
from featherface.fsutil import atomic_write_bytes

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "load_image", "to_bgr_uint8", "write_image_atomic"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm", ".pnm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


def to_bgr_uint8(array: np.ndarray, *, rgb: bool = False, name: str = "image") -> np.ndarray:
    """Normalise an image array to contiguous uint8 BGR ``[H, W, 3]``."""
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(array).__name__}")
    a = array
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"{name}: unsupported image shape {array.shape} (expected HxW, HxWx1, HxWx3 or HxWx4)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: empty image of shape {array.shape}")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{name}: unsupported dtype {a.dtype}")
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    if a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    elif rgb:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(a)


def _decode_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths on every OS
    raw = data.tobytes()
    if raw[:2] == _JPEG_SOI and _JPEG_EOI not in raw[-4096:]:
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path}: not an image OpenCV can decode ({size} bytes)")
    return image


def load_image(source: Any, *, rgb: bool = False) -> np.ndarray:
    """Load ``source`` (path, numpy array or PIL image) as uint8 BGR ``[H, W, 3]``.

    ``rgb`` applies to numpy arrays only: files are decoded by OpenCV (BGR) and PIL images carry their own mode.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return to_bgr_uint8(_decode_file(path), name=str(path))
    if isinstance(source, np.ndarray):
        return to_bgr_uint8(source, rgb=rgb)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(source, Image.Image):
        img = source
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img).astype(np.uint32)
            arr = (arr >> 8).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
            return to_bgr_uint8(arr)
        img = img.convert("RGB")
        return to_bgr_uint8(np.asarray(img), rgb=True)
    raise InputError(f"unsupported image input of type {type(source).__name__} (use a path, a numpy array or a PIL image)")


def write_image_atomic(path: str | os.PathLike, image_bgr: np.ndarray) -> Path:
    """Encode ``image_bgr`` by the suffix of ``path`` and write it via a temporary file + rename."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".jpg", image_bgr)
    if not ok:
        raise InputError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
    return atomic_write_bytes(path, buf.tobytes())
