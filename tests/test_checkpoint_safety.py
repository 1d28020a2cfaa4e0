"""Crash safety of training checkpoints: killed runs' temp folders are removed at the next start (only
ours, only dead processes'), pruning never leaves a half-deleted `step_N`, a failed write removes its temp folder and
names the disk, and SIGTERM saves a checkpoint of the current step and exits with one line. tools/kill_trials.py
runs the kill -9 trials on whole training runs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train as train_script
from aa.io.video import write_video
from aa.models import config
from aa.models.bundle import Models
from aa.poses.keypoints import Pose, save_json
from aa.training import checkpoint
from aa.training.checkpoint import clean_stale, latest_checkpoint, load_train_state, save_checkpoint
from aa.training.loop import Trainer

TRAINABLE, FROZEN = ("unet", "reference_net", "pose_guider"), ("vae", "image_encoder")


def dead_pid() -> int:
    """The id of a process that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(scope="module")
def models() -> Models:
    torch.manual_seed(0)
    return Models.build(config.tiny())


def save(run: Path, step: int, models: Models, keep: int = 2) -> Path:
    return save_checkpoint(run, step, models, TRAINABLE, FROZEN, {"x": torch.zeros(1)}, {}, keep)


def test_stale_temp_folders_of_dead_runs_are_removed(tmp_path):
    """clean_stale removes `.step_N.tmp<pid>`/`.step_N.old<pid>` folders and frozen/ temp files of dead processes
    and of this one; a live process's temp folder, complete checkpoints and names it doesn't own stay."""
    ckpt, frozen, dead, live = tmp_path / "checkpoints", tmp_path / "frozen", dead_pid(), os.getppid()
    names = ["step_0000002", f".step_0000004.tmp{dead}", f".step_0000001.old{dead}", f".step_0000006.tmp{os.getpid()}",
             f".step_0000008.tmp{live}", ".step_notes", "mine.tmp123"]
    for name in names:
        (ckpt / name).mkdir(parents=True)
        (ckpt / name / "unet.safetensors").write_bytes(b"x" * 10)
    frozen.mkdir()
    for name in (f".vae.safetensors.tmp{dead}", f".config.json.tmp{dead}", "vae.safetensors"):
        (frozen / name).write_bytes(b"x")
    removed = clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".step_0000004.tmp{dead}", f".step_0000001.old{dead}",
                                                      f".step_0000006.tmp{os.getpid()}", f".vae.safetensors.tmp{dead}",
                                                      f".config.json.tmp{dead}"])
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(["step_0000002", f".step_0000008.tmp{live}",
                                                             ".step_notes", "mine.tmp123"])
    assert [p.name for p in frozen.iterdir()] == ["vae.safetensors"]


def test_a_crash_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path, models, monkeypatch):
    """Killed in the middle of deleting an old checkpoint (simulated: the delete stops after one file), every
    `step_N` left is complete, the newest is the resume point, and the next start removes the remains."""
    save(tmp_path, 1, models)
    save(tmp_path, 2, models)

    rmtree = shutil.rmtree

    def killed(path, ignore_errors=False):
        if ".old" not in Path(path).name:
            return rmtree(path, ignore_errors=ignore_errors)
        next(Path(path).glob("*.safetensors")).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 3, models)  # prunes step 1
    monkeypatch.undo()
    steps = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert steps == ["step_0000002", "step_0000003"]
    assert all(len(list((tmp_path / "checkpoints" / s).glob("*.safetensors"))) == 3 for s in steps)
    assert latest_checkpoint(tmp_path).name == "step_0000003"
    monkeypatch.setattr(checkpoint, "_alive", lambda pid: False)  # as if this process had been killed
    assert [p.name for p in clean_stale(tmp_path)] == [f".step_0000001.old{os.getpid()}"]


def test_a_failed_write_removes_its_temp_folder_and_names_the_disk(tmp_path, models, monkeypatch):
    """ENOSPC while writing the optimizer state: an OSError naming the checkpoint, the error and the free space;
    no temp folder stays and the previous checkpoint is untouched."""
    save(tmp_path, 1, models)

    def full(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(OSError, match=r"checkpoint step 2: .*No space left on device\); \d+ MiB free"):
        save(tmp_path, 2, models)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000001"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """One 4-frame 32x32 video with (empty) keypoints."""
    root = tmp_path_factory.mktemp("data")
    write_video(root / "v.mp4", np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), fps=8)
    save_json(root / "v.json", [Pose(32, 32) for _ in range(4)])
    (root / "train.json").write_text(json.dumps([{"video": "v.mp4", "keypoints": "v.json"}]))
    return root / "train.json"


def test_sigterm_saves_the_current_step_and_exits_with_one_line(manifest, tmp_path, capsys, monkeypatch):
    """SIGTERM during step 2 of 10 (checkpoints due every 100): step 2 finishes, is saved with its optimizer state,
    and train.py exits 143 with one line naming the checkpoint; a killed run's temp folder found at the start is
    gone."""
    real, calls = Trainer.step, []

    def step(self, batches):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batches)

    monkeypatch.setattr(Trainer, "step", step)
    run = tmp_path / "run"
    (run / "checkpoints" / f".step_0000007.tmp{dead_pid()}").mkdir(parents=True)  # a killed run's, removed at start
    argv = ["--data", str(manifest), "--out", str(run), "--model", "tiny", "--width", "32", "--height", "32",
            "--steps", "10", "--save-every", "100", "--workers", "0", "--lr", "1e-3"]
    code = train_script.main(argv)
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert code == 128 + signal.SIGTERM, err
    assert err.startswith("stopped by SIGTERM at step 2; saved ") and "step_0000002" in err, err
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000002"]
    assert load_train_state(run / "checkpoints" / "step_0000002")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert latest_checkpoint(run).name == "step_0000002"  # what --resume auto continues from
