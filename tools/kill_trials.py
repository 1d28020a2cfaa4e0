"""Kill -9 trials of training: kill tiny runs at random moments, restart them with --resume auto, and
check that each restart leaves no temp folder of a dead process and that the finished run is bit-identical to one
that was never killed.

    OMP_NUM_THREADS=1 python tools/kill_trials.py --kills 20 --work /tmp/kill_trials

Each run checkpoints every step and keeps 2. Half the kills (--aim) wait until the process has a temp or doomed
checkpoint folder (a write or a prune under way) and kill at once; the others come at a random moment. The
report counts the kills that hit a write or prune (such a folder of the killed process present at the kill).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python tools/kill_trials.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.io.video import write_video  # noqa: E402
from aa.poses.keypoints import Pose, save_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LEFTOVER = re.compile(r"\.(?:step_\d+\.(?:tmp|old)|\w+\.(?:safetensors|json)\.tmp)(\d+)")


def make_data(folder: Path) -> Path:
    """One 8-frame 32x32 random video with empty keypoints; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    write_video(folder / "v.mp4", frames, fps=8)
    save_json(folder / "v.json", [Pose(32, 32) for _ in range(8)])
    (folder / "train.json").write_text(json.dumps([{"video": "v.mp4", "keypoints": "v.json"}]))
    return folder / "train.json"


def snapshot(folder: Path) -> Path:
    """A copy of train.py and aa/ to run from, so edits to the working tree during the trials change nothing."""
    shutil.copytree(ROOT / "aa", folder / "aa", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "train.py", folder / "train.py")
    return folder / "train.py"


def command(script: Path, manifest: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, str(script), "--data", str(manifest), "--out", str(out), "--model", "tiny",
            "--width", "32", "--height", "32", "--steps", str(steps), "--save-every", "1", "--keep", "2",
            "--workers", "0", "--lr", "1e-3", "--batch-size", "2", "--log-every", "1", "--resume", "auto"]


def leftovers(run: Path) -> dict[Path, int]:
    """Temp/doomed checkpoint folders and frozen temp files, with the id of the process that made them."""
    found = {}
    for folder in (run / "checkpoints", run / "frozen"):
        for p in folder.glob(".*") if folder.is_dir() else []:
            if m := LEFTOVER.fullmatch(p.name):
                found[p] = int(m.group(1))
    return found


def log_lines(run: Path) -> int:
    path = run / "log.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def last_step(run: Path) -> int:
    """The step of the newest log.jsonl line (the log is appended across restarts)."""
    path = run / "log.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    try:
        return json.loads(lines[-1])["step"] if lines else 0
    except (json.JSONDecodeError, KeyError):  # a line cut by the kill
        return json.loads(lines[-2])["step"] if len(lines) > 1 else 0


def tensors(checkpoint: Path) -> dict:
    import torch
    from safetensors.torch import load_file
    out = {f"{f.stem}.{k}": v for f in sorted(checkpoint.glob("*.safetensors")) for k, v in load_file(f).items()}
    state = torch.load(checkpoint / "train_state.pt", weights_only=True)
    for p, entry in state["optimizer"]["state"].items():
        out.update({f"adam.{p}.{k}": v for k, v in entry.items() if torch.is_tensor(v)})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="kill -9 this many times in total")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    p.add_argument("--work", type=Path, default=Path("/tmp/kill_trials"), help="scratch folder (emptied)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--aim", type=float, default=0.5, help="fraction of kills timed to hit a checkpoint write or "
                                                          "prune (the rest: a random moment)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.work, ignore_errors=True)
    manifest = make_data(args.work / "data")
    script = snapshot(args.work / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    subprocess.run(command(script, manifest, args.work / "reference", args.steps), check=True, env=env,
                   stderr=subprocess.DEVNULL)
    duration = time.time() - t0
    reference = tensors(args.work / "reference" / "checkpoints" / f"step_{args.steps:07d}")
    print(f"reference run: {args.steps} steps in {duration:.1f}s")

    kills, in_write, failures, trial = 0, 0, [], 0
    while kills < args.kills:
        trial += 1
        run, restarts = args.work / f"trial{trial}", 0
        while True:
            before = log_lines(run)
            proc = subprocess.Popen(command(script, manifest, run, args.steps), env=env, stderr=subprocess.DEVNULL)
            deadline, checked = time.time() + rng.uniform(0.4, 1.0) * duration, False
            aim = rng.random() < args.aim  # this kill waits for a checkpoint write or prune of this process
            while proc.poll() is None and time.time() < deadline:
                if not checked and log_lines(run) > before:  # started: the stale leftovers must be gone
                    checked = True
                    if stale := [p.name for p, pid in leftovers(run).items() if pid != proc.pid]:
                        failures.append(f"trial {trial} restart {restarts}: left over {stale}")
                if aim and checked and proc.pid in leftovers(run).values():
                    break  # kill now, in the middle of the write or prune
                time.sleep(0.001 if aim else 0.01)
            if proc.poll() is not None:
                break
            writing = proc.pid in leftovers(run).values()  # (it may finish in the microseconds before the kill)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills, restarts, in_write = kills + 1, restarts + 1, in_write + writing
            where = " (during a write/prune)" if writing else ""
            print(f"trial {trial}: kill {kills} after step {last_step(run)}{where}")
        if proc.returncode != 0:
            failures.append(f"trial {trial}: exit code {proc.returncode}")
            continue
        if stale := [p.name for p in leftovers(run)]:
            failures.append(f"trial {trial}: left over at the end {stale}")
        final = tensors(run / "checkpoints" / f"step_{args.steps:07d}")
        same = final.keys() == reference.keys() and all((final[k] == reference[k]).all() for k in final)
        print(f"trial {trial}: finished after {restarts} kills, {'bit-identical' if same else 'DIFFERENT'}")
        if not same:
            failures.append(f"trial {trial}: final checkpoint differs from the uninterrupted run")
    print(f"{kills} kills in {trial} runs ({in_write} during a checkpoint write or prune): "
          f"{'all good' if not failures else f'{len(failures)} failures'}")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
