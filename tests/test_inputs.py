"""sample.py's inputs as users give them: the reference and the poses keep their proportions whatever their size
(--fit), per-frame files load in natural order, NaN keypoints are missing points, Ctrl-C and --frames say what
happened, one honest progress display, a --help that answers at once and says the real defaults, and an optional
extra that says which Pythons it installs on.

`pipeline.animate_iter` is replaced by a recorder (as in test_sample_flags.py), so each run checks what sample.py
hands the pipeline in about a second.
"""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from aa.io.image import natural_key
from aa.io.video import read_frames_folder
from aa.models import config
from aa.models.bundle import Models
from aa.poses.keypoints import Pose, load_json, save_json
from aa.poses.render import BODY_COLORS, render_pose
from aa.sampling import pipeline
from aa.weights.native import save_models

ROOT = Path(__file__).resolve().parents[1]
S = 64  # the tiny model's recorded output size (a multiple of its size factor, 16)
NECK, R_SHOULDER, R_HIP = 1, 2, 8


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    save_models(Models.build(config.tiny()), root / "native", {"prediction": "v", "width": S, "height": S})
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)).save(root / "ref.png")
    return root / "native"


@pytest.fixture
def pipeline_call(monkeypatch) -> dict:
    """Replace `pipeline.animate_iter` with a recorder that returns black frames; the dict gets its arguments."""
    got: dict = {}

    def fake(models, reference, poses, settings, **kwargs):
        got.update(reference=np.asarray(reference), poses=np.asarray(poses), **kwargs)
        return iter([np.zeros((len(poses), kwargs["height"], kwargs["width"], 3), np.uint8)])

    monkeypatch.setattr(pipeline, "animate_iter", fake)
    return got


def run(weights: Path, tmp_path: Path, *flags: str, quiet: bool = True) -> int:
    """sample.py with the tiny weights, a square reference unless --ref is given, output in tmp_path."""
    ref = [] if "--ref" in flags else ["--ref", str(weights.parent / "ref.png")]
    return sample.main(["--weights", str(weights), *ref, "--out", str(tmp_path / "out.mp4"),
                        *(["--quiet"] * quiet), *flags])


def tall_reference(path: Path, width: int = 100, height: int = 140) -> None:
    """A white portrait image with a black 40x40 square in the middle (its aspect ratio is what we measure)."""
    image = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - 40) // 2, (width - 40) // 2
    image[top:top + 40, left:left + 40] = 0
    Image.fromarray(image).save(path)


def square_pose(width: int = 100, height: int = 140) -> Pose:
    """Neck, right shoulder 30 px to its side and right hip 30 px below it: two limbs of equal length."""
    body = np.zeros((18, 3), np.float32)
    body[[NECK, R_SHOULDER, R_HIP]] = [[50, 50, 1], [20, 50, 1], [50, 80, 1]]
    return Pose(width, height, body=body)


def joint(image: np.ndarray, index: int) -> np.ndarray:
    """(x, y) centroid of the pixels painted in joint `index`'s colour (joints are drawn undimmed, limbs at 0.6)."""
    ys, xs = np.nonzero((image == BODY_COLORS[index]).all(-1))
    assert len(xs), f"joint {index} not drawn"
    return np.array([xs.mean(), ys.mean()])


def limb_ratio(image: np.ndarray) -> float:
    """Length of neck -> hip over neck -> shoulder, measured on the rendered joints."""
    neck = joint(image, NECK)
    return float(np.linalg.norm(joint(image, R_HIP) - neck) / np.linalg.norm(joint(image, R_SHOULDER) - neck))


def square_aspect(image: np.ndarray) -> float:
    """Width over height of the dark square in an (h, w, 3) image."""
    ys, xs = np.nonzero(image.mean(-1) < 100)
    return (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)


