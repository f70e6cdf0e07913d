"""Turn whatever the user gives us into a uint8 BGR ``[H, W, 3]`` array, or fail with a one-line error.

Accepted: a path (any format OpenCV decodes), a numpy array (``[H, W]`` grey, ``[H, W, 1|3|4]``; uint8, uint16,
bool, or other numbers in 0..255; BGR unless ``rgb=True``) or a PIL image. Grey, RGBA and 16-bit inputs are
converted, not refused.

Files are read in three steps:

1. **Header first** (PIL reads only the header): format, stored size and EXIF orientation. An image whose decode
   would exceed the pixel budget (``max_pixels``, default :data:`DEFAULT_MAX_PIXELS` = 100 MP) is refused *before*
   anything is decoded. For a baseline JPEG decoded reduced (step 2) the budget applies to the reduced size; for
   everything else to the stored size.
2. **Decode** with OpenCV, without OpenCV's own orientation handling. A large JPEG is decoded at 1/2, 1/4 or 1/8
   (``cv2.IMREAD_REDUCED_COLOR_*``, libjpeg's DCT scaling) when the caller says it will shrink the image to a
   longest side that the reduced decode still reaches (:func:`decode_image`'s ``target_side``); the caller maps
   results back with :attr:`DecodedImage.width` / :attr:`DecodedImage.height`, the upright original size.
   JPEG integrity is the decoder's own verdict: libjpeg's warnings ("premature end of data segment", "bad Huffman
   code", ...) are captured from the process's stderr during the decode and a damaged file is refused; data after
   the end-of-image marker (motion photos, some cameras) is ignored by libjpeg and accepted.
3. **Orientation**: the EXIF orientation tag (1..8) is applied by :func:`apply_orientation`, the one place that does
   it, for files and PIL images alike, so the result is the upright picture a browser or photo viewer shows.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from featherface.errors import InputError
from featherface.fsutil import atomic_write_bytes

__all__ = [
    "decode_image_bytes",
    "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "WRITABLE_IMAGE_SUFFIXES", "DEFAULT_MAX_PIXELS", "ImageHeader",
    "DecodedImage", "apply_orientation", "read_header", "decode_image", "load_image", "to_bgr_uint8", "captured_stderr",
    "write_image_atomic", "walk_media_files",
]

#: Image suffixes, the one list used for folder discovery, single files and the evaluator's image folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".jp2", ".pgm", ".ppm",
                  ".pnm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def walk_media_files(folder: str | os.PathLike, exclude: Path | None = None) -> Iterator[Path]:
    """Image and video files under ``folder`` (recursive, sorted per folder), without hidden files or folders and
    without anything inside ``exclude`` (a resolved path: the output folder of a run). The one folder walk of
    ``featherface detect`` and ``detect-batch``."""
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if exclude is not None:
                resolved = (here / d).resolve()
                if resolved == exclude or exclude in resolved.parents:
                    continue
            keep.append(d)
        dirnames[:] = keep
        for fn in sorted(filenames):
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES):
                yield here / fn


#: Suffixes an annotated copy keeps (OpenCV encodes a BGR image in them without loss of meaning); other inputs get
#: ``.png`` appended to their full name.
WRITABLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Default pixel budget of one decode (100 megapixels, about 300 MB as BGR).
DEFAULT_MAX_PIXELS = 100_000_000

_EXIF_ORIENTATION = 0x0112
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# libjpeg warnings that mean the picture is damaged (the decoder filled the rest in grey or garbage). Harmless ones
# ("extraneous bytes before marker", "unknown JFIF revision", "Adobe color transform") are not refused.
_JPEG_DAMAGE = re.compile(r"premature end|bad huffman code|bad arithmetic code|instead of rst|must resync|"
                          r"corrupt jpeg data: found marker", re.IGNORECASE)
_STDERR_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------- arrays
def _check_range(a: np.ndarray, name: str, *, scaled: bool) -> None:
    if a.size == 0:
        return
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{name}: image values contain NaN or infinity")
    if lo < 0 or hi > 255:
        hint = "" if scaled else " (pass value_scale= to rescale them)"
        raise InputError(f"{name}: image values must be in 0..255, got {lo:g}..{hi:g}{hint}")
    if not scaled and np.issubdtype(a.dtype, np.floating) and 0 < hi <= 1.0:
        raise InputError(f"{name}: float image values are in 0..{hi:g}, which looks like a 0..1 image; FeatherFace "
                         "expects 0..255: multiply by 255 or pass value_scale=255 (value_scale=1 keeps them as given)")


def to_bgr_uint8(array: np.ndarray, *, rgb: bool = False, name: str = "image",
                 value_scale: float | None = None) -> np.ndarray:
    """Normalise an image array to contiguous uint8 BGR ``[H, W, 3]``.

    uint8 is used as is, uint16 is shifted right by 8, bool maps to 0/255. Any other number type must hold values in
    0..255 (fractions are truncated); floats that all lie in (0, 1] are refused as a probable 0..1 image. An explicit
    ``value_scale`` multiplies the values first (``value_scale=255`` for a 0..1 image) and skips the 0..1 guess.
    """
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(array).__name__}")
    a = array
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"{name}: unsupported image shape {array.shape} (expected HxW, HxWx1, HxWx3 or HxWx4)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: empty image of shape {array.shape}")
    if value_scale is not None:
        if not (isinstance(value_scale, (int, float)) and math.isfinite(value_scale) and value_scale > 0):
            raise InputError(f"value_scale must be a positive number, got {value_scale!r}")
        if not np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_:
            raise InputError(f"{name}: value_scale needs a numeric image, got dtype {a.dtype}")
        a = a.astype(np.float64) * float(value_scale)
        _check_range(a, name, scaled=True)
        a = a.astype(np.uint8)
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise InputError(f"{name}: unsupported dtype {a.dtype}")
        _check_range(a, name, scaled=False)
        a = a.astype(np.uint8)
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    if a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    elif rgb:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(a)


def apply_orientation(image: np.ndarray, orientation: int | None) -> np.ndarray:
    """The upright picture for EXIF ``orientation`` (1..8; anything else is left as is), as ``ImageOps.exif_transpose``
    and browsers show it. Works on ``[H, W]`` and ``[H, W, C]`` arrays; the result is contiguous."""
    o = int(orientation or 1)
    if o == 2:
        out = cv2.flip(image, 1)
    elif o == 3:
        out = cv2.rotate(image, cv2.ROTATE_180)
    elif o == 4:
        out = cv2.flip(image, 0)
    elif o == 5:
        out = cv2.transpose(image)
    elif o == 6:
        out = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    elif o == 7:
        out = cv2.rotate(cv2.transpose(image), cv2.ROTATE_180)
    elif o == 8:
        out = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    else:
        return image
    if image.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing 1-channel axis
        out = out[:, :, None]
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------------------------- header
@dataclass(frozen=True)
class ImageHeader:
    """What the file's header says. ``width``/``height`` as stored (before the orientation is applied)."""

    format: str
    width: int
    height: int
    orientation: int = 1
    progressive: bool = False

    @property
    def swaps_axes(self) -> bool:
        return self.orientation in (5, 6, 7, 8)

    @property
    def upright_size(self) -> tuple[int, int]:
        """``(width, height)`` of the upright picture."""
        return (self.height, self.width) if self.swaps_axes else (self.width, self.height)


