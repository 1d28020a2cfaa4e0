"""One more round of demo training on one GPU, in one command: data, stage 1, stage 2, scores, a packed folder.

    python tools/demo_round.py --work /tmp/round --minutes 3     # stage 1's time; the other phases come on top

The CPU rounds of docs/demo_training.md train at about 8 images a second; a GPU trains this small model far faster,
so a lent device's few minutes are worth hours here. The steps, each run as the command a person would type:

1. data: --shards shards of new training characters with their own seeds, generated in parallel, and in the
   background the evaluation set (`python -m aa.synthetic` with round 1's arguments: the clips every CPU round was
   scored on), all as raw .npz clips, which need no PyAV (GPU machines may lack it) and load without decoding;
2. stage 1 from --init (the bundled demo): a short calibration run measures seconds per step, then the real run
   gets as many steps as fit in --minutes (or exactly --stage1-steps), the last half decaying to zero;
3. stage 2 (the temporal layers, from --init's) for --stage2-steps;
4. packing: the fp16 folder with the bundled demo's reference, poses, guidance and steps (tools/pack_demo.py);
5. scores: the new folder beside --init on the first 10 val clips (where a round is chosen), then the new one on
   test_chars with the hue probe and on test_motions (tools/eval.py).

Writes --work/report.md (the phase times and both score tables), --work/demo (the packed folder), --work/logs (one
log per command) and the data and run folders. Stops at the first command that fails, naming its log.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# round 1's dataset (seed 0): its val, test_chars and test_motions clips are the ones every CPU round was scored on
EVAL_DATA_ARGS = ["--size", "96", "--train-characters", "60", "--val-characters", "6", "--test-characters", "10",
                  "--clips-per-character", "3", "--frames", "24", "--backgrounds", "flat", "gradient", "horizon"]
SHARD_SEED = 100  # shard i draws its characters with seed 100 + i: none of the CPU rounds' seeds (0, 1, 2)


Job = tuple[subprocess.Popen, list[str], Path]


def start(cmd: list[str], log: Path, threads: int | None = None) -> Job:
    """Start a command from the repository root, its output in `log` (with the command line on top)."""
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log.open("w") as f:
        f.write(" ".join(cmd) + "\n\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    return proc, cmd, log


def wait(jobs: list[Job]) -> None:
    """Wait for every job; exit with an error line naming the first failed one and its log."""
    failed = [(proc.returncode, cmd, log) for proc, cmd, log in jobs if proc.wait() != 0]
    if failed:
        rc, cmd, log = failed[0]
        more = f" ({len(failed)} commands failed)" if len(failed) > 1 else ""
        sys.exit(f"error: {' '.join(cmd[:3])} ... failed (exit {rc}); its output is in {log}{more}")


def run(cmd: list[str], log: Path) -> None:
    """One command to its end; exit with an error line if it fails."""
    wait([start(cmd, log)])


def last_checkpoint(run_dir: Path) -> Path:
    return max((run_dir / "checkpoints").glob("step_*"))  # step_NNNNNNN: the names sort as the steps


def seconds_per_step(log_jsonl: Path) -> float:
    """Wall seconds per optimizer step between the first and the last entry of a run's log.jsonl (the first
    entry comes after the start-up and the first steps' warm-up, which the rate leaves out)."""
    rows = [json.loads(line) for line in log_jsonl.read_text().splitlines() if line.strip()]
    assert len(rows) >= 2, f"{log_jsonl} has {len(rows)} entries; the calibration run needs at least two"
    return (rows[-1]["time"] - rows[0]["time"]) / (rows[-1]["step"] - rows[0]["step"])


def stage1_steps(minutes: float, sec_per_step: float, most: int) -> int:
    """As many steps as fit in `minutes`, at least 2 and at most `most`, even so the decay is half the run."""
    steps = int(minutes * 60 / sec_per_step)
    return max(2, min(most, steps - steps % 2))


