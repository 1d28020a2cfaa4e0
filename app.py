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
import os
import shutil
import sys
import tempfile
from pathlib import Path

import sample
from aa.app.jobs import DONE, QueueFull
from aa.app.server import ALIGNS, EXAMPLE, INPUT_ERRORS, SETTINGS, SOURCES, Form, Server
from aa.app.uploads import Limits
from aa.io.cli import EXIT_USAGE, Stopped, StopSignals
from aa.sampling.command import DEMO_REFERENCE


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
        server = Server(sample.build_parser(), sample.check_args, start, root, limits, opts.max_waiting)
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
