"""tools/eval.py end to end on a tiny synthetic dataset: the copy-reference baseline and a random tiny model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aa.eval import benchmark, metrics
from aa.io.video import read_video
from aa.models.bundle import Models
from aa.models.config import tiny
from aa.models.vae import AutoencoderKL
from aa.synthetic import write_dataset
from aa.training.vae import save, with_new_decoder
from aa.weights.native import load_models, save_models
from tools import eval as evaluation

SIZE, FRAMES = 32, 4
RANGES = {"psnr": (0.0, 100.0), "ssim": (-1.0, 1.0), "l1": (0.0, 1.0), "temporal": (0.0, 1.0),
          "flicker": (-1.0, 1.0)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 32x32 dataset with one clip of 4 frames in each test split, and a random tiny native checkpoint."""
    root = tmp_path_factory.mktemp("eval")
    write_dataset(root / "data", SIZE, SIZE, train_characters=1, val_characters=0, test_characters=1,
                  clips_per_character=1, frames=FRAMES, progress=False)
    models = Models.build(tiny())
    save_models(models, root / "model", sampling={"prediction": "v", "zero_snr": True, "width": SIZE,
                                                  "height": SIZE})
    return {"data": root / "data", "model": root / "model", "root": root}


@pytest.fixture(scope="module")
def results(bench: dict[str, Path]) -> dict:
    """One evaluation run (shared by the tests below): the copy-reference baseline and the tiny model."""
    argv = ["--data", str(bench["data"]), "--steps", "1", "--guidance", "2", "--out", str(bench["root"] / "out"),
            "--quiet", "--method", "copy=copy-reference", "--method", f"tiny={bench['model']}"]
    return evaluation.main(argv)


def test_results_cover_every_method_split_and_metric(bench: dict[str, Path], results: dict) -> None:
    """One run writes results.json (per-clip and summary metrics of every method on every split, plus overall),
    results.md (the table) and one contact sheet per split; every metric is finite and in its range."""
    out = bench["root"] / "out"
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert list(results["summary"]) == ["copy", "tiny"]
    assert results["methods"]["tiny"]["settings"]["steps"] == 1
    assert results["methods"]["tiny"]["settings"]["prediction"] == "v"
    assert len(results["clips"]) == 2 and {c["split"] for c in results["clips"]} == set(benchmark.SPLITS)
    for method, splits in results["summary"].items():
        assert set(splits) == {*benchmark.SPLITS, "overall"}
        assert splits["overall"]["clips"] == 2
        for name, (low, high) in RANGES.items():
            for row in splits.values():
                assert math.isfinite(row[name]) and low <= row[name] <= high, (method, name, row[name])
            per_clip = [c["metrics"][method][name] for c in results["clips"]]
            assert splits["overall"][name] == pytest.approx(np.mean(per_clip)), "overall weighs clips equally"
    table, by_part = (out / "results.md").read_text().split("## Part ΔE by body part")
    assert table.count("| copy |") == 3 and table.count("| tiny |") == 3 and "SSIM" in table
    assert by_part.count("| copy |") == 3 and "shirt ΔE" in by_part
    for split in benchmark.SPLITS:
        with Image.open(out / f"sheet_{split}.png") as sheet:
            assert sheet.width > (FRAMES + 1) * SIZE and sheet.height >= 4 * SIZE  # poses, truth, 2 methods


def test_every_method_gets_the_same_inputs_and_seed(bench: dict[str, Path]) -> None:
    """Every method receives the same reference, pose images and seed for a clip; the seed is the base seed plus
    the clip's position in its split; the poses are the clip's keypoints rendered at the video size."""
    calls: dict[str, list] = {"a": [], "b": []}

    def recorder(name: str) -> benchmark.Method:
        def method(reference: np.ndarray, poses: np.ndarray, seed: int) -> np.ndarray:
            calls[name].append((reference, poses, seed))
            return benchmark.copy_reference(reference, poses, seed)
        return method

    clips = [c for s in benchmark.SPLITS for c in benchmark.read_split(bench["data"], s)]
    benchmark.evaluate({"a": recorder("a"), "b": recorder("b")}, clips, seed=7, progress=False)
    assert [seed for _, _, seed in calls["a"]] == [7 + c.index for c in clips] == [7, 7]
    for (ref_a, poses_a, _), (ref_b, poses_b, _), clip in zip(calls["a"], calls["b"], clips):
        np.testing.assert_array_equal(ref_a, ref_b)
        np.testing.assert_array_equal(poses_a, poses_b)
        assert poses_a.shape == clip.truth.shape == (FRAMES, SIZE, SIZE, 3) and poses_a.any()


