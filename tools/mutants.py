"""Mutation check: break one piece of the conditioning, a sample.py flag, the fast path or the VAE decoder tools at a
time; a test must fail.

    .venv/bin/python tools/mutants.py                  # every mutation; a table; exit 1 if any is missed
    .venv/bin/python tools/mutants.py -k guidance eta  # only mutations whose name contains one of these words
    .venv/bin/python tools/mutants.py --list           # the table of mutations, nothing run
    .venv/bin/python tools/mutants.py --jobs 2         # two mutations at a time (each in its own copy)

The repository (git ls-files plus untracked files git does not ignore, as they are in the work tree now) is copied
once per job into a temporary folder. For each mutation one exact text replacement is made in one file of the copy,
`python -m pytest -q -x <its test files>` runs there (OMP_NUM_THREADS=1), and the file is restored. A mutation is
'caught' when a test fails (pytest exit code 1; the table names the first failing test), 'MISSED' when the tests
pass, 'ERROR' when pytest cannot run them (a mutation that breaks the syntax or the imports proves nothing), and
'NOT APPLICABLE' when its old text does not occur exactly once: a refactor moved the code, so the mutation must be
updated (the tool fails loudly rather than test nothing). The unmutated copy runs first and must pass. Exit code 1
if anything is not caught.

Adding a mutation: append a `Mutation(name, file, old, new, tests)` to MUTATIONS below. `old` is a snippet of the
file as it is now that occurs exactly once (include a few neighbouring characters to make it unique), `new` its
broken replacement, `tests` the test files expected to catch it (keep them few: the tool runs them per mutation).
This is a development tool, not part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COND = ("tests/test_conditioning.py",)
FLAGS = ("tests/test_sample_flags.py",)
FAST = ("tests/test_fast_path.py",)
VAE = ("tests/test_train_vae.py", "tests/test_demo_vae.py")
WIDEN = ("tests/test_widen_latent.py",)
GROW = ("tests/test_attention_level.py",)
TRAINING = ("tests/test_training.py",)
VIDEO = ("tests/test_video.py", "tests/test_synthetic.py")
ROUND = ("tests/test_demo_round.py",)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...] = COND


MUTATIONS = [
    # guidance (aa/sampling/pipeline.py guided_prediction)
    Mutation("guidance-inverted", "aa/sampling/pipeline.py", "return uncond + guidance * (cond - uncond)",
             "return cond + guidance * (uncond - cond)"),
    Mutation("guidance-cond-only", "aa/sampling/pipeline.py", "return uncond + guidance * (cond - uncond)", "return cond"),
    Mutation("uncond-gets-clip", "aa/sampling/pipeline.py", "torch.cat([context, torch.zeros_like(context)])",
             "torch.cat([context, context])"),
    Mutation("uncond-gets-reference", "aa/sampling/pipeline.py", "torch.zeros_like(context)]), ref_kv=ref_kv,",
             "torch.zeros_like(context)]), ref_kv=[(torch.cat([k, k]), torch.cat([v, v])) for k, v in ref_kv],"),
    # reference (aa/sampling/pipeline.py, aa/models/unet.py, aa/models/reference.py)
    Mutation("reference-dropped-guided", "aa/sampling/pipeline.py", "torch.zeros_like(context)]), ref_kv=ref_kv,",
             "torch.zeros_like(context)]), ref_kv=None,"),
    Mutation("reference-dropped-g1", "aa/sampling/pipeline.py", "return unet(x, t, context, ref_kv=ref_kv,",
             "return unet(x, t, context, ref_kv=None,"),
    Mutation("reference-not-encoded", "aa/sampling/pipeline.py", "return context.to(dtype), models.unet.reference_kv(",
             "return context.to(dtype), None and models.unet.reference_kv("),
    Mutation("reference-timestep-500", "aa/sampling/pipeline.py",
             "models.reference_net(latent.to(module_dtype(models.reference_net)), context)",
             "models.reference_net(latent.to(module_dtype(models.reference_net)), context, 500)"),
    Mutation("reference-default-timestep", "aa/models/reference.py", "timestep: Tensor | float = 0)",
             "timestep: Tensor | float = 500)"),
    Mutation("reference-blocks-swapped", "aa/models/unet.py", "for t, x in zip(blocks, features)]",
             "for t, x in zip(blocks, features[:2] + features[:1:-1])]"),
    Mutation("reference-blocks-reversed", "aa/models/unet.py", "for t, x in zip(blocks, features)]",
             "for t, x in zip(blocks, features[::-1])]"),
    Mutation("reference-features-rotated", "aa/models/reference.py", "        return features\n",
             "        return features[1:] + features[:1]\n"),
    # pose (aa/sampling/pipeline.py, aa/models/unet.py)
    Mutation("pose-zeroed", "aa/sampling/pipeline.py", "pose = pose_features(frames, idx)",
             "pose = pose_features(frames, idx) * 0"),
    Mutation("pose-wrong-frames", "aa/sampling/plan.py", "self.all.index_select(0, index)", "self.all[:len(frames)]"),
    Mutation("pose-variant-swapped", "aa/sampling/pipeline.py", "    if adds_to_latent:", "    if not adds_to_latent:"),
    Mutation("pose-latent-variant-dropped", "aa/sampling/pipeline.py", "x, pose = x + pose, None", "x, pose = x, None"),
    Mutation("pose-added-after-trunk", "aa/models/unet.py",
             "            h = h + pose_features\n        h = self.trunk(h, temb, context, ref_kv, num_frames)\n",
             "            pass\n        h = self.trunk(h, temb, context, ref_kv, num_frames)\n"
             "        h = h if pose_features is None else h + pose_features\n"),
    # windows and blending (aa/sampling/plan.py)
    Mutation("blend-always-uniform", "aa/sampling/plan.py", "blend_weights(len(frames), blend)",
             "blend_weights(len(frames), 'uniform')"),
    Mutation("blend-always-triangular", "aa/sampling/plan.py", "blend_weights(len(frames), blend)",
             "blend_weights(len(frames), 'triangular')"),
    Mutation("overlap-ignored", "aa/sampling/plan.py", "window_schedule(num_frames, window, overlap, wrap, offset=o)",
             "window_schedule(num_frames, window, 0, wrap, offset=o)"),
    Mutation("wrap-ignored", "aa/sampling/plan.py", "window_schedule(num_frames, window, overlap, wrap, offset=o)",
             "window_schedule(num_frames, window, overlap, False, offset=o)"),
    Mutation("shift-windows-noop", "aa/sampling/plan.py", "return step_offset(k, window, overlap) if shift and not wrap else 0",
             "return 0"),
    # presets, DDIM, CLIP (aa/sampling/pipeline.py)
    Mutation("moore-is-default", "aa/sampling/pipeline.py",
             'return Settings(beta_schedule="linear", blend="uniform", wrap=True, shift_windows=False, '
             'clip_mode="pil-squash")', "return Settings()"),
    Mutation("eta-ignored", "aa/sampling/pipeline.py", "s.prediction, s.eta, generator)", "s.prediction, 0.0, generator)"),
    Mutation("eta-noise-unseeded", "aa/sampling/pipeline.py", "manual_seed(seed + 1) if settings.eta > 0 else None",
             "manual_seed(seed + 1) if settings.eta < 0 else None"),
    Mutation("clip-mode-ignored-animate", "aa/sampling/pipeline.py", "width, height, settings.clip_mode,",
             'width, height, "squash",'),
    Mutation("clip-mode-ignored-encode", "aa/sampling/pipeline.py", "preprocess(image, mode=clip_mode,",
             'preprocess(image, mode="squash",'),
    # sample.py flags (aa/sampling/command.py: weights and sampling; aa/poses/inputs.py: the inputs)
    Mutation("flag-window-ignored", "aa/sampling/command.py", "window=args.window,", "window=None,", FLAGS),
    Mutation("flag-overlap-ignored", "aa/sampling/command.py", "overlap=args.overlap,", "overlap=None,", FLAGS),
    Mutation("flag-shift-windows-ignored", "aa/sampling/command.py", "shift_windows=args.shift_windows,",
             "shift_windows=None,", FLAGS),
    Mutation("flag-dtype-ignored", "aa/sampling/command.py", 'DTYPE_NAMES[args.dtype or "fp16"]',
             'DTYPE_NAMES["fp16"]', FLAGS),
    Mutation("flag-reference-unet-ignored", "aa/sampling/command.py", "reference_unet=args.reference_unet,",
             "reference_unet=None,", FLAGS),
    Mutation("flag-motion-ignored", "aa/sampling/command.py", "motion=args.motion,", "motion=None,", FLAGS),
    Mutation("flag-pose-guider-ignored", "aa/sampling/command.py", "pose_guider=args.pose_guider,", "pose_guider=None,",
             FLAGS),
    Mutation("flag-vae-ignored", "aa/sampling/command.py", "vae=args.vae,", "vae=None,", FLAGS),
    Mutation("flag-clip-ignored", "aa/sampling/command.py", "clip=args.clip,", "clip=None,", FLAGS),
    Mutation("flag-unet-ignored", "aa/sampling/command.py", "moore=args.moore, unet=args.unet,",
             "moore=args.moore, unet=None,", FLAGS),
    Mutation("flag-face-ignored", "aa/poses/inputs.py", "face=args.face)", "face=False)", FLAGS),
    Mutation("flag-no-hands-ignored", "aa/poses/inputs.py", "hands=not args.no_hands,", "hands=True,", FLAGS),
    Mutation("flag-align-always-global", "aa/poses/inputs.py", "method=args.align)", 'method="global")', FLAGS),
    Mutation("flag-align-always-limbs", "aa/poses/inputs.py", "method=args.align)", 'method="limbs")', FLAGS),
    Mutation("flag-align-ignored", "aa/poses/inputs.py",
             "keypoints = retarget(keypoints, ref_pose, method=args.align)", "keypoints = keypoints", FLAGS),
    Mutation("flag-extract-ignored", "aa/poses/inputs.py", "    if args.extract is None:\n        return None, None",
             "    if True:\n        return None, None", FLAGS),
    Mutation("flag-pose-folder-ignored", "aa/poses/inputs.py",
             "    if path.is_dir():\n        images = read_frames_folder(path)[:args.frames]",
             "    if False:\n        images = read_frames_folder(path)[:args.frames]", FLAGS),
    Mutation("flag-frames-ignored-for-folders", "aa/poses/inputs.py",
             "images = read_frames_folder(path)[:args.frames]", "images = read_frames_folder(path)", FLAGS),
    # the fast path (aa/models/attention.py short-key attention, aa/sampling/pipeline.py offload and decode chunks)
    Mutation("short-key-attention-scale", "aa/models/attention.py", "beta=0.0, alpha=d**-0.5)", "beta=0.0, alpha=d**-0.4)",
             ("tests/test_attention.py",)),
    Mutation("short-key-attention-softmax-axis", "aa/models/attention.py", "torch.bmm(scores.softmax(-1), v)",
             "torch.bmm(scores.softmax(-2), v)", ("tests/test_attention.py",)),
    Mutation("offload-keeps-encoders", "aa/sampling/pipeline.py", 'for m in encoders:\n                m.to("cpu")',
             "for m in encoders:\n                pass", FAST),
    Mutation("offload-not-brought-back", "aa/sampling/pipeline.py", "for m in encoders:\n            m.to(device)",
             "for m in encoders:\n            pass", FAST),
    Mutation("decode-chunk-underestimates", "aa/sampling/pipeline.py", "per_frame = 6 * vae.cfg", "per_frame = 4 * vae.cfg",
             FAST),
    Mutation("split-uncond-gets-reference", "aa/sampling/pipeline.py",
             "uncond = unet(x, t, torch.zeros_like(context), ref_kv=None,",
             "uncond = unet(x, t, torch.zeros_like(context), ref_kv=ref_kv,"),
    Mutation("split-uncond-gets-clip", "aa/sampling/pipeline.py", "uncond = unet(x, t, torch.zeros_like(context),",
             "uncond = unet(x, t, context,"),
    Mutation("split-guidance-inverted", "aa/sampling/pipeline.py",
             "cond = unet(x, t, context, ref_kv=ref_kv, pose_features=pose, num_frames=f)\n        uncond",
             "uncond = unet(x, t, context, ref_kv=ref_kv, pose_features=pose, num_frames=f)\n        cond"),
    Mutation("split-guidance-ignored", "aa/sampling/pipeline.py", "    if split:\n", "    if False:\n"),
    Mutation("flag-split-guidance-ignored", "aa/sampling/command.py", "split_guidance=args.split_guidance)",
             "split_guidance=None)", FLAGS),
    Mutation("decode-chunk-ignores-free", "aa/sampling/pipeline.py", "return max(1, min(chunk, int(0.8 * free) // per_frame))",
             "return chunk", FAST),
    # a decoder of its own widths behind the same encoder (aa/models/vae.py, aa/models/config.py, tools/train_vae.py,
    # tools/pack_vae_decoder.py)
    Mutation("decoder-ignores-its-widths", "aa/models/vae.py", "reversed(cfg.decoder_channels)",
             "reversed(cfg.block_out_channels)", VAE),
    Mutation("decoder-ignores-its-depth", "aa/models/vae.py", "cfg.decoder_layers + 1", "cfg.layers_per_block + 1", VAE),
    Mutation("latent-crop-misaligned", "aa/training/vae.py", "frames[idx, f * y0:f * (y0 + size), f * x0:",
             "frames[idx, y0:y0 + f * size, x0:", VAE),
    Mutation("pack-config-not-written", "aa/weights/pack.py", "    if model_config is not None:\n        write",
             "    if False:\n        write", VAE),
    Mutation("pack-encoder-from-decoder-file", "aa/weights/pack.py",
             "packed = {k: v for k, v in target.items() if not",
             "packed = {k: v.to(dtype) for k, v in source.items() if not", VAE),
    Mutation("eval-vae-ignored", "aa/eval/benchmark.py", "        models = with_decoder(models, vae, folder)",
             "        pass", ("tests/test_eval.py",)),
    Mutation("eval-vae-encoder-unchecked", "aa/eval/benchmark.py", "and not torch.equal(own[key].float(), new[key].float())",
             "and False", ("tests/test_eval.py",)),
    # one rule for windows and one for the ReferenceNet's weights (aa/sampling/windows.py, aa/models/reference.py)
    Mutation("window-overlap-unchecked", "aa/sampling/windows.py", "    if not 0 <= overlap < window:\n",
             "    if False:\n", ("tests/test_errors.py", "tests/test_pipeline.py")),
    Mutation("reference-state-keeps-temporal", "aa/models/reference.py",
             'startswith(HEAD_PREFIXES) and ".motion_modules." not in k}', "startswith(HEAD_PREFIXES)}",
             ("tests/test_unet.py",)),
    # a fresh VAE of other widths, and a widened decoder (tools/train_vae.py, aa/weights/sd.py)
    Mutation("stage1-vae-ignores-its-config", "aa/training/setup.py", "vae_config_beside(cfg.vae, models.vae.cfg)",
             "models.vae.cfg", VAE),
    Mutation("train-vae-init-ignores-its-config", "tools/train_vae.py", "vae_config_beside(args.init, preset)",
             "preset", VAE),
    Mutation("train-vae-reads-one-folder", "aa/training/vae.py", "for folder in folders\n", "for folder in folders[:1]\n",
             VAE),
    Mutation("widen-query-unscaled", "aa/training/vae.py", "            t = t / math.sqrt(factor)",
             "            t = t", VAE),
    Mutation("widen-input-shares-unsplit", "aa/training/vae.py", "(share / share.sum(2, keepdim=True))",
             "(share / share.sum(2, keepdim=True) * 0 + 1 / factor)", VAE),
    # the multistep solver (aa/sampling/solvers.py): DPM-Solver++(2M) without its second-order term is DDIM
    Mutation("dpm-2m-first-order", "aa/sampling/solvers.py",
             "        d = x0 + w * (x0 - x0_prev)\n    return ratio * x + c * d, History((x0,), (ab_s,))",
             "        d = x0\n    return ratio * x + c * d, History((x0,), (ab_s,))", ("tests/test_solvers.py",)),
    Mutation("flag-scheduler-ignored", "aa/sampling/command.py", "scheduler=args.scheduler,", "scheduler=None,",
             ("tests/test_solvers.py",)),
    # colour: the augmentation must recolour reference and targets alike, the VAE's frames each on its own; the
    # hue probe must turn the truth with the reference; a part's error reads that part's pixels only
    Mutation("colour-augment-spares-reference", "aa/training/data.py",
             "frames = random_colour_transform(rng).apply(frames)",
             "frames = np.concatenate([random_colour_transform(rng).apply(frames[:-1]), frames[-1:]])",
             ("tests/test_colour.py",)),
    Mutation("vae-recolour-one-transform", "aa/training/vae.py",
             "out[i] = random_colour_transform(rng).apply(frames[i])",
             "out[i] = random_colour_transform(np.random.default_rng(0)).apply(frames[i])", VAE),
    Mutation("hue-probe-truth-unturned", "aa/eval/benchmark.py", "truth=hue_rotate(c.truth, a))", "truth=c.truth)",
             ("tests/test_eval.py",)),
    Mutation("autoencode-not-the-truth", "aa/eval/benchmark.py", "frames = method(clip.truth)",
             "frames = method(clip.poses)", ("tests/test_eval.py",)),
    Mutation("part-mask-inverted", "aa/eval/colour.py", "mask = labels == PARTS[part]",
             "mask = labels != PARTS[part]", ("tests/test_colour.py",)),
    # a wider latent: the widened networks must compute what the old ones did, and the anchor must hold
    Mutation("widen-new-weights-not-zero", "aa/training/latent.py", "    out = torch.zeros_like(like)",
             "    out = like.clone()", WIDEN),
    Mutation("widen-vae-new-means-blocked", "aa/training/latent.py", "    quant[new_means, new_means] = 1.0",
             "    quant[new_means, new_means] = 0.0", WIDEN),
    Mutation("widen-new-channels-keep-their-noise", "aa/training/latent.py",
             "    vae.quant_conv.bias[c + old:] = logvar", "    vae.quant_conv.bias[c + old:] += 0", WIDEN),
    Mutation("anchor-ignored", "tools/train_vae.py", "loss = loss + args.anchor * anchor_loss(q.mean, old)",
             "loss = loss + 0 * anchor_loss(q.mean, old)", WIDEN),
    # a VAE inside a native model folder, and noisy latents for a decoder (aa/weights/sd.py, aa/training/vae.py)
    Mutation("vae-config-ignores-model-folder", "aa/weights/sd.py",
             'recorded = json.loads(file.read_text())["model"]["vae"]', "recorded = None", VAE),
    Mutation("latent-noise-one-draw-per-batch", "aa/training/vae.py", "u = torch.from_numpy(rng.random(len(z))).to(z)",
             "u = torch.from_numpy(rng.random(1).repeat(len(z))).to(z)", VAE),
    Mutation("latent-noise-ignored", "tools/train_vae.py", "z = noisy_latents(z, args.latent_noise, rng)", "z = z", VAE),
    Mutation("grown-attention-not-identity", "aa/training/attention_level.py", "block.proj_out.weight.zero_()",
             "pass", GROW),
    Mutation("part-means-first-clip-only", "aa/eval/benchmark.py", "out[part] = float(np.mean(values))",
             "out[part] = float(values[0])", ("tests/test_eval.py",)),
    Mutation("fast-lr-not-scaled", "aa/training/loop.py", '"lr": cfg.lr * cfg.fast_lr_scale}', '"lr": cfg.lr}',
             TRAINING),
    Mutation("level-heads-not-mirrored", "aa/models/unet.py", "cfg.heads(mirror),", "cfg.heads(i),", GROW),
    Mutation("grown-attention-wrong-up-level", "aa/training/attention_level.py",
             "new.up_blocks[len(levels) - 1 - level]", "new.up_blocks[level]", GROW),
    Mutation("help-joins-command-lines", "tools/widen_latent.py", "--out runs/demo16 \\\\\n",
             "--out runs/demo16 \\\n", ("tests/test_inputs.py",)),
    Mutation("resume-other-fast-groups", "aa/training/loop.py", "if saved != now:", "if False:", TRAINING),
    Mutation("region-weight-not-normalised", "aa/training/objective.py",
             "return w / w.mean(dim=(2, 3), keepdim=True)", "return w", TRAINING),
    Mutation("region-weight-ignores-radius", "aa/training/objective.py", "2 * radius + 1, stride=1, padding=radius",
             "1, stride=1, padding=0", TRAINING),
    Mutation("region-weight-not-in-loss", "aa/training/objective.py", "if self.obj.region_weight:", "if False:",
             TRAINING),
    Mutation("raw-clip-fps-dropped", "aa/io/video.py", "fps=np.float64(fps))", "fps=np.float64(8.0))", VIDEO),
    Mutation("raw-clip-frames-flipped", "aa/io/video.py", "frames=np.stack(checked)",
             "frames=np.stack(checked)[:, ::-1]", VIDEO),
    Mutation("raw-clip-needs-pyav", "aa/io/video.py", """    if path.suffix == RAW_SUFFIX:
        _write_raw(path, tmp, frames, fps)
        return
    _need_av(path)""", """    _need_av(path)
    if path.suffix == RAW_SUFFIX:
        _write_raw(path, tmp, frames, fps)
        return""", VIDEO),
    Mutation("round-packs-stage1", "tools/demo_round.py", '"--checkpoint", str(last_checkpoint(s2))',
             '"--checkpoint", str(last_checkpoint(s1))', ROUND),
    Mutation("round-stage2-from-scratch", "tools/demo_round.py", '"--motion", str(init),', "", ROUND),
    Mutation("round-eval-data-not-round-one", "tools/demo_round.py", '"--train-characters", "60"',
             '"--train-characters", "50"', ROUND),
]


def repository_files(root: Path) -> list[str]:
    """Tracked files and untracked files git does not ignore, as they are in the work tree (deleted ones left out)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def copy_repository(root: Path, target: Path) -> None:
    for f in repository_files(root):
        (target / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target / f)


