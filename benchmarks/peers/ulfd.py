"""Ultra-Light-Fast-Generic-Face-Detector-1MB, version-RFB-640 (post-processing inside the graph) via ONNX Runtime.

Reference pre-processing: resize to exactly 640×480 (aspect not kept), RGB, (x − 127) / 128; outputs are decoded
normalised boxes and softmax scores; hard NMS IoU 0.3, score 0.5 (reference demo: 0.7). No landmarks.
"""

from __future__ import annotations

import numpy as np

from common import PEERS_ROOT, OrtPeer, nms


class ULFD(OrtPeer):
    name = "ULFD version-RFB-640"
    model_path = PEERS_ROOT / "ulfd" / "version-RFB-640.onnx"
    input_hw = (480, 640)
    protocol = "RGB (x-127)/128, resized to exactly 640x480, NMS 0.3"

    def detect(self, img: np.ndarray, threads: int, score_threshold: float = 0.5):
        import cv2

        H, W = self.input_hw
        h, w = img.shape[:2]
        x = cv2.resize(img, (W, H)) if (h, w) != (H, W) else img
        x = ((x[..., ::-1].astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None]
        sess = self.session(threads)
        scores, boxes = sess.run(["scores", "boxes"], {"input": np.ascontiguousarray(x)})
        sc = scores[0, :, 1]
        keep = np.where(sc > score_threshold)[0]
        b = boxes[0, keep] * np.array([w, h, w, h], np.float32)
        sc = sc[keep]
        order = np.argsort(-sc, kind="stable")
        b, sc = b[order], sc[order]
        k = nms(b, sc, 0.3)
        return b[k], sc[k], None