# ---------------------------------------------------------------------------------------------------- 1. aspect
@pytest.mark.parametrize("mode", ["letterbox", "crop"])
def test_portrait_reference_and_poses_keep_their_proportions(weights, tmp_path, pipeline_call, mode):
    """A 100x140 reference and keypoints on a 100x140 canvas, animated at 64x64: the square in the reference stays
    square (as the pipeline resizes what it is given) and the rendered neck->hip / neck->shoulder length ratio stays
    the input's (1), with --fit letterbox (the default) and crop."""
    tall_reference(tmp_path / "ref.png")
    save_json(tmp_path / "pose.json", [square_pose()] * 2)
    flags = ["--ref", str(tmp_path / "ref.png"), "--pose", str(tmp_path / "pose.json")]
    assert run(weights, tmp_path, *flags, *(["--fit", mode] if mode != "letterbox" else [])) == 0
    reference = np.asarray(Image.fromarray(pipeline_call["reference"]).resize((S, S), Image.Resampling.LANCZOS))
    assert square_aspect(reference) == pytest.approx(1, abs=0.08)
    assert limb_ratio(pipeline_call["poses"][0]) == pytest.approx(1, abs=0.08)


def test_stretch_distorts_as_asked(weights, tmp_path, pipeline_call):
    """--fit stretch squashes both the reference and the poses by the same factor (140/100 here)."""
    tall_reference(tmp_path / "ref.png")
    save_json(tmp_path / "pose.json", [square_pose()])
    assert run(weights, tmp_path, "--ref", str(tmp_path / "ref.png"), "--pose", str(tmp_path / "pose.json"),
               "--fit", "stretch") == 0
    assert square_aspect(pipeline_call["reference"]) == pytest.approx(1.4, abs=0.1)
    assert limb_ratio(pipeline_call["poses"][0]) == pytest.approx(1 / 1.4, abs=0.08)


def test_square_pose_images_into_a_narrow_output_are_not_squeezed(weights, tmp_path, pipeline_call):
    """96x96 pose images at a 64x96 output are letterboxed (a square stays square), not squeezed to 2:3."""
    folder = tmp_path / "poses"
    folder.mkdir()
    image = np.full((96, 96, 3), 255, np.uint8)
    image[28:68, 28:68] = 0
    for i in range(2):
        Image.fromarray(image).save(folder / f"{i}.png")
    assert run(weights, tmp_path, "--pose", str(folder), "--width", "64", "--height", "96") == 0
    poses = pipeline_call["poses"]
    assert poses.shape == (2, 96, 64, 3)
    assert square_aspect(poses[0][20:76]) == pytest.approx(1, abs=0.08)  # the bars are black too: skip them


def test_what_the_fit_did_is_one_line(weights, tmp_path, pipeline_call, capsys):
    """A reference or poses of another shape than the output: one line says how each was fitted; none when
    nothing had to be."""
    tall_reference(tmp_path / "ref.png")
    save_json(tmp_path / "pose.json", [square_pose()])
    assert run(weights, tmp_path, "--ref", str(tmp_path / "ref.png"), "--pose", str(tmp_path / "pose.json"),
               quiet=False) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fit ")]
    assert len(lines) == 1, lines
    assert "reference 100x140 letterboxed" in lines[0] and "poses 100x140 letterboxed" in lines[0], lines[0]
    tall_reference(tmp_path / "ref.png", S, S)
    save_json(tmp_path / "pose.json", [square_pose(S, S)])
    assert run(weights, tmp_path, "--ref", str(tmp_path / "ref.png"), "--pose", str(tmp_path / "pose.json"),
               quiet=False) == 0
    assert "fit " not in capsys.readouterr().out


def test_fit_places_images_and_keypoints_alike():
    """The same Fit moves a keypoint and the image pixel under it to the same output pixel (letterbox, crop)."""
    from aa.poses.fit import fit_box, fit_image, fit_pose
    image = np.zeros((70, 50, 3), np.uint8)
    image[40:44, 10:14] = 255  # a 4x4 dot centred on (12, 42)
    pose = Pose(50, 70, body=np.array([[12, 42, 1]] + [[0, 0, 0]] * 17, np.float32))
    for mode in ("letterbox", "crop"):
        fit = fit_box((0, 0, 50, 70), 64, 32, mode)
        placed = fit_image(image, fit)
        ys, xs = np.nonzero(placed.max(-1) > 127)
        np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], fit_pose(pose, fit).body[0, :2], atol=0.75)


