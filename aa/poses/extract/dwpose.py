"""DWPose (Yang et al. 2023, arXiv 2307.15880) through onnxruntime: the keypoints the released weights were
trained on.

Two public ONNX files, placed by the user under `weights/` (or `weights/dwpose/`):
- `yolox_l.onnx`: YOLOX-L person detector, input (1, 3, 640, 640), output (1, 8400, 85) = per anchor of the
  80x80, 40x40 and 20x20 grids (strides 8, 16, 32): box offsets (4), objectness, 80 COCO class scores.
- `dw-ll_ucoco_384.onnx`: whole-body pose model, input (1, 3, 384, 288), outputs `simcc_x` (1, 133, 576) and
  `simcc_y` (1, 133, 768): SimCC classification along each axis at 2 bins per pixel, 133 COCO-WholeBody keypoints.
Pre- and post-processing follow DWPose's `onnxdet.py` and `onnxpose.py` (with numpy in place of OpenCV's resize and
warpAffine, so values can differ by a grey level): BGR input like DWPose's, letterbox to 640 padded with grey 114,
boxes decoded per grid cell, NMS at IoU 0.45, persons kept above score 0.3; each person crop is the box grown by
1.25, widened to 3:4 and warped to 288x384, normalised with ImageNet mean and std; keypoints are the SimCC argmax
bins / 2 mapped back through the crop, scored by the smaller of the two axis maxima.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aa.poses.keypoints import Pose

DETECTOR_FILE, POSE_FILE = "yolox_l.onnx", "dw-ll_ucoco_384.onnx"
DETECTOR_SIZE = 640
STRIDES = (8, 16, 32)
POSE_WIDTH, POSE_HEIGHT = 288, 384
SIMCC_SPLIT = 2.0  # SimCC bins per input pixel
BOX_PADDING = 1.25
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])  # applied to BGR, as DWPose does
NMS_IOU, PERSON_SCORE = 0.45, 0.3
# COCO-WholeBody index of each OpenPose-18 body point; the neck (None) is the shoulders' midpoint.
BODY_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
FACE, LEFT_HAND, RIGHT_HAND = slice(23, 91), slice(91, 112), slice(112, 133)  # 17-22 are the feet, unused here


def find_weights(weights_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Paths of the two DWPose ONNX files in `weights_dir` or `weights_dir/dwpose`; a clear error when absent."""
    weights_dir = Path(weights_dir)
    for folder in (weights_dir, weights_dir / "dwpose"):
        detector, pose = folder / DETECTOR_FILE, folder / POSE_FILE
        if detector.is_file() and pose.is_file():
            return detector, pose
    raise FileNotFoundError(
        f"DWPose backend: put {DETECTOR_FILE} and {POSE_FILE} (the public DWPose ONNX release, e.g. the "
        f"yzd-v/DWPose files on Hugging Face) in {weights_dir}/ or {weights_dir / 'dwpose'}/")


