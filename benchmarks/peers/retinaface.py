"""RetinaFace-MobileNet0.25 (biubug6 release weights), a small re-implementation of biubug6's architecture.

Written here from the architecture description (MobileNetV1-0.25 → FPN(64) → 3 SSH(64) → 1×1 heads, 2 anchors per
cell); module names follow biubug6's state-dict keys so ``mobilenet0.25_Final.pth`` loads with ``strict=True``.
Anchors, pre-processing (BGR − (104, 117, 123)), decoding and NMS are FeatherFace's own (the same scheme: this network
is FeatherFace's baseline). Two runtimes: PyTorch, and ONNX Runtime fp32 after exporting it here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import PEERS_ROOT

WEIGHTS = PEERS_ROOT / "retinaface_mnet025" / "mobilenet0.25_Final.pth"


def conv_bn(inp, oup, stride=1, leaky=0.0):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def conv_bn_no_relu(inp, oup, stride=1):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))


def conv_bn1x1(inp, oup, stride=1, leaky=0.0):
    return nn.Sequential(nn.Conv2d(inp, oup, 1, stride, 0, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def conv_dw(inp, oup, stride, leaky=0.1):
    return nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True),
                         nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


class SSH(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(cin, cout // 2)
        self.conv5X5_1 = conv_bn(cin, cout // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(cout // 4, cout // 4)
        self.conv7X7_2 = conv_bn(cout // 4, cout // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(cout // 4, cout // 4)

    def forward(self, x):
        a = self.conv3X3(x)
        b1 = self.conv5X5_1(x)
        b = self.conv5X5_2(b1)
        c = self.conv7x7_3(self.conv7X7_2(b1))
        return F.relu(torch.cat([a, b, c], 1))


class FPN(nn.Module):
    def __init__(self, in_list, cout):
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.output1 = conv_bn1x1(in_list[0], cout, leaky=leaky)
        self.output2 = conv_bn1x1(in_list[1], cout, leaky=leaky)
        self.output3 = conv_bn1x1(in_list[2], cout, leaky=leaky)
        self.merge1 = conv_bn(cout, cout, leaky=leaky)
        self.merge2 = conv_bn(cout, cout, leaky=leaky)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 8, 2, leaky=0.1), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
                                    conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x):
        a = self.stage1(x)
        b = self.stage2(a)
        return [a, b, self.stage3(b)]


class _Head(nn.Module):
    def __init__(self, cin, k):
        super().__init__()
        self.k = k
        self.conv1x1 = nn.Conv2d(cin, 2 * k, 1)

    def forward(self, x):
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.k)


class RetinaFaceMnet(nn.Module):
    """``forward(x) -> (loc [B,A,4], logits [B,A,2], landmarks [B,A,10])`` (logits: softmax not applied)."""

    def __init__(self):
        super().__init__()
        self.body = Body()
        self.fpn = FPN([64, 128, 256], 64)
        self.ssh1, self.ssh2, self.ssh3 = SSH(64, 64), SSH(64, 64), SSH(64, 64)
        self.ClassHead = nn.ModuleList(_Head(64, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(64, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(64, 10) for _ in range(3))

    def forward(self, x):
        f = self.fpn(self.body(x))
        f = [self.ssh1(f[0]), self.ssh2(f[1]), self.ssh3(f[2])]
        loc = torch.cat([h(v) for h, v in zip(self.BboxHead, f)], 1)
        conf = torch.cat([h(v) for h, v in zip(self.ClassHead, f)], 1)
        lms = torch.cat([h(v) for h, v in zip(self.LandmarkHead, f)], 1)
        return loc, conf, lms


def load_retinaface(path: Path = WEIGHTS) -> RetinaFaceMnet:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    m = RetinaFaceMnet()
    m.load_state_dict(sd, strict=True)
    return m.eval()


class RetinaFacePeer:
    """RetinaFace-mnet0.25 at the image's own size; ``runtime`` 'torch' or 'onnxruntime fp32'."""

    protocol = "BGR - (104,117,123), image at its own size, FeatherFace decoding, NMS 0.4"

    def __init__(self, runtime: str = "torch") -> None:
        self.runtime = runtime
        self.name = "RetinaFace-mnet0.25"
        self._model = None
        self._onnx: Path | None = None
        self._sessions: dict[int, object] = {}
        self._tmp = tempfile.TemporaryDirectory()

    def available(self) -> bool:
        return WEIGHTS.is_file()

    @property
    def files(self) -> list[Path]:
        return [WEIGHTS] if self.runtime == "torch" else [self._export()]

    @property
    def model(self) -> RetinaFaceMnet:
        if self._model is None:
            self._model = load_retinaface()
        return self._model

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def macs(self, h: int, w: int) -> int:
        from featherface.models.stats import count_macs

        return count_macs(self.model, (h, w))["total"]

    def _export(self) -> Path:
        if self._onnx is None:
            p = Path(self._tmp.name) / "retinaface_mnet025.onnx"
            torch.onnx.export(self.model, (torch.zeros(1, 3, 64, 96),), str(p), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["boxes", "logits", "landmarks"],
                              dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "boxes": {0: "b", 1: "a"},
                                            "logits": {0: "b", 1: "a"}, "landmarks": {0: "b", 1: "a"}})
            self._onnx = p
        return self._onnx

    def _forward(self, x: np.ndarray, threads: int):
        if self.runtime == "torch":
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return [t[0] for t in self.model(torch.from_numpy(x))]
        if threads not in self._sessions:
            from featherface.export.ort_backend import make_session

            self._sessions[threads] = make_session(self._export(), num_threads=threads)
        return [torch.from_numpy(t[0]) for t in self._sessions[threads].run(None, {"input": x})]

    def detect(self, img: np.ndarray, threads: int, score_threshold: float = 0.5):
        from featherface.geometry import DEFAULT_ANCHORS, postprocess
        from featherface.preprocessing import preprocess

        x = preprocess(img)[None]
        loc, logits, lms = self._forward(x, threads)
        h, w = x.shape[-2:]
        d = postprocess(loc, logits, lms, DEFAULT_ANCHORS.anchors((h, w)), (h, w),
                        variances=DEFAULT_ANCHORS.variances, score_threshold=score_threshold, nms_threshold=0.4)
        return d.boxes, d.scores, d.landmarks