# ---------------------------------------------------------------------------------------------------- 2. order
def test_per_frame_json_loads_in_natural_order(tmp_path):
    """frame_0 .. frame_11.json load as 0, 1, 2, ..., 11 (not 0, 1, 10, 11, 2, ...), the order image folders use."""
    folder = tmp_path / "kps"
    folder.mkdir()
    for i in range(12):
        body = np.zeros((18, 3), np.float32)
        body[NECK] = [i + 1, 5, 1]
        save_json(folder / f"frame_{i}.json", [Pose(32, 32, body=body)])
        Image.new("RGB", (4, 4), (i, 0, 0)).save(folder / f"frame_{i}.png")
    assert [p.body[NECK, 0] for p in load_json(folder)] == list(range(1, 13))
    from aa.poses.keypoints import keypoint_files
    assert [f.name for f in keypoint_files(folder)] == sorted((f.name for f in folder.glob("*.json")), key=natural_key)
    assert list(read_frames_folder(folder)[:, 0, 0, 0]) == list(range(12))


# ---------------------------------------------------------------------------------------------------- 3. NaN
def test_nan_and_infinite_keypoints_are_missing_points(weights, tmp_path, pipeline_call):
    """NaN or infinite coordinates (Python's json reads NaN and Infinity) are missing points: the video is made,
    drawn as if those points were 0, 0, 0."""
    pose = square_pose(S, S)
    save_json(tmp_path / "clean.json", [pose])
    frame = json.loads((tmp_path / "clean.json").read_text())["frames"][0]
    body = frame["people"][0]["pose_keypoints_2d"]
    body[3 * R_HIP] = float("nan")
    body[3 * R_SHOULDER + 1] = float("inf")
    (tmp_path / "nan.json").write_text(json.dumps(frame))  # writes NaN and Infinity, as json.dumps does
    assert "NaN" in (tmp_path / "nan.json").read_text()
    loaded = load_json(tmp_path / "nan.json")[0]
    assert (loaded.body[[R_HIP, R_SHOULDER]] == 0).all()
    assert run(weights, tmp_path, "--pose", str(tmp_path / "nan.json")) == 0
    expected = pose.body.copy()
    expected[[R_HIP, R_SHOULDER]] = 0
    assert np.array_equal(pipeline_call["poses"][0], render_pose(Pose(S, S, body=expected), S, S, face=False))


# ---------------------------------------------------------------------------------------------------- 4. stops
def test_ctrl_c_while_importing_is_one_line(tmp_path):
    """Ctrl-C while sample.py imports torch (the first seconds): one `error:` line and exit 130, no traceback. The
    signal is sent from an import hook the moment `import torch` starts, so the timing is exact."""
    hook = (
        "import os, signal, sys, runpy\n"
        "class Hook:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hook())\n"
        f"sys.argv = ['sample.py', '--out', {str(tmp_path / 'out.mp4')!r}, '--quiet']\n"
        "runpy.run_path('sample.py', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", hook], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 128 + signal.SIGINT, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "SIGINT" in r.stderr and not (tmp_path / "out.mp4").exists()


