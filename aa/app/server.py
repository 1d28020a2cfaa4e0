"""The web app's server without the page: sample.py's reading and animating behind a job queue, for the forms a
browser sends (app.py builds the page on it). Every form is checked as sample.py checks its flags (the page's
settings are sample.py's flags), then against this server's limits; one animation runs at a time, the others wait.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aa.app.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobQueue
from aa.app.uploads import Limits, check_image, check_video, unpack_zip
from aa.io.image import contact_sheet, save_png
from aa.io.video import VideoError, read_image, write_video
from aa.poses.inputs import fit_reference, load_poses, read_keypoints, read_ref_pose
from aa.sampling import pipeline
from aa.sampling.command import (
    DEMO_POSES,
    DEMO_REFERENCE,
    WEIGHTS,
    check_size,
    load_weights,
    sampling_settings,
    uses_demo,
)
from aa.sampling.plan import prepare_unet
from aa.weights import WeightsError

if TYPE_CHECKING:
    import torch

# Where the poses come from: the page's choice -> how it is read. The driving video needs MediaPipe.
EXAMPLE, POSE_VIDEO, POSE_ZIP, DRIVING_VIDEO = ("the demo's example poses", "a pose video (skeletons on black)",
                                               "a zip of OpenPose JSON files or pose images",
                                               "a driving video of a person (poses extracted with MediaPipe)")
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
SOURCES = [EXAMPLE, POSE_VIDEO, POSE_ZIP] + ([DRIVING_VIDEO] if HAS_MEDIAPIPE else [])
ALIGNS = ["none", "limbs", "global"]
# The page's settings: sample.py's flags (their names, help, minimums and defaults come from sample.py).
SETTINGS = ["--frames", "--width", "--height", "--steps", "--guidance", "--seed", "--window"]
# Bad input: the page shows its message (the same errors sample.py turns into one `error:` line).
INPUT_ERRORS = (ValueError, VideoError, WeightsError, FileNotFoundError, ImportError)


@dataclass
class Form:
    """What the page sends for one animation. Files are the paths of the framework's own uploads."""

    reference: str | None = None
    source: str = EXAMPLE
    upload: str | None = None
    align: str = "none"
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    window: int | None = None