def apply(text: str, m: Mutation) -> str | None:
    """The mutated text, or None when `old` does not occur exactly once."""
    return text.replace(m.old, m.new) if text.count(m.old) == 1 else None


def pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, float, str]:
    """Run `tests` in `copy` with -x; returns (exit code or None on timeout, seconds, first failing test id)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-rfE", "-p", "no:cacheprovider", *tests],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.time() - t0, ""
    failed = [line.split()[1] for line in r.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return r.returncode, time.time() - t0, failed[0].split("::", 1)[-1] if failed else ""


def run_one(m: Mutation, copy: Path, timeout: float) -> tuple[str, float, str]:
    """Mutate, test, restore; returns (status, seconds, the test that caught it)."""
    path = copy / m.file
    original = path.read_text()
    mutated = apply(original, m)
    if mutated is None:
        return f"NOT APPLICABLE (old text found {original.count(m.old)}x)", 0.0, ""
    path.write_text(mutated)
    try:
        code, seconds, first = pytest(copy, m.tests, timeout)
    finally:
        path.write_text(original)
    names = {None: "TIMEOUT", 0: "MISSED", 1: "caught", 5: "MISSED (no tests ran)"}
    status = names.get(code, f"ERROR (exit {code})")
    return status, seconds, first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-k", nargs="+", help="only mutations whose name contains one of these words")
    p.add_argument("--list", action="store_true", help="print the mutations and exit")
    p.add_argument("--jobs", type=int, default=1, help="mutations run at a time, each in its own copy")
    p.add_argument("--timeout", type=float, default=600, help="seconds per mutation's test run")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.k or any(k in m.name for k in args.k)]
    if args.list:
        for m in chosen:
            found = (ROOT / m.file).read_text().count(m.old)
            print(f"{m.name:32s} {m.file:18s} found {found}x: {m.old!r} -> {m.new!r}  [{' '.join(m.tests)}]")
        return 0
    if not chosen:
        print("no mutation matches", file=sys.stderr)
        return 2
    jobs = max(1, min(args.jobs, len(chosen)))
    with tempfile.TemporaryDirectory(prefix="aa-mutants-") as tmp:
        copies = [Path(tmp) / f"copy{i}" for i in range(jobs)]
        for c in copies:
            copy_repository(ROOT, c)
        tests = tuple(sorted({t for m in chosen for t in m.tests}))
        code, seconds, first = pytest(copies[0], tests, args.timeout)  # the unmutated copy must pass
        if code != 0:
            print(f"the tests fail without any mutation (exit {code}, {first}): fix that first", file=sys.stderr)
            return 1
        print(f"  baseline: {' '.join(tests)} pass ({seconds:.0f}s)", file=sys.stderr, flush=True)
        queue = list(enumerate(chosen))
        results: dict[int, tuple[str, float, str]] = {}

        def worker(copy: Path) -> None:
            while True:
                try:
                    i, m = queue.pop(0)
                except IndexError:  # another worker took the last one
                    return
                results[i] = run_one(m, copy, args.timeout)
                status, seconds, first = results[i]
                print(f"  {m.name}: {status} ({seconds:.0f}s) {first}", file=sys.stderr, flush=True)

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(worker, copies))
    print(f"{'mutation':32s} {'file':16s} {'result':16s} {'s':>4s}  caught by")
    bad = 0
    for i, m in enumerate(chosen):
        status, seconds, first = results[i]
        bad += not status.startswith("caught")
        print(f"{m.name:32s} {m.file:16s} {status:16s} {seconds:4.0f}  {first}")
    print(f"{len(chosen) - bad} of {len(chosen)} caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