def test_copy_reference_temporal_error_is_the_true_motion(bench: dict[str, Path], results: dict) -> None:
    """The baseline repeats one image, so its temporal error is the ground truth's mean frame-to-frame change and
    its flicker is minus that: the numbers a model must beat to show it moves at all."""
    for clip in results["clips"]:
        truth = read_video(bench["data"] / clip["video"]).astype(np.float64) / 255
        motion = np.abs(np.diff(truth, axis=0)).mean()
        assert motion > 0
        assert clip["metrics"]["copy"]["temporal"] == pytest.approx(motion)
        assert clip["metrics"]["copy"]["flicker"] == pytest.approx(-motion)


def test_recorded_settings_pass_through_and_unknown_ones_fail() -> None:
    """A checkpoint's recorded sampling reaches the pipeline's Settings (e.g. the no-ReferenceNet ablation's
    `reference: false`), flags override it, and a recorded key the pipeline does not know is an error rather than
    silently dropped."""
    settings = benchmark.model_settings({"prediction": "eps", "reference": False, "width": 64, "height": 64},
                                         steps=3, guidance=1.0, window=None, folder=Path("ckpt"))
    assert (settings.prediction, settings.reference, settings.steps, settings.guidance) == ("eps", False, 3, 1.0)
    with pytest.raises(ValueError, match="not_a_setting"):
        benchmark.model_settings({"not_a_setting": 1}, None, None, None, Path("ckpt"))


