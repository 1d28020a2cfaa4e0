"""Colour fidelity per body part (aa/eval/colour.py) and the colour augmentation that forces training to copy the
reference (aa/training/augment.py): Lab and CIEDE2000 against published values, the part errors on hand-made
frames, and one transform for all of a sample's frames."""
from dataclasses import replace

import numpy as np
import pytest

from aa.eval.colour import SCORED_PARTS, ciede2000, part_colour_errors, srgb_to_lab, summary
from aa.io.video import write_video
from aa.synthetic.canvas import MIXED, PARTS
from aa.training.augment import ColourTransform, hue_rotate, random_colour_transform
from aa.training.data import DataConfig, Entry, PoseVideoDataset

# sRGB -> CIELAB (D65), as colour-science tables give them
LAB = {(255, 255, 255): (100.0, 0.0, 0.0), (255, 0, 0): (53.2408, 80.0925, 67.2032),
       (0, 255, 0): (87.7347, -86.1827, 83.1793), (0, 0, 255): (32.2970, 79.1875, -107.8602),
       (0, 0, 0): (0.0, 0.0, 0.0), (128, 128, 128): (53.5850, 0.0, 0.0)}
# Sharma, Wu and Dalal (2005), Table 1: pairs of Lab colours and their CIEDE2000, including the hue-wrap cases
SHARMA = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425), ((50, 3.1571, -77.2803), (50, 0, -82.7485), 2.8615),
          ((50, -1.3802, -84.2814), (50, 0, -82.7485), 1.0000), ((50, 0, 0), (50, -1, 2), 2.3669),
          ((50, 2.49, -0.001), (50, -2.49, 0.0009), 7.1792), ((50, 2.49, -0.001), (50, -2.49, 0.0011), 7.2195),
          ((50, -0.001, 2.49), (50, 0.0009, -2.49), 4.8045), ((50, -0.001, 2.49), (50, 0.0011, -2.49), 4.7461),
          ((50, 2.5, 0), (50, 0, -2.5), 4.3065), ((50, 2.5, 0), (73, 25, -18), 27.1492),
          ((50, 2.5, 0), (61, -5, 29), 22.8977), ((50, 2.5, 0), (56, -27, -3), 31.9030)]


def test_srgb_to_lab_matches_the_published_values():
    """White, the primaries, black and mid grey land on their tabulated Lab coordinates (to 1e-3)."""
    rgb = np.array(list(LAB), np.uint8)
    np.testing.assert_allclose(srgb_to_lab(rgb), np.array(list(LAB.values())), atol=1e-3)


def test_ciede2000_matches_sharma_et_al():
    """Every pair of Sharma et al.'s table to its 4 decimals, in both orders (the difference is symmetric)."""
    a, b = np.array([p[0] for p in SHARMA], float), np.array([p[1] for p in SHARMA], float)
    expected = np.array([p[2] for p in SHARMA])
    np.testing.assert_allclose(ciede2000(a, b), expected, atol=6e-5)
    np.testing.assert_allclose(ciede2000(b, a), expected, atol=6e-5)


def test_part_errors_read_the_true_parts_only():
    """A truth with a red shirt and blue trousers, a generated frame with a green shirt and the right trousers:
    the shirt's mean and pixel error are both CIEDE2000(red, green), the trousers' 0; what the generated frame has
    outside the parts (background, MIXED edges) changes nothing; a part under MIN_PIXELS is not scored."""
    labels = np.full((2, 16, 16), PARTS["background"], np.uint8)
    labels[:, 2:8, 4:12], labels[:, 8:14, 4:12], labels[:, 8, 4:12] = PARTS["shirt"], PARTS["trousers"], MIXED
    labels[0, 0, 0] = PARTS["hat"]  # one pixel: not scored
    truth = np.zeros((2, 16, 16, 3), np.uint8)
    truth[labels == PARTS["shirt"]], truth[labels == PARTS["trousers"]] = (255, 0, 0), (0, 0, 255)
    generated = truth.copy()
    generated[labels == PARTS["shirt"]] = (0, 255, 0)
    errors = part_colour_errors(generated, truth, labels)
    red_green = ciede2000(np.array(LAB[(255, 0, 0)]), np.array(LAB[(0, 255, 0)]))
    assert set(errors) == {"shirt", "trousers"} and errors["shirt"]["pixels"] == 2 * 6 * 8
    assert errors["shirt"]["mean"] == pytest.approx(red_green, abs=1e-3)
    assert errors["shirt"]["pixel"] == pytest.approx(red_green, abs=1e-3)
    assert errors["trousers"]["mean"] == 0 and errors["trousers"]["pixel"] == 0
    elsewhere = generated.copy()
    elsewhere[~np.isin(labels, [PARTS[p] for p in SCORED_PARTS])] = (17, 200, 90)
    assert part_colour_errors(elsewhere, truth, labels) == errors
    assert summary(errors)["part_de"] == pytest.approx(red_green / 2, abs=1e-3)


