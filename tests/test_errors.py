"""Bad inputs to sample.py and train.py: each gives exit code 2 and one `error:` line, before the weights
load where possible and always before sampling, and leaves no file at the output paths; real OpenPose JSON works;
malformed pose JSON and manifests name their file; failed writes and SIGTERM leave nothing behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample
import train as train_script
from aa.io.video import write_video
from aa.poses import inputs
from aa.poses.keypoints import BODY_POINTS, Pose, load_json, save_json
from aa.training.data import DataConfig, Entry, PoseVideoDataset, read_manifest
from tests.helpers import write_tiny_inputs

ROOT = Path(__file__).resolve().parents[1]
W = H = 32  # the tiny model's size factor is 16 (VAE 8x, UNet 2x)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Tiny native weights (recorded size 32x32), a 40x24 reference image, a 3-frame pose video."""
    return write_tiny_inputs(tmp_path_factory.mktemp("errors"), W, (24, 40), fps=10)


def openpose_frame(body25: np.ndarray) -> dict:
    """One frame exactly as OpenPose's --write_json writes it (BODY_25, with face and hands, no canvas size)."""
    return {"version": 1.3, "people": [{
        "person_id": [-1], "pose_keypoints_2d": body25.reshape(-1).tolist(),
        "face_keypoints_2d": [0.0] * 210, "hand_left_keypoints_2d": [0.0] * 63, "hand_right_keypoints_2d": [0.0] * 63,
        "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}]}


def write_openpose_folder(folder: Path, frames: int) -> np.ndarray:
    """Per-frame OpenPose files named as OpenPose names them; returns the BODY_25 points (frames, 25, 3)."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.uniform(2, 30, (frames, 25, 2)), np.ones((frames, 25, 1))], axis=2).round(3)
    for i in range(frames):
        (folder / f"clip_{i:012d}_keypoints.json").write_text(json.dumps(openpose_frame(points[i])))
    return points


def run_sample(files: Path, out_dir: Path, *extra: str, pose: Path | None = None) -> list[str]:
    return ["--weights", str(files / "native"), "--ref", str(files / "ref.png"), "--pose",
            str(pose or files / "pose.mp4"), "--steps", "1", "--out", str(out_dir / "out.mp4"), "--quiet", *extra]


def assert_one_error(capsys, code: int, expected: int = 2, match: str = "") -> str:
    err = capsys.readouterr().err
    assert code == expected, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err
    return err


def test_openpose_body25_maps_to_our_18_points(tmp_path):
    """OpenPose's default BODY_25 layout loads as our 18 points: MidHip (8) and the feet (19-24) dropped, RHip..LEar
    shifted down by one; a folder of per-frame files loads in order at the given canvas size."""
    points = write_openpose_folder(tmp_path / "op", 3)
    poses = load_json(tmp_path / "op", 96, 64)
    assert len(poses) == 3 and (poses[0].width, poses[0].height) == (96, 64)
    for pose, p25 in zip(poses, points):
        np.testing.assert_allclose(pose.body[:8], p25[:8], atol=1e-3)  # nose .. left wrist
        np.testing.assert_allclose(pose.body[8:], p25[9:19], atol=1e-3)  # right hip .. left ear
    assert pose.body.shape == (BODY_POINTS, 3)


def test_openpose_folder_samples_with_and_without_a_size(files, tmp_path, monkeypatch):
    """sample.py --pose <OpenPose folder> works with --pose-size (the canvas: 40x24 here) and without it (OpenPose
    records no canvas: the box around all frames' keypoints, with a margin, becomes the canvas)."""
    points = write_openpose_folder(tmp_path / "op", 3)
    code = sample.main(run_sample(files, tmp_path, "--pose-size", "40x24", pose=tmp_path / "op"))
    assert code == 0 and (tmp_path / "out.mp4").exists()
    seen = []

    def load_poses(args, path, width, height, keypoints, fps, ref_pose):
        seen.extend(keypoints)
        raise ValueError("seen")  # no need to sample again

    monkeypatch.setattr(inputs, "load_poses", load_poses)
    assert sample.main(run_sample(files, tmp_path, "--pose-size", "40x24", pose=tmp_path / "op")) == 2
    assert {(p.width, p.height) for p in seen} == {(40, 24)}
    seen.clear()
    assert sample.main(run_sample(files, tmp_path, pose=tmp_path / "op")) == 2
    span = points[..., :2].max((0, 1)) - points[..., :2].min((0, 1))
    margin = 0.1 * span.max()
    assert {(p.width, p.height) for p in seen} == {tuple(int(np.ceil(v)) for v in span + 2 * margin)}
    body = np.concatenate([p.body for p in seen])
    assert body[:, :2].min(0) == pytest.approx([margin, margin], abs=0.01)  # float32 keypoints


BAD_POSE_JSON = {
    "top-level list": [], "people is a string": {"people": "x"}, "a null person": {"people": [None]},
    "frames is a string": {"frames": "abc"}, "a frame is a number": {"frames": [1]},
    "keypoints not numbers": {"canvas_width": 8, "canvas_height": 8, "people": [{"pose_keypoints_2d": "abc"}]},
    "54 numbers but 17 points": {"canvas_width": 8, "canvas_height": 8, "people": [{"pose_keypoints_2d": [1] * 51}]},
    "no canvas": {"people": [{"pose_keypoints_2d": [1] * 54}]},
}


@pytest.mark.parametrize("case", sorted(BAD_POSE_JSON))
def test_malformed_pose_json_names_the_file(tmp_path, case):
    """Every wrongly structured keypoints file is a ValueError that names the file (no AttributeError/KeyError)."""
    path = tmp_path / "kps.json"
    path.write_text(json.dumps(BAD_POSE_JSON[case]))
    with pytest.raises(ValueError, match="kps.json"):
        load_json(path, *((None, None) if case == "no canvas" else (8, 8)))


@pytest.mark.parametrize("items", [["x.mp4"], [1], [{"video": 3, "keypoints": "k.json"}], {"video": "x"}, [[]]])
def test_malformed_manifest_names_the_file(tmp_path, items):
    """A manifest entry that isn't an object of path strings is a ValueError naming the manifest."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps(items))
    with pytest.raises(ValueError, match="train.json"):
        read_manifest(path)


def test_a_malformed_keypoints_file_is_a_skipped_sample(tmp_path, caplog):
    """In training, a video whose keypoints file holds `[]` is skipped with a warning naming it; the next is used."""
    rng = np.random.default_rng(0)
    write_video(tmp_path / "v.mp4", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), fps=8)
    save_json(tmp_path / "good.json", [Pose(32, 32) for _ in range(4)])
    (tmp_path / "bad.json").write_text("[]")
    data = PoseVideoDataset([Entry(tmp_path / "v.mp4", keypoints=tmp_path / "bad.json"),
                             Entry(tmp_path / "v.mp4", keypoints=tmp_path / "good.json")],
                            DataConfig(32, 32, clip_size=28))
    with caplog.at_level("WARNING", logger="aa.training.data"):
        sample_ = data[(0, 0)]
    assert sample_["target"].shape == (1, 3, 32, 32) and data.bad == {0}
    assert any("skipping" in r.getMessage() and "bad.json" in r.getMessage() for r in caplog.records)


PRE_LOAD = {  # flags refused before any weights are read
    "--steps 0": "--steps", "--window 0": "--window", "--overlap -2": "--overlap",
    "--window 4 --overlap 4": "--overlap", "--fps -5": "--fps", "--guidance nan": "--guidance",
    "--frames -1": "--frames", "--width 0": "--width", "--device nope": "--device", "--device cuda:7": "--device",
    "--device cuda": "CUDA is not available",
    "--out OUT/out.png": ".mp4", "--sheet OUT/s.mp4": ".png", "--side-by-side OUT/out.mp4": "same file",
    "--out OUT/dir.mp4": "is a folder", "--pose OUT/missing.mp4": "missing.mp4",
    "--out /proc/aa_out.mp4": "cannot write in /proc",  # a folder nobody, root included, can create files in
}


@pytest.mark.parametrize("flags", sorted(PRE_LOAD))
def test_bad_flags_fail_before_loading(files, tmp_path, capsys, monkeypatch, flags):
    """Each bad flag: exit 2 and one `error:` line naming it, before the weights load; no file in the output folder."""
    if flags.startswith("--device cuda") and torch.cuda.device_count() > (7 if ":" in flags else 0):
        pytest.skip("this machine has that CUDA device")
    (tmp_path / "dir.mp4").mkdir()
    from aa.sampling import load as loading  # sample.py imports its loader when it loads
    monkeypatch.setattr(loading, "load_for_sampling", lambda **kw: pytest.fail("weights loaded"))
    extra = flags.replace("OUT", str(tmp_path)).split()
    assert_one_error(capsys, sample.main(run_sample(files, tmp_path, *extra)), match=PRE_LOAD[flags])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4"]


POST_LOAD = {  # need the model (its size factor, its recorded window) but are refused before sampling
    "--width 40": "multiples of 16", "--width 33": "multiples of 16", "--overlap 30": "overlap < window",
}


@pytest.mark.parametrize("flags", sorted(POST_LOAD))
def test_bad_sizes_and_settings_fail_before_sampling(files, tmp_path, capsys, monkeypatch, flags):
    """Sizes are checked against the loaded model's real factor (VAE x UNet downsampling), settings against the
    recorded ones: exit 2, one line, the denoiser never runs, no output."""
    from aa.sampling import pipeline
    monkeypatch.setattr(pipeline, "denoise", lambda *a, **k: pytest.fail("sampling started"))
    assert_one_error(capsys, sample.main(run_sample(files, tmp_path, *flags.split())), match=POST_LOAD[flags])
    assert list(tmp_path.iterdir()) == []


def test_malformed_pose_json_through_sample(files, tmp_path, capsys):
    """A wrongly structured --pose JSON is one error line naming the file, not an AttributeError traceback."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "kps.json").write_text(json.dumps({"people": [None]}))
    assert_one_error(capsys, sample.main(run_sample(files, tmp_path, pose=tmp_path / "in" / "kps.json")),
                     match="kps.json")


def test_a_full_disk_at_the_last_output_removes_every_output(files, tmp_path, capsys, monkeypatch):
    """The sheet (written last) fails with ENOSPC after writing part of its temp file: one error line naming the
    file and the free space, and neither it, its temp file, nor the videos written before it stay."""
    def full(image, fp, format=None, **kw):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError(28, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)
    code = sample.main(run_sample(files, tmp_path, "--side-by-side", str(tmp_path / "sbs.mp4"),
                                  "--sheet", str(tmp_path / "sheet.png")))
    assert_one_error(capsys, code, match="No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_while_sampling_leaves_no_output(files, tmp_path, capsys, monkeypatch):
    """SIGTERM in the middle of writing: exit 143 with one line, no partial video and no temp file."""
    from aa.sampling import pipeline
    real = pipeline.animate_iter

    def interrupted(*args, **kwargs):
        frames = np.concatenate(list(real(*args, **kwargs)))
        yield frames[:1]  # the encoder has the first frame in its temp file when the signal comes
        os.kill(os.getpid(), signal.SIGTERM)
        yield frames[1:]

    monkeypatch.setattr(pipeline, "animate_iter", interrupted)
    code = sample.main(run_sample(files, tmp_path))
    assert_one_error(capsys, code, expected=128 + signal.SIGTERM, match="SIGTERM")
    assert list(tmp_path.iterdir()) == []


def test_a_file_size_limit_while_encoding_leaves_nothing(tmp_path):
    """A real write failure (RLIMIT_FSIZE, as a full disk): write_video raises one VideoError naming the file and
    the free space, and removes its temp file."""
    script = textwrap.dedent(f"""
        import resource, signal, numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        from aa.io.video import VideoError, write_video
        frames = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
        try:
            write_video({str(tmp_path / 'out.mp4')!r}, frames, 8)
        except VideoError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "out.mp4: write failed (File too large)" in out.stdout, out.stdout + out.stderr
    assert "MiB free" in out.stdout and list(tmp_path.iterdir()) == []


TRAIN_BAD = {
    "--steps 0": "--steps", "--lr nan": "--lr", "--lr 0": "--lr", "--uncond-rate 2": "--uncond-rate",
    "--keep -1": "--keep", "--device cuda:7": "--device", "--out FILE": "not a folder",
    "--resume OUT": "train_state.pt", "--init OUT/nope": "--init", "--data OUT/bad.json": "bad.json",
}


@pytest.mark.parametrize("flags", sorted(TRAIN_BAD))
def test_train_refuses_bad_flags_before_building(tmp_path, capsys, monkeypatch, flags):
    """train.py: each bad flag is exit 2 and one `error:` line before any model is built; nothing is written."""
    if flags.startswith("--device cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    (tmp_path / "train.json").write_text(json.dumps([{"video": "v.mp4", "keypoints": "k.json"}]))
    (tmp_path / "bad.json").write_text(json.dumps([{"video": "v.mp4"}]))
    (tmp_path / "FILE").write_text("")
    monkeypatch.setattr(train_script, "train", lambda *a: pytest.fail("training started"))
    argv = ["--data", str(tmp_path / "train.json"), "--out", str(tmp_path / "run"), "--model", "tiny"]
    extra = flags.replace("OUT", str(tmp_path)).replace("FILE", str(tmp_path / "FILE")).split()
    assert_one_error(capsys, train_script.main(argv + extra), match=TRAIN_BAD[flags])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "bad.json", "train.json"]
