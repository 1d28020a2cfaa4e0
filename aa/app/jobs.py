"""One animation on the device at a time: a first-in first-out queue served by one worker thread, each job in its
own folder, with its progress, an estimate of the time left, and cancellation.

No web framework here (app.py puts a page on top): a job is a function of its `Job`, which it calls back with
`report` (progress) and `check_cancel` (stop here if asked to). The folder of a job is removed when it fails, is
cancelled, or is `release`d (after its outputs were served).
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# job states; the last three are final
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)


class Cancelled(Exception):
    """Raised inside a job by `Job.check_cancel` once its cancellation was asked for."""


class QueueFull(Exception):
    """`JobQueue.submit` when as many jobs wait as the queue takes."""


@dataclass
class Job:
    """One animation: what to run (`inputs`), where (`folder`), how far it is, and how it ended."""

    inputs: Any
    folder: Path
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = QUEUED
    message: str = ""  # the error of a failed job, for the page
    result: Any = None  # what the job function returned
    phase: str = "waiting"  # what it does now: loading the inputs, encoding, denoising, decoding, ...
    done: int = 0  # units of the phase done (windows of steps, frames)
    total: int = 0
    eta: float | None = None  # seconds left, None while not measured yet
    started: float | None = None
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _phase_start: float = 0.0
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    def report(self, phase: str, done: int = 0, total: int = 0, after: float = 0.0) -> None:
        """Progress of the job: `done` of `total` units of `phase`; `after`: seconds the phases after this one are
        expected to take (added to the estimate). The estimate is the phase's own measured rate: seconds so far per
        unit done, times the units left; None until one unit is done."""
        now = time.monotonic()
        if phase != self.phase:
            self.phase, self._phase_start = phase, now
        self.done, self.total = done, total
        rate = (now - self._phase_start) / done if done else None
        self.eta = None if rate is None else rate * (total - done) + after
        self.check_cancel()

    def check_cancel(self) -> None:
        """Raise `Cancelled` if the job was asked to stop."""
        if self._cancel.is_set():
            raise Cancelled

    @property
    def fraction(self) -> float:
        """How far the current phase is, 0..1."""
        return self.done / self.total if self.total else 0.0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (done, failed or cancelled); False on timeout."""
        return self._ended.wait(timeout)


class JobQueue:
    """Jobs run one after the other on one worker thread, in the order they were submitted.

    `run(job)` does the work and returns the job's result; an exception of `errors` fails the job with its message
    (bad input: the user's to fix), any other fails it with its type and message (and is printed on the server's
    stderr), and `Cancelled` cancels it. At most `max_waiting` jobs wait at once."""

    def __init__(self, root: Path, run: Callable[[Job], Any], errors: tuple[type[BaseException], ...] = (ValueError,),
                 max_waiting: int = 16) -> None:
        self.root, self.run, self.errors, self.max_waiting = Path(root), run, errors, max_waiting
        self.root.mkdir(parents=True, exist_ok=True)
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._lock = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="animation-jobs", daemon=True)
        self._worker.start()

    def submit(self, inputs: Any) -> Job:
        """Queue a job for `inputs` in a new folder of its own; QueueFull if `max_waiting` jobs wait already."""
        with self._lock:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"the queue is full ({self.max_waiting} jobs wait already): try again in a while")
            job = Job(inputs, self.root / "pending")
            job.folder = self.root / job.id
            job.folder.mkdir()
            self._waiting.append(job)
            self._lock.notify_all()
            return job

    def position(self, job: Job) -> int:
        """How many jobs run or wait before `job` (0: it runs, or has ended)."""
        with self._lock:
            if job in self._waiting:
                return self._waiting.index(job) + (self._running is not None)
            return 0

    def cancel(self, job: Job) -> None:
        """Stop `job`: a waiting one is dropped at once, a running one at its next progress report."""
        with self._lock:
            job._cancel.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self._end(job, CANCELLED)

    def release(self, job: Job) -> None:
        """Remove the folder of an ended job (once its outputs were served, or nobody will fetch them)."""
        if job.state in FINAL:
            shutil.rmtree(job.folder, ignore_errors=True)

    def jobs(self) -> list[Job]:
        """The running job, then the waiting ones in order."""
        with self._lock:
            return ([self._running] if self._running else []) + list(self._waiting)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every job, wait for the worker to stop, and remove the root folder."""
        with self._lock:
            self._closed = True
            for job in self.jobs():
                self.cancel(job)
            self._lock.notify_all()
        self._worker.join(timeout)
        shutil.rmtree(self.root, ignore_errors=True)

    def _end(self, job: Job, state: str, message: str = "") -> None:
        job.state, job.message, job.finished = state, message, time.monotonic()
        if state != DONE:
            shutil.rmtree(job.folder, ignore_errors=True)
        job._ended.set()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed and not self._waiting:
                    return
                job = self._running = self._waiting.popleft()
                job.state, job.started = RUNNING, time.monotonic()
            try:
                job.check_cancel()
                job.result = self.run(job)
                state, message = DONE, ""
            except Cancelled:
                state, message = CANCELLED, "cancelled"
            except self.errors as e:
                state, message = FAILED, str(e)
            except Exception as e:  # noqa: BLE001 (a bug, not bad input: the page gets one line, the log the traceback)
                import traceback
                traceback.print_exc(file=sys.stderr)
                state, message = FAILED, f"internal error ({type(e).__name__}: {e})"
            with self._lock:
                self._running = None
                if state == DONE and job._cancel.is_set():  # asked to stop after its last report: still stopped
                    state, message = CANCELLED, "cancelled"
                self._end(job, state, message)
