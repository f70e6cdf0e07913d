"""What runs inside a Ray actor: read an image's bytes, decode them as :mod:`featherface.imageio` decodes a file,
detect with a :class:`featherface.api.FaceDetector` on ONNX Runtime, and turn the faces into an Arrow row.

:func:`featherface.imageio.decode_image_bytes` (re-exported here) is the one decoder ``imageio.decode_image(path)``
also uses: the same header-first pixel budget, reduced JPEG decode, libjpeg damage check, EXIF orientation and error
texts (a test checks that both give the same array or the same message on good and bad files).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from featherface.api import LANDMARK_NAMES
from featherface.errors import FeatherFaceError, InputError
from featherface.imageio import decode_image_bytes

__all__ = ["arrow_schema", "decode_image_bytes", "read_bytes", "DetectorActor", "error_text"]


def arrow_schema():
    """One row per image: ``path``, ``width``/``height`` (upright original pixels; null on error), ``num_faces``,
    ``faces`` (list of ``{box: [x1, y1, x2, y2], score, left_eye: [x, y], right_eye, nose, mouth_left, mouth_right}``,
    float32, pixels of the upright original image) and ``error`` (null, or the one-line reason; ``width`` and
    ``height`` are null then, ``num_faces`` 0 and ``faces`` empty)."""
    import pyarrow as pa

    point = pa.list_(pa.float32())
    face = pa.struct([("box", pa.list_(pa.float32())), ("score", pa.float32()),
                      *[(name, point) for name in LANDMARK_NAMES]])
    return pa.schema([("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                      ("num_faces", pa.int32()), ("faces", pa.list_(face)), ("error", pa.string())])


def read_bytes(key: str, filesystems: dict[str, Any]) -> bytes:
    """All bytes of the image ``key`` (local path or URI); ``InputError`` with a one-line reason when it cannot be
    read."""
    from featherface.batch.sources import open_filesystem

    filesystem, path = open_filesystem(key, filesystems)
    try:
        if filesystem is None:
            p = Path(path)
            if p.is_dir():
                raise InputError(f"{key}: is a folder, not an image")
            with open(p, "rb") as fh:
                return fh.read()
        with filesystem.open_input_file(path) as fh:
            return fh.readall()
    except FileNotFoundError:
        raise InputError(f"{key}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{key}: is a folder, not an image") from None
    except OSError as exc:
        raise InputError(f"{key}: cannot read ({exc.strerror or _first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def error_text(key: str, exc: BaseException) -> str:
    """One line for an error row: the project's own message for user-facing errors, ``key: Type: first line``
    otherwise."""
    if isinstance(exc, FeatherFaceError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else f"{key}: {type(exc).__name__}"
    return f"{key}: {type(exc).__name__}: {_first_line(exc)}"


class DetectorActor:
    """A Ray Data actor (``map_batches(DetectorActor, compute=ActorPoolStrategy(...))``): one ONNX Runtime session
    of the model inside a :class:`featherface.api.FaceDetector` built with the job's thresholds.

    ``model``: the bytes of the raw-output ONNX file, or ``[ObjectRef]`` of them (shipped through Ray's object store,
    so the workers need no copy of the driver's files). Each call takes a batch with a ``path`` column and returns an
    Arrow table in :func:`arrow_schema`; an image that cannot be read, decoded or detected gives a row with ``error``
    set, never an exception.
    """

    def __init__(self, model: bytes | list, *, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 resize: Any = None, max_side: int | None = 2560, max_pixels: int | None = 100_000_000,
                 threads: int = 1, filesystems: dict[str, Any] | None = None, read_threads: int = 8) -> None:
        import cv2

        from featherface.api import FaceDetector

        threads = max(1, int(threads))
        cv2.setNumThreads(threads)
        self._dir = tempfile.mkdtemp(prefix="featherface-actor-")
        if isinstance(model, list):  # [ObjectRef] of the bytes, put once by the driver
            import ray

            model = ray.get(model[0])
        path = os.path.join(self._dir, "model.onnx")
        with open(path, "wb") as fh:
            fh.write(model)
        try:
            self.detector = FaceDetector(path, backend="onnxruntime", num_threads=threads,
                                         score_threshold=score_threshold, nms_threshold=nms_threshold, resize=resize,
                                         max_side=max_side, max_pixels=max_pixels)
        finally:  # the session holds the model in memory: the file is no longer needed
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
        self.filesystems = dict(filesystems or {})
        self.remote = any(fs_ is not None for fs_ in self.filesystems.values())
        self.read_threads = max(1, int(read_threads))
        self._pool = None
        self.schema = arrow_schema()

    def _read_all(self, keys: list[str]) -> list[bytes | BaseException]:
        def one(key: str) -> bytes | BaseException:
            try:
                return read_bytes(key, self.filesystems)
            except Exception as exc:  # noqa: BLE001 - becomes the image's error row
                return exc

        if not self.remote or len(keys) < 2:
            return [one(k) for k in keys]
        if self._pool is None:  # object stores: overlap the requests of a batch
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.read_threads)
        return list(self._pool.map(one, keys))

    def detect_one(self, key: str, data: bytes | BaseException) -> dict[str, Any]:
        try:
            if isinstance(data, BaseException):
                raise data
            decoded = decode_image_bytes(data, key, max_pixels=self.detector.max_pixels,
                                         target_side=self.detector.target_side)
            faces = self.detector.detect_decoded(decoded)
        except MemoryError:
            return _error_row(key, f"{key}: out of memory while decoding or detecting")
        except Exception as exc:  # noqa: BLE001 - one bad file never ends the job
            return _error_row(key, error_text(key, exc))
        rows = []
        for f in faces:
            row = {"box": list(f.box), "score": f.score}
            for name in LANDMARK_NAMES:
                row[name] = list(f.landmarks[name])
            rows.append(row)
        return {"path": key, "width": int(decoded.width), "height": int(decoded.height), "num_faces": len(rows),
                "faces": rows, "error": None}

    def __call__(self, batch):
        import pyarrow as pa

        keys = [str(k) for k in batch.column("path").to_pylist()] if isinstance(batch, pa.Table) else \
            [str(k) for k in batch["path"]]
        rows = [self.detect_one(k, d) for k, d in zip(keys, self._read_all(keys))]
        return pa.Table.from_pylist(rows, schema=self.schema)


def _error_row(key: str, text: str) -> dict[str, Any]:
    return {"path": key, "width": None, "height": None, "num_faces": 0, "faces": [], "error": text}
