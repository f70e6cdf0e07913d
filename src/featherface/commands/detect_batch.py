"""``featherface detect-batch SOURCE -o OUTPUT``: faces of many images on Ray Data, into Parquet or JSON Lines.

The parser imports neither Ray nor torch, so ``--help`` works without the ``ray`` extra; running without Ray prints
one line saying how to install it (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from featherface.cliargs import (
    add_detection_options,
    non_negative_float,
    positive_int,
)

DESCRIPTION = """detect faces in many images with Ray Data (a local Ray, or a cluster with --address)

Images only: videos are out of scope (video files in a folder or glob are left out and counted).
Each image is read as bytes and decoded by a worker at its original size with featherface's image reader
(EXIF orientation, pixel budget, JPEG checks as in `featherface detect`). The workers are Ray actors, each holding
one ONNX Runtime session of the model (1 intra-op thread by default). OUTPUT gets one row per image: path, width,
height, num_faces, faces (list of {box [x1,y1,x2,y2], score, left_eye, right_eye, nose, mouth_left, mouth_right
[x,y]}, pixels of the upright original image), error (the reason an image could not be used; the job goes on).
Re-running the same command into the same OUTPUT skips the images already there (resumable after a crash or kill).
Needs the ray extra: pip install "featherface[ray]"."""

EPILOG = """SOURCE:
  photos/                       a folder, recursive (hidden files and folders skipped)
  'photos/**/*.jpg'             a glob (quote it); ** spans folders
  list.txt                      a text file with one path or URI per line (relative to --root, default its folder)
  s3://bucket/photos/           any URI pyarrow's filesystems read (s3://, gs://, hdfs://, file://), a folder, a glob,
                                an image or a list; credentials from the usual environment variables

examples:
  featherface detect-batch photos/ -o faces.parquet/
  featherface detect-batch val-dev.txt --root val/images -o out/ --workers 2 --format jsonl
  featherface detect-batch s3://bucket/photos/ -o s3://bucket/faces/ --address auto --workers 64

exit status: 0, or 1 when some images of this run became error rows, or 2 on a usage or setup error.
reading the output: pandas.read_parquet("OUTPUT"), duckdb "SELECT * FROM 'OUTPUT/*.parquet'", spark.read.parquet.
"""



def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = DESCRIPTION
    p.epilog = EPILOG
    p.add_argument("source", metavar="SOURCE", help="folder, glob, text file of paths, or URI (see below)")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output dataset folder (local path or URI); re-using it resumes the job")
    p.add_argument("--format", choices=("parquet", "jsonl"), default=None,
                   help="part file format (default: parquet, or what OUTPUT already holds)")
    p.add_argument("--model", default=None,
                   help="checkpoint (exported to ONNX once, cached) or raw .onnx export; default: the bundled weights")
    add_detection_options(p)
    ray_group = p.add_argument_group("Ray")
    ray_group.add_argument("--workers", type=positive_int, default=None,
                           help="actors in the pool (default: the cluster's CPUs / --threads)")
    ray_group.add_argument("--batch-size", type=positive_int, default=16,
                           help="images per map_batches call of an actor (default 16)")
    ray_group.add_argument("--threads", type=positive_int, default=1,
                           help="ONNX Runtime intra-op threads (= CPUs reserved) per actor (default 1)")
    ray_group.add_argument("--address", default=None,
                           help="join this Ray cluster ('auto', HOST:PORT or ray://HOST:10001); default: start a "
                                "local Ray")
    ray_group.add_argument("--num-cpus", type=positive_int, default=None,
                           help="CPUs of the local Ray (default: all of this machine's); not with --address")
    p.add_argument("--root", default=None, help="folder (or URI) that relative paths in a list file are relative to")
    p.add_argument("--rows-per-file", type=positive_int, default=5000, help="rows per part file (default 5000)")
    p.add_argument("--flush-seconds", type=non_negative_float, default=60.0,
                   help="write a part file at least this often while results arrive (0 = only by rows; default 60)")
    p.add_argument("--limit", type=positive_int, default=None, help="process at most this many new images")
    p.add_argument("--no-progress", action="store_true", help="no Ray Data progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="only the final summary line")


def run(args: argparse.Namespace) -> int:
    from featherface.batch.job import require_ray

    require_ray()  # one line (exit 2) before anything else when Ray is not installed
    from featherface.batch.job import detect_batch

    summary = detect_batch(
        args.source, args.output, model=args.model, score_threshold=args.score, nms_threshold=args.nms,
        resize=args.resize, max_side=args.max_side or None,
        max_pixels=int(args.max_megapixels * 1e6) if args.max_megapixels else None, workers=args.workers,
        batch_size=args.batch_size, threads=args.threads, fmt=args.format, address=args.address,
        num_cpus=args.num_cpus, root=args.root, rows_per_file=args.rows_per_file,
        flush_seconds=args.flush_seconds, progress=not args.no_progress, quiet=args.quiet, limit=args.limit)
    print(f"detect-batch: {summary.line()}", flush=True)
    if summary.errors and not args.quiet:
        print(f"detect-batch: {summary.errors} image(s) could not be used; their rows have the reason in 'error'",
              file=sys.stderr)
    return 1 if summary.errors else 0
