"""sample.py's flags reach what they control: each test fails if its flag is ignored (tools/mutants.py checks that).

`pipeline.animate_iter` is replaced in the test by a recorder that returns black frames, so each run checks what
sample.py hands the pipeline (models, pose images, settings) in well under a second; the pipeline itself is tested
in test_pipeline.py and test_conditioning.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from aa.io.video import write_video
from aa.models import config
from aa.models.bundle import Models
from aa.poses.keypoints import Pose, load_json, save_json
from aa.poses.render import render_pose
from aa.poses.retarget import retarget
from aa.sampling import load as loading
from aa.sampling import pipeline
from aa.weights.native import export_moore, save_models
from aa.weights.sd import save_native

S = 64  # output size (a multiple of the tiny model's size factor)


def tiny(seed: int) -> Models:
    torch.manual_seed(seed)
    return Models.build(config.tiny())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two different tiny models (A, B) in the Moore layout with B's VAE and CLIP files, A as a native folder, a
    reference image, keypoints with hands and face, and a reference pose of other proportions."""
    root = tmp_path_factory.mktemp("flags")
    for name, seed in (("a", 0), ("b", 1)):
        m = tiny(seed)
        export_moore(m, root / name)
        save_native(m.vae, root / name / "vae.safetensors")
        save_native(m.image_encoder, root / name / "clip.safetensors")
    save_models(tiny(0), root / "native", {"prediction": "v", "width": S, "height": S})
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (S, S, 3), dtype=np.uint8)).save(root / "ref.png")

    body = np.zeros((18, 3), np.float32)  # neck, shoulders, elbows, wrists, hips, knees, nose, eyes
    body[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15]] = [
        [32, 12, 1], [32, 20, 1], [26, 20, 1], [22, 28, 1], [20, 36, 1], [38, 20, 1], [42, 28, 1], [44, 36, 1],
        [28, 40, 1], [28, 52, 1], [36, 40, 1], [36, 52, 1], [30, 10, 1], [34, 10, 1]]
    hand = np.zeros((21, 3), np.float32)
    hand[:, :2] = np.stack([np.linspace(0, 6, 21), np.linspace(0, 8, 21)], 1)
    hand[:, 2] = 1
    face = np.zeros((68, 3), np.float32)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face[:] = np.stack([32 + 5 * np.cos(angles), 11 + 5 * np.sin(angles), np.ones(68)], 1)
    drive = [Pose(S, S, body=body + [k, 0, 0], left_hand=hand + [44 + k, 36, 0], right_hand=hand + [14 + k, 36, 0],
                  face=face + [k, 0, 0]) for k in range(3)]
    save_json(root / "drive.json", drive)
    ref_body = body.copy()
    ref_body[:, 0] = 32 + (body[:, 0] - 32) * 1.4  # wider shoulders and arms
    ref_body[:, 1] = 20 + (body[:, 1] - 20) * 0.7  # shorter
    ref_body[:, 2] = body[:, 2]
    save_json(root / "ref_pose.json", [Pose(S, S, body=ref_body)])
    return root


@pytest.fixture
def pipeline_call(monkeypatch):
    """Replace `pipeline.animate_iter` with a recorder returning black frames; the dict gets its arguments."""
    got: dict = {}

    def fake(models, reference, poses, settings, **kwargs):
        got.update(models=models, reference=reference, poses=np.asarray(poses), settings=settings, **kwargs)
        return iter([np.zeros((len(poses), kwargs["height"], kwargs["width"], 3), np.uint8)])

    monkeypatch.setattr(pipeline, "animate_iter", fake)  # sample.py imports it when it samples
    return got


def run(files, tmp_path, *flags: str, weights: list[str] | None = None) -> int:
    base = weights if weights is not None else ["--weights", str(files / "native")]
    return sample.main([*base, "--ref", str(files / "ref.png"), "--width", str(S), "--height", str(S),
                        "--out", str(tmp_path / "out.mp4"), "--quiet", *flags])


