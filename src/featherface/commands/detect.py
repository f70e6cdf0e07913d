"""``featherface detect SOURCE... -o DIR``: images, folders (recursive), videos and webcams.

Outputs keep each input's path relative to the folder given and its full name (``a.jpg`` -> ``out/a.jpg``,
``a.webp`` -> ``out/a.webp``; formats we do not write get ``.png`` appended, videos ``.mp4``), so no two inputs
share an output; the output folder itself is never read as input. Every per-file problem is one ``skipped:`` line
and the run goes on; the exit status is 1 when any input was skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2

from featherface.cliargs import (
    add_detection_options,
    add_model_options,
    backend_arg,
    device,
    positive_int,
)
from featherface.errors import FeatherFaceError, InputError, describe_os_error
from featherface.fsutil import AtomicFile, commit_temp, discard_temp, reserve_temp
from featherface.imageio import (
    VIDEO_SUFFIXES,
    WRITABLE_IMAGE_SUFFIXES,
    captured_stderr,
    walk_media_files,
    write_image_atomic,
)

EPILOG = """examples:
  featherface detect photo.jpg -o out/                       annotated out/photo.jpg + out/detections.jsonl
  featherface detect photos/ -o out/ --model teacher.pth     every image under photos/ (recursive)
  featherface detect clip.mp4 -o out/ --score 0.6            annotated out/clip.mp4, one JSON line per frame
  featherface detect 0 -o out/ --max-frames 100              webcam 0, 100 frames
  featherface detect big.jpg -o out/ --resize 1280 --no-images   longest side 1280, JSON only
