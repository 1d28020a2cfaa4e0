"""tools/demo_round.py, the one-command GPU round of demo training, run end to end on the CPU at tiny size so it
works the first time a device is lent: it calibrates, trains both stages from the bundled demo, packs, scores the
new folder beside the old one and writes a report; its evaluation set is round 1's, the bytes every round is
scored on."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aa.weights.files import read_state_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import demo_round


def test_stage1_steps_fill_the_minutes_within_bounds():
    """minutes x 60 / seconds per step, made even (the decay is half the run), capped, and at least 2."""
    assert demo_round.stage1_steps(4, 0.05, 20000) == 4800
    assert demo_round.stage1_steps(1, 0.7, 20000) == 84  # 85.7 -> 85 -> even
    assert demo_round.stage1_steps(60, 0.01, 20000) == 20000
    assert demo_round.stage1_steps(0.01, 10.0, 20000) == 2


def test_seconds_per_step_leave_out_the_start(tmp_path):
    """The rate is read between the log's first and last entries, so start-up before the first entry is not in it."""
    log = tmp_path / "log.jsonl"
    rows = [{"step": 5, "time": 1000.0}, {"step": 10, "time": 1001.0}, {"step": 30, "time": 1005.0}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert demo_round.seconds_per_step(log) == pytest.approx(0.2)


def test_evaluation_set_is_round_one_as_documented():
    """The arguments the tool generates its evaluation set with are the ones the training log gives for round 1's
    data (synth96p, seed 0): the same arguments give the same bytes, so a GPU round is scored on the clips every CPU
    round was."""
    doc = (ROOT / "docs" / "demo_training.md").read_text()
    command = re.search(r"python -m aa\.synthetic --out data/synth96p (.*?)#", doc, re.DOTALL).group(1)
    documented = shlex.split(command.replace("\\\n", " "))
    assert "--seed" not in documented  # so the default, 0, which the tool passes explicitly
    assert documented == demo_round.EVAL_DATA_ARGS


def test_round_runs_end_to_end_without_pyav_and_reports_both_folders(tmp_path):
    """Two one-character shards, a 10-step calibration, stage 1 sized to the minutes, 2 stage-2 steps, one clip
    per split, in a Python where `import av` fails (GPU machines may have no PyAV): the packed folder keeps the
    start's VAE, recorded sampling settings and layers (the temporal ones too, continued from the start's, not new)
    but not its trained weights, and the report holds the phase times, val for both folders, and the hue probe on
    test_chars."""
    no_av = tmp_path / "no_av"
    no_av.mkdir()
    (no_av / "av.py").write_text("raise ImportError('PyAV is not installed on this machine')\n")
    env = {**os.environ, "PYTHONPATH": str(no_av), "OMP_NUM_THREADS": "1"}
    evalset = tmp_path / "eval"
    subprocess.run([sys.executable, "-m", "aa.synthetic", "--quiet", "--out", str(evalset), "--size", "96",
                    "--train-characters", "1", "--val-characters", "1", "--test-characters", "1",
                    "--clips-per-character", "1", "--frames", "6", "--video-format", "npz"],
                   cwd=ROOT, env=env, check=True, timeout=120)
    work = tmp_path / "round"
    r = subprocess.run([sys.executable, "tools/demo_round.py", "--work", str(work), "--eval-data", str(evalset),
                        "--shards", "2", "--characters", "1", "--frames", "6", "--minutes", "0.01",
                        "--calibration-steps", "10", "--stage2-steps", "2", "--stage2-frames", "4",
                        "--batch-size", "2", "--stage2-batch-size", "1", "--workers", "0", "--eval-clips", "1",
                        "--pack-clip", "0", "--device", "cpu"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert r.returncode == 0, r.stdout + r.stderr + "".join(
        f"\n--- {log.name}\n" + log.read_text()[-2000:] for log in sorted((work / "logs").glob("*.log")))
    steps = int(re.search(r"calibration: [\d.]+ s per step -> (\d+) stage-1 steps", r.stdout).group(1))
    assert sorted(p.name for p in (work / "runs" / "s1" / "checkpoints").iterdir()) == [f"step_{steps:07d}"]

    init, demo = ROOT / "weights" / "demo", work / "demo"
    assert json.loads((demo / "config.json").read_text())["sampling"]["guidance"] == \
        json.loads((init / "config.json").read_text())["sampling"]["guidance"]
    vae_old, vae_new = read_state_dict(init / "vae.safetensors"), read_state_dict(demo / "vae.safetensors")
    assert all(torch.equal(vae_old[k], vae_new[k]) for k in vae_old)
    unet_old, unet_new = read_state_dict(init / "unet.safetensors"), read_state_dict(demo / "unet.safetensors")
    assert set(unet_new) == set(unet_old), "the packed UNet lost or gained layers (the temporal ones: packed stage 1?)"
    assert any(not torch.equal(unet_old[k], unet_new[k]) for k in unet_old)
    motion = [k for k in unet_old if ".motion_modules." in k]  # stage 2 continues the start's temporal layers
    assert motion and max((unet_new[k].float() - unet_old[k].float()).abs().max().item() for k in motion) < 0.01
    assert sorted(p.name for p in (work / "runs" / "s2" / "checkpoints").iterdir()) == ["step_0000002"]

    report = (work / "report.md").read_text()
    for phase in ("training data", "calibration", "stage 1", "stage 2", "pack", "scores: val", "scores: test"):
        assert f"| {phase} |" in report
    for row in ("| round | val |", "| start | val |", "| round | test_chars@90 |", "| round | test_motions |"):
        assert row in report, row
    assert "# Evaluation on" not in report  # the eval tables sit under the report's own headings


def test_a_failed_command_names_its_log(tmp_path):
    """A round whose start folder does not exist stops at stage 1's calibration with one error line naming the log
    that holds train.py's own message; the report keeps the phase that finished (a round cut short keeps its
    results)."""
    r = subprocess.run([sys.executable, "tools/demo_round.py", "--work", str(tmp_path / "w"), "--init",
                        str(tmp_path / "missing"), "--eval-data", str(tmp_path / "none"), "--shards", "1",
                        "--characters", "1", "--frames", "6", "--workers", "0", "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0
    log = tmp_path / "w" / "logs" / "stage1_calibrate.log"
    assert f"its output is in {log}" in r.stderr
    assert "error:" in log.read_text()
    report = (tmp_path / "w" / "report.md").read_text()
    assert "| training data |" in report and "| calibration |" not in report and "## val" not in report
