"""MediaPipe Holistic backend (aa/poses/extract/holistic.py): layout mapping, install errors, and a real photograph."""
from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from aa.poses.extract import extract_poses
from aa.poses.extract.holistic import FACE68_FROM_MESH, landmarks_to_pose


def landmark_list(points: np.ndarray, visibility: np.ndarray | None = None) -> SimpleNamespace:
    """A stand-in for MediaPipe's NormalizedLandmarkList: normalised x, y and a visibility per landmark."""
    vis = np.zeros(len(points)) if visibility is None else visibility
    return SimpleNamespace(landmark=[SimpleNamespace(x=x, y=y, visibility=v) for (x, y), v in zip(points, vis)])


# MediaPipe's 33 pose landmarks in index order (MediaPipe docs/solutions/pose.md, "Pose Landmark Model", and the
# Pose Landmarker task page on ai.google.dev, which list the same 33 names by index: 0 nose,
# 1-3 left eye inner/centre/outer, 4-6 right eye, 7/8 ears, 9/10 mouth, 11/12 shoulders, 13/14 elbows, 15/16
# wrists, 17-22 pinky/index/thumb, 23/24 hips, 25/26 knees, 27/28 ankles, 29/30 heels, 31/32 foot index; left
# before right, the subject's left).
BLAZEPOSE = ("nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
             "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
             "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky",
             "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index",
             "right_foot_index")
# OpenPose's 18 body points (the COCO-18 layout of the rendered pose images; the neck is not a MediaPipe landmark).
OPENPOSE_BODY = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
                 "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
                 "right_eye", "left_eye", "right_ear", "left_ear")


def test_landmark_mapping() -> None:
    """Every OpenPose-18 body point takes the MediaPipe landmark of the same name (by the documented index order),
    with its visibility as confidence; the neck is the shoulders' midpoint with the smaller visibility;
    coordinates scale to pixels; each hand keeps MediaPipe's order with confidence 1 and goes to the same side;
    the face takes the 68 table entries; invisible and absent parts stay missing."""
    rng = np.random.default_rng(0)
    body = rng.uniform(0, 1, (33, 2))
    vis = rng.uniform(0.5, 1, 33)
    vis[BLAZEPOSE.index("left_ankle")] = 0.0  # not visible -> missing
    mesh = rng.uniform(0, 1, (468, 2))
    left, right = rng.uniform(0, 1, (21, 2)), rng.uniform(0, 1, (21, 2))
    result = SimpleNamespace(pose_landmarks=landmark_list(body, vis), face_landmarks=landmark_list(mesh),
                             left_hand_landmarks=landmark_list(left), right_hand_landmarks=landmark_list(right))
    pose = landmarks_to_pose(result, 200, 100)
    scale = np.array([200, 100])
    for i, name in enumerate(OPENPOSE_BODY):
        if name == "neck":
            shoulders = [BLAZEPOSE.index("left_shoulder"), BLAZEPOSE.index("right_shoulder")]
            expected = [*body[shoulders].mean(0) * scale, vis[shoulders].min()]
        elif name == "left_ankle":
            expected = [0, 0, 0]
        else:
            j = BLAZEPOSE.index(name)
            expected = [*body[j] * scale, vis[j]]
        np.testing.assert_allclose(pose.body[i], expected, rtol=1e-6, err_msg=f"OpenPose {name}")
    for hand, landmarks in ((pose.left_hand, left), (pose.right_hand, right)):
        np.testing.assert_allclose(hand[:, :2], landmarks * scale, rtol=1e-6)
        assert (hand[:, 2] == 1).all()
    np.testing.assert_allclose(pose.face[:, :2], mesh[list(FACE68_FROM_MESH)] * scale, rtol=1e-6)
    assert len(FACE68_FROM_MESH) == len(set(FACE68_FROM_MESH)) == 68
    one_hand = landmarks_to_pose(SimpleNamespace(pose_landmarks=None, face_landmarks=None, left_hand_landmarks=None,
                                                 right_hand_landmarks=landmark_list(right)), 200, 100)
    assert not one_hand.left_hand.any() and one_hand.right_hand.any()
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
