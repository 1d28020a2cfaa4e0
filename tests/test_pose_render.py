"""DWPose-style rendering (aa/poses/render.py, aa/poses/raster.py) against images drawn by the original renderer.

The golden PNGs come from tools/golden_pose.py, which runs DWPose's own `util.py` drawing code (as shipped in
controlnet_aux) with OpenCV; this test only reads them. Tolerance: none. OpenCV and PIL rasterise shapes
differently (a PIL polygon fill of the same ellipse vertices differs in a few boundary pixels; a 2 px PIL line covers
about a third fewer pixels than OpenCV's thickness-2 line), so aa/poses/raster.py follows OpenCV's own integer rules
instead, and the renders match pixel for pixel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aa.poses.keypoints import Pose, load_json
from aa.poses.raster import fill_circle, thick_line
from aa.poses.render import BODY_COLORS, FACE_COLOR, HAND_COLORS, HAND_JOINT_COLOR, LIMB_DIM, render_pose, render_poses

DATA = Path(__file__).parent / "data"
GOLDENS = {  # file: (width, height, hands, face), as drawn by tools/golden_pose.py
    "pose_golden_full.png": (320, 448, True, True),
    "pose_golden_body_256x384.png": (256, 384, False, False),
    "pose_golden_hands_480x672.png": (480, 672, True, False),
}


@pytest.fixture(scope="module")
def skeleton() -> Pose:
    return load_json(DATA / "pose_golden.json")[0]


@pytest.mark.parametrize("name", list(GOLDENS))
def test_render_matches_dwpose_renderer(skeleton: Pose, name: str) -> None:
    """render_pose draws the known skeleton exactly as DWPose's draw_bodypose/handpose/facepose do, at the
    skeleton's own size and rescaled to other sizes, with hands and face on or off."""
    width, height, hands, face = GOLDENS[name]
    golden = np.asarray(Image.open(DATA / name).convert("RGB"))
    ours = render_pose(skeleton, width, height, hands=hands, face=face)
    assert ours.shape == golden.shape == (height, width, 3) and ours.dtype == np.uint8
    differ = (ours != golden).any(-1)
    assert not differ.any(), f"{differ.sum()} pixels differ, first at (y, x) {np.argwhere(differ)[:5].tolist()}"


def test_hidden_points_and_options(skeleton: Pose) -> None:
    """Hands and face are drawn over the body: leaving them out changes only pixels that show a hand colour, the
    blue hand joints or the white face dots. Points under confidence 0.3 are not drawn, nor their limbs."""
    full = render_pose(skeleton)
    body = render_pose(skeleton, hands=False, face=False)
    extra = {*HAND_COLORS, HAND_JOINT_COLOR, FACE_COLOR}
    changed = (full != body).any(-1)
    assert changed.sum() > 500
    assert {tuple(int(c) for c in p) for p in full[changed]} <= extra
    assert (full == 255).all(-1).any() and not (render_pose(skeleton, face=False) == 255).all(-1).any()
    ankle = skeleton.body[13]
    assert ankle[2] < 0.3
    x, y = int(ankle[0]), int(ankle[1])
    assert not full[y - 2:y + 3, x - 2:x + 3].any(), "the left ankle (confidence 0.25) and its limb are not drawn"


def test_limbs_are_dimmed_joints_are_not() -> None:
    """Limbs are drawn before the canvas is dimmed to 0.6, joints after: a two-point limb shows the dimmed colour
    along its middle and the full colour at its end joints."""
    body = np.zeros((18, 3), np.float32)
    body[1] = [50, 20, 1]  # neck
    body[2] = [20, 20, 1]  # right shoulder: limb 0 (neck -> right shoulder), colour 0
    image = render_pose(Pose(100, 40, body=body), hands=False, face=False)
    dimmed = tuple(int(c * LIMB_DIM) for c in BODY_COLORS[0])
    assert tuple(image[20, 35]) == dimmed
    assert tuple(image[20, 20]) == BODY_COLORS[2] and tuple(image[20, 50]) == BODY_COLORS[1]


def test_opencv_shapes() -> None:
    """OpenCV's thickness-2 line is 3 px wide along an axis (a rectangle of half-width 1 around the segment, its
    outline included) with radius-1 round caps; a radius-4 filled circle spans 9 px."""
    canvas = np.zeros((20, 30, 3), np.uint8)
    thick_line(canvas, (5, 10), (20, 10), (1, 2, 3), 2)
    lit = canvas.any(-1)
    assert lit[9:12, 5:21].all() and not lit[8].any() and not lit[12].any()
    assert lit[10, 4] and not lit[9, 4], "round cap of radius 1 at each end"
    canvas[:] = 0
    fill_circle(canvas, (15, 10), 4, (9, 9, 9))
    lit = canvas.any(-1)
    assert lit[10, 11:20].all() and lit[6:15, 15].all() and lit.sum() == 49


def test_rescaling_and_determinism(skeleton: Pose) -> None:
    """Rendering a pose at another size is rendering the same pose stretched to that canvas; renders are
    deterministic, and render_poses stacks frames."""
    scaled = Pose(640, 896, *(np.concatenate([a[:, :2] * 2, a[:, 2:]], 1)
                              for a in (skeleton.body, skeleton.left_hand, skeleton.right_hand, skeleton.face)))
    np.testing.assert_array_equal(render_pose(skeleton, 256, 384), render_pose(scaled, 256, 384))
    video = render_poses([skeleton, skeleton], 160, 224, face=False)
    assert video.shape == (2, 224, 160, 3)
    np.testing.assert_array_equal(video[0], video[1])
    np.testing.assert_array_equal(video[0], render_pose(skeleton, 160, 224, face=False))


def test_empty_and_off_canvas_poses() -> None:
    """A pose with no points is a black image; points far outside the canvas draw nothing and raise nothing."""
    assert not render_pose(Pose(64, 48)).any()
    body = np.zeros((18, 3), np.float32)
    body[1], body[2] = [-500, -500, 1], [-400, -520, 1]
    assert not render_pose(Pose(64, 48, body=body)).any()
    with pytest.raises(ValueError, match="positive"):
        render_pose(Pose(64, 48), 0, 10)
