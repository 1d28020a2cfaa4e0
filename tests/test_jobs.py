"""`sample.py --jobs`: many videos from a JSON-lines file, shared between processes, resumable, failures reported at
the end (aa/sampling/jobs.py), on tiny weights on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sample
from aa.io.video import video_info
from aa.sampling import command, jobs
from tests.helpers import write_tiny_inputs

ROOT = Path(__file__).resolve().parents[1]
W = H = 32


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Tiny random weights as a native folder, a reference image, a pose video and a broken one."""
    root = write_tiny_inputs(tmp_path_factory.mktemp("jobs"), W, (40, 24), fps=8)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    return root


def write_jobs(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def job(files: Path, out: Path, **extra) -> dict:
    return {"ref": str(files / "ref.png"), "pose": str(files / "pose.mp4"), "out": str(out), **extra}


def common(files: Path) -> list[str]:
    return ["--weights", str(files / "native"), "--steps", "1", "--frames", "2", "--device", "cpu"]


def test_two_processes_share_the_jobs_and_report_a_failure(files, tmp_path):
    """torchrun with 2 processes over 4 jobs: job i runs on process i % 2, each written once; the job whose pose
    video is broken fails on its process (line 3 and the reason on stderr, exit code 1) and the other 3 are written."""
    outs = [tmp_path / f"v{i}.mp4" for i in range(4)]
    lines = [job(files, o, seed=i) for i, o in enumerate(outs)]
    lines[2]["pose"] = str(files / "broken.mp4")
    jobs_file = write_jobs(tmp_path / "jobs.jsonl", lines)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(ROOT / "sample.py"), "--jobs", str(jobs_file), *common(files)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "line 3: " in r.stderr and "broken.mp4" in r.stderr, r.stderr
    for i, o in enumerate(outs):
        assert o.exists() == (i != 2), r.stdout + r.stderr
    for i in (0, 1, 3):
        assert video_info(outs[i]).frames == 2
        assert r.stdout.count(f"line {i + 1}: wrote") == 1 and f"[rank {i % 2}] line {i + 1}: wrote" in r.stdout
    assert not list(tmp_path.glob(".*.tmp*")), "a temporary file was left behind"


def test_killed_run_resumes_with_only_the_missing_outputs(files, tmp_path, monkeypatch):
    """Outputs that exist are skipped (a rerun after a kill makes only the missing ones), and a file whose outputs
    all exist loads no weights at all."""
    outs = [tmp_path / f"v{i}.mp4" for i in range(2)]
    jobs_file = write_jobs(tmp_path / "jobs.jsonl", [job(files, o) for o in outs])
    outs[1].write_bytes(b"made before the kill")
    assert sample.main(["--jobs", str(jobs_file), "--quiet", *common(files)]) == 0
    assert outs[1].read_bytes() == b"made before the kill"
    assert video_info(outs[0]).frames == 2

    def no_loading(*_):
        raise AssertionError("weights loaded with nothing left to do")
    monkeypatch.setattr(command, "load_weights", no_loading)
    assert sample.main(["--jobs", str(jobs_file), "--quiet", *common(files)]) == 0


@pytest.mark.parametrize("problem, line, words", [
    ("not JSON", 2, "not JSON"),
    ("missing out", 2, "missing 'out'"),
    ("unknown key", 2, "unknown key(s) 'stepz'"),
    ("missing reference", 2, "nope.png"),
    ("bad number", 2, "--steps"),
    ("same output twice", 2, "also the output of line 1"),
])
def test_bad_jobs_file_is_one_error_before_the_weights_load(files, tmp_path, capsys, monkeypatch, problem, line,
                                                            words):
    """Every line is checked before any weights load: a bad line is one `error:` line naming the file's line and the
    problem, exit code 2, and nothing is written."""
    first = job(files, tmp_path / "a.mp4")
    second = {"not JSON": '{"ref": "x.png",', "missing out": {k: v for k, v in first.items() if k != "out"},
              "unknown key": job(files, tmp_path / "b.mp4", stepz=3),
              "missing reference": job(files, tmp_path / "b.mp4", ref=str(files / "nope.png")),
              "bad number": job(files, tmp_path / "b.mp4", steps=0),
              "same output twice": job(files, tmp_path / "a.mp4", seed=3)}[problem]
    jobs_file = write_jobs(tmp_path / "jobs.jsonl", [first, second])

    def no_loading(*_):
        raise AssertionError("weights loaded before the jobs file was checked")
    monkeypatch.setattr(command, "load_weights", no_loading)
    assert sample.main(["--jobs", str(jobs_file), *common(files)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert f"line {line}:" in err and words in err, err
    assert not list(tmp_path.glob("*.mp4"))


def test_job_values_convert_like_the_command_line(files, tmp_path):
    """A job's values go through its flag's own type and choices; switches take true/false; relative paths are
    taken from the jobs file's folder; flags given on the command line are the defaults of every job; job i goes to
    process i % world, each process on its own GPU."""
    base = sample.parse_args(["--steps", "3", "--seed", "7"])
    actions = {a.option_strings[0][2:]: a for a in sample.build_parser()._actions if a.option_strings}
    args = jobs.job_args(base, {"ref": "r.png", "steps": "5", "face": True, "blend": "uniform"}, actions, tmp_path)
    assert (args.ref, args.steps, args.face, args.blend, args.seed) == (tmp_path / "r.png", 5, True, "uniform", 7)
    for bad in ({"blend": "sideways"}, {"face": "yes"}, {"steps": [1]}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            jobs.job_args(base, bad, actions, tmp_path)
    assert [j.index for j in jobs.share([jobs.Job(i + 1, i, base) for i in range(5)], 1, 2)] == [1, 3]
    assert (jobs.device_for("cuda", 1, 2), jobs.device_for("cuda", 0, 1), jobs.device_for("cpu", 1, 2)) == \
        ("cuda:1", "cuda", "cpu")
