"""``detect_batch``: list the images, skip those already in OUTPUT, run the rest through an actor pool on Ray Data,
write whole part files as results arrive, and return a summary.

Pipeline (one Ray Data dataset)::

    ray.data.from_items([{"path": key}, ...])              keys not yet in OUTPUT, built on the driver
      .map_batches(DetectorActor, compute=ActorPoolStrategy(size=workers), batch_size=..., num_cpus=threads)
      .iter_batches()                                      -> PartWriter on the driver -> OUTPUT/part-*.parquet

Each actor reads the bytes of its images (local files or pyarrow filesystems), decodes them at their original size
with the project's image reader and detects with ``FaceDetector(model.onnx, backend="onnxruntime")``, so the faces
are those that ``FaceDetector`` gives for each image on its own with the same model and thresholds.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featherface.errors import FeatherFaceError

__all__ = ["INSTALL_HINT", "BatchSummary", "detect_batch", "resolve_onnx", "ray_available", "require_ray"]

INSTALL_HINT = "Ray Data is not installed: pip install \"featherface[ray]\" (or pip install \"ray[data]\")"


def ray_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("ray", "pyarrow"))


def require_ray() -> None:
    if not ray_available():
        raise FeatherFaceError(INSTALL_HINT)
    if importlib.util.find_spec("ray.data") is None:  # pragma: no cover - ray without its data extra
        raise FeatherFaceError(INSTALL_HINT)


@dataclass
class BatchSummary:
    """What a job did. ``listed``: images in SOURCE; ``already_done``: of those, already in OUTPUT (skipped);
    ``processed`` / ``faces`` / ``errors``: rows written by this run; ``seconds``: wall time of the Ray execution
    (actor start-up included); ``total_*``: the whole OUTPUT after this run."""

    output: str
    format: str
    listed: int = 0
    already_done: int = 0
    processed: int = 0
    faces: int = 0
    errors: int = 0
    seconds: float = 0.0
    workers: int = 0
    total_rows: int = 0
    total_faces: int = 0
    total_errors: int = 0
    skipped_videos: int = 0
    files: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: seconds until the first results reached the driver, and how many rows they were (start-up is mostly there)
    first_result_seconds: float = 0.0
    first_result_rows: int = 0

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float:
        """Images/s after the first results arrived (actor start-up and model load excluded)."""
        span = self.seconds - self.first_result_seconds
        n = self.processed - self.first_result_rows
        return n / span if span > 0 and n > 0 else 0.0

    def line(self) -> str:
        """The final summary: images, faces, errors and images/s of this run, then the totals of OUTPUT."""
        total = (f"{self.output} holds {self.total_rows} rows, {self.total_faces} faces, {self.total_errors} errors "
                 f"({self.format})")
        if not self.processed and not self.interrupted:
            return f"nothing to do: all {self.listed} images are already done; {total}"
        done = f" ({self.already_done} already done, skipped)" if self.already_done else ""
        return (f"{self.processed} images{done}, {self.faces} faces, {self.errors} errors, "
                f"{self.images_per_second:.2f} images/s ({self.workers} workers, {self.seconds:.1f} s, "
                f"{len(self.files)} new part files); {total}")


# ---------------------------------------------------------------------------------------------------- model
def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featherface"


def resolve_onnx(model: str | os.PathLike | None) -> tuple[Path, dict[str, str]]:
    """The raw-output ONNX file the actors run, and its identity for the settings file.

    ``model`` is resolved by :func:`featherface.resolve.resolve_model_source` (the one resolver of the API and
    the CLI): ``None`` or a shipped name, the shipped raw ONNX file (SHA-256 checked); a ``.onnx`` file: used as
    is (a raw export, ``featherface export`` without ``--with-postprocess``); a checkpoint: exported once to
    ``~/.cache/featherface`` (cached by its digest; needs the ``train`` extra)."""
    from featherface.pretrained import sha256_of
    from featherface.resolve import resolve_model_source

    source = resolve_model_source(model)
    if source.kind == "name":
        raise FeatherFaceError(f"{source.name!r} names an untrained network; detect-batch needs weights: a "
                               "checkpoint or a raw .onnx export (or no --model for the bundled weights)")
    assert source.path is not None
    if not source.path.is_file():
        raise FeatherFaceError(f"{source.path}: model file not found (--model takes a checkpoint or a raw .onnx "
                               "export)")
    if source.kind == "pretrained":
        from featherface.pretrained import weights_record

        record = weights_record(str(source.name))
        ident = {"model": f"{source.name} (shipped)", "model_sha256": record.sha256}
        if source.onnx_path is not None:  # the shipped raw ONNX file (SHA-256 checked by the resolver)
            return source.onnx_path, ident
        target = _cache_dir() / f"{source.name}-raw-{record.sha256[:16]}.onnx"
    else:
        digest = sha256_of(source.path)
        ident = {"model": source.path.name, "model_sha256": digest}
        if source.kind == "onnx":
            return source.path, ident
        target = _cache_dir() / f"raw-{digest[:16]}.onnx"
    if not target.is_file():
        from featherface.checkpoint import load_model
        from featherface.export.onnx_export import export_onnx

        print(f"exporting {source.path.name} to ONNX (once, cached in {target.parent})", file=sys.stderr)
        export_onnx(load_model(source.path, map_location="cpu"), target)  # atomic: temp file + rename
    return target, ident


# ---------------------------------------------------------------------------------------------------- ray
def _init_ray(address: str | None, num_cpus: int | None, quiet: bool) -> bool:
    """Join ``address`` (``auto``, ``host:port``, ``ray://...``) or start a local Ray; ``False`` if Ray was already
    initialised by the caller (then it is left running)."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING if quiet else logging.INFO,
                          "configure_logging": True}
    if address:
        if num_cpus is not None:
            raise FeatherFaceError("--num-cpus sizes a local Ray; with --address the cluster's own resources count")
        try:
            ray.init(address=address, **kw)
        except Exception as exc:  # noqa: BLE001 - no cluster there, version mismatch, refused connection
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise FeatherFaceError(f"cannot join the Ray cluster at {address!r}: {text}") from None
    else:
        ray.init(address="local", num_cpus=num_cpus, **kw)
    return True


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


