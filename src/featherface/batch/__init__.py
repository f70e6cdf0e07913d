"""Face detection over many images on Ray Data: ``featherface detect-batch SOURCE -o OUTPUT`` and
:func:`detect_batch`.

SOURCE is a folder (recursive), a text file of paths, a glob or a pyarrow-filesystem URI (``s3://``, ``gs://``, ...);
the workers are Ray actors that each hold one ONNX Runtime session of the model; OUTPUT is a Parquet (or JSON Lines)
dataset with one row per image, resumable after a crash or a kill. Needs the ``ray`` extra
(``pip install "featherface[ray]"``); this package imports without it. See docs/scale-out.md.
"""

from featherface.batch.job import INSTALL_HINT, BatchSummary, detect_batch, ray_available, resolve_onnx
from featherface.batch.sources import Listing, list_images

__all__ = ["INSTALL_HINT", "BatchSummary", "detect_batch", "ray_available", "resolve_onnx", "Listing", "list_images"]
