"""The web app served for real on a loopback port with the demo model at 2 steps: the page in headless Chromium
(upload, preview, animate, a playable video whose first frame is not blank, readable messages for invalid input),
and 8 concurrent jobs through its API (all finish or are cancelled as asked, none mixed up, memory bounded, no
files left).

Needs requirements-app.txt and a Chromium at /usr/bin/chromium (Debian: apt-get install chromium); without them
these tests skip, unless AA_REQUIRE_BROWSER=1 (CI), where a missing piece fails. AA_SCREENSHOT=docs/app.png also
saves the finished page there.
"""
import hashlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
REQUIRED = os.environ.get("AA_REQUIRE_BROWSER") == "1"
EXAMPLE = "the demo's example poses"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need(module: str):
    """Import `module`, or skip (fail under AA_REQUIRE_BROWSER=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip(f"{module} is not installed (pip install -r requirements-app.txt)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`python app.py` in a subprocess: its URL, its files folder, its process id, its output so far."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(self.port), "--temp", str(tmp), "--steps", "2", "--device", "cpu",
             "--max-upload-mb", "1", "--max-frames", "16"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(120):
            self.stop()
            raise AssertionError("app.py did not start in 120 s:\n" + "".join(self.lines))
        self.url = f"http://127.0.0.1:{self.port}/"
        line = next(x for x in self.lines if x.startswith("serving on"))
        self.files = Path(line.split("files in ")[1].split(")")[0])

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("serving on"):
                self.ready.set()

    def rss(self) -> tuple[int, int]:
        """(resident, peak resident) bytes of the server process."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().split("\n")
        kb = {x.split(":")[0]: int(x.split()[1]) for x in status if x.startswith(("VmRSS", "VmHWM"))}
        return kb["VmRSS"] * 1024, kb["VmHWM"] * 1024

    def stop(self) -> float:
        """SIGTERM, as a user's Ctrl-C or a service manager; returns the seconds it took to exit."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return time.monotonic() - t


@pytest.fixture(scope="module")
def served():
    need("gradio")
    tmp = Path(tempfile.mkdtemp(prefix="aa-app-test-"))
    s = Served(tmp)
    yield s
    seconds = s.stop()
    print(f"\napp.py stopped {seconds:.1f} s after SIGTERM")
    left = list(tmp.iterdir())
    shutil.rmtree(tmp, ignore_errors=True)
    assert left == [], f"app.py left files behind: {left}"
    assert s.proc.returncode == 0, "".join(s.lines)


@pytest.fixture(scope="module")
def browser():
    sync_api = need("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if REQUIRED:
            raise AssertionError(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="aa-chromium-")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                        headless=True, viewport={"width": 1100, "height": 900})
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


FIRST_FRAME = """async () => {
    const v = document.querySelector('#aa-video video');
    v.pause();
    if (v.currentTime !== 0) {
        v.currentTime = 0;
        await new Promise(r => v.addEventListener('seeked', r, {once: true}));
    }
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sq = 0, n = 0;
    for (let i = 0; i < d.length; i += 4) { const y = (d[i] + d[i + 1] + d[i + 2]) / 3; sum += y; sq += y * y; n++; }
    const mean = sum / n;
    return {width: c.width, height: c.height, mean: mean, std: Math.sqrt(sq / n - mean * mean),
            duration: v.duration};
}"""


def status(page) -> str:
    return page.inner_text("#aa-status-box").strip()


def wait_status(page, prefix: str, timeout: float = 60) -> str:
    """Wait until the status line starts with `prefix`; returns it."""
    page.wait_for_function(f"() => (document.querySelector('#aa-status') || {{}}).innerText?.trim()"
                           f".startsWith({prefix!r})", timeout=timeout * 1000)
    return status(page)


def test_page_animates_the_uploaded_reference_and_explains_bad_input(served, browser, tmp_path):
    """Upload a reference, pick the example poses, preview them, animate: the page shows a playable video of the
    frames asked for (duration = frames / fps) whose first frame is not blank, a contact sheet, downloads. A long
    run shows its progress and time left and stops on cancel. Then each invalid input shows its message on the
    page, and closing the tab removes its results."""
    ref = tmp_path / "my_character.png"
    Image.open(ROOT / "weights/demo/reference.png").convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(ref)
    page = browser.new_page()
    page.goto(served.url)
    page.wait_for_selector("#aa-animate")
    page.locator("#aa-reference input[type=file]").set_input_files(str(ref))
    page.get_by_label(EXAMPLE).check()
    page.locator("#aa-frames input").fill("8")
    page.click("#aa-preview-button")
    assert wait_status(page, "poses ready") == "poses ready"
    page.wait_for_selector("#aa-preview img")
    t = time.monotonic()
    page.click("#aa-animate")
    assert wait_status(page, "done:", timeout=120) == "done: 8 frames at 8 fps"
    page.wait_for_function("() => document.querySelector('#aa-video video')?.readyState >= 2", timeout=30_000)
    print(f"\nbrowser: animate clicked -> video ready in {time.monotonic() - t:.1f} s")
    frame = page.evaluate(FIRST_FRAME)
    assert frame["duration"] == pytest.approx(8 / 8, abs=0.15)
    assert (frame["width"], frame["height"]) == (96, 96)
    assert frame["std"] > 10 and 10 < frame["mean"] < 245, frame  # a picture, not a flat frame
    page.wait_for_selector("#aa-sheet img")
    assert page.locator("#aa-downloads").inner_text().count("animation_") == 2
    shot = Path(os.environ.get("AA_SCREENSHOT") or tmp_path / "app.png")
    page.screenshot(path=str(shot), full_page=True)
    assert len(list((served.files / "sessions").rglob("*.mp4"))) == 1  # the result, kept for this session

    page.locator("#aa-steps input").fill("500")  # long enough to be seen running, then cancelled
    page.click("#aa-animate")
    running = wait_status(page, "denoising", timeout=30)
    page.wait_for_function("() => document.querySelector('#aa-status').innerText.includes('s left')")
    running = status(page)
    assert float(page.get_attribute("#aa-status progress", "value")) > 0.05, running
    page.click("#aa-cancel")
    assert wait_status(page, "cancelled", timeout=30) == "cancelled"
    print(f"while running the page said: {running!r}; after cancel: 'cancelled'")

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "poses.zip").write_text("not a zip")
    (bad / "me.png").write_bytes(b"not an image")
    (bad / "dance.mp4").write_bytes(b"\0" * 2000)
    (bad / "long.mp4").write_bytes(b"\0" * (2 * 2**20))
    cases = [  # (what is done on the page, the message shown)
        (lambda: page.locator("#aa-steps input").fill("0"), "error: --steps must be at least 1, got 0"),
        (lambda: page.locator("#aa-width input").fill("100"),
         "error: --width and --height must be multiples of 32 for this model, got 100x96"),
        (lambda: page.locator("#aa-frames input").fill("500"),
         "error: --frames 500: more than this server's limit of 16"),
        (lambda: page.locator("#aa-reference input[type=file]").set_input_files(str(bad / "me.png")),
         "error: reference image: not an image that can be read (.png file)"),
        (lambda: page.get_by_label("a zip of OpenPose JSON files or pose images").check(),
         "error: poses: upload a zip of OpenPose JSON files or pose images"),
        (lambda: (page.get_by_label("a zip of OpenPose JSON files or pose images").check(),
                  page.locator("#aa-upload input[type=file]").set_input_files(str(bad / "poses.zip"))),
         "error: poses: not a zip file (File is not a zip file)"),
        (lambda: (page.get_by_label("a pose video (skeletons on black)").check(),
                  page.locator("#aa-upload input[type=file]").set_input_files(str(bad / "dance.mp4"))),
         "error: poses: not a video that can be read (dance.mp4: not a readable video"),
    ]
    seen = []
    for act, message in cases:
        page.goto(served.url)
        page.wait_for_selector("#aa-animate")
        act()
        page.wait_for_timeout(300)  # the upload's round trip
        page.click("#aa-animate")
        shown = wait_status(page, "error:")
        seen.append(shown)
        assert shown.startswith(message), (message, shown)
        assert "Traceback" not in page.content()
    page.goto(served.url)
    page.wait_for_selector("#aa-animate")
    page.get_by_label("a pose video (skeletons on black)").check()
    page.locator("#aa-upload input[type=file]").set_input_files(str(bad / "long.mp4"))
    toast = page.wait_for_selector(".toast-body", timeout=10_000).inner_text()
    seen.append(toast.replace("\n", " "))
    assert "exceed the maximum allowed size of 1.0 Mb" in toast
    print("\n".join(["invalid inputs, as the page says:"] + seen))
    page.close()
    t = time.monotonic()  # the result was kept for its session only: the tab is gone, so are its files
    while list((served.files / "sessions").rglob("*.mp4")):
        assert time.monotonic() - t < 30, "a closed tab's results were not removed"
        time.sleep(0.2)
    print(f"closed tab's results removed after {time.monotonic() - t:.1f} s")


def test_eight_concurrent_jobs(served, tmp_path):
    """8 clients submit at once through the API (frames 2..9, a seed each); two are cancelled while they wait.
    The other six finish with the frames they asked for, distinct videos each; the server's memory stays bounded;
    no job folder is left."""
    client_module = need("gradio_client")
    from aa.io.video import video_info

    ref = client_module.handle_file(str(ROOT / "weights/demo/reference.png"))
    rss0, _ = served.rss()
    t = time.monotonic()
    clients = [client_module.Client(served.url, verbose=False, download_files=str(tmp_path / f"client{i}"))
               for i in range(8)]
    frames = [2 + i for i in range(8)]
    jobs = [c.submit(ref, EXAMPLE, None, "none", f, None, None, None, None, 100 + i, None, api_name="/animate")
            for i, (c, f) in enumerate(zip(clients, frames))]
    cancel = {3, 6}
    peak_rss, deadline = rss0, time.monotonic() + 60
    for i in sorted(cancel):  # cancel once the server has queued it (its status says so)
        while not any("waiting" in str(o[0]) for o in jobs[i].outputs()):
            assert time.monotonic() < deadline, f"job {i} never showed as waiting: {jobs[i].outputs()}"
            time.sleep(0.05)
        clients[i].predict(api_name="/cancel")
    results = []
    for job in jobs:
        while not job.done():
            peak_rss = max(peak_rss, served.rss()[0])
            assert time.monotonic() - t < 180, "8 jobs of 2-9 frames at 2 steps should take well under 3 minutes"
            time.sleep(0.1)
        results.append(job.result())
    seconds = time.monotonic() - t
    rss1, hwm = served.rss()
    hashes = set()
    for i, (status_html, video, sheet, downloads) in enumerate(results):
        if i in cancel:
            assert "cancelled" in status_html and video is None, (i, status_html)
            continue
        assert f"done: {frames[i]} frames" in status_html, (i, status_html)
        path = video["video"] if isinstance(video, dict) else video
        assert video_info(path).frames == frames[i]
        hashes.add(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        assert Image.open(sheet).size == ((min(8, frames[i]) + 1) * 96, 2 * 96)
    assert len(hashes) == 8 - len(cancel)
    left = [p for p in (served.files / "jobs").iterdir()]
    print(f"\nload: 8 jobs ({8 - len(cancel)} done, {len(cancel)} cancelled) in {seconds:.1f} s; server RSS "
          f"{rss0 / 2**20:.0f} MiB before, {peak_rss / 2**20:.0f} MiB peak during, {rss1 / 2**20:.0f} MiB after "
          f"(VmHWM {hwm / 2**20:.0f} MiB); job folders left: {len(left)}")
    assert left == []
    assert peak_rss < rss0 + 1024 * 2**20, "8 tiny jobs should not add a GiB"
    assert rss1 < rss0 + 512 * 2**20
    for c in clients:
        c.close()
