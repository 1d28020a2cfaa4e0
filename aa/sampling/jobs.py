"""Many videos from one jobs file, on one process or many (`sample.py --jobs`, `torchrun ... sample.py --jobs`).

A jobs file holds one JSON object a line, each a video: the command's per-video flags without their leading `--`
(`{"ref": "a.png", "pose": "a_kps.json", "out": "a.mp4", "steps": 20, "seed": 1}`); flags given on the command line
are every job's defaults. Relative paths are taken from the jobs file's folder. The whole file is checked before
any weights load, with the command's own argument checks. Job i goes to process i % world; each process loads the
weights once, skips the jobs whose outputs all exist (so a killed run resumes where it stopped: outputs are written
atomically, never half), and carries on past a failing job; the failures of all processes are reported at the end.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aa.io.cli import Stopped, check_device
from aa.sampling import command

if TYPE_CHECKING:
    import torch

    from aa.models.bundle import Models

EXIT_FAILED = 1  # some jobs failed (the others were written); a bad jobs file is the command's usage error (2)
GATHER_TIMEOUT = datetime.timedelta(days=7)  # processes with fewer jobs wait this long for the others at the end
# The flags a line of a jobs file may set (the others, weights and device, are the process's), and those it must.
PER_JOB = ("ref", "pose", "pose-size", "fit", "extract", "align", "ref-pose", "face", "no-hands", "out", "side-by-side",
           "sheet", "fps", "frames", "width", "height", "steps", "guidance", "seed", "window", "overlap", "blend",
           "shift-windows", "scheduler")
JOB_REQUIRED = ("ref", "pose", "out")


class JobsError(ValueError):
    """A jobs file that cannot run: the message names the file and the line."""


@dataclass(frozen=True)
class Job:
    """One line of a jobs file: its 1-based line number, its position among the jobs (which decides its process)
    and the command's arguments with the line's values applied."""

    line: int
    index: int
    args: argparse.Namespace


def job_args(base: argparse.Namespace, values: dict[str, Any], actions: dict[str, argparse.Action],
             folder: Path) -> argparse.Namespace:
    """`base` with a job's values applied, each converted as its flag's `type` and `choices` convert the command
    line; switches (`store_true` flags) take JSON true or false. ValueError naming the key on a bad value."""
    args = argparse.Namespace(**vars(base))
    for key, value in values.items():
        action = actions[key]
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool):
                raise ValueError(f"{key!r} is a switch: true or false, got {json.dumps(value)}")
            setattr(args, action.dest, True if value else action.default)
            continue
        if isinstance(value, (bool, list, dict)) or value is None:
            raise ValueError(f"{key!r}: expected a number or a string, got {json.dumps(value)}")
        try:
            converted = action.type(str(value)) if action.type else str(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key!r}: invalid value {json.dumps(value)}") from None
        if action.choices is not None and converted not in action.choices:
            raise ValueError(f"{key!r}: {json.dumps(value)} is not one of {', '.join(map(str, action.choices))}")
        if isinstance(converted, Path) and not converted.is_absolute():
            converted = folder / converted
        setattr(args, action.dest, converted)
    return args


def read_jobs(path: Path, base: argparse.Namespace, parser: argparse.ArgumentParser, per_job: Iterable[str],
              required: Iterable[str], check: Callable[[argparse.Namespace], object],
              outputs: Callable[[argparse.Namespace], list[Path]]) -> list[Job]:
    """Every job of the file, checked (JSON, known and required keys, values, `check` on each job's arguments, no
    output shared by two jobs); JobsError naming the line of the first problem. Blank lines are skipped."""
    if not path.is_file():
        raise JobsError(f"--jobs {path}: no such file")
    flags = {a.option_strings[0][2:]: a for a in parser._actions if a.option_strings}  # "--ref" -> "ref"
    allowed, required = set(per_job) & set(flags), set(required)
    jobs: list[Job] = []
    made_by: dict[Path, int] = {}
    for n, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path} line {n}"
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise JobsError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(values, dict):
            raise JobsError(f"{where}: expected a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise JobsError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; a job takes "
                            f"{', '.join(sorted(allowed))}")
        missing = sorted(required - set(values))
        if missing:
            raise JobsError(f"{where}: missing {', '.join(map(repr, missing))}")
        try:
            args = job_args(base, values, flags, path.parent)
            check(args)
        except ValueError as e:
            raise JobsError(f"{where}: {e}") from None
        for out in outputs(args):
            key = out.resolve()
            if key in made_by:
                raise JobsError(f"{where}: {out} is also the output of line {made_by[key]}")
            made_by[key] = n
        jobs.append(Job(n, len(jobs), args))
    if not jobs:
        raise JobsError(f"--jobs {path}: no jobs in the file")
    return jobs


def job_outputs(args: argparse.Namespace) -> list[Path]:
    """The files one run writes, the video first."""
    return [p for p in (args.out, args.side_by_side, args.sheet) if p is not None]


def load_for_jobs(args: argparse.Namespace) -> tuple[Models, dict, tuple[int, int], torch.dtype]:
    """`command.load_weights`, and the UNet readied for the device (compiled once for all the jobs of the
    process)."""
    from aa.sampling.plan import prepare_unet
    loaded = command.load_weights(args, check_device(args.device))
    prepare_unet(loaded[0].unet, loaded[0].pose_guider, compile=args.compile)
    return loaded


def share(jobs: list[Job], rank: int, world: int) -> list[Job]:
    """This process's jobs: job i goes to process i % world."""
    return [j for j in jobs if j.index % world == rank]