def test_hue_rotation_turns_primaries_and_keeps_greys():
    """120 degrees: red -> green -> blue -> red; greys unchanged; 0 degrees is the identity; +90 then -90 returns
    the image within one level of rounding."""
    prim = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]], np.uint8)
    assert hue_rotate(prim, 120).tolist() == [[0, 255, 0], [0, 0, 255], [255, 0, 0], [90, 90, 90]]
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    assert np.array_equal(hue_rotate(image, 0), image)
    assert np.abs(hue_rotate(hue_rotate(image, 90), -90).astype(int) - image).max() <= 1


def test_colour_transform_parts():
    """The identity transform keeps an image; a channel permutation alone permutes the channels; saturation 0
    makes every pixel grey."""
    image = np.random.default_rng(1).integers(0, 256, (4, 4, 3)).astype(np.uint8)
    assert np.array_equal(ColourTransform().apply(image), image)
    assert np.array_equal(ColourTransform(permutation=(2, 0, 1)).apply(image), image[..., [2, 0, 1]])
    grey = ColourTransform(saturation=0.0).apply(image).astype(int)
    assert np.abs(grey - grey[..., :1]).max() <= 1


@pytest.fixture(scope="module")
def palette_video(tmp_path_factory):
    """32x32 frames of 8x8 blocks, each frame a new arrangement of the same 8 colours."""
    folder = tmp_path_factory.mktemp("palette")
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (8, 3)).astype(np.uint8)
    frames = [np.kron(palette[rng.integers(0, 8, (4, 4))].transpose(2, 0, 1), np.ones((8, 8), np.uint8)
                      ).transpose(1, 2, 0) for _ in range(6)]
    write_video(folder / "v.mp4", np.stack(frames), 8, lossless=True)
    return Entry(folder / "v.mp4", pose_video=folder / "v.mp4")


def test_colour_augment_gives_reference_and_targets_one_transform(palette_video):
    """With the same sample seed, the augmented sample is the plain one passed through one per-pixel colour
    function: every colour of the plain targets and reference maps to a single colour in the augmented ones (a
    transform drawn per frame would map a colour two ways), and the function is not the identity. Off (0), the
    samples are exactly the ones drawn before augmentation existed (no extra random draws)."""
    cfg = DataConfig(32, 32, frames=3, crop_scale=(1.0, 1.0), clip_size=16)
    plain = PoseVideoDataset([palette_video], cfg)[0, 7]
    augmented = PoseVideoDataset([palette_video], replace(cfg, colour_augment=1.0))[0, 7]

    def pixels(sample):
        images = np.concatenate([sample["target"].numpy(), sample["reference"].numpy()[None]])  # (f+1, 3, h, w)
        return np.round((images + 1) * 127.5).astype(int).transpose(0, 2, 3, 1).reshape(-1, 3)

    before, after = pixels(plain), pixels(augmented)
    mapping: dict[tuple, set] = {}
    for b, a in zip(map(tuple, before), map(tuple, after)):
        mapping.setdefault(b, set()).add(a)
    assert len(mapping) >= 6 and all(len(v) == 1 for v in mapping.values())
    assert not np.array_equal(before, after)
    again = PoseVideoDataset([palette_video], replace(cfg, colour_augment=0.0))[0, 7]
    assert all(np.array_equal(plain[k].numpy(), again[k].numpy()) for k in plain)


def test_random_transforms_cover_hues_and_permutations():
    """Draws spread over the hue circle and all six channel orders (so no colour is tied to any other)."""
    rng = np.random.default_rng(0)
    draws = [random_colour_transform(rng) for _ in range(300)]
    assert len({d.permutation for d in draws}) == 6
    assert np.histogram([d.hue for d in draws], bins=4, range=(0, 360))[0].min() > 50
