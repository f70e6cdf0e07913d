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
