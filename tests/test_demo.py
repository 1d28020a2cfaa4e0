"""The bundled demo model: `python sample.py` with no weights flags animates the bundled character."""
import json
from pathlib import Path

import sample
from aa.io.video import read_video, video_info

DEMO = Path(sample.__file__).resolve().parent / "weights" / "demo"


def test_bundled_demo_is_small_and_complete():
    """weights/demo holds the five networks (fp16 safetensors, under 30 MB together), a reference and poses."""
    names = ["vae", "image_encoder", "reference_net", "unet", "pose_guider"]
    sizes = [(DEMO / f"{n}.safetensors").stat().st_size for n in names]
    assert sum(sizes) < 30e6
    assert (DEMO / "reference.png").is_file() and (DEMO / "poses.json").is_file()
    assert json.loads((DEMO / "config.json").read_text())["paths"] == {}


def test_sample_with_no_weights_flags_runs_the_demo(tmp_path):
    """A few steps of the demo on its own reference and poses: a valid mp4 at the demo's size, one frame per pose."""
    out = tmp_path / "demo.mp4"
    assert sample.main(["--steps", "2", "--frames", "6", "--out", str(out), "--quiet"]) == 0
    recorded = json.loads((DEMO / "config.json").read_text())["sampling"]
    info = video_info(out)
    assert (info.frames, info.width, info.height) == (6, recorded["width"], recorded["height"])
    assert read_video(out).std() > 5  # an image, not a flat colour