# ---------------------------------------------------------------------------------------------------- sampling
def test_window_overlap_and_shift_windows_reach_the_settings(files, tmp_path, pipeline_call):
    """--window 6 --overlap 3 --shift-windows set those settings; without them the defaults (24, 4, fixed) hold."""
    pose = ["--pose", str(files / "drive.json")]
    assert run(files, tmp_path, *pose) == 0
    s = pipeline_call["settings"]
    assert (s.window, s.overlap, s.shift_windows) == (24, 4, False)
    assert run(files, tmp_path, *pose, "--window", "6", "--overlap", "3", "--shift-windows") == 0
    s = pipeline_call["settings"]
    assert (s.window, s.overlap, s.shift_windows) == (6, 3, True)


def test_offload_and_split_guidance_reach_the_settings(files, tmp_path, pipeline_call):
    """--offload and --split-guidance (the 8 GB options) set those settings; both are off by default."""
    pose = ["--pose", str(files / "drive.json")]
    assert run(files, tmp_path, *pose) == 0
    s = pipeline_call["settings"]
    assert (s.offload, s.split_guidance) == (False, False)
    assert run(files, tmp_path, *pose, "--offload", "--split-guidance") == 0
    s = pipeline_call["settings"]
    assert (s.offload, s.split_guidance) == (True, True)


