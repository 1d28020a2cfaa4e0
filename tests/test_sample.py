"""sample.py end to end on tiny weights (CPU): a playable mp4 with the requested frames, clean failures."""
import numpy as np
import pytest
import torch
from PIL import Image

import sample
from aa.io.video import read_video, video_info, write_video
from aa.models import config
from aa.models.bundle import Models
from aa.weights.native import export_moore, save_models
from aa.weights.sd import save_native

W = H = 32


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny random weights in the Moore layout (+ VAE and CLIP files) and as a native folder; inputs."""
    root = tmp_path_factory.mktemp("sample")
    torch.manual_seed(0)
    models = Models.build(config.tiny())
    export_moore(models, root / "moore")
    save_native(models.vae, root / "vae.safetensors")
    save_native(models.image_encoder, root / "clip.safetensors")
    save_models(models, root / "native", {"prediction": "v", "width": W, "height": H})
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 24, 4), dtype=np.uint8), "RGBA").save(root / "ref.png")
    write_video(root / "pose.mp4", rng.integers(0, 256, (6, H, W, 3), dtype=np.uint8), fps=10)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    return root


def moore_args(root):
    return ["--moore", str(root / "moore"), "--vae", str(root / "vae.safetensors"), "--clip",
            str(root / "clip.safetensors"), "--model", "tiny", "--width", str(W), "--height", str(H)]


def test_moore_layout_writes_a_playable_video(files, tmp_path):
    """--moore with tiny weights: an H.264 mp4 of exactly --frames frames at the requested size and the pose fps."""
    out = tmp_path / "out.mp4"
    code = sample.main(moore_args(files) + ["--ref", str(files / "ref.png"), "--pose", str(files / "pose.mp4"),
                                            "--frames", "5", "--steps", "2", "--out", str(out), "--quiet"])
    assert code == 0
    info = video_info(out)
    assert (info.frames, info.width, info.height) == (5, W, H) and info.fps == pytest.approx(10)
    assert read_video(out).shape == (5, H, W, 3)


def test_native_folder_with_side_by_side_and_sheet(files, tmp_path):
    """--weights (a native folder) takes its recorded size; the side-by-side video is 3 frames wide; a sheet PNG."""
    out, sbs, sheet = tmp_path / "o.mp4", tmp_path / "sbs.mp4", tmp_path / "sheet.png"
    code = sample.main(["--weights", str(files / "native"), "--ref", str(files / "ref.png"), "--pose",
                        str(files / "pose.mp4"), "--steps", "1", "--out", str(out), "--side-by-side", str(sbs),
                        "--sheet", str(sheet), "--quiet"])
    assert code == 0
    assert video_info(out).frames == 6 and video_info(sbs).width == 3 * W
    assert Image.open(sheet).size[1] == 2 * H


@pytest.mark.parametrize("problem", ["missing reference", "unreadable pose video", "missing weights file"])
def test_bad_inputs_fail_cleanly(files, tmp_path, capsys, problem):
    """Exit code 2 and a one-line error naming the problem, before any model runs; no output file appears."""
    ref, pose, args = files / "ref.png", files / "pose.mp4", moore_args(files)
    if problem == "missing reference":
        ref = files / "nope.png"
    elif problem == "unreadable pose video":
        pose = files / "broken.mp4"
    else:
        bad = tmp_path / "moore"
        bad.mkdir()
        for f in (files / "moore").iterdir():
            if f.name != "reference_unet.pth":
                (bad / f.name).write_bytes(f.read_bytes())
        args[1] = str(bad)
    out = tmp_path / "out.mp4"
    code = sample.main(args + ["--ref", str(ref), "--pose", str(pose), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ")
    assert {"missing reference": "nope.png", "unreadable pose video": "broken.mp4",
            "missing weights file": "reference_unet.pth"}[problem] in err
    assert not out.exists()


def test_keypoints_json_is_rendered_and_aligned(files, tmp_path):
    """--pose keypoints JSON is rendered at the output size; --align global with --ref-pose retargets it first."""
    from aa.poses.keypoints import Pose, save_json
    body = np.zeros((18, 3), np.float32)
    body[[0, 1, 2, 5, 8, 11]] = [[50, 20, 1], [50, 35, 1], [40, 35, 1], [60, 35, 1], [45, 70, 1], [55, 70, 1]]
    drive = [Pose(100, 100, body=body + [[k, 0, 0]]) for k in range(4)]
    ref_body = body.copy()
    ref_body[:, :2] = body[:, :2] * 0.5 + 10
    save_json(tmp_path / "drive.json", drive)
    save_json(tmp_path / "ref_pose.json", [Pose(100, 100, body=ref_body)])
    out = tmp_path / "out.mp4"
    code = sample.main(["--weights", str(files / "native"), "--ref", str(files / "ref.png"), "--pose",
                        str(tmp_path / "drive.json"), "--align", "global",
                        "--ref-pose", str(tmp_path / "ref_pose.json"),
                        "--steps", "1", "--out", str(out), "--quiet"])
    assert code == 0 and video_info(out).frames == 4