def _bilinear(image: np.ndarray, src_x: np.ndarray, src_y: np.ndarray, border: float | None) -> np.ndarray:
    """Sample an (h, w, c) image at float source coordinates (out_h, out_w); outside pixels are `border`, or the
    nearest edge pixel when border is None."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(src_x).astype(np.int64), np.floor(src_y).astype(np.int64)
    fx, fy = (src_x - x0)[..., None], (src_y - y0)[..., None]
    out = np.zeros(src_x.shape + image.shape[2:], np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xs, ys = x0 + dx, y0 + dy
            inside = ((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h))[..., None]
            values = image[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)].astype(np.float64)
            if border is not None:
                values = np.where(inside, values, border)
            out += wy * wx * values
    return out


def letterbox(bgr: np.ndarray) -> tuple[np.ndarray, float]:
    """Detector input (1, 3, 640, 640) float32 and the resize ratio: the image scaled to fit (bilinear, half-pixel
    centres like cv2.resize), top-left aligned on a grey-114 square."""
    h, w = bgr.shape[:2]
    ratio = min(DETECTOR_SIZE / h, DETECTOR_SIZE / w)
    new_w, new_h = int(w * ratio), int(h * ratio)
    xs = (np.arange(new_w) + 0.5) * (w / new_w) - 0.5
    ys = (np.arange(new_h) + 0.5) * (h / new_h) - 0.5
    resized = _bilinear(bgr, *np.meshgrid(np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)), border=None)
    padded = np.full((DETECTOR_SIZE, DETECTOR_SIZE, 3), 114.0, np.float32)
    padded[:new_h, :new_w] = np.clip(np.rint(resized), 0, 255)
    return padded.transpose(2, 0, 1)[None], ratio  # (1, 3, 640, 640)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best first (areas with DWPose's +1 pixel convention)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = list(np.argsort(scores)[::-1]), []
    while order:
        i, rest = order[0], np.array(order[1:], np.int64)
        keep.append(int(i))
        if not len(rest):
            break
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = iw * ih / (areas[i] + areas[rest] - iw * ih)
        order = list(rest[overlap <= iou])
    return keep


def decode_detections(output: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (n, 4) as x1, y1, x2, y2 in image pixels and their scores (n,), best first, from the raw
    YOLOX output (1, 8400, 85): centre = (offset + cell) * stride, size = exp(log-size) * stride."""
    assert output.ndim == 3 and output.shape[2] == 85, f"expected (1, anchors, 85) YOLOX output, got {output.shape}"
    cells, strides = [], []
    for s in STRIDES:
        n = DETECTOR_SIZE // s
        gx, gy = np.meshgrid(np.arange(n), np.arange(n))
        cells.append(np.stack([gx, gy], -1).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    cells, strides = np.concatenate(cells), np.concatenate(strides)
    assert len(cells) == output.shape[1], f"expected {len(cells)} anchors for 640x640, got {output.shape[1]}"
    pred = output[0].astype(np.float64)
    centre, size = (pred[:, :2] + cells) * strides, np.exp(pred[:, 2:4]) * strides
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1) / ratio
    scores = pred[:, 4] * pred[:, 5]  # objectness x person-class score (COCO class 0)
    # DWPose runs class-aware NMS on candidates above 0.1 and then keeps persons above 0.3: same boxes.
    candidates = np.flatnonzero(scores > 0.1)
    keep = candidates[nms(boxes[candidates], scores[candidates], NMS_IOU)] if len(candidates) else candidates
    keep = keep[scores[keep] > PERSON_SCORE]
    return boxes[keep], scores[keep]


def crop_person(bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose-model input (1, 3, 384, 288) float32 for one box, with the crop's centre and size (w, h) in pixels."""
    x1, y1, x2, y2 = box
    centre = np.array([x1 + x2, y1 + y2]) / 2
    w, h = (x2 - x1) * BOX_PADDING, (y2 - y1) * BOX_PADDING
    aspect = POSE_WIDTH / POSE_HEIGHT
    size = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])  # widen to 3:4
    # Output pixel (u, v) samples the image at centre + ((u, v) - output centre) * (crop size / output size).
    step = size[0] / POSE_WIDTH
    src_x = centre[0] + (np.arange(POSE_WIDTH) - POSE_WIDTH / 2) * step
    src_y = centre[1] + (np.arange(POSE_HEIGHT) - POSE_HEIGHT / 2) * step
    crop = np.clip(np.rint(_bilinear(bgr, *np.meshgrid(src_x, src_y), border=0.0)), 0, 255)
    normalised = (crop - MEAN) / STD
    return normalised.transpose(2, 0, 1)[None].astype(np.float32), centre, size  # (1, 3, 384, 288)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, centre: np.ndarray, size: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (k, 2) in image pixels and scores (k,) from SimCC outputs (1, k, 576) and (1, k, 768)."""
    assert simcc_x.shape[-1] == POSE_WIDTH * SIMCC_SPLIT and simcc_y.shape[-1] == POSE_HEIGHT * SIMCC_SPLIT, (
        f"expected SimCC widths {POSE_WIDTH * SIMCC_SPLIT:.0f} and {POSE_HEIGHT * SIMCC_SPLIT:.0f}, "
        f"got {simcc_x.shape} and {simcc_y.shape}")
    sx, sy = simcc_x[0], simcc_y[0]
    locs = np.stack([sx.argmax(-1), sy.argmax(-1)], -1) / SIMCC_SPLIT  # (k, 2) in crop pixels
    scores = np.minimum(sx.max(-1), sy.max(-1)).astype(np.float64)
    keypoints = locs / np.array([POSE_WIDTH, POSE_HEIGHT]) * size + centre - size / 2
    return keypoints, scores


