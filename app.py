"""A local web page for sample.py: upload a character and a dance, watch it animate.

    python app.py                                        # the bundled demo model, on http://127.0.0.1:7860
    python app.py --moore weights/moore-animate-anyone   # any weights sample.py takes, loaded once at start
    python app.py --host 0.0.0.0                         # reachable from other machines (off by default)

Every flag that is not one of this page's own (below) is sample.py's, given at start: the weights (--weights,
--moore, --unet, ...), --device, --dtype, --preset, ... (`python sample.py --help`). The page's settings are
sample.py's flags too, checked by sample.py's own checks. One animation runs at a time; the others wait in a queue
whose position the page shows. Needs `pip install -r requirements-app.txt`.
"""
# no `from __future__ import annotations`: gradio reads the handlers' `gr.Request` annotations as objects
import argparse
import asyncio
import html
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sample
from aa.app.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobQueue, QueueFull
from aa.app.uploads import Limits, check_image, check_video, unpack_zip
from aa.io.cli import EXIT_USAGE, Stopped, StopSignals
from aa.io.video import VideoError, read_image, write_video
from aa.sampling import pipeline
from aa.sampling.plan import prepare_unet
from aa.weights import WeightsError

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


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The page's own flags, and the rest (sample.py's flags, checked by its parser)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback only; 0.0.0.0 "
                                                       "serves every network this machine is on)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--temp", type=Path, help="where to make the folder of this server's uploads, jobs and results "
                                             "(removed at exit) (default: the system's temp folder)")
    p.add_argument("--max-upload-mb", type=float, default=Limits.max_bytes / 2**20,
                   help="largest file a browser may upload (a zip: also its content unpacked)")
    p.add_argument("--max-frames", type=int, default=Limits.max_frames, help="most frames one animation may have")
    p.add_argument("--max-pixels", type=int, default=Limits.max_output_pixels,
                   help="most pixels (width x height) of the result's frames")
    p.add_argument("--max-waiting", type=int, default=16, help="most animations waiting in the queue at once")
    return p.parse_known_args(argv)


def flag_help(parser: argparse.ArgumentParser, flag: str) -> str:
    """The help text of one of sample.py's flags."""
    return next(a.help for a in parser._actions if flag in a.option_strings)


class Server:
    """The loaded weights, the job queue and the sessions' results, without the page: everything the page does is
    a method here (unit-tested without a browser)."""

    def __init__(self, start: list[str], root: Path, limits: Limits | None = None, max_waiting: int = 16) -> None:
        self.start, self.limits, self.root = start, limits or Limits(), Path(root)
        self.parser = sample.build_parser()
        args = self.parse([])
        self.device = sample.check_args(args)
        self.models, self.sampling, self.size, self.dtype = sample.load_weights(args, self.device)
        prepare_unet(self.models.unet, self.models.pose_guider, compile=args.compile)
        self.settings = sample.sampling_settings(args, self.sampling, self.dtype)
        self.demo = sample.uses_demo(args)
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
        sample.check_args(self.args(form, None, None, self.root / "out.mp4"))  # the uploads are checked later
        frames, width, height = form.frames, form.width or self.size[0], form.height or self.size[1]
        if frames is not None and frames > self.limits.max_frames:
            raise ValueError(f"--frames {frames}: more than this server's limit of {self.limits.max_frames}")
        if width * height > self.limits.max_output_pixels:
            raise ValueError(f"--width x --height = {width}x{height}: more than this server's limit of "
                             f"{self.limits.max_output_pixels} pixels a frame")
        sample.check_size(width, height, self.models.size_multiple)

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
        keypoints, fps = sample.read_keypoints(args, pose)
        ref_pose = sample.read_ref_pose(args, reference, keypoints)
        width, height = args.width or self.size[0], args.height or self.size[1]
        poses, fps, _ = sample.load_poses(args, pose, width, height, keypoints, fps, ref_pose)
        reference, _ = sample.fit_reference(args, reference, width, height, ref_pose)
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
        settings = sample.sampling_settings(args, self.sampling, self.dtype)
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
        sample.save_png(sample.contact_sheet(reference, poses, np.concatenate(kept)), args.sheet)
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


ROOT = Path(__file__).resolve().parent
DEMO_REFERENCE, DEMO_POSES = sample.DEMO / "reference.png", sample.DEMO / "poses.json"


def status_html(text: str, fraction: float | None = None) -> str:
    """The page's status box: a progress bar (when `fraction` is given) and one line, errors in red."""
    error = text.startswith("error:")
    bar = "" if fraction is None else f'<progress value="{fraction:.3f}" max="1" style="width:100%"></progress>'
    colour = "#b00020" if error else "inherit"
    return (f'<div id="aa-status" data-state="{"error" if error else "ok"}">{bar}'
            f'<p style="color:{colour};margin:4px 0">{html.escape(text)}</p></div>')


