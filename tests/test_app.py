"""The web app's server side without a browser: the sampler's progress hook, the job queue (one job at a time, in
order, cancellation, cleanup), the checks of uploads, and the Server's forms and jobs (aa/app/server.py) on the demo
model (CPU)."""
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from aa.app.jobs import CANCELLED, DONE, FAILED, Job, JobQueue, QueueFull
from aa.app.server import Form, Server
from aa.app.uploads import Limits, check_file, check_image, unpack_zip
from aa.sampling.pipeline import Settings, animate_iter
from tests.helpers import tiny_animation_models


# ---------------------------------------------------------------------------------------------------- progress hook
def test_on_window_reports_every_window_of_every_step_and_changes_nothing():
    """animate_iter's on_window is called as denoising starts (0) and once per window of each step, counting
    1..total, and the frames are the same as without it; an exception it raises stops the sampling before any frame
    is decoded."""
    models = tiny_animation_models()
    rng = np.random.default_rng(0)
    ref, poses = rng.integers(0, 256, (32, 32, 3), np.uint8), rng.integers(0, 256, (10, 32, 32, 3), np.uint8)
    s = Settings(steps=2, window=6, overlap=2)  # windows 0-5, 4-9: 2 a step
    calls = []
    with_hook = np.concatenate(list(animate_iter(models, ref, poses, s, progress=False,
                                                 on_window=lambda d, t: calls.append((d, t)))))
    without = np.concatenate(list(animate_iter(models, ref, poses, s, progress=False)))
    assert calls == [(k, 4) for k in range(0, 5)]
    assert np.array_equal(with_hook, without)

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    chunks = animate_iter(models, ref, poses, s, progress=False, on_window=stop)
    with pytest.raises(Stop):
        next(chunks)


# ---------------------------------------------------------------------------------------------------- job queue
def wait_all(jobs, timeout=10):
    for j in jobs:
        assert j.wait(timeout), f"job {j.inputs} did not end"


def test_jobs_run_one_at_a_time_in_order(tmp_path):
    """Jobs run in submission order, never two at once; each has its own folder; position counts the jobs ahead."""
    running, order, overlap = [], [], []
    gate = threading.Event()

    def run(job: Job):
        running.append(job.id)
        overlap.append(len(running))
        gate.wait(5)
        order.append(job.inputs)
        (job.folder / "out.txt").write_text(str(job.inputs))
        running.remove(job.id)
        return job.inputs

    q = JobQueue(tmp_path / "jobs", run)
    jobs = [q.submit(i) for i in range(4)]
    time.sleep(0.1)
    assert [q.position(j) for j in jobs] == [0, 1, 2, 3]
    assert len({j.folder for j in jobs}) == 4 and all(j.folder.parent == tmp_path / "jobs" for j in jobs)
    gate.set()
    wait_all(jobs)
    assert order == [0, 1, 2, 3] and max(overlap) == 1
    assert all(j.state == DONE and j.result == j.inputs for j in jobs)
    assert [(j.folder / "out.txt").read_text() for j in jobs] == ["0", "1", "2", "3"]
    for j in jobs:
        q.release(j)
    assert list((tmp_path / "jobs").iterdir()) == []
    q.close()
    assert not (tmp_path / "jobs").exists()


def test_cancel_a_waiting_and_a_running_job(tmp_path):
    """A waiting job cancelled never runs; a running one stops at its next progress report; both folders go."""
    started, ran = threading.Event(), []

    def run(job: Job):
        ran.append(job.inputs)
        started.set()
        for i in range(500):
            job.report("denoising", i, 500)
            time.sleep(0.01)
        return "finished"

    q = JobQueue(tmp_path / "jobs", run)
    first, second = q.submit("first"), q.submit("second")
    assert started.wait(5)
    q.cancel(second)
    assert second.state == CANCELLED and not second.folder.exists()
    q.cancel(first)
    wait_all([first])
    assert first.state == CANCELLED and not first.folder.exists() and first.result is None
    assert ran == ["first"]
    q.close()


