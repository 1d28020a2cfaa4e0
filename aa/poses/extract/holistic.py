"""MediaPipe Holistic -> OpenPose layout: 33 body, 21 + 21 hand and 468 face-mesh landmarks to 18 + 21 + 21 + 68.

mediapipe 0.10.14 ships the Holistic pose, hand and face landmark models inside its wheel and runs offline; later
releases dropped the legacy `mediapipe.solutions` models, hence the pin in requirements-pose.txt.
Confidences: body points take MediaPipe's `visibility` (probability of being in frame and unoccluded), the neck the
smaller of the two shoulders'; detected hands and faces have no per-point score and get 1.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from aa.poses.keypoints import Pose

# BlazePose landmark index of each OpenPose-18 body point; the neck (None) is the shoulders' midpoint.
BODY_FROM_BLAZEPOSE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
# Face-mesh index of each of the 68 iBUG-300W / dlib points (the layout of COCO-WholeBody's face and DWPose's).
# "Right" is the subject's right, on the left of a frontal image. One mesh vertex per point, chosen on the mesh's
# canonical UV layout; the same choice as several public tables (e.g. PeizhiYan/Mediapipe_2_Dlib_Landmarks, which
# averages two vertices for a few points).
FACE68_FROM_MESH = (
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,  # 0-16 jaw, right to left
    70, 63, 105, 66, 107,  # 17-21 right brow, outer to inner
    336, 296, 334, 293, 300,  # 22-26 left brow, inner to outer
    168, 197, 5, 4,  # 27-30 nose bridge, top to tip
    75, 97, 2, 326, 305,  # 31-35 nostrils, right to left
    33, 160, 158, 133, 153, 144,  # 36-41 right eye: outer corner, upper lid, inner corner, lower lid
    362, 385, 387, 263, 373, 380,  # 42-47 left eye: inner corner, upper lid, outer corner, lower lid
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # 48-59 outer lip, from the right corner over the top
    78, 81, 13, 311, 308, 402, 14, 178,  # 60-67 inner lip, from the right corner over the top
)


def _import_holistic() -> ModuleType:
    """mediapipe's legacy Holistic solution, or an ImportError saying what to install."""
    try:
        import mediapipe
    except ImportError as e:
        raise ImportError("MediaPipe backend needs mediapipe==0.10.14, an optional extra: "
                          "pip install -r requirements-pose.txt") from e
    holistic = getattr(getattr(mediapipe, "solutions", None), "holistic", None)
    if holistic is None:
        raise ImportError(f"mediapipe {getattr(mediapipe, '__version__', '?')} does not bundle the Holistic models "
                          f"(`mediapipe.solutions` was dropped after 0.10.x): pip install mediapipe==0.10.14")
    return holistic


def _xy(landmarks: Any, width: int, height: int) -> np.ndarray:
    """(n, 2) pixel coordinates of a MediaPipe landmark list (normalised x, y)."""
    return np.array([[lm.x * width, lm.y * height] for lm in landmarks.landmark], np.float64)


def landmarks_to_pose(result: Any, width: int, height: int) -> Pose:
    """A Holistic result (pose_landmarks, left/right_hand_landmarks, face_landmarks; each None when not found)
    as an OpenPose-layout Pose on a width x height canvas."""
    pose = Pose(width, height)
    if result.pose_landmarks is not None:
        xy = _xy(result.pose_landmarks, width, height)
        vis = np.array([lm.visibility for lm in result.pose_landmarks.landmark], np.float64)
        for i, j in enumerate(BODY_FROM_BLAZEPOSE):
            if j is not None:
                pose.body[i] = [*xy[j], vis[j]]
        shoulders = [LEFT_SHOULDER, RIGHT_SHOULDER]
        pose.body[1] = [*xy[shoulders].mean(0), vis[shoulders].min()]
    for name, landmarks in (("left_hand", result.left_hand_landmarks), ("right_hand", result.right_hand_landmarks)):
        if landmarks is not None:  # MediaPipe's hand landmarks are in OpenPose's hand order already
            getattr(pose, name)[:] = np.concatenate([_xy(landmarks, width, height), np.ones((21, 1))], 1)
    if result.face_landmarks is not None:
        mesh = _xy(result.face_landmarks, width, height)
        pose.face[:] = np.concatenate([mesh[list(FACE68_FROM_MESH)], np.ones((68, 1))], 1)
    pose.body[pose.body[:, 2] <= 0] = 0.0
    return pose


class HolisticBackend:
    """Callable RGB frame -> Pose with MediaPipe Holistic; `video=True` tracks landmarks from frame to frame
    (smoother, faster), `video=False` treats every frame as an unrelated image."""

    def __init__(self, video: bool = True, model_complexity: int = 1) -> None:
        holistic = _import_holistic()
        self.model = holistic.Holistic(static_image_mode=not video, model_complexity=model_complexity,
                                       refine_face_landmarks=False)

    def __call__(self, frame: np.ndarray) -> Pose:
        return landmarks_to_pose(self.model.process(np.ascontiguousarray(frame)), frame.shape[1], frame.shape[0])

    def close(self) -> None:
        """Release MediaPipe's graph."""
        self.model.close()