def results_body(results_md: Path) -> list[str]:
    """tools/eval.py's results.md without its title line, to sit under a heading of the report."""
    return [line for line in results_md.read_text().splitlines() if not line.startswith("# ")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="folder for the data, runs, logs, packed demo and report")
    p.add_argument("--init", type=Path, default=ROOT / "weights" / "demo",
                   help="the model folder the round starts from and is scored against (default: the bundled demo)")
    p.add_argument("--eval-data", type=Path, default=None,
                   help="an existing evaluation set (default: generate round 1's under --work/data/eval)")
    p.add_argument("--shards", type=int, default=14,
                   help="training-data generators run at once, one core each (the evaluation set's takes one more)")
    p.add_argument("--characters", type=int, default=100, help="new training characters per shard, one clip each")
    p.add_argument("--frames", type=int, default=24, help="frames per training clip")
    p.add_argument("--minutes", type=float, default=3.0, help="stage 1's training time, calibration excluded")
    p.add_argument("--stage1-steps", type=int, default=None,
                   help="train stage 1 exactly this many steps instead of calibrating to --minutes")
    p.add_argument("--calibration-steps", type=int, default=30,
                   help="steps of the calibration run (seconds per step: between its log's 5th step and its last)")
    p.add_argument("--max-stage1-steps", type=int, default=20000, help="the most stage-1 steps --minutes may give")
    p.add_argument("--batch-size", type=int, default=64, help="stage-1 images per step")
    p.add_argument("--lr", type=float, default=2e-4, help="stage-1 learning rate after warm-up")
    p.add_argument("--stage2-steps", type=int, default=300, help="stage-2 steps")
    p.add_argument("--stage2-batch-size", type=int, default=8, help="stage-2 videos per step")
    p.add_argument("--stage2-frames", type=int, default=12, help="stage-2 frames per video")
    p.add_argument("--region-weight", type=float, default=4.0, help="train.py --region-weight (the bundled demo's)")
    p.add_argument("--workers", type=int, default=12, help="data-loader processes per training run")
    p.add_argument("--pack-clip", type=int, default=3,
                   help="the test_chars clip whose reference and poses the packed folder takes (the bundled demo's)")
    p.add_argument("--eval-clips", type=int, default=10, help="clips per split to score")
    p.add_argument("--device", default=None, help="torch device (default: the GPU if there is one)")
    p.add_argument("--seed", type=int, default=10, help="training seed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    py = sys.executable
    work = args.work.resolve()
    logs, data, runs = work / "logs", work / "data", work / "runs"
    for d in (logs, data, runs):
        d.mkdir(parents=True, exist_ok=True)
    init = args.init.resolve()
    times: dict[str, float] = {}
    device = ["--device", args.device] if args.device else []
    steps = args.stage1_steps

    def phase(name: str, since: float) -> None:
        """Record a phase's time and rewrite the report, so a round cut short leaves what it finished."""
        times[name] = time.perf_counter() - since
        print(f"{name}: {times[name]:.0f} s", flush=True)
        write_report(work, init, args, steps, times)

    # 1. data: the training shards now; the evaluation set in the background until the scores need it
    t = time.perf_counter()
    gen = [py, "-m", "aa.synthetic", "--quiet", "--video-format", "npz"]  # raw clips: no PyAV needed, fast to load
    eval_data = args.eval_data.resolve() if args.eval_data else data / "eval"
    eval_job = [] if args.eval_data else [start(gen + ["--out", str(eval_data), "--seed", "0"] + EVAL_DATA_ARGS,
                                                logs / "data_eval.log", threads=1)]
    shards = [data / f"shard{i:02d}" for i in range(args.shards)]
    wait([start(gen + ["--out", str(shard), "--seed", str(SHARD_SEED + i), "--size", "96",
                       "--train-characters", str(args.characters), "--val-characters", "0", "--test-characters", "0",
                       "--clips-per-character", "1", "--frames", str(args.frames),
                       "--backgrounds", "flat", "gradient", "horizon"], logs / f"data_shard{i:02d}.log", threads=1)
          for i, shard in enumerate(shards)])
    phase("training data", t)

    common = ["--model", "demo", "--data", *[str(s / "train.json") for s in shards],
              "--width", "96", "--height", "96",
              "--workers", str(args.workers), "--colour-augment", "0.5", "--region-weight", str(args.region_weight),
              "--val-every", "0", "--seed", str(args.seed), *device]
    stage1 = [py, "train.py", "--stage", "1", "--init", str(init), "--train-image-encoder",
              "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup", "50", *common]

    # 2. stage 1, sized to the time it is given
    if steps is None:
        t = time.perf_counter()
        calibration = runs / "calibrate"
        run(stage1 + ["--steps", str(args.calibration_steps), "--log-every", "5", "--save-every", "1000000",
                      "--out", str(calibration)], logs / "stage1_calibrate.log")
        rate = seconds_per_step(calibration / "log.jsonl")
        steps = stage1_steps(args.minutes, rate, args.max_stage1_steps)
        print(f"calibration: {rate:.3f} s per step -> {steps} stage-1 steps", flush=True)
        phase("calibration", t)
    t = time.perf_counter()
    s1 = runs / "s1"
    run(stage1 + ["--steps", str(steps), "--decay", str(steps // 2), "--save-every", str(steps),
                  "--out", str(s1)], logs / "stage1.log")
    phase("stage 1", t)

    # 3. stage 2
    t = time.perf_counter()
    s2 = runs / "s2"
    run([py, "train.py", "--stage", "2", "--stage1", str(last_checkpoint(s1)), "--motion", str(init),
         "--frames", str(args.stage2_frames), "--batch-size", str(args.stage2_batch_size), "--lr", "1e-4",
         "--warmup", "20", "--steps", str(args.stage2_steps), "--decay", str(args.stage2_steps // 2),
         "--save-every", str(args.stage2_steps), *common, "--out", str(s2)], logs / "stage2.log")
    phase("stage 2", t)

    # 4. the packed folder, with the bundled demo's recorded sampling settings and its reference and poses
    t = time.perf_counter()
    wait(eval_job)
    recorded = json.loads((init / "config.json").read_text()).get("sampling", {})
    pack = [py, "tools/pack_demo.py", "--checkpoint", str(last_checkpoint(s2)), "--data", str(eval_data),
            "--split", "test_chars", "--clip", str(args.pack_clip), "--out", str(work / "demo")]
    for key in ("guidance", "steps"):
        if key in recorded:
            pack += [f"--{key}", str(recorded[key])]
    run(pack, logs / "pack.log")
    phase("pack", t)

    # 5. scores: both folders on val (where a round is chosen), then the new one on the test splits, the hue probe
    # on held-out characters only (the probe samples every clip once per angle)
    evaluate = [py, "tools/eval.py", "--data", str(eval_data), "--max-clips", str(args.eval_clips), "--quiet",
                "--method", f"round={work / 'demo'}", *device]
    t = time.perf_counter()
    run(evaluate + ["--method", f"start={init}", "--splits", "val", "--out", str(work / "eval_val")],
        logs / "eval_val.log")
    phase("scores: val", t)
    t = time.perf_counter()
    run(evaluate + ["--splits", "test_chars", "--hue-probe", "90", "180", "270", "--out", str(work / "eval_chars")],
        logs / "eval_chars.log")
    run(evaluate + ["--splits", "test_motions", "--out", str(work / "eval_motions")], logs / "eval_motions.log")
    phase("scores: test", t)
    print(f"wrote {work / 'report.md'} and {work / 'demo'}")


def write_report(work: Path, init: Path, args: argparse.Namespace, steps: int | None, times: dict[str, float]) -> None:
    """work/report.md: the settings, each finished phase's time, and the score tables written so far."""
    settings = (f"Stage 1: {steps if steps is not None else '(not sized yet)'} steps, batch {args.batch_size}, lr "
                f"{args.lr}; stage 2: {args.stage2_steps} steps; {args.shards} x {args.characters} new characters.")
    lines = [f"# Demo round from {init}", "", settings, "",
             "| phase | seconds |", "|---|---:|", *[f"| {k} | {v:.0f} |" for k, v in times.items()], "",
             "`round` is the new folder, `start` the one it started from.", ""]
    for name, title in (("val", "val: the new folder beside its start (choose here)"),
                        ("chars", "test_chars and the hue probe"), ("motions", "test_motions")):
        if (work / f"eval_{name}" / "results.md").is_file():
            lines += [f"## {title}", "", *results_body(work / f"eval_{name}" / "results.md"), ""]
    (work / "report.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