def test_failures_give_a_message_and_leave_no_folder(tmp_path, capsys):
    """Bad input fails the job with its message; a bug fails it with one line (its traceback goes to stderr); a
    full queue refuses more jobs."""
    def run(job: Job):
        if job.inputs == "bad":
            raise ValueError("--steps must be at least 1, got 0")
        if job.inputs == "bug":
            raise KeyError("oops")
        time.sleep(0.3)

    q = JobQueue(tmp_path / "jobs", run, max_waiting=2)
    bad, bug = q.submit("bad"), q.submit("bug")
    wait_all([bad, bug])
    assert (bad.state, bad.message) == (FAILED, "--steps must be at least 1, got 0")
    assert bug.state == FAILED and bug.message == "internal error (KeyError: 'oops')"
    assert "Traceback" in capsys.readouterr().err
    assert not bad.folder.exists() and not bug.folder.exists()
    slow = [q.submit("slow")]
    while slow[0].state != "running":
        time.sleep(0.01)
    slow += [q.submit("slow") for _ in range(2)]  # one runs, two wait
    with pytest.raises(QueueFull, match="queue is full"):
        q.submit("one too many")
    wait_all(slow)
    q.close()


def test_eta_is_the_measured_rate_times_what_is_left(tmp_path):
    """ETA = seconds per unit so far x units left (+ what comes after); None before the first unit."""
    job = Job(None, tmp_path)
    job.report("denoising", 0, 10)
    assert job.eta is None
    job._phase_start -= 2.0  # as if 2 s went by
    job.report("denoising", 4, 10, after=3.0)
    assert job.eta == pytest.approx(2.0 / 4 * 6 + 3.0, abs=0.05)
    assert job.fraction == 0.4


# ---------------------------------------------------------------------------------------------------- uploads
def test_upload_checks(tmp_path):
    """Wrong type, empty, too large, too many pixels and unreadable images are refused with a message naming the
    field; a zip's names never become paths (flattened, renumbered) and its size and count are checked before it
    is unpacked."""
    limits = Limits(max_bytes=5000, max_image_pixels=64 * 64, max_frames=3)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"reference image: 'a.txt' is not one of \.png"):
        check_file("reference image", tmp_path / "a.txt", limits, (".png",))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        check_image("reference image", tmp_path / "empty.png", limits)
    (tmp_path / "big.png").write_bytes(b"0" * 6000)
    with pytest.raises(ValueError, match="more than this server's limit"):
        check_image("reference image", tmp_path / "big.png", limits)
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="not an image"):
        check_image("reference image", tmp_path / "junk.png", limits)
    Image.new("RGB", (100, 100)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="100x100 pixels, more than"):
        check_image("reference image", tmp_path / "wide.png", limits)

    with zipfile.ZipFile(tmp_path / "poses.zip", "w") as z:
        z.writestr("../../evil_10.json", "{}")
        z.writestr("dir/evil_2.json", "{}")
        z.writestr("readme.txt", "ignored")
        z.writestr("skeleton.png", b"an image, ignored: the JSON files win")
    out = unpack_zip("poses", tmp_path / "poses.zip", tmp_path / "unpacked", limits)
    assert sorted(p.name for p in out.iterdir()) == ["00000.json", "00001.json"]
    assert not (tmp_path.parent / "evil_10.json").exists()
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as z:
        for i in range(4):
            z.writestr(f"{i}.json", "{}")
    with pytest.raises(ValueError, match="4 pose files, more than this server's limit of 3"):
        unpack_zip("poses", tmp_path / "many.zip", tmp_path / "u2", limits)
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("0.json", "0" * 100_000)
    with pytest.raises(ValueError, match="MB unpacked, more than"):
        unpack_zip("poses", tmp_path / "bomb.zip", tmp_path / "u3", limits)
    assert not (tmp_path / "u3").exists()
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(ValueError, match="not a zip file"):
        unpack_zip("poses", tmp_path / "fake.zip", tmp_path / "u4", limits)
    with zipfile.ZipFile(tmp_path / "none.zip", "w") as z:
        z.writestr("notes.txt", "no poses here")
    with pytest.raises(ValueError, match="no .json files and no images"):
        unpack_zip("poses", tmp_path / "none.zip", tmp_path / "u5", limits)


# ---------------------------------------------------------------------------------------------------- the Server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import sample
    s = Server(sample.build_parser(), sample.check_args, ["--steps", "2", "--device", "cpu"],
               tmp_path_factory.mktemp("app"))
    yield s
    s.close()
    assert not s.root.exists()


