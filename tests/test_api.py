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
def trained():
    """The bundled default weights: one confident face on the example photo, none on a black image."""
    return FaceDetector(score_threshold=0.5)


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


def test_path_pil_and_array_agree(trained, tmp_path):
    from PIL import Image

    png = tmp_path / "asset.png"  # lossless: OpenCV and PIL decode the same pixels
    cv2.imwrite(str(png), cv2.imread(str(ASSET)))
    bgr = cv2.imread(str(png))
    results = [trained.detect(x) for x in (png, str(png), bgr, Image.open(png), Image.open(png).convert("RGB"))]
    assert len(results[0]) == 1 and results[0][0].score > 0.9
    for other in results[1:]:
        assert other == results[0]


def test_face_fields(detector):
    faces = detector.detect(ASSET)
    assert faces and isinstance(faces[0], Face)
    f = faces[0]
    assert len(f.box) == 4 and all(isinstance(v, float) for v in f.box)
    assert tuple(f.landmarks) == LANDMARK_NAMES
    assert set(f.to_dict()) == {"box", "score", "landmarks"}


def test_list_of_images_of_different_sizes(trained):
    imgs = [np.zeros((40, 60, 3), np.uint8), np.zeros((100, 30, 3), np.uint8), ASSET]
    out = trained.detect(imgs)
    assert [len(x) for x in out] == [0, 0, 1]
    assert out == [trained.detect(im) for im in imgs]  # the same faces as one call per image, in order


def _asset_as(kind: str) -> np.ndarray:
    bgr = cv2.imread(str(ASSET))
    if kind == "gray":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if kind == "gray1":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None]
    if kind == "bgra":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    if kind == "uint16":
        return bgr.astype(np.uint16) * 257
    if kind == "float32":
        return bgr.astype(np.float32)
    raise ValueError(kind)


@pytest.mark.parametrize("kind,same_as", [
    ("gray", "gray3"), ("gray1", "gray3"),        # grayscale, with and without a channel axis
    ("bgra", "bgr"),                              # alpha dropped
    ("uint16", "bgr"),                            # 16-bit shifted to 8 bits
    ("float32", "bgr"),                           # float holding 0..255
])
def test_unusual_arrays_are_converted(trained, kind, same_as):
    bgr = cv2.imread(str(ASSET))
    reference = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if same_as == "gray3" else bgr
    array = _asset_as(kind)
    assert np.array_equal(load_image(array), reference)
    faces = trained.detect(array)
    assert len(faces) == 1 and faces == trained.detect(reference)


@pytest.mark.parametrize("array", [
    np.zeros((50, 70), np.uint8), np.zeros((50, 70, 1), np.uint8), np.zeros((50, 70, 4), np.uint8),
    np.full((50, 70, 3), 40000, np.uint16), np.zeros((50, 70, 3), np.float32),
])
def test_unusual_blank_arrays_give_no_faces(trained, array):
    assert load_image(array).shape == (50, 70, 3) and load_image(array).dtype == np.uint8
    assert trained.detect(array) == []


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


def test_num_threads_does_not_change_the_process_setting():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.config, self.preprocessing = model, model.config, model.preprocessing

        def forward(self, x):
            seen.append(torch.get_num_threads())
            return self.model(x)

    det = FaceDetector(Probe(build_model("featherface_v2")), num_threads=other)
    assert torch.get_num_threads() == before  # constructing it changed nothing
    det.detect(np.zeros((32, 48, 3), np.uint8))
    assert seen == [other]  # the network ran with the detector's count...
    assert torch.get_num_threads() == before  # ...and the process setting is back
