"""A measuring command run in parts (tools/bench_vs_moore.py): each part in a child process under its own time
limit, every measurement and every part's status appended to one JSON-lines results file as it comes, the machine
described first, the headline figures summed up last.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch


def append(path: Path, record: dict) -> None:
    """One JSON line appended with a single write (O_APPEND): lines from several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


class Part:
    """A part running in a child process (`cmd`, from `cwd`) under its time limit; its output kept in `logs` for
    the reason of a failure."""

    def __init__(self, name: str, cmd: list[str], budget: float, logs: Path, cwd: Path) -> None:
        self.name, self.budget, self.start = name, budget, time.monotonic()
        self.stderr = logs / f"{name}.stderr"
        # TMPDIR: the weights a part writes (5 GB at full size) go with the command's temporary folder
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TMPDIR": str(logs)}
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                         start_new_session=True)  # its own group: killed with its workers

    def finish(self) -> dict:
        """Wait for the part within its budget (killing it past it); its status line."""
        try:
            code = self.proc.wait(timeout=max(0.0, self.budget - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.kill()
            return self.status("timeout", f"past its budget of {self.budget:g} s")
        if code == 0:
            return self.status("ok", "")
        lines = [x for x in self.stderr.read_text(errors="replace").splitlines() if x.strip()]
        return self.status("error", f"exit code {code}: {lines[-1] if lines else 'no output'}")

    def kill(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=10)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue

    def status(self, status: str, reason: str) -> dict:
        return {"part": self.name, "status": status, "reason": reason,
                "seconds": round(time.monotonic() - self.start, 1)}


def environment(root: Path, **settings: Any) -> dict:
    """The results file's first line: date, `settings` (the command's), GPU (nvidia-smi's line, without touching
    CUDA here), torch, Python and the commit of the checkout at `root`."""
    def run(cmd: list[str]) -> str | None:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=root, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() or None if r.returncode == 0 else None
    return {"part": "env", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **settings,
            "torch": torch.__version__, "python": sys.version.split()[0],
            "gpu": run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]),
            "commit": run(["git", "rev-parse", "--short", "HEAD"]),
            "dirty": bool(run(["git", "status", "--porcelain", "--untracked-files=no"]))}


def summary(out: Path) -> dict:
    """The headline figures of the results file: the time ratio, each measured peak beside its estimate, compile."""
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    found = lambda part, result: [r for r in lines if r.get("part") == part and r.get("result") == result]
    s: dict[str, Any] = {"part": "summary"}
    for r in found("moore", "comparison"):
        s["ours_over_moore_time"] = r["ratio_median"]
        s["working_gib"] = {"ours": r["ours_working_gib"], "moore": r["moore_working_gib"]}
        s["pixel_max"] = r["pixel_max"]
    estimates = {r["option"]: r["peak_gib"] for r in found("estimate", "inference estimate")}
    s["inference_peak_gib"] = {r["option"]: {"measured": r["peak_gib"], "estimate": estimates.get(r["option"])}
                               for r in found("memory", "inference peak")}
    train = {(r["stage"], r["batch"], r["frames"]): r["total_gib"] for r in found("estimate", "train estimate")}
    s["train_peak_gib"] = {f"stage {r['stage']} batch {r['batch']} frames {r['frames']}":
                           {"measured": r["peak_gib"], "estimate": train.get((r["stage"], r["batch"], r["frames"]))}
                           for r in found("train", "train peak")}
    for r in found("compile", "compile"):
        s["compile"] = {k: r[k] for k in ("compile_s", "speedup", "pixel_max", "recompiles", "graph_breaks")}
    return s