def test_ctrl_c_while_sampling_removes_the_folders_it_made(weights, tmp_path, monkeypatch, capsys):
    """Ctrl-C once sampling has started: exit 130, and the folders made for --out are gone with the file."""
    def interrupted(models, reference, poses, settings, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        yield np.zeros((len(poses), kwargs["height"], kwargs["width"], 3), np.uint8)

    monkeypatch.setattr(pipeline, "animate_iter", interrupted)
    out = tmp_path / "a" / "b" / "out.mp4"
    save_json(tmp_path.parent / f"{tmp_path.name}_pose.json", [square_pose(S, S)])
    assert sample.main(["--weights", str(weights), "--ref", str(weights.parent / "ref.png"), "--pose",
                        str(tmp_path.parent / f"{tmp_path.name}_pose.json"), "--out", str(out),
                        "--quiet"]) == 128 + signal.SIGINT
    assert "SIGINT" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_more_frames_than_poses_says_so(weights, tmp_path, pipeline_call, capsys):
    """--frames 100000 with 2 poses animates the 2 and says so in one line."""
    save_json(tmp_path / "pose.json", [square_pose(S, S)] * 2)
    assert run(weights, tmp_path, "--pose", str(tmp_path / "pose.json"), "--frames", "100000") == 0
    assert len(pipeline_call["poses"]) == 2
    assert "--frames 100000: the pose sequence has 2 poses" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- 5. progress
def test_writing_progress_starts_when_the_frames_do(weights, tmp_path, monkeypatch, capsys):
    """The `writing` bar appears only once denoising is done (the first frames arrive), not at 0 all through it."""
    def slow(models, reference, poses, settings, **kwargs):
        print("DENOISED", file=sys.stderr)  # stands for the pipeline's own step bar finishing
        yield np.zeros((len(poses), kwargs["height"], kwargs["width"], 3), np.uint8)

    monkeypatch.setattr(pipeline, "animate_iter", slow)
    save_json(tmp_path / "pose.json", [square_pose(S, S)] * 2)
    assert run(weights, tmp_path, "--pose", str(tmp_path / "pose.json"), quiet=False) == 0
    err = capsys.readouterr().err
    assert "writing" in err and err.index("DENOISED") < err.index("writing"), err


# ---------------------------------------------------------------------------------------------------- 6. help
@pytest.mark.parametrize("script", ["sample.py", "train.py"])
def test_help_answers_without_torch(script):
    """`--help` builds the parser without importing torch (which takes seconds)."""
    code = (f"import sys, runpy; sys.argv = [{script!r}, '--help']\n"
            f"try:\n    runpy.run_path({script!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr


@pytest.mark.parametrize("script", ["sample.py", "train.py", *sorted(f"tools/{p.name}"
                                                                for p in (ROOT / "tools").glob("*.py"))])
def test_help_shows_each_example_command_line_as_written(script):
    """A command in a script's docstring (its --help text) that goes on over a line ends in a backslash that
    --help shows: written as a bare backslash, Python joins the two lines into one run-on line."""
    source = (ROOT / script).read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
    for line in docstring.splitlines():  # a joined line: "--out runs/vae16         --init ..."
        assert not re.search(r"\S {4,}--", line), f"{script}: two lines of a command joined: {line.strip()[:100]}"


def test_help_states_the_real_defaults(capsys):
    """--window defers to the weights' recorded value, --seed shows 42, --pose names OpenPose folders and BODY_25,
    --model says what demo is, --fit and --pose-size are listed."""
    with pytest.raises(SystemExit):
        sample.parse_args(["--help"])
    flags: dict[str, str] = {}  # flag name -> its help, from the option lines ("  --name ...") on
    name = None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  --"):
            name = line.split()[0][2:]
            flags[name] = ""
        if name is not None:
            flags[name] += " " + " ".join(line.split())
    assert "recorded" in flags["window"] and "default 24" not in flags["window"], flags["window"]
    assert "42" in flags["seed"]
    assert "OpenPose" in flags["pose"] and "BODY_25" in flags["pose"]
    assert "demo (" in flags["model"]
    assert "letterbox" in flags["fit"] and "1920x1080" in flags["pose-size"]


def test_torch_free_names_match_what_they_name():
    """The names --help lists without torch are the ones the code resolves: every --preset has its settings in
    pipeline.SAMPLING_PRESETS, every --dtype and --frozen-dtype / --mixed-precision value is a torch dtype."""
    from aa.sampling.choices import DTYPE_NAMES, PRESETS
    from aa.training.config import TrainConfig
    assert set(PRESETS) == set(pipeline.SAMPLING_PRESETS)
    assert {name: getattr(torch, attr) for name, attr in DTYPE_NAMES.items()} == {
        "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    cfg = TrainConfig(frozen_dtype="bf16", mixed_precision="fp16")
    assert (cfg.frozen_torch_dtype(), cfg.amp_dtype()) == (torch.bfloat16, torch.float16)
    assert TrainConfig(mixed_precision="no").amp_dtype() is None


# ---------------------------------------------------------------------------------------------------- 7. extras
def test_mediapipe_is_skipped_where_it_has_no_wheels():
    """requirements-pose.txt installs MediaPipe 0.10.14 on Python < 3.13 only (its wheels stop at 3.12), CI's 3.11
    included; the README says extraction with it needs Python <= 3.12."""
    from packaging.requirements import Requirement
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-pose.txt").read_text().splitlines()]
    (mediapipe,) = [Requirement(line) for line in lines if line.startswith("mediapipe")]
    assert mediapipe.marker is not None
    assert mediapipe.marker.evaluate({"python_version": "3.11"})
    assert not mediapipe.marker.evaluate({"python_version": "3.13"})
    assert "Python <= 3.12" in (ROOT / "README.md").read_text()