def test_server_defaults_come_from_sample_py(server):
    """The page's settings start at what sample.py would use: the start flags (--steps 2), the weights' recorded
    values, argparse's defaults; bounds are sample.MINIMUMS."""
    import sample
    d = server.defaults()
    assert d["--steps"] == 2 and d["--seed"] == sample.build_parser().get_default("seed")
    assert (d["--width"], d["--height"]) == server.size and d["--window"] == server.settings.window
    assert set(sample.MINIMUMS) >= {"--steps", "--frames", "--width", "--height", "--window"}


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "--steps must be at least 1, got 0"),
    ({"frames": 0}, "--frames must be at least 1, got 0"),
    ({"width": 100}, "--width and --height must be multiples of 32 for this model, got 100x96"),
    ({"width": 2048, "height": 2048}, "2048x2048: more than this server's limit"),
    ({"frames": 500}, "--frames 500: more than this server's limit of 48"),
    ({"window": 2.5}, "--window must be a whole number, got 2.5"),
    ({"guidance": float("nan")}, "--guidance must be a number, got nan"),
    ({"seed": "42; rm -rf /"}, "--seed must be a number"),
    ({"source": "/etc/passwd"}, "poses: choose one of"),
    ({"source": "a zip of OpenPose JSON files or pose images"}, "poses: upload a zip"),
    ({"align": "sideways"}, "--align: choose one of none, limbs, global"),
])
def test_bad_forms_are_refused_with_sample_py_messages(server, changes, message):
    """Every bad setting is a ValueError with a readable message (sample.py's own for its flags)."""
    with pytest.raises(ValueError) as e:
        server.check_form(Form(**changes))
    assert message in str(e.value)


def test_uploads_outside_the_server_folder_are_refused(server, tmp_path):
    """A path the browser sends is used only if it lies in the server's own folder (where uploads land)."""
    Image.new("RGB", (64, 64)).save(tmp_path / "elsewhere.png")
    form = Form(reference=str(tmp_path / "elsewhere.png"))
    with pytest.raises(ValueError, match="not uploaded to this page"):
        server.read_inputs(form, tmp_path)
    with pytest.raises(ValueError, match="not uploaded to this page"):
        server.upload(str(server.root / ".." / "elsewhere.png"))


def test_a_job_from_form_to_session_and_cleanup(server):
    """A form becomes a job that reports progress through denoising and decoding, writes a video and a contact
    sheet, is served into its session's folder (the job folder removed), and ending the session removes them."""
    from aa.io.video import video_info
    job = server.queue.submit(Form(frames=4))
    seen = set()
    while not job.wait(0.01):
        seen.add(job.phase)
        assert 0.0 <= server.progress(job) <= 1.0
    assert job.state == DONE, job.message
    assert {"denoising", "decoding"} <= seen
    video, sheet = server.serve(job, "session-a")
    assert not job.folder.exists() and video.parent == sheet.parent
    assert video_info(video).frames == 4 and Image.open(sheet).size == (5 * 96, 2 * 96)
    server.end_session("session-a")
    assert not video.exists() and not video.parent.exists()


def test_time_left_is_measured_from_the_start_of_each_phase(server, tmp_path):
    """While denoising and decoding, every estimate of the time left is positive until the phase is done: the rate
    is measured from the phase's start (a rate taken from its first report would be 0: "0 s left" at 1/500)."""
    job = Job(Form(frames=10, steps=3), tmp_path)  # 10 frames: two decode chunks of up to 8
    seen, report = [], job.report

    def recording(*args, **kwargs):
        report(*args, **kwargs)
        seen.append((job.phase, job.done, job.total, job.eta))

    job.report = recording
    server.run(job)
    for phase in ("denoising", "decoding"):
        during = [(d, t, eta) for p, d, t, eta in seen if p == phase and 0 < d < t]
        assert during and all(eta > 0 for _, _, eta in during), (phase, during)


def test_cancel_a_running_job_from_its_session(server):
    """Cancel from the session stops the running job at its next window; its folder is removed."""
    job = server.queue.submit(Form(frames=8, steps=200))
    server.current["session-b"] = job
    while job.phase != "denoising":
        time.sleep(0.01)
    assert server.cancel("session-b") == "cancelling"
    assert job.wait(10) and job.state == CANCELLED and not job.folder.exists()
    assert server.status(job) == "cancelled"
    assert server.cancel("nobody") == "nothing to cancel"


def test_preview_renders_the_poses(server):
    """The preview shows up to 8 evenly spaced poses at the output size, side by side."""
    strip = server.preview(Form(frames=5))
    assert strip.shape == (96, 5 * 96, 3) and strip.max() > 0
    assert list((server.root / "previews").iterdir()) == []