def _orientation_of(im: Any) -> int:
    """EXIF orientation of a PIL image *without decoding its pixels* (a PNG's ``getexif`` would load the image when
    the eXIf chunk follows the pixel data, so only metadata read with the header is used)."""
    from PIL import Image

    try:
        raw = im.info.get("exif")
        if raw:
            exif = Image.Exif()
            exif.load(raw)
            value = exif.get(_EXIF_ORIENTATION, 1)
        elif hasattr(im, "tag_v2"):  # TIFF: the orientation is a tag of the main IFD
            value = im.tag_v2.get(_EXIF_ORIENTATION, 1)
        else:
            value = 1
        value = int(value)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a good picture unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _pil_open_header(buf: io.BytesIO) -> Any:
    """``PIL.Image.open`` reads only the header; its decompression-bomb guard is replaced by our own budget (it
    would refuse > 179 MP even when the caller allows more), so the format plugins are asked directly then."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(buf)
    except Image.DecompressionBombError:
        pass
    Image.init()
    buf.seek(0)
    prefix = buf.read(16)
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        try:
            ok = accept is None or accept(prefix)
            if ok and not isinstance(ok, str):
                buf.seek(0)
                return factory(buf, "")
        except Exception:  # noqa: BLE001 - same as PIL: a plugin that cannot parse the file is not its format
            continue
    raise OSError("unidentified")


def read_header(data: bytes | memoryview) -> ImageHeader | None:
    """Format, stored size and EXIF orientation from the first bytes of an encoded image; ``None`` when PIL does not
    know the format (OpenCV may still decode it, without a budget check)."""
    try:
        im = _pil_open_header(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - unidentified or broken header: leave the verdict to the decoder
        return None
    try:
        width, height = (int(v) for v in im.size)
        if width <= 0 or height <= 0:
            return None
        progressive = bool(im.info.get("progressive") or im.info.get("progression"))
        return ImageHeader(str(im.format or "?"), width, height, _orientation_of(im), progressive)
    finally:
        try:
            im.close()
        except Exception:  # noqa: BLE001
            pass


# ------------------------------------------------------------------------------------------------- decoding
@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where libjpeg and OpenCV print) into a temporary file; the text is appended to the
    yielded list on exit. Serialised by a lock because fd 2 belongs to the whole process. Where fd 2 cannot be
    redirected the block runs uncaptured."""
    out: list[str] = []
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:
            yield out
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                try:
                    sys.stderr.flush()
                except Exception:  # noqa: BLE001
                    pass
                os.dup2(tmp.fileno(), 2)
                try:
                    yield out
                finally:
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    out.append(tmp.read(65536).decode("utf-8", "replace"))
        finally:
            os.close(saved)


