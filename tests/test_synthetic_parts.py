"""aa/synthetic's part labels (render_frame_parts, the dataset's <clip>.parts.npz): what each pixel shows, where the
per-part colour metrics of aa/eval look."""
import json
from dataclasses import replace

import numpy as np
import pytest

from aa.synthetic import MOTIONS, make_clip, sample_character, sample_params
from aa.synthetic.canvas import MIXED, PARTS
from aa.synthetic.dataset import load_parts, make_clip_parts, write_dataset
from aa.synthetic.render import render_frame_parts

SIZE = 64


def inverted(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(255 - c for c in colour)


RECOLOUR = {  # a character's colour field -> the parts it paints (besides small details labelled "other")
    "shirt": (lambda ch: replace(ch, shirt=replace(ch.shirt, colour=inverted(ch.shirt.colour),
                                                    accent=inverted(ch.shirt.accent))), {"shirt", "sleeves"}),
    "trousers": (lambda ch: replace(ch, trousers=replace(ch.trousers, colour=inverted(ch.trousers.colour),
                                                          accent=inverted(ch.trousers.accent))), {"trousers"}),
    "skin": (lambda ch: replace(ch, skin=inverted(ch.skin)), {"skin"}),
    "hair": (lambda ch: replace(ch, hair=inverted(ch.hair)), {"hair"}),
    "hat": (lambda ch: replace(ch, hat_colour=inverted(ch.hat_colour)), {"hat"}),
    "shoes": (lambda ch: replace(ch, shoes=inverted(ch.shoes)), {"shoes"}),
}


@pytest.mark.parametrize("seed", [1, 5, 11, 23])
def test_a_part_mask_covers_exactly_the_pixels_its_colour_paints(seed: int) -> None:
    """Recolour one thing of a character (its shirt, trousers, skin, hair, hat or shoes) and render the same frame
    again: every pixel labelled with that part changes, and no pixel labelled with another part or the background
    does (edge pixels showing two parts are MIXED, in no mask)."""
    ch = sample_character(seed)
    state = MOTIONS["wave"](0.4, sample_params("wave", np.random.default_rng(seed), 2.0))
    image, _, _, labels = render_frame_parts(ch, state, SIZE, SIZE)
    assert (labels == PARTS["background"]).any() and (labels == MIXED).any()
    for name, (recolour, parts) in RECOLOUR.items():
        mask = np.isin(labels, [PARTS[p] for p in parts])
        if name == "hat" and ch.hat is None:
            assert not mask.any()
            continue
        changed = (render_frame_parts(recolour(ch), state, SIZE, SIZE)[0] != image).any(axis=-1)
        assert mask.any(), name
        assert changed[mask].all(), f"{name}: pixels in its mask kept their colour"
        # details labelled "other" have colours of their own, except the lips, a tint of the skin
        others = ~np.isin(labels, [PARTS[p] for p in parts] + [MIXED] + ([PARTS["other"]] if name == "skin" else []))
        assert not changed[others].any(), f"{name}: pixels outside its mask changed"


def test_parts_are_written_beside_the_clips_which_stay_unchanged(tmp_path) -> None:
    """make_clip_parts renders the same frames as make_clip; write_dataset writes one label map per frame for each
    clip (<clip>.parts.npz, named in the manifest as "parts")."""
    ch = sample_character(3)
    video, _ = make_clip(ch, "walk", 3, SIZE, SIZE, seed=2)
    video_p, _, _, labels = make_clip_parts(ch, "walk", 3, SIZE, SIZE, seed=2)
    assert np.array_equal(video, video_p) and labels.shape == (3, SIZE, SIZE) and labels.dtype == np.uint8
    manifests = write_dataset(tmp_path, 32, 32, train_characters=1, val_characters=0, test_characters=1,
                              clips_per_character=1, frames=2, progress=False)
    for items in manifests.values():
        for item in items:
            parts = load_parts(tmp_path / item["parts"])
            assert parts.shape == (2, 32, 32)
            assert set(np.unique(parts)) <= {*PARTS.values(), MIXED}
    assert json.loads((tmp_path / "train.json").read_text())[0]["parts"].endswith(".parts.npz")