def build_page(server: Server):
    """The gradio page over `server`."""
    import gradio as gr

    defaults = server.defaults()
    with gr.Blocks(title="aa: Animate Anyone", analytics_enabled=False) as page:
        gr.Markdown("## Animate Anyone\nA reference image of a character and a sequence of poses in, a video of the "
                    f"character performing the poses out. This server: {html.escape(server.limits.describe())}.")
        with gr.Row():
            with gr.Column():
                reference = gr.Image(value=str(DEMO_REFERENCE) if server.demo else None, type="filepath",
                                     sources=["upload"], label="reference image", elem_id="aa-reference")
            with gr.Column():
                source = gr.Radio(SOURCES, value=EXAMPLE, label="poses", elem_id="aa-source")
                upload = gr.File(label="pose upload", visible=False, elem_id="aa-upload",
                                 file_types=[".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".zip"])
                align = gr.Radio(ALIGNS, value="none", label="--align",
                                 info=flag_help(server.parser, "--align"), elem_id="aa-align")
                preview_button = gr.Button("preview the poses", elem_id="aa-preview-button")
                preview = gr.Image(label="pose preview", interactive=False, elem_id="aa-preview")
        with gr.Accordion("settings (sample.py's flags; empty: its default)", open=True), gr.Row():
            # the bounds are stated, and checked by sample.check_args (whose messages name the flag)
            numbers = [gr.Number(value=defaults[flag], label=flag, elem_id=f"aa{flag[1:]}",
                                 info=flag_help(server.parser, flag) + (
                                     f"; at least {sample.MINIMUMS[flag]}" if flag in sample.MINIMUMS else ""))
                       for flag in SETTINGS]
        with gr.Row():
            go = gr.Button("animate", variant="primary", elem_id="aa-animate")
            stop = gr.Button("cancel", elem_id="aa-cancel")
        status = gr.HTML(status_html("ready"), elem_id="aa-status-box")
        with gr.Row():
            video = gr.Video(label="result", interactive=False, elem_id="aa-video", autoplay=True, loop=True)
            sheet = gr.Image(label="contact sheet (reference and poses; the frames made for them)", type="filepath",
                             interactive=False, elem_id="aa-sheet")
        downloads = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="aa-downloads")

        source.change(lambda s: gr.update(visible=s != EXAMPLE, value=None), source, upload, api_visibility="private")

        def on_preview(*values):
            try:
                return server.preview(form_of(values)), status_html("poses ready")
            except INPUT_ERRORS as e:
                return None, status_html(f"error: {server.public(e)}")
            except Exception as e:  # noqa: BLE001 (a bug: one line on the page, the traceback in the server's log)
                import traceback
                traceback.print_exc()
                return None, status_html(f"error: internal error ({type(e).__name__}: {e})")

        inputs = [reference, source, upload, align, *numbers]

        def form_of(values: tuple) -> Form:
            """The form from the browser's raw values: files are {"path": ...} (or None), numbers numbers."""
            return Form(*(v.get("path") if isinstance(v, dict) else v for v in values))
        # preprocess=False: the handlers get what the browser sent, and check it themselves (a file that is not an
        # image gets our message, not the framework's bare "Error")
        preview_button.click(on_preview, inputs, [preview, status], api_name="preview", concurrency_limit=1,
                             preprocess=False)

        async def on_animate(reference, source, upload, align, frames, width, height, steps, guidance, seed,
                             window, request: gr.Request):  # gradio passes the inputs one by one, then the request
            session = request.session_hash or ""
            form = form_of((reference, source, upload, align, frames, width, height, steps, guidance, seed, window))
            try:
                server.check_form(form)
                job = server.queue.submit(form)
            except (*INPUT_ERRORS, QueueFull) as e:
                yield status_html(f"error: {server.public(e)}"), None, None, None
                return
            server.current[session] = job
            try:
                yield status_html(server.status(job), 0.0), None, None, None
                while not job.wait(0):
                    await asyncio.sleep(0.2)
                    yield status_html(server.status(job), server.progress(job)), gr.skip(), gr.skip(), gr.skip()
                if job.state == DONE:
                    result, sheet_path = server.serve(job, session)
                    yield (status_html(f"done: {job.result['frames']} frames at {job.result['fps']:g} fps", 1.0),
                           str(result), str(sheet_path), [str(result), str(sheet_path)])
                else:
                    yield status_html(server.status(job)), None, None, None
            finally:  # also when the browser leaves or the event is cancelled: the worker removes its folder
                if server.current.get(session) is job:
                    del server.current[session]
                server.queue.cancel(job)  # a no-op once it has ended
                server.queue.release(job)

        go.click(on_animate, inputs, [status, video, sheet, downloads], api_name="animate", preprocess=False,
                 concurrency_limit=server.queue.max_waiting + 1, show_progress="hidden")

        def on_cancel(request: gr.Request):
            return status_html(server.cancel(request.session_hash or ""))

        stop.click(on_cancel, None, status, api_name="cancel", concurrency_limit=None, show_progress="hidden")
        def on_unload(request: gr.Request) -> None:
            server.end_session(request.session_hash or "")

        page.unload(on_unload)
    return page


def main(argv: list[str] | None = None) -> int:
    """Load the weights, serve the page until SIGTERM or Ctrl-C, then remove every file it made."""
    opts, start = parse_args(argv)
    if opts.temp is not None:
        opts.temp.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="aa-app-", dir=opts.temp))
    os.environ["GRADIO_TEMP_DIR"] = str(root)  # uploads land here too, so one folder holds all and is removed
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    limits = Limits(max_bytes=int(opts.max_upload_mb * 2**20), max_frames=opts.max_frames,
                    max_output_pixels=opts.max_pixels)
    try:
        server = Server(start, root, limits, opts.max_waiting)
    except INPUT_ERRORS as e:
        shutil.rmtree(root, ignore_errors=True)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    page = None
    try:
        with StopSignals(raise_now=True):
            page = build_page(server)
            page.queue(max_size=4 * opts.max_waiting)
            page.launch(server_name=opts.host, server_port=opts.port, max_file_size=limits.max_bytes,
                        prevent_thread_lock=True, quiet=True, ssr_mode=False, show_error=False)
            print(f"serving on http://{opts.host}:{page.server_port} (files in {root}); Ctrl-C stops", flush=True)
            page.block_thread()
    except Stopped:
        pass
    except OSError as e:  # the port is taken, or the address is not this machine's
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        server.close()  # first: the files go even if closing the web server is slow
        if page is not None:
            page.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
