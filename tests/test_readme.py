"""README.md's Python API example runs as written, from the repository root, on the bundled demo model."""
import re
from pathlib import Path

import aa.poses.keypoints
import aa.sampling.load
from aa.io.video import video_info

ROOT = Path(__file__).resolve().parents[1]
STEPS, FRAMES = 2, 6  # the example's own 20 steps and 24 frames, cut so the test takes seconds


def python_api_example() -> str:
    """The first ```python block after the '## Python API' heading."""
    readme = (ROOT / "README.md").read_text()
    heading = readme.index("\n## Python API\n")
    block = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE).search(readme, heading)
    assert block is not None, "README.md: no ```python block after '## Python API'"
    return block.group(1)


def test_python_api_example_writes_the_video(tmp_path, monkeypatch):
    """exec the example in a folder holding only weights/ (as the repository root does), with the loaders wrapped to
    record fewer steps and return fewer poses: the video it writes has one frame per pose at the size the loader
    returned."""
    real_load, real_json = aa.sampling.load.load_for_sampling, aa.poses.keypoints.load_json
    sizes = []

    def load_for_sampling(**kwargs):
        models, recorded, size = real_load(**kwargs)
        sizes.append(size)
        return models, {**recorded, "steps": STEPS}, size

    monkeypatch.setattr(aa.sampling.load, "load_for_sampling", load_for_sampling)
    monkeypatch.setattr(aa.poses.keypoints, "load_json", lambda *a, **k: real_json(*a, **k)[:FRAMES])
    (tmp_path / "weights").symlink_to(ROOT / "weights", target_is_directory=True)
    monkeypatch.chdir(tmp_path)

    code = compile(python_api_example(), "README.md (Python API)", "exec")
    exec(code, {"__name__": "readme_example"})  # noqa: S102 (running the README's own code is the point)

    info = video_info(tmp_path / "out.mp4")
    assert sizes, "the example did not call load_for_sampling"
    assert (info.frames, info.width, info.height) == (FRAMES, *sizes[0])