def wholebody_to_pose(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int) -> Pose:
    """COCO-WholeBody 133 keypoints -> OpenPose layout. Confidence = score clipped to [0, 1]; the neck is the
    shoulders' midpoint with confidence 1 when both shoulders score above 0.3, else missing (as DWPose)."""
    conf = np.clip(scores, 0.0, 1.0)
    points = np.concatenate([keypoints, conf[:, None]], 1).astype(np.float32)
    points[conf <= 0] = 0.0  # SimCC maxima <= 0 mean "not found"
    body = np.zeros((18, 3), np.float32)
    for i, j in enumerate(BODY_FROM_COCO):
        if j is not None:
            body[i] = points[j]
    if scores[5] > 0.3 and scores[6] > 0.3:
        body[1] = [*(keypoints[5] + keypoints[6]) / 2, 1.0]
    return Pose(width, height, body=body, left_hand=points[LEFT_HAND], right_hand=points[RIGHT_HAND],
                face=points[FACE])


class DWPoseBackend:
    """Callable RGB frame -> Pose of the largest detected person (the whole frame when none is detected)."""

    def __init__(self, weights_dir: str | os.PathLike = "weights", providers: list[str] | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError("DWPose backend needs onnxruntime, an optional extra: "
                              "pip install -r requirements-pose.txt") from e
        detector, pose = find_weights(weights_dir)
        providers = providers or ["CPUExecutionProvider"]
        self.detector = onnxruntime.InferenceSession(str(detector), providers=providers)
        self.pose = onnxruntime.InferenceSession(str(pose), providers=providers)
        in_shape = self.pose.get_inputs()[0].shape
        if list(in_shape[2:]) != [POSE_HEIGHT, POSE_WIDTH]:
            raise ValueError(f"{pose}: expected input (1, 3, {POSE_HEIGHT}, {POSE_WIDTH}), got {in_shape}")

    def person_box(self, bgr: np.ndarray) -> np.ndarray:
        """The largest person box (x1, y1, x2, y2), or the whole frame when no person is detected."""
        image, ratio = letterbox(bgr)
        output = self.detector.run(None, {self.detector.get_inputs()[0].name: image})[0]
        boxes, _ = decode_detections(output, ratio)
        if not len(boxes):
            return np.array([0.0, 0.0, bgr.shape[1], bgr.shape[0]])
        return boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]

    def __call__(self, frame: np.ndarray) -> Pose:
        bgr = frame[..., ::-1]  # DWPose reads frames with OpenCV, in BGR order
        crop, centre, size = crop_person(bgr, self.person_box(bgr))
        outputs = {o.name: v for o, v in zip(self.pose.get_outputs(),
                                             self.pose.run(None, {self.pose.get_inputs()[0].name: crop}))}
        simcc_x, simcc_y = (outputs["simcc_x"], outputs["simcc_y"]) if "simcc_x" in outputs else outputs.values()
        keypoints, scores = decode_simcc(simcc_x, simcc_y, centre, size)
        return wholebody_to_pose(keypoints, scores, frame.shape[1], frame.shape[0])

    def close(self) -> None:
        """Nothing to release (sessions are freed with the object); here for a uniform backend interface."""