def _reduction(width: int, height: int, target_side: float | None) -> int:
    """Largest libjpeg scale denominator (8, 4, 2) whose output still has a longest side >= ``target_side``."""
    if target_side is None or not math.isfinite(target_side) or target_side <= 0:
        return 1
    longest = max(width, height)
    for f in (8, 4, 2):
        if math.ceil(longest / f) >= target_side:
            return f
    return 1


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def _decode_bytes(data: np.ndarray, name: str, header: ImageHeader | None, reduce: int) -> np.ndarray:
    is_jpeg = header is not None and header.format == "JPEG"
    flags = (_REDUCED_FLAGS[reduce] | cv2.IMREAD_IGNORE_ORIENTATION) if reduce > 1 else cv2.IMREAD_UNCHANGED
    failure = ""
    with captured_stderr() as messages:
        try:
            image = cv2.imdecode(data, flags)
        except cv2.error as exc:  # e.g. over OpenCV's own pixel limit
            image, failure = None, _first_line(str(exc).split("error:")[-1])
    text = "".join(messages)
    if is_jpeg:
        damage = next((ln.strip() for ln in text.splitlines() if _JPEG_DAMAGE.search(ln)), "")
        if image is None or damage:
            reason = damage or failure or "the decoder gave up"
            raise InputError(f"{name}: truncated or corrupt JPEG ({reason})")
    if image is None:
        detail = f": {failure}" if failure else ""
        raise InputError(f"{name}: not an image OpenCV can decode ({data.size} bytes){detail}")
    return image


@dataclass(frozen=True)
class DecodedImage:
    """``image``: uint8 BGR, upright, possibly decoded reduced. ``width``/``height``: the upright original size, the
    frame results are reported in (multiply ``image`` coordinates by :attr:`factor_x` / :attr:`factor_y`)."""

    image: np.ndarray
    width: int
    height: int

    @property
    def factor_x(self) -> float:
        return self.width / self.image.shape[1]

    @property
    def factor_y(self) -> float:
        return self.height / self.image.shape[0]

    @property
    def reduced(self) -> bool:
        return self.image.shape[:2] != (self.height, self.width)


def _budget_error(name: str, width: int, height: int, decoded: int, max_pixels: int) -> InputError:
    what = f"{width}x{height} image ({width * height / 1e6:.0f} MP)"
    if decoded != width * height:
        what += f", {decoded / 1e6:.0f} MP even when decoded reduced,"
    return InputError(f"{name}: {what} is over the {max_pixels / 1e6:g} MP limit "
                      "(raise it with max_pixels= / --max-megapixels)")


def _decode_file(path: Path, *, max_pixels: int | None, target_side: Callable[[int, int], float] | None
                 ) -> DecodedImage:
    name = str(path)
    try:
        if not path.exists():
            raise InputError(f"{name}: file not found")
        if path.is_dir():
            raise InputError(f"{name}: is a folder, not an image")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"{name}: empty file (0 bytes)")
        data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths on every OS
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    return decode_image_bytes(data, name, max_pixels=max_pixels, target_side=target_side)