"""



def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image file, folder, video file or webcam index")
    p.add_argument("-o", "--output", default="featherface_out", help="output folder (default: featherface_out)")
    add_model_options(p)
    add_detection_options(p)
    p.add_argument("--device", type=device, default="cpu",
                   help="cpu (default), or cuda, cuda:N, mps with the PyTorch backend")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads of the network (>= 1; default: 1 with ONNX Runtime, torch's setting with PyTorch)")
    p.add_argument("--no-images", action="store_true", help="write only the JSON lines, no annotated images/videos")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop videos / webcams after this many frames")


def _expand_sources(sources: list[str], exclude: Path | None = None) -> Iterator[tuple[str, Path | int, Path | None]]:
    """(kind, source, root) for every input: kind is 'image', 'video' or 'webcam'; root is the folder given."""
    for s in sources:
        if s.isdigit() and not Path(s).exists():
            yield "webcam", int(s), None
            continue
        p = Path(s)
        if p.is_dir():
            for f in walk_media_files(p, exclude):
                yield ("video" if f.suffix.lower() in VIDEO_SUFFIXES else "image"), f, p
        elif p.suffix.lower() in VIDEO_SUFFIXES and p.exists():
            yield "video", p, None
        else:
            yield "image", p, None  # missing / non-image files fail in the decoder with a clear message


def output_name(src: Path, root: Path | None, kind: str) -> Path:
    """Output path relative to the output folder: the input's path under ``root`` (or its name) with its full name;
    images in a format we do not write get ``.png`` appended, videos ``.mp4`` (unless already .mp4)."""
    rel = src.relative_to(root) if root is not None else Path(src.name)
    suffix = src.suffix.lower()
    if kind == "video":
        return rel if suffix == ".mp4" else rel.with_name(rel.name + ".mp4")
    return rel if suffix in WRITABLE_IMAGE_SUFFIXES else rel.with_name(rel.name + ".png")


class _Outputs:
    """Hands out output paths: never one already used in this run (``a~2.jpg`` then), never an input file."""

    def __init__(self, out_dir: Path, inputs: set[Path]) -> None:
        self.out_dir, self.inputs, self.used = out_dir, inputs, set()

    def claim(self, rel: Path) -> Path:
        path = self.out_dir / rel
        n = 2
        while path.resolve() in self.used or path.resolve() in self.inputs:
            path = self.out_dir / rel.with_name(f"{rel.stem}~{n}{rel.suffix}")
            n += 1
        self.used.add(path.resolve())
        return path


def _run_stream(detector, cap: cv2.VideoCapture, name: str, out_video: Path | None, jsonl, max_frames: int | None,
                draw) -> int:
    from tqdm import tqdm

    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    tmp_video = None
    frames = written = 0
    try:
        with tqdm(total=total, desc=name, unit="frame", leave=False) as bar:
            while max_frames is None or frames < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                faces = detector.detect(frame)
                record = {"source": name, "frame": frames, "width": frame.shape[1], "height": frame.shape[0],
                          "faces": [f.to_dict() for f in faces]}
                if out_video is not None:
                    record["output"] = str(out_video)
                jsonl.write(record)
                if out_video is not None:
                    if writer is None:
                        tmp_video = reserve_temp(out_video)
                        writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (frame.shape[1], frame.shape[0]))
                        if not writer.isOpened():
                            raise InputError(f"{out_video}: cannot write a video there")
                    writer.write(draw(frame, faces))
                    written += 1
                frames += 1
                bar.update(1)
    finally:
        if writer is not None:
            writer.release()
        if tmp_video is not None:
            if written:
                commit_temp(tmp_video, out_video)  # also after an error: keep the frames written so far
            else:
                discard_temp(tmp_video)
    return frames


class _JsonLines:
    """``detections.jsonl`` through a temporary file renamed at the end (the records of a run, all at once)."""

    def __init__(self, path: Path) -> None:
        import json

        self._dumps = json.dumps
        self.path = path
        self.file = AtomicFile(path, text=True)

    def write(self, record: dict) -> None:
        self.file.fh.write(self._dumps(record) + "\n")

    def close(self) -> None:
        self.file.commit()

    def abort(self) -> None:
        self.file.abort()


def _prepare_output(out_dir: Path, sources: list[str]) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder (-o needs a folder)")
    resolved = out_dir.resolve()
    for s in sources:
        p = Path(s)
        if p.is_dir() and p.resolve() == resolved:
            raise InputError(f"{out_dir}: the output folder is the input folder {s} (the annotated copies would "
                             "replace the inputs); choose another -o")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder: {describe_os_error(exc)}") from None
    return resolved


def _skip_message(src, exc: BaseException) -> str:
    if isinstance(exc, FeatherFaceError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{src}: {type(exc).__name__}{': ' + text[:200] if text else ''}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from featherface.api import FaceDetector
    from featherface.visualize import draw_faces

    out_dir = Path(args.output)
    resolved_out = _prepare_output(out_dir, args.sources)
    items = list(_expand_sources(args.sources, exclude=resolved_out))
    if not items:
        raise InputError(f"no images or videos found in {', '.join(args.sources)}")
    max_pixels = int(args.max_megapixels * 1e6) if args.max_megapixels else None
    detector = FaceDetector(args.model, backend=backend_arg(args.backend), device=args.device, score_threshold=args.score, nms_threshold=args.nms,
                            resize=args.resize, max_side=(args.max_side or None), num_threads=args.threads,
                            max_pixels=max_pixels)
    inputs = {src.resolve() for kind, src, _ in items if kind != "webcam"}
    outputs = _Outputs(out_dir, inputs)
    jsonl = _JsonLines(out_dir / "detections.jsonl")
    skipped = 0
    n_images = n_frames = n_faces = 0
    debug = getattr(args, "debug", False)
    try:
        bar = tqdm(items, desc="detect", unit="file", disable=len(items) < 2)
        for kind, src, root in bar:
            try:
                if kind == "image":
                    decoded = detector.load(src)
                    faces = detector.detect_decoded(decoded)
                    n_images += 1
                    n_faces += len(faces)
                    record = {"source": str(src), "width": decoded.width, "height": decoded.height,
                              "faces": [f.to_dict() for f in faces]}
                    if not args.no_images:
                        target = outputs.claim(output_name(src, root, kind))
                        drawn = faces if not decoded.reduced else [
                            f.scaled(1 / decoded.factor_x, 1 / decoded.factor_y) for f in faces]
                        try:
                            write_image_atomic(target, draw_faces(decoded.image, drawn))
                        except OSError as exc:
                            raise InputError(f"{src}: cannot write {describe_os_error(exc)}") from None
                        record["output"] = str(target)
                    jsonl.write(record)
                else:
                    with captured_stderr():  # OpenCV / FFmpeg chatter about unreadable files
                        cap = cv2.VideoCapture(src if isinstance(src, int) else str(src))
                    if not cap.isOpened():
                        raise InputError(f"{'webcam ' if kind == 'webcam' else ''}{src}: cannot be opened as a video")
                    if kind == "webcam":
                        name, out_video = f"webcam{src}", outputs.claim(Path(f"webcam{src}.mp4"))
                    else:
                        name, out_video = str(src), outputs.claim(output_name(src, root, kind))
                    try:
                        n = _run_stream(detector, cap, name, None if args.no_images else out_video, jsonl,
                                        args.max_frames, draw_faces)
                    finally:
                        cap.release()
                    if n == 0:
                        raise InputError(f"{src}: no frame could be decoded")
                    n_frames += n
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad file never ends a folder run
                if debug:
                    raise
                skipped += 1
                tqdm.write(f"skipped: {_skip_message(src, exc)}", file=sys.stderr)
    finally:
        try:
            jsonl.close()
        except OSError as exc:
            jsonl.abort()
            raise InputError(f"cannot write {describe_os_error(exc)}") from None
    note = f"; {skipped} input(s) skipped (see above)" if skipped else ""
    print(f"{n_images} image(s), {n_frames} video frame(s), {n_faces} face(s) in images; "
          f"results in {out_dir}/ (detections.jsonl{'' if args.no_images else ' + annotated files'}){note}")
    return 1 if skipped else 0