def test_half_precision_checkpoints_run_on_the_cpu(bench: dict[str, Path], tmp_path: Path) -> None:
    """An fp16 folder (as tools/pack_demo.py writes the bundled demo) is evaluated in fp32 on the CPU: loaded the
    way tools/eval.py loads it, every parameter is fp32 and bit-equal to the fp32 folder rounded to fp16, and the
    two folders' frames agree. Frames are compared within 1 grey level on at most 1% of the values, not exactly:
    the same fp32 computation on differently allocated tensors may sum in another order on the CPU (thread split,
    SIMD alignment), which moves a value across a rounding boundary now and then."""
    models = Models.build(tiny())
    half = {name: {k: v.half() for k, v in m.state_dict().items()} for name, m in models.modules().items()}
    sampling = {"prediction": "v", "zero_snr": True, "width": SIZE, "height": SIZE}
    save_models(models, tmp_path / "half", sampling=sampling, states=half)
    for name, m in models.modules().items():
        m.load_state_dict({k: v.float() for k, v in half[name].items()})
    save_models(models, tmp_path / "rounded", sampling=sampling)

    loaded = [load_models(tmp_path / name, dtype=torch.float32)[0].modules() for name in ("half", "rounded")]
    assert loaded[0].keys() == loaded[1].keys()
    for name in loaded[0]:
        a, b = loaded[0][name].state_dict(), loaded[1][name].state_dict()
        assert a.keys() == b.keys() and all(v.dtype == torch.float32 for v in [*a.values(), *b.values()])
        assert all(torch.equal(a[k], b[k]) for k in a), name

    clip = benchmark.read_split(bench["data"], "test_chars")[0]
    outputs = [benchmark.model_method(tmp_path / name, 1, 1.0, None, "cpu")[0](clip.reference, clip.poses, 0)
               for name in ("half", "rounded")]
    assert outputs[0].shape == clip.truth.shape and outputs[0].dtype == np.uint8
    diff = np.abs(outputs[0].astype(int) - outputs[1].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (diff.max(), (diff > 0).mean())


def test_method_flag_needs_name_and_spec() -> None:
    """--method takes NAME=FOLDER; a bare path is rejected with a usage error."""
    with pytest.raises(SystemExit):
        evaluation.parse_args(["--data", "x", "--method", "runs/full"])


def test_vae_flag_swaps_only_the_decoder(bench: dict[str, Path], tmp_path: Path) -> None:
    """--vae: a train_vae.py file with the checkpoint's own VAE gives the same frames; one with a new, wider decoder
    behind the same encoder gives other frames; one with another encoder (another latent space) is refused."""
    own = load_models(bench["model"])[0].vae
    clip = benchmark.read_split(bench["data"], "test_chars")[0]

    def frames(vae_folder: Path | None) -> np.ndarray:
        vae = benchmark.load_decoder(vae_folder / "vae.safetensors", "cpu") if vae_folder else None
        return benchmark.model_method(bench["model"], 1, 1.0, None, "cpu", vae)[0](clip.reference, clip.poses, 0)

    torch.manual_seed(1)
    for name, vae in [("same", own), ("wide", with_new_decoder(own, (8, 16, 16, 24), 2)),
                      ("other", AutoencoderKL(own.cfg))]:
        (tmp_path / name).mkdir()
        save(vae, tmp_path / name)
    base = frames(None)
    assert np.array_equal(frames(tmp_path / "same"), base)
    assert np.abs(frames(tmp_path / "wide").astype(int) - base).mean() > 1
    with pytest.raises(ValueError, match="another latent space"):
        frames(tmp_path / "other")


def test_hue_probe_rewards_copying_the_reference_colours(bench: dict[str, Path]) -> None:
    """The hue probe scores each clip again with reference and truth hue-rotated alike ('<split>@90'): a method
    that repaints the colours it memorised (the unrotated truth) has part ΔE 0 at 0 degrees and a large one at 90;
    a method that follows the reference's colours (the truth turned as the reference was) has 0 at both."""
    clips = {c.index: c for c in benchmark.read_split(bench["data"], "test_chars")}
    original = clips[0]
    assert original.parts is not None and original.parts.shape == original.truth.shape[:3]

    def memoriser(reference, poses, seed):
        return original.truth

    def copier(reference, poses, seed):
        turned = [a for a in (0, 90) if np.array_equal(benchmark.hue_rotate(original.reference, a), reference)]
        return benchmark.hue_rotate(original.truth, turned[0])

    probe = [original, *benchmark.hue_probe([original], [0, 90])]
    assert [c.split for c in probe] == ["test_chars", "test_chars@90"]
    records, _ = benchmark.evaluate({"memoriser": memoriser, "copier": copier}, probe, seed=0, progress=False)
    summary = benchmark.summarise(records, ["memoriser", "copier"], ["test_chars", "test_chars@90"])
    assert summary["memoriser"]["test_chars"]["part_de"] == 0 and summary["copier"]["test_chars"]["part_de"] == 0
    assert summary["copier"]["test_chars@90"]["part_de"] == 0
    assert summary["memoriser"]["test_chars@90"]["part_de"] > 10
    rotated = summary["memoriser"]["test_chars@90"]
    assert set(rotated["parts"]) == set(records[1]["metrics"]["memoriser"]["parts"])  # the parts the clip has
    assert rotated["parts"] == pytest.approx(records[1]["metrics"]["memoriser"]["parts"])  # one clip: its values
    assert np.mean(list(rotated["parts"].values())) == pytest.approx(rotated["part_de"])
    overall = summary["memoriser"]["overall"]["parts"]
    for part, value in overall.items():  # over both clips: each part's mean
        assert value == pytest.approx(np.mean([r["metrics"]["memoriser"]["parts"][part] for r in records]))
    table = benchmark.part_table(summary)
    assert "| memoriser | test_chars@90 | " in table and all(f"{p} ΔE" in table for p in rotated["parts"])


def test_eval_command_reports_the_hue_probe_and_part_colours(bench: dict[str, Path]) -> None:
    """`--hue-probe 90` adds a '<split>@90' row per split with the per-part colour errors, and a sheet for it."""
    out = bench["root"] / "probe"
    results = evaluation.main(["--data", str(bench["data"]), "--out", str(out), "--quiet", "--hue-probe", "90",
                               "--method", "copy=copy-reference"])
    rows = results["summary"]["copy"]
    assert set(rows) == {*benchmark.SPLITS, *[f"{s}@90" for s in benchmark.SPLITS], "overall"}
    assert all(math.isfinite(rows[s]["part_de"]) and rows[s]["part_de"] > 0 for s in rows)
    assert (out / "sheet_test_chars@90.png").is_file() and "part ΔE" in (out / "results.md").read_text()
    assert "| copy | test_chars@90 | " in (out / "results.md").read_text().split("## Part ΔE by body part")[1]
    with Image.open(out / "sheet_hue_probe.png") as sheet, Image.open(out / "sheet_test_chars.png") as one:
        assert sheet.size == (one.size[0], 2 * one.size[1])  # the first clip at 0 and at 90 degrees


def test_autoencoded_truth_is_the_vae_round_trip_of_the_true_frames(bench: dict[str, Path], tmp_path: Path) -> None:
    """`autoencode:FOLDER` scores the true frames encoded (posterior mean) and decoded by FOLDER's VAE, whatever the
    reference and poses; with --vae the decoder is that file's. A wrong spec is a usage error."""
    clip = benchmark.read_split(bench["data"], "test_chars")[0]
    vae = load_models(bench["model"])[0].vae.float()
    with torch.no_grad():
        x = torch.from_numpy(clip.truth).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x))
    expected = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    row = benchmark.autoencoded(bench["model"], "cpu")
    assert np.array_equal(row(clip.truth), expected)
    records, _ = benchmark.evaluate({"ae": row}, [clip], seed=0, progress=False)
    truth_psnr = records[0]["metrics"]["ae"]["psnr"]
    assert truth_psnr == pytest.approx(metrics.all_metrics(expected, clip.truth)["psnr"])
    torch.manual_seed(1)
    save(with_new_decoder(vae, (8, 16, 16, 24), 2), tmp_path)
    other = benchmark.autoencoded(bench["model"], "cpu", benchmark.load_decoder(tmp_path / "vae.safetensors", "cpu"))
    assert not np.array_equal(other(clip.truth), expected)
    results = evaluation.main(["--data", str(bench["data"]), "--out", str(tmp_path / "out"), "--quiet",
                               "--method", f"floor=autoencode:{bench['model']}"])
    assert results["summary"]["floor"]["test_chars"]["psnr"] == pytest.approx(truth_psnr)