class Server:
    """The loaded weights, the job queue and the sessions' results, without the page: everything the page does is
    a method here (unit-tested without a browser). `parser` and `check` are sample.py's (`build_parser()`,
    `check_args`); `start` its flags given when the server starts (the weights, --device, ...), under every form's."""

    def __init__(self, parser: argparse.ArgumentParser, check: Callable[[argparse.Namespace], torch.device],
                 start: list[str], root: Path, limits: Limits | None = None, max_waiting: int = 16) -> None:
        self.start, self.limits, self.root = start, limits or Limits(), Path(root)
        self.parser, self.check = parser, check
        args = self.parse([])
        self.device = check(args)
        self.models, self.sampling, self.size, self.dtype = load_weights(args, self.device)
        prepare_unet(self.models.unet, self.models.pose_guider, compile=args.compile)
        self.settings = sampling_settings(args, self.sampling, self.dtype)
        self.demo = uses_demo(args)
        self.sessions: dict[str, Path] = {}  # the browser's session id -> its results folder (a name of ours)
        self.current: dict[str, Job] = {}  # session id -> its running or waiting job
        self.decode_rate: float | None = None  # seconds per decoded megapixel-frame, from the last job
        self.queue = JobQueue(self.root / "jobs", self.run, INPUT_ERRORS, max_waiting)

    # ------------------------------------------------------------------------------------------------ the form
    def defaults(self) -> dict[str, float | int | None]:
        """The page's settings before the user changes them: what sample.py would use with these weights (all the
        poses: as many as this server animates, fewer if the sequence is shorter)."""
        return {"--frames": self.limits.max_frames, "--width": self.size[0], "--height": self.size[1],
                "--steps": self.settings.steps, "--guidance": self.settings.guidance,
                "--seed": self.parser.get_default("seed"), "--window": self.settings.window}

    def parse(self, argv: list[str]) -> argparse.Namespace:
        """sample.py's parser over the start flags then `argv` (later flags win); a usage error is a ValueError."""
        try:
            return self.parser.parse_args(self.start + argv)
        except SystemExit:  # argparse printed why on stderr
            raise ValueError(f"not valid flags for sample.py: {' '.join(self.start + argv)}") from None

    def check_form(self, form: Form) -> None:
        """The checks that need no reading of the uploads: sample.py's checks of the settings, this server's limits,
        and that each choice is one the page offers (ValueError naming the field)."""
        if form.source not in SOURCES:
            raise ValueError(f"poses: choose one of: {'; '.join(SOURCES)}")
        if form.align not in ALIGNS:
            raise ValueError(f"--align: choose one of {', '.join(ALIGNS)}")
        if form.reference is None and not self.demo:
            raise ValueError("reference image: upload one (these weights have no demo reference)")
        if form.source != EXAMPLE and form.upload is None:
            raise ValueError(f"poses: upload {form.source}")
        for flag in SETTINGS:
            value = getattr(form, flag[2:])
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"{flag} must be a number, got {value!r}")
            if flag != "--guidance" and value != int(value):
                raise ValueError(f"{flag} must be a whole number, got {value}")
        self.check(self.args(form, None, None, self.root / "out.mp4"))  # the uploads are checked later
        frames, width, height = form.frames, form.width or self.size[0], form.height or self.size[1]
        if frames is not None and frames > self.limits.max_frames:
            raise ValueError(f"--frames {frames}: more than this server's limit of {self.limits.max_frames}")
        if width * height > self.limits.max_output_pixels:
            raise ValueError(f"--width x --height = {width}x{height}: more than this server's limit of "
                             f"{self.limits.max_output_pixels} pixels a frame")
        check_size(width, height, self.models.size_multiple)

    def args(self, form: Form, ref: Path | None, pose: Path | None, out: Path) -> argparse.Namespace:
        """The sample.py command line of this form (the job's own files for --ref, --pose, --out and --sheet)."""
        argv = ["--out", str(out), "--sheet", str(out.with_suffix(".png")), "--quiet"]
        argv += ["--ref", str(ref)] if ref is not None else []
        argv += ["--pose", str(pose)] if pose is not None else []
        for flag in SETTINGS:
            value = getattr(form, flag[2:])
            if value is not None:
                argv += [flag, f"{value:g}" if flag == "--guidance" else str(int(value))]
        if form.align != "none":
            argv += ["--align", form.align]
        if form.source == DRIVING_VIDEO:
            argv += ["--extract", "mediapipe"]
        return self.parse(argv)

    def upload(self, path: str | None) -> Path | None:
        """An uploaded file's path, only if it lies in this server's folder (what the page sends is never trusted
        to name a file elsewhere)."""
        if path is None:
            return None
        if not isinstance(path, str):
            raise ValueError("that file was not uploaded to this page: upload it again")  # noqa: TRY004 (for the page)
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError("that file was not uploaded to this page: upload it again")
        return resolved

    # ------------------------------------------------------------------------------------------------ the inputs
    def read_inputs(self, form: Form, folder: Path) -> tuple[argparse.Namespace, np.ndarray, np.ndarray, float]:
        """Check the form, copy or unpack its uploads into `folder`, and read them as sample.py does: the sample.py
        arguments, the reference (h w 3), the pose images (f h w 3) at the output size, and the frame rate."""
        self.check_form(form)
        ref = DEMO_REFERENCE if form.reference is None else check_image(
            "reference image", self.upload(form.reference), self.limits)
        shutil.copyfile(ref, folder / f"reference{ref.suffix.lower()}")
        ref = folder / f"reference{ref.suffix.lower()}"
        frames = form.frames
        if form.source == EXAMPLE:
            pose = DEMO_POSES
        elif form.source == POSE_ZIP:
            pose = unpack_zip("poses", self.upload(form.upload), folder / "poses", self.limits)
        else:
            pose, count = check_video("poses", self.upload(form.upload), self.limits)
            frames = min(frames or count, count)
            if frames > self.limits.max_frames:
                raise ValueError(f"poses: the video has {count} frames, more than this server's limit of "
                                 f"{self.limits.max_frames}: set --frames to {self.limits.max_frames} or fewer")
        args = self.args(Form(**{**vars(form), "frames": frames}), ref, pose, folder / "result.mp4")
        # sample.py's reading, step by step as in its animate_to_files (the weights are loaded already)
        reference = read_image(ref)
        keypoints, fps = read_keypoints(args, pose, WEIGHTS)
        ref_pose = read_ref_pose(args, reference, keypoints, WEIGHTS)
        width, height = args.width or self.size[0], args.height or self.size[1]
        poses, fps, _ = load_poses(args, pose, width, height, keypoints, fps, ref_pose)
        reference, _ = fit_reference(args, reference, width, height, ref_pose)
        if len(poses) > self.limits.max_frames:
            raise ValueError(f"poses: {len(poses)} frames, more than this server's limit of "
                             f"{self.limits.max_frames}: set --frames to {self.limits.max_frames} or fewer")
        return args, reference, poses, args.fps or fps or self.sampling.get("fps", 8)

    def preview(self, form: Form, columns: int = 8) -> np.ndarray:
        """Up to `columns` evenly spaced pose images of the form, side by side (h, columns w, 3): what the model
        will be given, retargeted if --align is set."""
        folder = self.root / "previews" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        try:
            _, _, poses, _ = self.read_inputs(form, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        idx = np.linspace(0, len(poses) - 1, min(columns, len(poses))).round().astype(int)
        return np.concatenate(list(poses[idx]), axis=1)

    # ------------------------------------------------------------------------------------------------ the job
    def run(self, job: Job) -> dict:
        """Animate one form (on the queue's worker thread): read the inputs, then sample.py's steps with progress
        reports; writes result.mp4 and result.png in the job's folder."""
        job.report("reading the inputs")
        args, reference, poses, fps = self.read_inputs(job.inputs, job.folder)
        width, height = args.width or self.size[0], args.height or self.size[1]
        settings = sampling_settings(args, self.sampling, self.dtype)
        n, megapixels = len(poses), width * height / 1e6
        decode_time = None if self.decode_rate is None else self.decode_rate * n * megapixels
        decode_start = 0.0

        def on_window(done: int, total: int) -> None:
            nonlocal decode_start
            job.report("denoising", done, total, after=decode_time or 0.0)
            if done == total:  # the last step's update is all that remains before decoding
                decode_start = time.monotonic()
                job.report("decoding", 0, n)

        chunks = pipeline.animate_iter(self.models, reference, poses, settings, width=width, height=height,
                                       seed=args.seed, progress=False, on_window=on_window)
        job.report("encoding the reference")
        kept: list[np.ndarray] = []

        def frames():
            for chunk in chunks:
                kept.append(chunk)
                job.report("decoding", sum(map(len, kept)), n)
                yield from chunk

        write_video(args.out, frames(), fps)
        self.decode_rate = (time.monotonic() - decode_start) / (n * megapixels)
        job.report("writing the contact sheet")
        save_png(contact_sheet(reference, poses, np.concatenate(kept)), args.sheet)
        return {"video": args.out, "sheet": args.sheet, "frames": n, "fps": fps}

    def serve(self, job: Job, session: str) -> tuple[Path, Path]:
        """Move a finished job's outputs into its session's folder (kept until the session ends) and remove the
        job's folder; returns the video and the contact sheet."""
        folder = self.sessions.setdefault(session, self.root / "sessions" / uuid.uuid4().hex)
        folder.mkdir(parents=True, exist_ok=True)
        video, sheet = (folder / f"animation_{job.id[:12]}{suffix}" for suffix in (".mp4", ".png"))
        shutil.move(job.result["video"], video)
        shutil.move(job.result["sheet"], sheet)
        self.queue.release(job)
        return video, sheet

    def end_session(self, session: str) -> None:
        """The browser tab closed: cancel its job, remove its results."""
        if (job := self.current.pop(session, None)) is not None:
            self.queue.cancel(job)
        if (folder := self.sessions.pop(session, None)) is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def cancel(self, session: str) -> str:
        """Cancel the session's job, if it has one; a line for the page."""
        job = self.current.get(session)
        if job is None or job.state not in (QUEUED, RUNNING):
            return "nothing to cancel"
        self.queue.cancel(job)
        return "cancelling"

    def public(self, error: Exception | str) -> str:
        """A message for the page: a path in this server's folder is shown by its file name alone."""
        root = re.escape(str(self.root.resolve()))
        return re.sub(root + r"/[^\s'\":]*", lambda m: Path(m.group()).name, str(error))

    def status(self, job: Job) -> str:
        """One line of where `job` stands, for the page."""
        if job.state == QUEUED:
            ahead = self.queue.position(job)
            return f"waiting: {ahead} job{'s' if ahead != 1 else ''} before yours"
        if job.state == RUNNING:
            line = job.phase + (f": {job.done}/{job.total}" if job.total else "")
            if job.phase == "denoising":
                line += " windows of the steps"
            if job.eta is not None:
                line += f", about {job.eta:.0f} s left" + (" (+ decoding)" if job.phase == "denoising"
                                                           and self.decode_rate is None else "")
            return line
        return {DONE: "done", CANCELLED: "cancelled", FAILED: f"error: {self.public(job.message)}"}[job.state]

    def progress(self, job: Job) -> float:
        """The progress bar's position, 0..1: reading and encoding 0-5%, denoising 5-90%, decoding 90-100%."""
        if job.state == DONE or job.phase == "writing the contact sheet":
            return 1.0
        if job.state != RUNNING:
            return 0.0
        start, width = {"denoising": (0.05, 0.85), "decoding": (0.9, 0.1)}.get(job.phase, (0.0, 0.05))
        return start + width * job.fraction

    def close(self) -> None:
        """Cancel every job and remove every file of this server."""
        self.queue.close()
        shutil.rmtree(self.root, ignore_errors=True)

