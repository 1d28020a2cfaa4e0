"""MediaPipe Holistic backend (aa/pose_extract/holistic.py): layout mapping, install errors, and a real photograph."""
from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from aa.pose_extract import extract_poses
from aa.pose_extract.holistic import BODY_FROM_BLAZEPOSE, FACE68_FROM_MESH, landmarks_to_pose


def landmark_list(points: np.ndarray, visibility: np.ndarray | None = None) -> SimpleNamespace:
    """A stand-in for MediaPipe's NormalizedLandmarkList: normalised x, y and a visibility per landmark."""
    vis = np.zeros(len(points)) if visibility is None else visibility
    return SimpleNamespace(landmark=[SimpleNamespace(x=x, y=y, visibility=v) for (x, y), v in zip(points, vis)])


def test_landmark_mapping() -> None:
    """BlazePose's 33 points map to OpenPose-18 by name (OpenPose right shoulder <- BlazePose 12, ...), the neck
    is the shoulders' midpoint with the smaller visibility, coordinates scale to pixels, hands keep their order
    with confidence 1, the face takes the 68 table entries, and absent parts stay missing."""
    rng = np.random.default_rng(0)
    body = rng.uniform(0, 1, (33, 2))
    vis = rng.uniform(0.5, 1, 33)
    vis[27] = 0.0  # BlazePose left ankle: not visible -> missing
    mesh = rng.uniform(0, 1, (468, 2))
    hand = rng.uniform(0, 1, (21, 2))
    result = SimpleNamespace(pose_landmarks=landmark_list(body, vis), face_landmarks=landmark_list(mesh),
                             left_hand_landmarks=landmark_list(hand), right_hand_landmarks=None)
    pose = landmarks_to_pose(result, 200, 100)
    scale = np.array([200, 100])
    np.testing.assert_allclose(pose.body[2, :2], body[12] * scale, rtol=1e-6)  # right shoulder
    np.testing.assert_allclose(pose.body[15, :2], body[2] * scale, rtol=1e-6)  # left eye
    np.testing.assert_allclose(pose.body[1], [*(body[11] + body[12]) / 2 * scale, min(vis[11], vis[12])], rtol=1e-6)
    assert (pose.body[13] == 0).all(), "invisible point is missing"
    np.testing.assert_allclose(pose.left_hand[:, :2], hand * scale, rtol=1e-6)
    assert (pose.left_hand[:, 2] == 1).all() and not pose.right_hand.any()
    np.testing.assert_allclose(pose.face[:, :2], mesh[list(FACE68_FROM_MESH)] * scale, rtol=1e-6)
    assert len(BODY_FROM_BLAZEPOSE) == 18 and len(FACE68_FROM_MESH) == len(set(FACE68_FROM_MESH)) == 68
    empty = landmarks_to_pose(SimpleNamespace(pose_landmarks=None, face_landmarks=None, left_hand_landmarks=None,
                                              right_hand_landmarks=None), 200, 100)
    assert not any(a.any() for a in (empty.body, empty.left_hand, empty.right_hand, empty.face))


def test_missing_or_wrong_mediapipe_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mediapipe, or with a release that no longer bundles Holistic, the error names mediapipe==0.10.14."""
    frame = np.zeros((8, 8, 3), np.uint8)
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(ImportError, match="mediapipe==0.10.14"):
        extract_poses([frame], backend="mediapipe")
    monkeypatch.setitem(sys.modules, "mediapipe", types.SimpleNamespace(__version__="1.0.0"))
    with pytest.raises(ImportError, match=r"1\.0\.0 does not bundle"):
        extract_poses([frame], backend="mediapipe")


@pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype")
def test_astronaut_photograph() -> None:
    """On a real upper-body portrait (scikit-image's `astronaut`, 512x512) the extracted keypoints are
    plausible: eyes above the nose, nose above the neck, the right shoulder on the image's left of the neck and
    the left on its right, confident points inside the image, the 68 face points inside the head region with
    each eye's 6 points around the body's eye, and the mouth below the nose."""
    pytest.importorskip("mediapipe", reason="MediaPipe extra absent: pip install -r requirements-pose.txt")
    skimage_data = pytest.importorskip("skimage.data",
                                       reason="scikit-image absent: pip install -r requirements-pose.txt")
    image = skimage_data.astronaut()
    pose = extract_poses([image], backend="mediapipe", video=False)[0]
    b = pose.body
    nose, neck, r_shoulder, l_shoulder, r_eye, l_eye = b[0], b[1], b[2], b[5], b[14], b[15]
    assert min(p[2] for p in (nose, neck, r_shoulder, l_shoulder, r_eye, l_eye)) >= 0.5
    assert r_eye[1] < nose[1] and l_eye[1] < nose[1] and nose[1] < neck[1]
    assert r_shoulder[0] < neck[0] < l_shoulder[0]
    confident = b[b[:, 2] >= 0.3]
    assert ((confident[:, :2] >= 0) & (confident[:, :2] < 512)).all()

    face = pose.face
    assert (face[:, 2] == 1).all()
    eye_gap = np.linalg.norm(l_eye[:2] - r_eye[:2])
    head_lo = np.array([min(r_eye[0], l_eye[0]) - 1.5 * eye_gap, min(r_eye[1], l_eye[1]) - 1.5 * eye_gap])
    head_hi = np.array([max(r_eye[0], l_eye[0]) + 1.5 * eye_gap, neck[1]])
    assert ((face[:, :2] >= head_lo) & (face[:, :2] <= head_hi)).all(), "face points inside the head region"
    assert np.linalg.norm(face[36:42, :2].mean(0) - r_eye[:2]) < 0.35 * eye_gap, "points 36-41 are the right eye"
    assert np.linalg.norm(face[42:48, :2].mean(0) - l_eye[:2]) < 0.35 * eye_gap, "points 42-47 are the left eye"
    assert face[48:68, 1].mean() > nose[1] and face[8, 1] > face[48:68, 1].mean(), "mouth below nose, chin lowest"
