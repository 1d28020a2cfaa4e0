"""DWPose backend (aa/poses/extract/dwpose.py) end to end on tiny ONNX stand-ins built here.

The stand-ins have the real files' signature: `yolox_l.onnx` maps input (1, 3, 640, 640) to output (1, 8400, 85);
`dw-ll_ucoco_384.onnx` maps input (1, 3, 384, 288) to simcc_x (1, 133, 576) and simcc_y (1, 133, 768). The
detector returns fixed raw predictions encoding known boxes; the pose model's SimCC vectors are the crop's column
and row mean intensities, so every keypoint lands on the brightest column and row of the crop: a white cross drawn
in the frame must come back at the cross's centre, through letterbox, detection decoding, crop warp,
normalisation, SimCC decoding and the map back to the frame. A second pose stand-in ignores the image and gives
each of the 133 keypoints its own SimCC peak and peak height, so the score of every output point names the
COCO-WholeBody keypoint it came from: the layout mapping is checked against the documented orders below.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs the optional extra: pip install -r requirements-pose.txt")
pytest.importorskip("onnxruntime", reason="needs the optional extra: pip install -r requirements-pose.txt")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from aa.poses.extract import extract_poses  # noqa: E402
from aa.poses.extract.dwpose import DETECTOR_FILE, POSE_FILE, STRIDES, decode_detections, letterbox, nms  # noqa: E402
from aa.poses.keypoints import load_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAME_W, FRAME_H = 480, 360
CROSS = (200, 150)  # centre of the white cross in the test frame
PERSON = (120.0, 40.0, 300.0, 330.0)  # the box the stand-in detector reports, x1 y1 x2 y2 in frame pixels
RATIO = min(640 / FRAME_H, 640 / FRAME_W)  # letterbox scale of a 480x360 frame

# The 133 COCO-WholeBody keypoints: 17 body points in COCO order, 6 foot, 68 face, 21 left hand, 21 right hand
# (jin-s13/COCO-WholeBody data_format.md; ids in mmpose configs/_base_/datasets/coco_wholebody.py: face-0..67 are
# 23..90, left_hand_root is 91, right_hand_root 112).
COCO_BODY = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle")
FEET, FACE_POINTS, HAND_POINTS = 6, 68, 21
FACE_START = len(COCO_BODY) + FEET
LEFT_HAND_START = FACE_START + FACE_POINTS
RIGHT_HAND_START = LEFT_HAND_START + HAND_POINTS
# OpenPose's 18 body points. DWPose (IDEA-Research/DWPose ControlNet-v1-1-nightly/annotator/dwpose/wholebody.py)
# inserts the neck as the mean of COCO 5 and 6 (the shoulders), present when both score above 0.3, and reorders
# to this layout (also mmpose configs/_base_/datasets/coco_wholebody_openpose.py); its annotator/dwpose/__init__.py
# then reads the face and the hands, left first, from the 68 + 21 + 21 points after the feet.
OPENPOSE_BODY = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
                 "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
                 "right_eye", "left_eye", "right_ear", "left_ear")


def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _const(name: str, array: np.ndarray):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def raw_detection(box: tuple[float, float, float, float], objectness: float, cls: int = 0, score: float = 0.9,
                  level: int = 2) -> tuple[int, np.ndarray]:
    """(anchor index, 85 raw values) that YOLOX decoding turns into `box` (frame pixels) with the given scores,
    predicted by the grid cell under the box centre at grid `level` (strides 8, 16, 32)."""
    x1, y1, x2, y2 = (v * RATIO for v in box)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    stride, offset = STRIDES[level], sum((640 // s) ** 2 for s in STRIDES[:level])
    gx, gy = int(cx // stride), int(cy // stride)
    values = np.zeros(85, np.float32)
    values[:4] = [cx / stride - gx, cy / stride - gy, np.log(w / stride), np.log(h / stride)]
    values[4], values[5 + cls] = objectness, score
    return offset + gy * (640 // stride) + gx, values


def build_detector(path: Path, detections: list[tuple[int, np.ndarray]]) -> None:
    """Stand-in yolox_l.onnx: fixed raw predictions (plus 0 x the input's mean, so the output depends on it)."""
    raw = np.zeros((1, 8400, 85), np.float32)
    raw[..., 4] = -1.0  # negative objectness everywhere else: scores below every threshold
    for index, values in detections:
        raw[0, index] = values
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0), _const("zero", np.float32(0)),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]), _const("raw", raw),
             helper.make_node("Add", ["raw", "nothing"], ["output"])]
    _save(helper.make_graph(nodes, "tiny_yolox",
                            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 640, 640])],
                            [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])]), path)


