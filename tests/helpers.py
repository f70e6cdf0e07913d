"""Shared test helpers: where ../shared lives and skip markers for tests that need it."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEACHER = SHARED / "peers" / "featherface" / "featherface_train_mobilenet0.25_Final.pth"
RETINAFACE = SHARED / "peers" / "retinaface_mnet025" / "mobilenet0.25_Final.pth"
GOLDEN = SHARED / "data" / "widerface" / "oracle" / "teacher_golden"
VAL_IMAGES = SHARED / "data" / "widerface" / "val" / "images"

needs_teacher = pytest.mark.skipif(not TEACHER.exists(), reason=f"upstream teacher checkpoint not found at {TEACHER}")
needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason=f"teacher golden outputs not found at {GOLDEN}")
needs_retinaface = pytest.mark.skipif(not RETINAFACE.exists(), reason=f"RetinaFace checkpoint not found at {RETINAFACE}")


def assert_same_detections_as_sets(a, b, atol: float = 1e-3) -> None:
    """Two :class:`~featherface.geometry.postprocess.Detections` hold the same faces in any order (boxes, landmarks
    and scores within ``atol``). For comparing two runtimes on a random network, whose hundreds of exactly tied
    scores each runtime may order differently: run both with ``nms_threshold=1.0`` so that NMS, whose choice among
    tied boxes follows that order, keeps every candidate."""
    import numpy as np

    assert len(a.scores) == len(b.scores) > 0, (len(a.scores), len(b.scores))
    rows_a = np.concatenate([a.boxes, a.landmarks, a.scores[:, None]], 1)
    rows_b = np.concatenate([b.boxes, b.landmarks, b.scores[:, None]], 1)
    key_a, key_b = np.lexsort(np.round(rows_a, 2).T), np.lexsort(np.round(rows_b, 2).T)
    np.testing.assert_allclose(rows_a[key_a], rows_b[key_b], atol=atol)


def save_random_upstream_teacher(folder: Path, seed: int) -> Path:
    """A random FeatherFace V1 saved in the upstream layout (plain state dict) in ``folder``: loaded through the
    converter like the real teacher, for tests that need one without ``../shared``."""
    import torch

    from featherface.models import build_model

    torch.manual_seed(seed)
    path = Path(folder) / "teacher_upstream.pth"
    torch.save(build_model("featherface_v1").state_dict(), path)
    return path