def one_line(error: BaseException) -> str:
    """An exception as one line: its message (with its type when that is not self-explaining)."""
    text = " ".join(str(error).split()) or "(no message)"
    return text if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {text}"


def run_jobs(jobs: list[Job], load: Callable[[argparse.Namespace], Any],
             run: Callable[[argparse.Namespace, list[Path], Any], None],
             outputs: Callable[[argparse.Namespace], list[Path]], log: Callable[[str], None] = print
             ) -> list[tuple[int, str]]:
    """Run `jobs` in order: `load` once (only if some job is left to do), then `run(args, written, loaded)` per job
    whose outputs are not all there yet. A failing job's outputs are removed and its (line, one-line error) kept;
    a stop signal ends the loop. Returns the failures."""
    todo = [j for j in jobs if not all(p.exists() for p in outputs(j.args))]
    for j in jobs:
        if j not in todo:
            log(f"line {j.line}: {outputs(j.args)[0]} exists, skipped")
    if not todo:
        return []
    loaded = load(todo[0].args)  # the weights and device flags are the command line's, the same for every job
    failures: list[tuple[int, str]] = []
    for job in todo:
        written: list[Path] = []
        t0 = time.time()
        try:
            run(job.args, written, loaded)
            log(f"line {job.line}: wrote {', '.join(map(str, written))} in {time.time() - t0:.1f}s")
        except Stopped:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        except Exception as e:  # noqa: BLE001 (one video's bad input or lack of memory must not stop the others)
            for p in written:
                p.unlink(missing_ok=True)
            failures.append((job.line, one_line(e)))
            log(f"line {job.line}: failed: {failures[-1][1]}")
    return failures


def process_group() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a plain `python`. With several
    processes a gloo group is set up for the report at the end (gloo: it needs no GPU and no NCCL)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
    return rank, world, local


def gather(failures: list[tuple[int, str]], world: int) -> list[tuple[int, str]]:
    """Every process's failures, sorted by line (each process waits here until all have finished their jobs)."""
    if world == 1:
        return sorted(failures)
    import torch.distributed as dist
    everyone: list[list[tuple[int, str]] | None] = [None] * world
    dist.all_gather_object(everyone, failures)
    return sorted(f for part in everyone for f in (part or []))


def device_for(name: str | None, local_rank: int, world: int) -> str:
    """Each process on its own GPU: a bare 'cuda' (or no --device, on a machine with CUDA) becomes
    'cuda:<local rank>' when several processes run."""
    if name is None:
        import torch
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return f"cuda:{local_rank}" if name == "cuda" and world > 1 else name


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, check: Callable[[argparse.Namespace], object],
         run: Callable[[argparse.Namespace, list[Path], Any], None], quiet: bool = False) -> int:
    """Read and check `args.jobs` (each job's arguments: `parser`'s, checked by `check`), run this process's share
    (`run(args, written, loaded)` per job, the weights loaded once by `load_for_jobs`), report every process's
    failures (rank 0) and return the exit code: 0, or EXIT_FAILED if any job failed. A bad jobs file raises
    JobsError before any weights load."""
    rank, world, local = process_group()
    args.device = device_for(args.device, local, world)
    jobs = read_jobs(args.jobs, args, parser, PER_JOB, JOB_REQUIRED, check, job_outputs)
    mine = share(jobs, rank, world)
    prefix = f"[rank {rank}] " if world > 1 else ""

    def log(message: str) -> None:
        if not quiet:
            print(prefix + message, flush=True)

    log(f"{len(mine)} of {len(jobs)} jobs here")
    failures = gather(run_jobs(mine, load_for_jobs, run, job_outputs, log), world)
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    if failures and rank == 0:
        print(f"error: {len(failures)} of {len(jobs)} jobs failed (the others were written):", file=sys.stderr)
        for line, message in failures:
            print(f"  {args.jobs} line {line}: {message}", file=sys.stderr)
    return EXIT_FAILED if failures else 0