def build_pose_model(path: Path) -> None:
    """Stand-in dw-ll_ucoco_384.onnx: simcc_x = column means of the crop, each repeated over 2 bins and copied
    to all 133 keypoints; simcc_y likewise from row means."""
    def repeat2(n: int) -> np.ndarray:
        m = np.zeros((n, 2 * n), np.float32)
        m[np.arange(n), 2 * np.arange(n)] = m[np.arange(n), 2 * np.arange(n) + 1] = 1
        return m

    nodes = [helper.make_node("ReduceMean", ["input"], ["cols"], axes=[1, 2], keepdims=0),  # (1, 288)
             helper.make_node("ReduceMean", ["input"], ["rows"], axes=[1, 3], keepdims=0),  # (1, 384)
             _const("rx", repeat2(288)), _const("ry", repeat2(384)), _const("axis", np.array([1], np.int64)),
             _const("shape_x", np.array([1, 133, 576], np.int64)), _const("shape_y", np.array([1, 133, 768], np.int64)),
             helper.make_node("MatMul", ["cols", "rx"], ["sx"]), helper.make_node("MatMul", ["rows", "ry"], ["sy"]),
             helper.make_node("Unsqueeze", ["sx", "axis"], ["sx1"]),
             helper.make_node("Unsqueeze", ["sy", "axis"], ["sy1"]),
             helper.make_node("Expand", ["sx1", "shape_x"], ["simcc_x"]),
             helper.make_node("Expand", ["sy1", "shape_y"], ["simcc_y"])]
    _save(helper.make_graph(nodes, "tiny_dwpose",
                            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
                            [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 576]),
                             helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 768])]), path)


def labelled_score(k: np.ndarray | int) -> np.ndarray | float:
    """The SimCC peak height, hence the score, that the labelled stand-in gives COCO-WholeBody keypoint k."""
    return 0.35 + 0.004 * np.asarray(k)


def keypoint_of(score: np.ndarray) -> np.ndarray:
    """Which COCO-WholeBody keypoint an output point came from, read back from its score."""
    return np.rint((np.asarray(score, np.float64) - 0.35) / 0.004).astype(int)


def labelled_peaks() -> tuple[np.ndarray, np.ndarray]:
    """SimCC bins of keypoint k's peak along x and y: distinct for every keypoint, inside the 576 and 768 bins."""
    k = np.arange(133)
    return 10 + 4 * k, 700 - 5 * k


def build_labelled_pose_model(path: Path) -> None:
    """Stand-in dw-ll_ucoco_384.onnx that ignores the crop: keypoint k's simcc_x and simcc_y are 0 except a peak
    of height labelled_score(k) at bins labelled_peaks()[k] (plus 0 x the input's mean)."""
    bx, by = labelled_peaks()
    sx, sy = np.zeros((1, 133, 576), np.float32), np.zeros((1, 133, 768), np.float32)
    sx[0, np.arange(133), bx] = sy[0, np.arange(133), by] = labelled_score(np.arange(133))
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0), _const("zero", np.float32(0)),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]), _const("sx", sx), _const("sy", sy),
             helper.make_node("Add", ["sx", "nothing"], ["simcc_x"]),
             helper.make_node("Add", ["sy", "nothing"], ["simcc_y"])]
    _save(helper.make_graph(nodes, "labelled_dwpose",
                            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
                            [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 576]),
                             helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 768])]), path)


