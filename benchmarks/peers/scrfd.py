"""SCRFD-500M-KPS (insightface) through ONNX Runtime.

insightface's reference pre-processing: keep the aspect ratio, fit into 640×640, paste top-left on zeros, RGB,
(x − 127.5) / 128; distance decoding per the peer README; NMS IoU 0.4, score 0.5.
"""

from __future__ import annotations

import numpy as np

from common import PEERS_ROOT, OrtPeer, nms


class SCRFD(OrtPeer):
    name = "SCRFD-500M-KPS"
    model_path = PEERS_ROOT / "scrfd_500m" / "scrfd_500m_bnkps.onnx"
    input_hw = (640, 640)
    protocol = "RGB (x-127.5)/128, aspect-kept fit into 640x640, NMS 0.4"
    _centres: dict = {}

    def _centre(self, st: int) -> np.ndarray:
        if st not in self._centres:
            n = self.input_hw[0] // st
            yy, xx = np.mgrid[:n, :n]
            c = np.stack([xx, yy], -1).reshape(-1, 2).astype(np.float32) * st
            self._centres[st] = np.repeat(c, 2, axis=0)
        return self._centres[st]

    def detect(self, img: np.ndarray, threads: int, score_threshold: float = 0.5):
        import cv2

        H, W = self.input_hw
        h, w = img.shape[:2]
        s = min(H / h, W / w)
        resized = cv2.resize(img, (int(round(w * s)), int(round(h * s)))) if s != 1.0 else img
        canvas = np.zeros((H, W, 3), np.float32)
        canvas[: resized.shape[0], : resized.shape[1]] = resized[..., ::-1]
        x = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        sess = self.session(threads)
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
        boxes, scores, lms = [], [], []
        for st in (8, 16, 32):
            sc = outs[f"score_{st}"][0, :, 0] if outs[f"score_{st}"].ndim == 3 else outs[f"score_{st}"][:, 0]
            bb = outs[f"bbox_{st}"].reshape(-1, 4)
            kp = outs[f"kps_{st}"].reshape(-1, 10)
            keep = np.where(sc > score_threshold)[0]
            if not len(keep):
                continue
            c = self._centre(st)[keep]
            d = bb[keep] * st
            boxes.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], 1))
            k = kp[keep].reshape(-1, 5, 2) * st + c[:, None, :]
            lms.append(k.reshape(-1, 10))
            scores.append(sc[keep])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32)
        boxes, scores, lms = np.concatenate(boxes), np.concatenate(scores), np.concatenate(lms)
        order = np.argsort(-scores, kind="stable")
        boxes, scores, lms = boxes[order], scores[order], lms[order]
        keep = nms(boxes, scores, 0.4)
        return boxes[keep] / s, scores[keep], lms[keep] / s
