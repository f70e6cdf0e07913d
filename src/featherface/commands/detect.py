"""``featherface detect SOURCE... -o DIR``: images, folders (recursive), videos and webcams."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import cv2

from featherface.errors import FeatherFaceError, InputError
from featherface.imageio import IMAGE_SUFFIXES, VIDEO_SUFFIXES, load_image, write_image_atomic

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
    p.add_argument("--model", default=None,
                   help="checkpoint path (ours or upstream FeatherFace V1); default: the bundled V2 weights")
    p.add_argument("--score", type=float, default=0.5, help="score threshold (default 0.5)")
    p.add_argument("--nms", type=float, default=0.4, help="NMS IoU threshold (default 0.4)")
    p.add_argument("--resize", default="original", help="'original' or the longest side in pixels (default original)")
    p.add_argument("--max-side", type=int, default=2560, help="never exceed this longest side (memory guard; 0 = off)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-images", action="store_true", help="write only the JSON lines, no annotated images/videos")
    p.add_argument("--max-frames", type=int, default=None, help="stop videos / webcams after this many frames")


def _iter_folder(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)


def _expand_sources(sources: list[str]) -> Iterator[tuple[str, Path | int, Path | None]]:
    """(kind, source, root) for every input: kind is 'image', 'video' or 'webcam'; root is the folder given."""
    for s in sources:
        if s.isdigit() and not Path(s).exists():
            yield "webcam", int(s), None
            continue
        p = Path(s)
        if p.is_dir():
            for f in _iter_folder(p):
                yield ("video" if f.suffix.lower() in VIDEO_SUFFIXES else "image"), f, p
        elif p.suffix.lower() in VIDEO_SUFFIXES and p.exists():
            yield "video", p, None
        else:
            yield "image", p, None  # missing / non-image files fail in load_image with a clear message


class _JsonLines:
    """Append records to ``detections.jsonl`` through a temp file renamed at the end (all or nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.fh = os.fdopen(fd, "w")

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)


def _out_path(out_dir: Path, src: Path, root: Path | None, suffix: str | None = None) -> Path:
    rel = src.relative_to(root) if root is not None else Path(src.name)
    out = out_dir / rel
    return out.with_suffix(suffix) if suffix else out


def _run_stream(detector, cap: cv2.VideoCapture, name: str, out_video: Path | None, jsonl: _JsonLines,
                max_frames: int | None, draw) -> int:
    from tqdm import tqdm

    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    tmp_video = None
    frames = 0
    try:
        with tqdm(total=total, desc=name, unit="frame", leave=False) as bar:
            while max_frames is None or frames < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                faces = detector.detect(frame)
                jsonl.write({"source": name, "frame": frames, "width": frame.shape[1], "height": frame.shape[0],
                             "faces": [f.to_dict() for f in faces]})
                if out_video is not None:
                    if writer is None:
                        out_video.parent.mkdir(parents=True, exist_ok=True)
                        tmp_video = out_video.with_name(f".{out_video.stem}.tmp{out_video.suffix}")
                        writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (frame.shape[1], frame.shape[0]))
                    writer.write(draw(frame, faces))
                frames += 1
                bar.update(1)
    finally:
        if writer is not None:
            writer.release()
            os.replace(tmp_video, out_video)
    return frames


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from featherface.api import FaceDetector
    from featherface.visualize import draw_faces

    detector = FaceDetector(args.model, device=args.device, score_threshold=args.score, nms_threshold=args.nms,
                            resize=args.resize, max_side=(args.max_side or None), num_threads=args.threads)
    out_dir = Path(args.output)
    items = list(_expand_sources(args.sources))
    if not items:
        raise InputError(f"no images or videos found in {', '.join(args.sources)}")
    jsonl = _JsonLines(out_dir / "detections.jsonl")
    failures: list[str] = []
    n_images = n_frames = n_faces = 0
    try:
        bar = tqdm(items, desc="detect", unit="file", disable=len(items) < 2)
        for kind, src, root in bar:
            try:
                if kind == "image":
                    image = load_image(src)
                    faces = detector.detect(image)
                    n_images += 1
                    n_faces += len(faces)
                    jsonl.write({"source": str(src), "width": image.shape[1], "height": image.shape[0],
                                 "faces": [f.to_dict() for f in faces]})
                    if not args.no_images:
                        write_image_atomic(_out_path(out_dir, src, root, ".jpg"), draw_faces(image, faces))
                else:
                    cap = cv2.VideoCapture(src if isinstance(src, int) else str(src))
                    if not cap.isOpened():
                        raise InputError(f"{'webcam ' if kind == 'webcam' else ''}{src}: cannot be opened as a video")
                    if kind == "webcam":
                        name, out_video = f"webcam{src}", out_dir / f"webcam{src}.mp4"
                    else:
                        name, out_video = str(src), _out_path(out_dir, src, root, ".mp4")
                    try:
                        n = _run_stream(detector, cap, name, None if args.no_images else out_video, jsonl,
                                        args.max_frames, draw_faces)
                    finally:
                        cap.release()
                    if n == 0:
                        raise InputError(f"{src}: no frame could be decoded")
                    n_frames += n
            except FeatherFaceError as exc:
                failures.append(str(exc))
                tqdm.write(f"skipped: {exc}", file=sys.stderr)
    finally:
        jsonl.close()
    print(f"{n_images} image(s), {n_frames} video frame(s), {n_faces} face(s) in images; "
          f"results in {out_dir}/ (detections.jsonl{'' if args.no_images else ' + annotated files'})")
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0
