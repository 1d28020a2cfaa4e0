"""Retargeting driving poses onto the reference character (aa/poses/retarget.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aa.poses.keypoints import Pose, load_json
from aa.poses.retarget import BONES, fit_global, retarget

DATA = Path(__file__).parent / "data"
PARTS = ("body", "left_hand", "right_hand", "face")


@pytest.fixture(scope="module")
def reference() -> Pose:
    return load_json(DATA / "pose_golden.json")[0]


def transformed(pose: Pose, scale: float, shift, width: int, height: int) -> Pose:
    """The pose scaled and shifted onto another canvas; missing points stay all zero."""
    out = {}
    for part in PARTS:
        a = getattr(pose, part).copy()
        present = a[:, 2] > 0
        a[present, :2] = a[present, :2] * scale + np.asarray(shift)
        out[part] = a
    return Pose(width, height, **out)


def max_error(a: Pose, b: Pose) -> float:
    return max(float(np.abs(getattr(a, p) - getattr(b, p)).max()) for p in PARTS)


@pytest.mark.parametrize("method", ["limbs", "global"])
def test_skeleton_onto_itself_is_unchanged(reference: Pose, method: str) -> None:
    """Retargeting the reference onto itself changes nothing: every bone ratio is 1 and the fit is the identity."""
    out = retarget([reference, reference], reference, method)
    assert len(out) == 2 and (out[0].width, out[0].height) == (reference.width, reference.height)
    assert max_error(out[0], reference) < 1e-4 and max_error(out[1], reference) < 1e-4


@pytest.mark.parametrize("method", ["limbs", "global"])
def test_scaled_shifted_copy_maps_back(reference: Pose, method: str) -> None:
    """A driving video that is the reference scaled by 0.6 and shifted, on a 720x1280 canvas, maps back onto the
    reference within a pixel, in the reference's canvas; later frames keep their motion relative to frame 0."""
    first = transformed(reference, 0.6, (37.5, -12.25), 720, 1280)
    later = transformed(reference, 0.6, (37.5 + 30, -12.25 + 6), 720, 1280)  # the dancer steps right and down
    out = retarget([first, later], reference, method)
    assert (out[0].width, out[0].height) == (320, 448)
    assert max_error(out[0], reference) < 1.0
    assert max_error(out[1], transformed(reference, 1.0, (50.0, 10.0), 320, 448)) < 1.0


def test_limbs_take_the_reference_proportions(reference: Pose) -> None:
    """With per-limb retargeting, a driver with longer legs and shorter arms comes out with the reference's bone
    lengths, rooted at the neck, while the driver's joint angles are kept."""
    driver = transformed(reference, 1.0, (0, 0), 320, 448)
    body, original = driver.body, reference.body
    for chain, k in (((8, 9, 10), 1.4), ((11, 12, 13), 1.4), ((2, 3, 4), 0.7), ((5, 6, 7), 0.7)):
        for parent, child in zip(chain, chain[1:]):  # rebuild each bone k times as long, same direction
            body[child, :2] = body[parent, :2] + k * (original[child, :2] - original[parent, :2])
    out = retarget([driver], reference, "limbs")[0]
    for parent, child in BONES:
        if reference.body[[parent, child], 2].min() >= 0.3:
            ref_len = np.hypot(*(reference.body[child, :2] - reference.body[parent, :2]))
            out_len = np.hypot(*(out.body[child, :2] - out.body[parent, :2]))
            assert abs(out_len - ref_len) < 0.01, (parent, child)
    np.testing.assert_allclose(out.body[1, :2], reference.body[1, :2], atol=1.0)


@pytest.mark.parametrize("method", ["limbs", "global"])
def test_missing_points_survive(reference: Pose, method: str) -> None:
    """Points missing in a driving frame stay missing (confidence 0, coordinates 0) and confidences pass
    through; a frame missing the neck and an elbow is still placed."""
    driver = transformed(reference, 0.5, (10, 20), 400, 400)
    gappy = transformed(reference, 0.5, (10, 20), 400, 400)
    gappy.body[[1, 6]] = 0  # neck and left elbow missing in frame 1
    gappy.left_hand[:5] = 0
    out = retarget([driver, gappy], reference, method)
    for part in PARTS:
        src, dst = getattr(gappy, part), getattr(out[1], part)
        missing = src[:, 2] == 0
        assert (dst[missing] == 0).all(), part
        np.testing.assert_array_equal(dst[~missing, 2], src[~missing, 2])
    present = gappy.body[:, 2] > 0
    assert np.abs(out[1].body[present, :2] - reference.body[present, :2]).max() < 1.0


def test_fit_needs_few_points(reference: Pose) -> None:
    """The global fit works from any two common points; with one it keeps the canvas scale and aligns that point;
    with none it maps canvas centre to canvas centre."""
    driver = transformed(reference, 2.0, (5, 5), 640, 896)
    two = Pose(640, 896, body=np.where(np.isin(np.arange(18), [0, 1])[:, None], driver.body, 0))
    scale, shift = fit_global(two, reference)
    assert scale == pytest.approx(0.5, abs=1e-4) and np.allclose(shift, -2.5, atol=1e-3)
    one = Pose(640, 896, body=np.where((np.arange(18) == 1)[:, None], driver.body, 0))
    scale, shift = fit_global(one, reference)
    assert scale == pytest.approx(448 / 896)
    np.testing.assert_allclose(scale * one.body[1, :2] + shift, reference.body[1, :2], atol=1e-4)
    scale, shift = fit_global(Pose(640, 896), reference)
    np.testing.assert_allclose(scale * np.array([320, 448]) + shift, [160, 224])


def test_bad_arguments(reference: Pose) -> None:
    """Unknown methods and anchors outside the sequence are refused; an empty sequence stays empty; anchor=None
    picks the frame with the most torso and head points."""
    with pytest.raises(ValueError, match="unknown method"):
        retarget([reference], reference, "affine")
    with pytest.raises(IndexError, match="anchor"):
        retarget([reference], reference, anchor=3)
    assert retarget([], reference) == []
    blank = Pose(320, 448)
    out = retarget([blank, reference], reference, anchor=None)
    assert max_error(out[1], reference) < 1e-4 and not out[0].body.any()
