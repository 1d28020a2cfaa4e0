"""tools/eval.py's character-region metrics: read from the dataset's boxes, reported next to the whole-frame ones."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aa.eval import benchmark, metrics
from aa.synthetic import write_dataset

SIZE, FRAMES = 48, 3


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48x48 dataset with one 3-frame clip in each test split (boxes included)."""
    root = tmp_path_factory.mktemp("region") / "data"
    write_dataset(root, SIZE, SIZE, train_characters=1, val_characters=0, test_characters=1, clips_per_character=1,
                  frames=FRAMES, progress=False)
    return root


def test_region_scores_look_only_inside_the_grown_box(data: Path) -> None:
    """A method that draws the true frames inside each grown character box and black elsewhere scores char PSNR
    +inf and char SSIM 1 but a finite whole-frame PSNR; the copy baseline's char scores equal aa.eval.metrics' on the
    boxes read from the files; the table has the char columns."""
    clips = benchmark.read_split(data, "test_chars")
    clip = clips[0]
    boxes = np.asarray(json.loads((data / "test_chars" / Path(clip.video).name.replace(".mp4", ".box.json"))
                                  .read_text()))
    assert np.array_equal(clip.boxes, boxes)

    def truth_in_box(reference: np.ndarray, poses: np.ndarray, seed: int) -> np.ndarray:
        out = np.zeros_like(clip.truth)
        for i, box in enumerate(boxes):
            x0, y0, x1, y1 = metrics.grow_box(tuple(box), 3, SIZE, SIZE)
            out[i, y0:y1, x0:x1] = clip.truth[i, y0:y1, x0:x1]
        return out

    methods = {"box": truth_in_box, "copy": benchmark.copy_reference}
    records, _ = benchmark.evaluate(methods, clips, seed=0, progress=False, region_margin=3)
    box, copy = records[0]["metrics"]["box"], records[0]["metrics"]["copy"]
    assert box["char_psnr"] == math.inf and box["char_ssim"] == pytest.approx(1.0) and math.isfinite(box["psnr"])
    copied = benchmark.copy_reference(clip.reference, clip.poses, 0)
    assert copy["char_psnr"] == metrics.region_psnr(copied, clip.truth, boxes, 3)
    assert copy["char_ssim"] == metrics.region_ssim(copied, clip.truth, boxes, 3)
    table = benchmark.markdown_table(benchmark.summarise(records, list(methods), ["test_chars"]))
    assert "char PSNR" in table and "char SSIM" in table


def test_a_dataset_without_boxes_scores_nan(data: Path, tmp_path: Path) -> None:
    """An older dataset (no "boxes" in its manifest) still evaluates: the char metrics are NaN, the rest finite."""
    items = json.loads((data / "test_chars.json").read_text())
    (tmp_path / "test_chars.json").write_text(json.dumps([{k: v for k, v in it.items() if k != "boxes"}
                                                          for it in items]))
    for name in ("test_chars", "characters"):
        (tmp_path / name).symlink_to(data / name)
    clips = benchmark.read_split(tmp_path, "test_chars")
    records, _ = benchmark.evaluate({"copy": benchmark.copy_reference}, clips, seed=0, progress=False)
    row = benchmark.summarise(records, ["copy"], ["test_chars"])["copy"]["overall"]
    assert math.isnan(row["char_psnr"]) and math.isnan(row["char_ssim"]) and math.isfinite(row["psnr"])
