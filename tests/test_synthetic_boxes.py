"""aa/synthetic's character boxes (render_frame_box, the dataset's <clip>.box.json): where the region metrics of
tools/eval.py look."""
from __future__ import annotations

import json

import numpy as np
import pytest

from aa.synthetic import MOTIONS, make_clip, sample_character, sample_params, write_dataset
from aa.synthetic.canvas import background, supersampling
from aa.synthetic.dataset import make_clip_boxes
from aa.synthetic.render import render_frame_box

SIZE = 64


def backdrop(character, size: int) -> np.ndarray:
    """The character's empty background at the output size, rounded to uint8 as a frame is (no shadow)."""
    ss = supersampling(size, size)
    bg = background(character.background, size, size, ss).reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    return np.clip(np.rint(bg), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_box_is_the_tight_box_of_the_drawn_character(seed: int) -> None:
    """Outside the box the frame is the bare background (except the ground shadow, below the box's upper part);
    each edge row and column of the box holds a pixel the character changed; every visible body keypoint is in it."""
    ch = sample_character(seed, ("flat", "gradient", "horizon"))
    rng = np.random.default_rng(seed)
    state = MOTIONS["dance"](0.4, sample_params("dance", rng, 3.0))
    image, pose, (x0, y0, x1, y1) = render_frame_box(ch, state, SIZE, SIZE)
    changed = (image != backdrop(ch, SIZE)).any(axis=-1)  # (h, w)
    outside = np.ones_like(changed)
    outside[y0:y1, x0:x1] = False
    outside[y1 - (y1 - y0) // 4:] = False  # the shadow lies on the ground around the feet
    assert not changed[outside].any()
    assert changed[y0, x0:x1].any() and changed[y1 - 1, x0:x1].any()
    assert changed[y0:y1, x0].any() and changed[y0:y1, x1 - 1].any()
    seen = pose.body[pose.body[:, 2] > 0]
    assert (seen[:, 0] >= x0 - 0.5).all() and (seen[:, 0] < x1 - 0.5).all()
    assert (seen[:, 1] >= y0 - 0.5).all() and (seen[:, 1] < y1 - 0.5).all()


def test_boxes_leave_the_clips_unchanged_and_are_written_per_frame(tmp_path) -> None:
    """make_clip_boxes renders the same frames and poses as make_clip; write_dataset writes one box per frame for
    each clip and names the file in the manifest ("boxes")."""
    ch = sample_character(5)
    video, poses = make_clip(ch, "walk", 3, SIZE, SIZE, seed=4)
    video_b, poses_b, boxes = make_clip_boxes(ch, "walk", 3, SIZE, SIZE, seed=4)
    assert np.array_equal(video, video_b) and all(np.array_equal(a.body, b.body) for a, b in zip(poses, poses_b))
    assert len(boxes) == 3
    manifests = write_dataset(tmp_path, 32, 32, train_characters=1, val_characters=0, test_characters=1,
                              clips_per_character=1, frames=2, progress=False)
    for split, items in manifests.items():
        for item in items:
            boxes = json.loads((tmp_path / item["boxes"]).read_text())
            assert len(boxes) == 2 and all(0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32 for x0, y0, x1, y1 in boxes)