def cross_frame() -> np.ndarray:
    """Black 480x360 frame with a 3 px white cross centred at CROSS."""
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    x, y = CROSS
    frame[:, x - 1:x + 2] = 255
    frame[y - 1:y + 2, :] = 255
    return frame


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    """A weights folder with both stand-ins: one person box, a weaker overlapping duplicate (removed by NMS) and
    a confident box of another class (a car: ignored)."""
    build_detector(tmp_path / DETECTOR_FILE, [raw_detection(PERSON, 0.95),
                                              raw_detection((125.0, 45.0, 305.0, 330.0), 0.6, level=1),
                                              raw_detection((10.0, 10.0, 60.0, 50.0), 0.99, cls=2)])
    build_pose_model(tmp_path / POSE_FILE)
    return tmp_path


def test_decoding_recovers_boxes() -> None:
    """Raw YOLOX predictions decode to the boxes they encode (centre = (offset + cell) * stride, size =
    exp(log-size) * stride, back through the letterbox ratio); NMS drops the weaker duplicate; other classes and
    low scores are ignored."""
    raw = np.zeros((1, 8400, 85), np.float32)
    raw[..., 4] = -1
    for index, values in (raw_detection(PERSON, 0.95), raw_detection((125.0, 45.0, 305.0, 330.0), 0.6, level=1),
                          raw_detection((10.0, 10.0, 60.0, 50.0), 0.99, cls=2)):
        raw[0, index] = values
    boxes, scores = decode_detections(raw, RATIO)
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0], PERSON, atol=1e-3)
    assert scores[0] == pytest.approx(0.95 * 0.9)
    assert nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float), np.array([0.9, 0.8, 0.7]),
               0.45) == [0, 2]


def test_letterbox_geometry() -> None:
    """The detector input is the frame scaled by min(640/h, 640/w), top-left aligned, padded with grey 114."""
    image, ratio = letterbox(cross_frame()[..., ::-1])
    assert image.shape == (1, 3, 640, 640) and image.dtype == np.float32 and ratio == pytest.approx(RATIO)
    assert (image[0, :, 480:, :] == 114).all() and (image[0, :, :, :] <= 255).all()
    column = image[0, 0, 100]  # a row above the cross's horizontal bar: bright only at the vertical bar
    assert abs(int(np.argmax(column)) - CROSS[0] * RATIO) <= 2


def test_dwpose_end_to_end(weights: Path) -> None:
    """extract_poses with the DWPose backend finds the cross: every body, hand and face keypoint comes back at the
    cross's centre within 2 pixels, with confidence 1 (scores clipped), the neck included."""
    poses = extract_poses([cross_frame(), cross_frame()], backend="dwpose", weights_dir=weights)
    assert len(poses) == 2
    pose = poses[0]
    assert (pose.width, pose.height) == (FRAME_W, FRAME_H)
    for part in (pose.body, pose.left_hand, pose.right_hand, pose.face):
        assert (part[:, 2] == 1).all()
        assert np.abs(part[:, :2] - CROSS).max() <= 2.0, part[:, :2]


