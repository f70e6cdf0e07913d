"""FaceDetector: inputs of every kind, colour order, resize policy, batching, errors."""

import cv2
import numpy as np
import pytest
import torch

from featherface.api import LANDMARK_NAMES, Face, FaceDetector, ResizePolicy
from featherface.errors import FeatherFaceError, InputError
from featherface.imageio import load_image
from featherface.models import build_model
from helpers import TEACHER, needs_teacher

ASSET = __import__("pathlib").Path(__file__).resolve().parents[1] / "src" / "featherface" / "assets" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return FaceDetector(build_model("featherface_v2"), score_threshold=0.0, keep_top_k=20)


@pytest.fixture(scope="module")
def teacher():
    if not TEACHER.exists():
        pytest.skip(f"upstream teacher checkpoint not found at {TEACHER}")
    return FaceDetector(TEACHER, score_threshold=0.5)


def test_numpy_bgr_and_rgb_give_the_same_faces(detector):
    bgr = cv2.imread(str(ASSET))
    a = detector.detect(bgr)
    b = detector.detect(np.ascontiguousarray(bgr[:, :, ::-1]), rgb=True)
    assert [f.box for f in a] == [f.box for f in b]


def test_path_pil_and_array_agree(detector):
    from PIL import Image

    bgr = cv2.imread(str(ASSET))
    pil = Image.open(ASSET)
    boxes = [[f.box for f in detector.detect(x)] for x in (ASSET, str(ASSET), bgr)]
    assert boxes[0] == boxes[1] == boxes[2]
    assert len(detector.detect(pil)) == len(boxes[0])


def test_face_fields(detector):
    faces = detector.detect(ASSET)
    assert faces and isinstance(faces[0], Face)
    f = faces[0]
    assert len(f.box) == 4 and all(isinstance(v, float) for v in f.box)
    assert tuple(f.landmarks) == LANDMARK_NAMES
    assert set(f.to_dict()) == {"box", "score", "landmarks"}


def test_list_of_images_of_different_sizes(detector):
    imgs = [np.zeros((40, 60, 3), np.uint8), np.zeros((100, 30, 3), np.uint8), ASSET]
    out = detector.detect(imgs)
    assert len(out) == 3 and all(isinstance(x, list) for x in out)


@pytest.mark.parametrize("array", [
    np.zeros((50, 70), np.uint8),               # grayscale
    np.zeros((50, 70, 1), np.uint8),
    np.zeros((50, 70, 4), np.uint8),            # RGBA / BGRA
    np.full((50, 70, 3), 40000, np.uint16),     # 16-bit
    np.zeros((50, 70, 3), np.float32),
])
def test_unusual_arrays_are_converted(detector, array):
    assert isinstance(detector.detect(array), list)
    assert load_image(array).shape == (50, 70, 3) and load_image(array).dtype == np.uint8


@pytest.mark.parametrize("flag,channels", [(cv2.IMREAD_GRAYSCALE, None), ("rgba", 4), ("16bit", 3)])
def test_unusual_files_are_converted(tmp_path, flag, channels):
    bgr = cv2.imread(str(ASSET))
    if flag == "rgba":
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    elif flag == "16bit":
        img = bgr.astype(np.uint16) * 257
    else:
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), img)
    out = load_image(p)
    assert out.shape == bgr.shape and out.dtype == np.uint8
    if flag == "16bit":
        assert np.abs(out.astype(int) - bgr.astype(int)).max() <= 1


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.jpg").write_text("hello, not an image")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "notes.jpg")
    data = ASSET.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt JPEG"):
        load_image(tmp_path / "cut.jpg")


def test_huge_image_is_bounded_by_the_resize_policy(detector):
    huge = np.zeros((9000, 12000, 3), np.uint8)
    assert detector.resize.scale_for(9000, 12000) == pytest.approx(2560 / 12000)
    assert detector.detect(huge) is not None


def test_resize_policy():
    assert ResizePolicy.parse("original").scale_for(400, 800) == 1.0
    assert ResizePolicy.parse(640).scale_for(400, 800) == 0.8
    assert ResizePolicy.parse(640, max_side=None).scale_for(100, 200) == pytest.approx(3.2)
    with pytest.raises(FeatherFaceError):
        ResizePolicy.parse("large")


def test_unknown_model_name():
    with pytest.raises(FeatherFaceError, match="unknown model 'featherface_v9'"):
        FaceDetector("featherface_v9")


def test_flip_returns_boxes_in_original_coordinates(detector):
    img = cv2.imread(str(ASSET))
    b0, s0, l0 = detector.predict_raw(img, score_threshold=0.3)
    b1, s1, l1 = detector.predict_raw(np.ascontiguousarray(img[:, ::-1]), flip=True, score_threshold=0.3)
    # predicting on the mirrored image with flip=True mirrors twice: same candidates as the plain image
    assert np.allclose(np.sort(s0), np.sort(s1), atol=1e-5)


@needs_teacher
def test_teacher_finds_the_bundled_face(teacher):
    faces = teacher.detect(ASSET)
    assert len(faces) == 1 and faces[0].score > 0.99
    f = faces[0]
    # image-left eye is left of the image-right eye; nose between the eyes and the mouth
    assert f.landmarks["left_eye"][0] < f.landmarks["right_eye"][0]
    assert f.landmarks["left_eye"][1] < f.landmarks["nose"][1] < f.landmarks["mouth_left"][1]


def test_preprocess_equals_the_reference_formula():
    from featherface.api import MEAN_BGR, preprocess

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)

    def reference(a):
        return np.ascontiguousarray((a.astype(np.float32) - np.asarray(MEAN_BGR, np.float32)).transpose(2, 0, 1))

    assert np.array_equal(preprocess(img), reference(img))
    assert np.array_equal(preprocess(img, flip=True), reference(img[:, ::-1]))
    assert np.array_equal(preprocess(img[:, ::2]), reference(img[:, ::2]))  # non-contiguous input
    assert preprocess(img).flags["C_CONTIGUOUS"] and preprocess(img).dtype == np.float32