def decode_image_bytes(data: bytes | memoryview | np.ndarray, name: str, *, max_pixels: int | None,
                       target_side: Callable[[int, int], float] | None = None) -> DecodedImage:
    """Decode encoded image bytes exactly as :func:`decode_image` decodes the file holding them (header first: pixel
    budget, reduced JPEG decode when ``target_side(h, w)`` allows, the decoder's integrity verdict, EXIF orientation);
    ``name`` (a path or URI) is used in error messages."""
    arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if arr.size == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    header = read_header(memoryview(arr))
    reduce = 1
    orientation = 1
    if header is not None:
        orientation = header.orientation
        up_w, up_h = header.upright_size
        if header.format == "JPEG" and target_side is not None:
            reduce = _reduction(up_w, up_h, target_side(up_h, up_w))
        pixels = header.width * header.height
        decoded = pixels if header.progressive else math.ceil(header.width / reduce) * math.ceil(header.height / reduce)
        if max_pixels is not None and decoded > max_pixels:
            raise _budget_error(name, up_w, up_h, decoded, max_pixels)
    image = _decode_bytes(arr, name, header, reduce)
    del arr
    image = apply_orientation(to_bgr_uint8(image, name=name), orientation)
    if header is not None and reduce > 1:
        up_w, up_h = header.upright_size
    else:
        up_h, up_w = image.shape[:2]
    return DecodedImage(image, up_w, up_h)


def _from_pil(img: Any, *, max_pixels: int | None, value_scale: float | None) -> np.ndarray:
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise _budget_error("PIL image", w, h, w * h, max_pixels)
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a good picture unreadable
        orientation = 1
    single = img.mode in ("F", "I", "L", "I;16", "I;16B", "I;16L")
    if img.mode in ("I;16", "I;16B", "I;16L", "I") and value_scale is None:
        arr = np.asarray(img).astype(np.uint32)
        arr = (arr >> 8).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
        bgr = to_bgr_uint8(arr, name="PIL image")
    elif img.mode == "F" or (value_scale is not None and single):
        bgr = to_bgr_uint8(np.asarray(img), name="PIL image", value_scale=value_scale)
    else:
        bgr = to_bgr_uint8(np.asarray(img.convert("RGB")), rgb=True, name="PIL image", value_scale=value_scale)
    return apply_orientation(bgr, orientation)


def decode_image(source: Any, *, rgb: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 value_scale: float | None = None, target_side: Callable[[int, int], float] | None = None
                 ) -> DecodedImage:
    """Decode ``source`` (path, numpy array or PIL image) upright as uint8 BGR, with the original size.

    ``target_side(height, width)``: the longest side the caller will resize this (upright) image to; a JPEG is then
    decoded reduced by 2, 4 or 8 as long as its longest side stays >= that. ``max_pixels``: refuse a file or PIL
    image whose decode would exceed this many pixels (``None``: no limit). ``value_scale``: see :func:`to_bgr_uint8`.
    """
    if isinstance(source, (str, os.PathLike)):
        return _decode_file(Path(source), max_pixels=max_pixels, target_side=target_side)
    if isinstance(source, np.ndarray):
        img = to_bgr_uint8(source, rgb=rgb, value_scale=value_scale)
        return DecodedImage(img, img.shape[1], img.shape[0])
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(source, Image.Image):
        img = _from_pil(source, max_pixels=max_pixels, value_scale=value_scale)
        return DecodedImage(img, img.shape[1], img.shape[0])
    raise InputError(f"unsupported image input of type {type(source).__name__} (use a path, a numpy array or a PIL image)")


def load_image(source: Any, *, rgb: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               value_scale: float | None = None) -> np.ndarray:
    """Load ``source`` (path, numpy array or PIL image) as upright uint8 BGR ``[H, W, 3]`` at full size.

    ``rgb`` applies to numpy arrays only: files are decoded by OpenCV (BGR) and PIL images carry their own mode.
    """
    return decode_image(source, rgb=rgb, max_pixels=max_pixels, value_scale=value_scale).image


def write_image_atomic(path: str | os.PathLike, image_bgr: np.ndarray) -> Path:
    """Encode ``image_bgr`` by the suffix of ``path`` and write it via a temporary file + rename."""
    path = Path(path)
    try:
        ok, buf = cv2.imencode(path.suffix or ".jpg", image_bgr)
    except cv2.error:
        ok, buf = False, None
    if not ok:
        raise InputError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
    return atomic_write_bytes(path, buf.tobytes())