def test_wholebody_keypoints_land_in_the_documented_openpose_slots(tmp_path: Path) -> None:
    """With a pose model whose every keypoint has its own peak and score, each output point comes from the
    COCO-WholeBody keypoint the documented layouts name: body by name (OpenPose right shoulder <- COCO
    right_shoulder, ...), face <- the 68 points after the feet, left hand <- the next 21, right hand <- the last
    21; the neck is the midpoint of the two shoulders with confidence 1; the feet are not used. Every point's
    position is its own keypoint's peak mapped through one and the same crop-to-frame map."""
    build_detector(tmp_path / DETECTOR_FILE, [raw_detection(PERSON, 0.95)])
    build_labelled_pose_model(tmp_path / POSE_FILE)
    pose = extract_poses([cross_frame()], backend="dwpose", weights_dir=tmp_path)[0]

    neck = OPENPOSE_BODY.index("neck")
    expected_body = [COCO_BODY.index(name) for name in OPENPOSE_BODY if name != "neck"]
    assert keypoint_of(np.delete(pose.body[:, 2], neck)).tolist() == expected_body
    assert keypoint_of(pose.face[:, 2]).tolist() == list(range(FACE_START, FACE_START + FACE_POINTS))
    assert keypoint_of(pose.left_hand[:, 2]).tolist() == list(range(LEFT_HAND_START, LEFT_HAND_START + HAND_POINTS))
    assert keypoint_of(pose.right_hand[:, 2]).tolist() == list(range(RIGHT_HAND_START, 133))

    shoulders = pose.body[[OPENPOSE_BODY.index("right_shoulder"), OPENPOSE_BODY.index("left_shoulder")]]
    np.testing.assert_allclose(pose.body[neck], [*shoulders[:, :2].mean(0), 1.0], atol=1e-4)

    points = np.concatenate([np.delete(pose.body, neck, 0), pose.face, pose.left_hand, pose.right_hand])
    bins = np.stack(labelled_peaks(), 1)[keypoint_of(points[:, 2])]  # (n, 2) peak bins of each point's source
    for axis in (0, 1):
        slope, offset = np.polyfit(bins[:, axis], points[:, axis], 1)
        assert slope > 0 and np.abs(slope * bins[:, axis] + offset - points[:, axis]).max() < 1e-3


def test_dwpose_without_detection_reads_whole_frame(tmp_path: Path) -> None:
    """When the detector finds nobody, the whole frame is the person box (as DWPose does) and keypoints are
    still found (with low scores here: the padded crop dims the cross, so the shoulders, and with them the neck,
    fall under 0.3)."""
    build_detector(tmp_path / DETECTOR_FILE, [])
    build_pose_model(tmp_path / POSE_FILE)
    pose = extract_poses([cross_frame()], backend="dwpose", weights_dir=tmp_path)[0]
    found = pose.body[:, 2] > 0
    assert found.sum() == 17 and not found[1]
    assert np.abs(pose.body[found, :2] - CROSS).max() <= 2.0


def test_missing_weights_and_bad_frames(tmp_path: Path, weights: Path) -> None:
    """A missing ONNX file names both files and where to put them; a frame that is not (h, w, 3) uint8 RGB is
    refused with what was expected; an unknown backend lists the known ones."""
    with pytest.raises(FileNotFoundError, match="yolox_l.onnx and dw-ll_ucoco_384.onnx"):
        extract_poses([cross_frame()], backend="dwpose", weights_dir=tmp_path / "nothing_here")
    with pytest.raises(ValueError, match=r"\(h, w, 3\) uint8 RGB"):
        extract_poses([cross_frame()[..., 0]], backend="dwpose", weights_dir=weights)
    with pytest.raises(ValueError, match="mediapipe"):
        extract_poses([cross_frame()], backend="openpose")


def test_extract_tool_end_to_end(weights: Path, tmp_path: Path) -> None:
    """tools/extract_pose.py turns a video into keypoints JSON and a rendered pose video of the same length."""
    from aa.io.video import read_video, write_video

    video = tmp_path / "cross.mp4"
    write_video(video, [cross_frame()] * 3, fps=10, lossless=True)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "extract_pose.py"), str(video), "--backend",
                             "dwpose", "--weights-dir", str(weights), "--out", str(out), "--no-face"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    poses = load_json(out / "cross_pose.json")
    assert len(poses) == 3 and np.abs(poses[2].body[:, :2] - CROSS).max() <= 2.0
    rendered = read_video(out / "cross_pose.mp4")
    assert rendered.shape == (3, FRAME_H, FRAME_W, 3) and rendered.max() > 200