@pytest.mark.parametrize("flag, dtype", [(None, torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_dtype_sets_the_weights_and_autocast_precision_on_cuda(files, tmp_path, pipeline_call, monkeypatch, flag,
                                                               dtype):
    """On CUDA (faked: the loader and the pipeline are replaced), --dtype picks the weights' dtype and the
    settings' autocast dtype (fp16 by default); on the CPU it is fp32 whatever the flag."""
    loaded = {}

    def load(**kwargs):
        loaded.update(kwargs)
        return tiny(0), {}, (S, S)

    monkeypatch.setattr(loading, "load_for_sampling", load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    extra = [] if flag is None else ["--dtype", flag]
    assert run(files, tmp_path, "--pose", str(files / "drive.json"), "--device", "cuda", *extra) == 0
    assert loaded["dtype"] == dtype and pipeline_call["settings"].dtype == dtype
    assert run(files, tmp_path, "--pose", str(files / "drive.json"), "--device", "cpu", *extra) == 0
    assert loaded["dtype"] == torch.float32


# ---------------------------------------------------------------------------------------------------- weights
def same(module: torch.nn.Module, state: dict[str, torch.Tensor], keep=lambda k: True) -> bool:
    """Every kept tensor of `module` equals the file's."""
    own = {k: v for k, v in module.state_dict().items() if keep(k)}
    return bool(own) and all(torch.equal(v.float(), state[k].float()) for k, v in own.items())


def test_parts_each_load_from_their_own_flag(files, tmp_path, pipeline_call):
    """--unet (A) with --reference-unet, --motion, --pose-guider, --vae and --clip (all B): each network holds the
    tensors of the file its flag names."""
    a, b = files / "a", files / "b"
    weights = ["--unet", str(a / "denoising_unet.pth"), "--reference-unet", str(b / "reference_unet.pth"),
               "--motion", str(b / "motion_module.pth"), "--pose-guider", str(b / "pose_guider.pth"),
               "--vae", str(b / "vae.safetensors"), "--clip", str(b / "clip.safetensors"), "--model", "tiny"]
    assert run(files, tmp_path, "--pose", str(files / "drive.json"), weights=weights) == 0
    m = pipeline_call["models"]
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    motion = lambda k: ".motion_modules." in k  # noqa: E731
    assert same(m.unet, load(a / "denoising_unet.pth"), lambda k: not motion(k)), "--unet"
    assert same(m.unet, load(b / "motion_module.pth"), motion), "--motion"
    assert same(m.reference_net, load(b / "reference_unet.pth")), "--reference-unet"
    assert same(m.pose_guider, load(b / "pose_guider.pth")), "--pose-guider"
    b_models = tiny(1)
    assert same(m.vae, b_models.vae.state_dict()), "--vae"
    assert same(m.image_encoder, b_models.image_encoder.state_dict()), "--clip"
    assert not same(m.reference_net, tiny(0).reference_net.state_dict()), "A and B differ"


# ---------------------------------------------------------------------------------------------------- poses
def test_pose_folder_of_images_is_read_in_order_and_resized(files, tmp_path, pipeline_call):
    """--pose <folder of PNGs>: the images in name order, resized to the output size; --frames keeps the first N."""
    folder = tmp_path / "poses"
    folder.mkdir()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, c in enumerate(colours):
        Image.new("RGB", (48, 40), c).save(folder / f"{i:03d}.png")
    assert run(files, tmp_path, "--pose", str(folder)) == 0
    poses = pipeline_call["poses"]
    assert poses.shape == (4, S, S, 3)
    assert [tuple(p[S // 2, S // 2]) for p in poses] == colours
    assert run(files, tmp_path, "--pose", str(folder), "--frames", "2") == 0
    assert len(pipeline_call["poses"]) == 2


@pytest.mark.parametrize("flags, hands, face", [([], True, False), (["--face"], True, True),
                                                (["--no-hands"], False, False)])
def test_face_and_no_hands_choose_what_is_drawn(files, tmp_path, pipeline_call, flags, hands, face):
    """Keypoints are drawn with hands and without face by default; --face adds the face, --no-hands drops hands."""
    assert run(files, tmp_path, "--pose", str(files / "drive.json"), *flags) == 0
    keypoints = load_json(files / "drive.json", S, S)
    expected = np.stack([render_pose(p, S, S, hands=hands, face=face) for p in keypoints])
    assert np.array_equal(pipeline_call["poses"], expected)
    other = np.stack([render_pose(p, S, S, hands=not hands, face=not face) for p in keypoints])
    assert not np.array_equal(expected, other)


@pytest.mark.parametrize("method", ["limbs", "global"])
def test_align_retargets_the_drawn_poses(files, tmp_path, pipeline_call, method):
    """--align limbs|global with --ref-pose: the drawn poses are the driving keypoints retargeted by that method,
    which differ from the unaligned ones and from the other method's."""
    drive, ref_pose = load_json(files / "drive.json", S, S), load_json(files / "ref_pose.json", S, S)[0]
    draw = lambda ps: np.stack([render_pose(p, S, S, face=False) for p in ps])  # noqa: E731
    assert run(files, tmp_path, "--pose", str(files / "drive.json"), "--align", method, "--ref-pose",
               str(files / "ref_pose.json")) == 0
    got = pipeline_call["poses"]
    assert np.array_equal(got, draw(retarget(drive, ref_pose, method=method)))
    other = {"limbs": "global", "global": "limbs"}[method]
    assert not np.array_equal(got, draw(drive))
    assert not np.array_equal(got, draw(retarget(drive, ref_pose, method=other)))


@pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype")
def test_extract_mediapipe_follows_a_moving_person(files, tmp_path, pipeline_call):
    """--extract mediapipe on a real photograph (scikit-image's astronaut) slid right by 24 px per frame: the
    poses are drawn skeletons (mostly black), not the video's frames, and they slide right with the person."""
    pytest.importorskip("mediapipe", reason="MediaPipe extra absent: pip install -r requirements-pose.txt")
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image absent")
    photo = Image.fromarray(skimage_data.astronaut()).resize((256, 256), Image.Resampling.LANCZOS)
    shift = 24
    frames = [np.asarray(photo.transform((256, 256), Image.Transform.AFFINE, (1, 0, -shift * k, 0, 1, 0),
                                         Image.Resampling.BILINEAR)) for k in range(3)]
    write_video(tmp_path / "person.mp4", np.stack(frames), fps=8)
    assert run(files, tmp_path, "--pose", str(tmp_path / "person.mp4"), "--extract", "mediapipe") == 0
    poses = pipeline_call["poses"]
    assert poses.shape == (3, S, S, 3)
    drawn = poses.max(-1) > 0
    assert drawn.mean(axis=(1, 2)).max() < 0.3, "skeletons on black, not the photograph"
    xs = [np.nonzero(d)[1].mean() for d in drawn]
    step = shift * S / 256
    np.testing.assert_allclose(np.diff(xs), [step, step], atol=step / 2)
