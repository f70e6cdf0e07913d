"""YuNet (OpenCV zoo 2023mar) through ONNX Runtime.

The file is fixed at 640×640: the image is pasted top-left on a zero canvas of 640×640 (no resize when it fits, as
FaceDetectorYN pads), fed as raw BGR 0–255; decoding per the peer README; NMS IoU 0.3 (zoo demo), score 0.5.
"""

from __future__ import annotations

import numpy as np

from common import PEERS_ROOT, OrtPeer, nms


class YuNet(OrtPeer):
    name = "YuNet (2023mar)"
    model_path = PEERS_ROOT / "yunet" / "face_detection_yunet_2023mar.onnx"
    input_hw = (640, 640)
    protocol = "BGR 0-255, letterbox to 640x640 (scale down if larger), NMS 0.3"
    nms_iou = 0.3

    def detect(self, img: np.ndarray, threads: int, score_threshold: float = 0.5):
        import cv2

        H, W = self.input_hw
        h, w = img.shape[:2]
        s = min(1.0, H / h, W / w)
        if s != 1.0:
            img = cv2.resize(img, (int(round(w * s)), int(round(h * s))))
        canvas = np.zeros((H, W, 3), np.float32)
        canvas[: img.shape[0], : img.shape[1]] = img
        x = canvas.transpose(2, 0, 1)[None]
        sess = self.session(threads)
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
        boxes, scores, lms = [], [], []
        for st in (8, 16, 32):
            cls, obj = outs[f"cls_{st}"][0, :, 0], outs[f"obj_{st}"][0, :, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.where(score > score_threshold)[0]
            if not len(keep):
                continue
            cols = W // st
            r, c = (keep // cols).astype(np.float32), (keep % cols).astype(np.float32)
            bb = outs[f"bbox_{st}"][0, keep]
            cx, cy = (c + bb[:, 0]) * st, (r + bb[:, 1]) * st
            bw, bh = np.exp(bb[:, 2]) * st, np.exp(bb[:, 3]) * st
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
            kp = outs[f"kps_{st}"][0, keep].reshape(-1, 5, 2)
            kp = np.stack([(kp[..., 0] + c[:, None]) * st, (kp[..., 1] + r[:, None]) * st], -1).reshape(-1, 10)
            lms.append(kp)
            scores.append(score[keep])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32)
        boxes, scores, lms = np.concatenate(boxes), np.concatenate(scores), np.concatenate(lms)
        keep = nms(boxes, scores, self.nms_iou)
        return boxes[keep] / s, scores[keep], lms[keep] / s