# ---------------------------------------------------------------------------------------------------- job
def detect_batch(source: str | os.PathLike, output: str | os.PathLike, *, model: str | os.PathLike | None = None,
                 score_threshold: float = 0.5, nms_threshold: float = 0.4, resize: Any = None,
                 max_side: int | None = 2560, max_pixels: int | None = 100_000_000, workers: int | None = None,
                 batch_size: int = 16, threads: int = 1, fmt: str | None = None, address: str | None = None,
                 num_cpus: int | None = None, root: str | os.PathLike | None = None, rows_per_file: int = 5000,
                 flush_seconds: float = 60.0, progress: bool = True, quiet: bool = False,
                 limit: int | None = None) -> BatchSummary:
    """Detect faces in every image of ``source`` into the Parquet (or JSON Lines) dataset ``output``; see
    ``featherface detect-batch --help`` for the arguments. Re-running into the same ``output`` skips the images
    already there. Uses the running Ray if ``ray.init`` was called, else joins ``address`` or starts a local Ray
    (with ``num_cpus`` CPUs) and shuts it down at the end."""
    from featherface.api import ResizePolicy
    from featherface.batch.output import OutputStore, PartWriter
    from featherface.batch.sources import is_uri, list_images

    require_ray()
    for name, value, lo in (("batch_size", batch_size, 1), ("threads", threads, 1),
                            ("rows_per_file", rows_per_file, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise FeatherFaceError(f"{name} must be an integer >= {lo}, got {value!r}")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise FeatherFaceError(f"workers must be an integer >= 1, got {workers!r}")
    policy = ResizePolicy.parse(resize, max_side)  # validates
    say = (lambda msg: None) if quiet else (lambda msg: print(f"detect-batch: {msg}", file=sys.stderr, flush=True))

    listing = list_images(source, root=root, exclude=None if is_uri(os.fspath(output)) else os.fspath(output))
    if not listing.keys:
        raise FeatherFaceError(f"{source}: no images found")
    if listing.skipped_videos:
        say(f"left out {listing.skipped_videos} video file(s): videos are out of scope for detect-batch")

    onnx_path, ident = resolve_onnx(model)
    from featherface import __version__
    from featherface.api import FaceDetector

    # Validates the file (raw export, readable) on the driver, before any actor starts.
    probe = FaceDetector(onnx_path, backend="onnxruntime", num_threads=1, score_threshold=score_threshold,
                         nms_threshold=nms_threshold, resize=policy, max_side=max_side, max_pixels=max_pixels)
    settings = {**ident, "score_threshold": probe.score_threshold, "nms_threshold": probe.nms_threshold,
                "resize": policy.name, "max_side": max_side, "max_pixels": max_pixels,
                "featherface_version": __version__}
    del probe
    store = OutputStore(output, fmt)
    store.check_settings(settings)
    existing = store.existing()

    todo = [k for k in listing.keys if k not in existing.keys]
    already_done = len(listing.keys) - len(todo)
    if limit is not None:
        todo = todo[: max(0, int(limit))]
    summary = BatchSummary(output=store.name, format=store.format, listed=len(listing.keys), already_done=already_done,
                           skipped_videos=listing.skipped_videos, total_rows=existing.rows,
                           total_faces=existing.faces, total_errors=existing.errors)
    if not todo:
        say(f"{summary.listed} images listed, all already in {store.name}")
        return summary

    import ray

    started = _init_ray(address, num_cpus, quiet)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        from ray.data import ActorPoolStrategy, DataContext

        from featherface.batch.worker import DetectorActor, arrow_schema

        ctx = DataContext.get_current()
        saved_progress = ctx.enable_progress_bars
        ctx.enable_progress_bars = bool(progress)
        data_logger = logging.getLogger("ray.data")
        saved_level = data_logger.level
        if quiet:
            data_logger.setLevel(logging.WARNING)
        n_batches = math.ceil(len(todo) / batch_size)
        fit = max(1, int(_cluster_cpus() // threads))
        if workers is None:
            workers = fit
        elif workers > fit and started and not address:  # a local Ray never grows: the rest would never start
            say(f"--workers {workers} x --threads {threads} needs more than the {int(_cluster_cpus())} CPUs of the "
                f"local Ray: using {fit} worker(s)")
            workers = fit
        workers = max(1, min(workers, n_batches))
        summary.workers = workers
        say(f"{summary.listed} images listed, {summary.already_done} already done, {len(todo)} to process with "
            f"{workers} worker(s) x {threads} thread(s), batches of {batch_size}")
        model_ref = ray.put(Path(onnx_path).read_bytes())  # kept alive by this frame while the actors may restart
        ds = ray.data.from_items([{"path": k} for k in todo], override_num_blocks=min(n_batches, 20000))
        ds = ds.map_batches(
            DetectorActor,
            fn_constructor_kwargs=dict(model=[model_ref], score_threshold=score_threshold,
                                       nms_threshold=nms_threshold, resize=policy, max_side=max_side,
                                       max_pixels=max_pixels, threads=threads, filesystems=listing.filesystems),
            batch_size=batch_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=workers),
            num_cpus=threads)
        schema = arrow_schema()
        writer = PartWriter(store, schema, rows_per_file=rows_per_file, flush_seconds=flush_seconds)
        t0 = time.perf_counter()
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                if not isinstance(table, pa.Table):  # pragma: no cover - defensive
                    table = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
                table = table.select(schema.names).cast(schema)
                if not summary.processed:
                    summary.first_result_seconds = time.perf_counter() - t0
                    summary.first_result_rows = table.num_rows
                writer.add(table)
                summary.processed += table.num_rows
                summary.errors += table.num_rows - table.column("error").null_count
                summary.faces += int(pc.sum(table.column("num_faces")).as_py() or 0)
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
        except Exception as exc:  # a Ray failure (e.g. actors lost): keep what is done, say how to resume
            if isinstance(exc, FeatherFaceError):
                raise
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise FeatherFaceError(f"the Ray job failed ({type(exc).__name__}: {text}); the rows finished so far "
                                   f"are saved in {store.name}: re-run the same command to resume") from exc
        finally:
            writer.flush()
            summary.seconds = time.perf_counter() - t0
            summary.files = list(store.written)
            summary.total_rows = existing.rows + summary.processed
            summary.total_faces = existing.faces + summary.faces
            summary.total_errors = existing.errors + summary.errors
            ctx.enable_progress_bars = saved_progress
            data_logger.setLevel(saved_level)
    finally:
        if started:
            ray.shutdown()
    return summary
