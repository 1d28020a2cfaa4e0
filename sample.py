"""Animate a character: one reference image and a pose sequence in, an H.264 mp4 out.

    python sample.py                                   # the bundled demo model, reference and poses
    python sample.py --ref me.png --pose dance.mp4     # your own inputs (the demo model draws synthetic characters)
    python sample.py --moore weights/moore-animate-anyone --ref me.png --pose dance.mp4 --preset moore

Weights: a native folder written by train.py (`--weights`, default the bundled demo), a Moore-AnimateAnyone folder
(`--moore`, with the SD VAE and the CLIP image encoder), or the parts one by one. weights/README.md lists the files.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from aa.io.cli import (
    EXIT_USAGE,
    Stopped,
    StopSignals,
    check_device,
    check_distinct,
    check_number,
    check_output,
    write_failure,
)
from aa.io.video import read_frames_folder, read_image, read_video, video_info, write_video
from aa.models import config
from aa.poses.fit import FIT_MODES
from aa.sampling.choices import DTYPE_NAMES, PRESETS, SCHEDULER_HELP, SCHEDULERS

if TYPE_CHECKING:
    import torch

    from aa.models.bundle import Models
    from aa.poses.keypoints import Pose
    from aa.sampling import pipeline

# torch and the networks (seconds to import) are imported inside the functions that use them: `--help` and the
# flag checks answer at once, and a Ctrl-C while they import is a stop like any other (main's handler is in place).
ROOT = Path(__file__).resolve().parent
DEMO = ROOT / "weights" / "demo"
DTYPES = DTYPE_NAMES  # --dtype: flag value -> torch dtype name


def build_parser() -> argparse.ArgumentParser:
    """Every flag of the command, with its help and default (app.py builds its settings fields from these too)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--ref", type=Path, help="reference image of the character (default: the demo's)")
    io.add_argument("--pose", type=Path, help="pose sequence: a pose video, a folder of pose images, or keypoints "
                                              "JSON: ours (tools/extract_pose.py), or OpenPose's --write_json output "
                                              "(BODY_25 or COCO-18; one file, or a folder of per-frame files read in "
                                              "natural order: frame_2 before frame_10) (default: the demo's)")
    io.add_argument("--pose-size", type=parse_size, metavar="WxH",
                    help="the pixel size of the video the keypoints JSON was taken from, e.g. 1920x1080 (default: "
                         "the size the file records; OpenPose's own files record none: then the box around all "
                         "frames' keypoints, plus a 10%% margin, is what gets fitted into the output)")
    io.add_argument("--fit", choices=FIT_MODES, default="letterbox",
                    help="how the reference and the poses meet the output size when their aspect ratio differs: "
                         "letterbox (scale to fit, pad), crop (scale to cover, centred on the person) or stretch "
                         "(distorts the character's proportions)")
    io.add_argument("--extract", choices=["mediapipe", "dwpose"],
                    help="--pose is a driving video of a person: extract its keypoints with this backend (optional "
                         "extras, requirements-pose.txt)")
    io.add_argument("--align", choices=["limbs", "global"],
                    help="retarget the driving keypoints to the reference character: per-limb rescale about the "
                         "neck, or one scale and shift (needs keypoints: JSON --pose or --extract)")
    io.add_argument("--ref-pose", type=Path, help="the reference image's keypoints JSON for --align, in --ref's "
                                                  "pixels; with it --align needs no extraction backend (default: "
                                                  "extracted from --ref with --extract's backend, or mediapipe)")
    io.add_argument("--face", action="store_true", help="draw face keypoints (off by default: they over-constrain "
                                                        "faces)")
    io.add_argument("--no-hands", action="store_true", help="leave hand keypoints out of the rendered poses")
    io.add_argument("--out", type=Path, default=Path("out.mp4"), help="output video (H.264 mp4)")
    io.add_argument("--side-by-side", type=Path, help="also write a reference | pose | result video here "
                                                      "(keeps the frames in memory)")
    io.add_argument("--sheet", type=Path, help="also write a PNG contact sheet (reference, poses, frames) here")
    io.add_argument("--jobs", type=Path,
                    help="many videos: a JSON-lines file, one job a line with this command's per-video flags "
                         "without '--' (ref, pose, out required; e.g. steps, seed, guidance, frames, width, "
                         "height); the other flags given are every job's defaults; with torchrun job i runs on "
                         "process i %% world; jobs whose outputs exist are skipped (README: Batch inference)")
    io.add_argument("--fps", type=float, help="frame rate of the output (default: the pose video's, else 8)")
    io.add_argument("--frames", type=int, help="animate only the first N poses (default: all)")
    io.add_argument("--width", type=int, help="output width, a multiple of the model's size factor (the VAE's "
                                              "downscale x 2^(UNet levels - 1): 64 for SD 1.5, 32 for the demo) "
                                              "(default: the model's training size)")
    io.add_argument("--height", type=int, help="output height, the same multiple (default: the model's training "
                                               "size)")

    w = p.add_argument_group("weights (see weights/README.md)")
    w.add_argument("--weights", type=Path, help=f"a native checkpoint folder from train.py (default: {DEMO})")
    w.add_argument("--moore", type=Path, help="a Moore-AnimateAnyone / novita-ai / MusePose weights folder "
                                              "(denoising_unet.pth, reference_unet.pth, motion_module.pth, "
                                              "pose_guider.pth)")
    w.add_argument("--unet", type=Path, help="denoising UNet: SD 1.x single file, diffusers unet/ folder or file")
    w.add_argument("--reference-unet", type=Path, help="ReferenceNet weights (default: the same as --unet)")
    w.add_argument("--motion", type=Path, help="AnimateDiff motion modules (v1/v2/v3 .ckpt/.safetensors or a "
                                               "diffusers MotionAdapter folder)")
    w.add_argument("--pose-guider", type=Path, help="Pose Guider weights (pose_guider.pth)")
    w.add_argument("--vae", type=Path, help="VAE: sd-vae-ft-mse folder or file, or an SD single file")
    w.add_argument("--clip", type=Path, help="CLIP image encoder: sd-image-variations image_encoder/ folder")
    w.add_argument("--model", choices=sorted(config.ARCHITECTURES), default="sd15",
                   help="architecture of --moore/--unet weights (native folders carry their own): sd15 (SD 1.5 + "
                        "AnimateDiff v2, the released weights), demo (the bundled 26 MB model's small layout), tiny "
                        "(test models)")

    s = p.add_argument_group("sampling")
    s.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="'default': our settings; 'moore': the released inference exactly (linear betas, "
                        "wrap-around windows, uniform blending)")
    s.add_argument("--steps", type=int, help="denoising steps (default: the weights' recorded value, else 25)")
    s.add_argument("--scheduler", choices=SCHEDULERS,
                   help="the sampler (default: ddim): " + "; ".join(f"{k}: {v}" for k, v in SCHEDULER_HELP.items())
                   + ". For fewer steps use unipc: at --steps 10 the demo scores as DDIM at 25 in half the time "
                     "(README, 'Fewer steps')")
    s.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale (default: the weights' recorded value, else 3.5; 1: off)")
    s.add_argument("--seed", type=int, default=42, help="random seed of the initial noise (default: 42)")
    s.add_argument("--window", type=int, help="frames per temporal window (default: the weights' recorded value, "
                                              "e.g. 12 for the demo, else 24)")
    s.add_argument("--overlap", type=int, help="frames shared by neighbouring windows (default: the weights' "
                                               "recorded value, else 4)")
    s.add_argument("--blend", choices=["triangular", "uniform"], help="how overlapping windows are averaged")
    s.add_argument("--shift-windows", action="store_true", default=None,
                   help="move the window seams at every step")
    s.add_argument("--device",
                   help="torch device (default: cuda if available, else cpu)")
    s.add_argument("--dtype", choices=sorted(DTYPES), help="precision of the weights on CUDA (default fp16); the "
                                                           "networks run in it, without autocast; the CPU runs fp32")
    s.add_argument("--compile", action="store_true", help="torch.compile the denoising UNet (static shapes; the "
                                                          "first step of each window length compiles)")
    s.add_argument("--offload", action="store_true", default=None,
                   help="move the ReferenceNet and CLIP encoder to the CPU once the reference is encoded "
                        "(SD weights: 2.2 GB less on the device, for 8 GB cards)")
    s.add_argument("--split-guidance", action="store_true", default=None,
                   help="run the conditional and unconditional branches one after the other, not as one batch "
                        "(the same video; half the step's activations, for 8 GB cards)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080), for argparse (positive integers)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 1920x1080, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return w, h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# The least value of each numeric flag (check_args checks them; app.py's fields take these as their minimums).
MINIMUMS = {"--steps": 1, "--window": 1, "--frames": 1, "--width": 1, "--height": 1, "--overlap": 0}


def check_args(args: argparse.Namespace) -> torch.device:
    """Every flag that can be checked without the weights (ValueError naming the flag); returns the device."""
    for flag, minimum in MINIMUMS.items():
        check_number(flag, getattr(args, flag[2:]), minimum=minimum)
    if args.window is not None and args.overlap is not None:  # one given alone meets the weights' default later
        from aa.sampling.windows import check_window
        check_window(args.window, args.overlap, prefix="--")
    check_number("--guidance", args.guidance)
    check_number("--fps", args.fps, above=0)
    outputs = {"--out": args.out, "--side-by-side": args.side_by_side, "--sheet": args.sheet}
    for flag, path in outputs.items():
        check_output(flag, path, ".png" if flag == "--sheet" else ".mp4")
    check_distinct(outputs)
    for flag, path in (("--ref", args.ref), ("--pose", args.pose), ("--ref-pose", args.ref_pose)):
        if path is not None and not path.exists():
            raise ValueError(f"{flag} {path}: no such file or folder")
    if args.device is None:
        import torch
        return check_device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(args.device)


def read_keypoints(args: argparse.Namespace, path: Path) -> tuple[list | None, float | None]:
    """Keypoints from a JSON file or folder, or extracted from a driving video/image folder (--extract), placed on
    their canvas and checked by `place_keypoints`; None if --pose holds rendered pose images."""
    from aa.poses.keypoints import keypoint_files, load_json
    if path.suffix.lower() == ".json" or (path.is_dir() and any(path.glob("*.json"))):
        frames = [(f, p) for f in keypoint_files(path) for p in load_json(f, unknown_canvas=True)][:args.frames]
        return place_keypoints(args, path, frames), None
    if args.extract is None:
        return None, None
    if args.pose_size:
        raise ValueError("--pose-size is the canvas of keypoints JSON; --extract takes the video's own size")
    from aa.poses.extract import extract_poses
    if path.is_dir():
        frames, fps = read_frames_folder(path), None
    else:
        info = video_info(path)
        n = min(info.frames, args.frames or info.frames)
        frames, fps = read_video(path, range(n)), info.fps
    poses = extract_poses(frames[:args.frames], args.extract, ROOT / "weights", progress=not args.quiet)
    return place_keypoints(args, path, [(path, p) for p in poses]), fps


def place_keypoints(args: argparse.Namespace, path: Path, frames: list[tuple[Path, Pose]]) -> list[Pose]:
    """The poses on their source canvas: --pose-size, else the size the file records, else (OpenPose's own files)
    the box around all frames' keypoints (aa.poses.fit.keypoint_box). A sequence that would draw nothing in most
    frames (no confident point, or none on the canvas) is a ValueError naming the file and what to pass."""
    from dataclasses import replace

    from aa.poses.fit import MARGIN, keypoint_box, on_own_canvas
    from aa.poses.render import THRESHOLD, drawn_points
    poses = [p for _, p in frames]
    if args.pose_size:
        poses = [replace(p, width=args.pose_size[0], height=args.pose_size[1]) for p in poses]
    # what render_pose draws below (the flags in another order than its call: tools/mutants.py finds that by text)
    drawn = [drawn_points(p, face=args.face, hands=not args.no_hands) for p in poses]
    empty = [i for i, d in enumerate(drawn) if len(d) == 0]
    if 2 * len(empty) > len(poses):
        raise ValueError(f"--pose {path}: {len(empty)} of {len(poses)} frames have no keypoint confident enough to "
                         f"draw (confidence > {THRESHOLD}; first: {frames[empty[0]][0].name}), so the video would "
                         "show no character: pass keypoints in which the person was detected")
    if any(p.width <= 0 or p.height <= 0 for p in poses):
        box = keypoint_box(drawn)
        if not args.quiet:
            print(f"--pose {path}: no canvas size recorded (OpenPose's own files): the box around all frames' "
                  f"keypoints plus a {MARGIN:.0%} margin is fitted into the output (--fit {args.fit}); pass "
                  "--pose-size WxH, the source video's size, to keep its framing instead")
        return on_own_canvas(poses, box)
    off = [i for i, (p, d) in enumerate(zip(poses, drawn)) if len(d) and not (
        (d[:, 0] >= 0) & (d[:, 0] < p.width) & (d[:, 1] >= 0) & (d[:, 1] < p.height)).any()]
    if 2 * (len(empty) + len(off)) > len(poses) and off:
        p, d = poses[off[0]], drawn[off[0]]
        given = "--pose-size" if args.pose_size else "the file's canvas_width/canvas_height"
        raise ValueError(f"--pose {path}: in {len(off) + len(empty)} of {len(poses)} frames no keypoint lies on the "
                         f"{p.width}x{p.height} canvas ({given}; first: {frames[off[0]][0].name}, points up to x "
                         f"{d[:, 0].max():.0f}, y {d[:, 1].max():.0f}): pass --pose-size WxH, the size of the video "
                         "the keypoints were taken from")
    return poses


def read_ref_pose(args: argparse.Namespace, reference: np.ndarray, keypoints: list | None) -> Pose | None:
    """The reference's keypoints for --align (None without it): --ref-pose, in --ref's pixels unless the file
    records its canvas; else extracted from --ref with --extract's backend (MediaPipe by default), which must be
    installed. Decided before the weights load."""
    if not args.align:
        return None
    if keypoints is None:
        raise ValueError("--align needs keypoints: pass --pose as keypoints JSON, or --extract a driving video")
    from aa.poses.keypoints import load_json
    if args.ref_pose:
        if not args.quiet:
            print(f"--align {args.align}: the reference's keypoints from --ref-pose {args.ref_pose} (no extraction)")
        return load_json(args.ref_pose, reference.shape[1], reference.shape[0])[0]
    backend = args.extract or "mediapipe"
    if backend_missing(backend):
        raise ValueError(f"--align needs the reference's keypoints: pass --ref-pose (a keypoints JSON of --ref, e.g. "
                         f"from tools/extract_pose.py or OpenPose), or install the {backend} backend to extract them "
                         "from --ref (pip install -r requirements-pose.txt; MediaPipe needs Python <= 3.12)")
    from aa.poses.extract import extract_poses
    return extract_poses([reference], backend, ROOT / "weights", video=False)[0]


def backend_missing(backend: str) -> bool:
    """The extraction backend's package is not installed (found without importing it: MediaPipe takes seconds)."""
    import importlib.util
    return importlib.util.find_spec({"mediapipe": "mediapipe", "dwpose": "onnxruntime"}[backend]) is None


def load_poses(args: argparse.Namespace, path: Path, width: int, height: int, keypoints: list | None,
               fps: float | None, ref_pose: Pose | None) -> tuple[np.ndarray, float | None, str | None]:
    """Pose images (f, height, width, 3) uint8, the driving video's fps (if any), and what --fit did to them (None:
    nothing): rendered from keypoints (from `read_keypoints`, retargeted onto `ref_pose` with --align), or read
    from a pose video or image folder; placed on the output by --fit (aa.poses.fit), as the reference is."""
    from aa.poses.fit import box_centre, describe, fit_box, fit_image, fit_pose
    if keypoints is not None:
        from aa.poses.render import drawn_points, render_pose
        if ref_pose is not None:
            from aa.poses.retarget import retarget
            keypoints = retarget(keypoints, ref_pose, method=args.align)
        # crop keeps the person in view: the reference's keypoints when aligned to them, else the driving ones'
        focus = box_centre([drawn_points(p) for p in ([ref_pose] if ref_pose is not None else keypoints)])
        fits = {}
        for p in keypoints:
            canvas = (p.width, p.height)
            if canvas not in fits:
                fits[canvas] = fit_box((0, 0, *canvas), width, height, args.fit, focus)
        images = np.stack([render_pose(fit_pose(p, fits[(p.width, p.height)]), width, height,
                                       hands=not args.no_hands, face=args.face) for p in keypoints])
        canvas, fit = next(iter(fits.items()))  # the first pose's (one canvas, unless files differ)
        same = canvas == (width, height) and fit.identity
        return images, fps, None if same else f"poses {canvas[0]}x{canvas[1]} {describe(fit, canvas, args.fit)}"
    if path.is_dir():
        images = read_frames_folder(path)[:args.frames]
    else:
        info = video_info(path)
        fps = info.fps
        images = read_video(path, range(min(info.frames, args.frames or info.frames)))
    if len(images) == 0:
        raise ValueError(f"--pose {path}: no frames")
    canvas = (images.shape[2], images.shape[1])
    if canvas == (width, height):
        return images, fps, None
    fit = fit_box((0, 0, *canvas), width, height, args.fit)
    images = np.stack([fit_image(im, fit) for im in images])  # black bars: the pose images' own background
    return images, fps, f"pose images {canvas[0]}x{canvas[1]} {describe(fit, canvas, args.fit)}"


def fit_reference(args: argparse.Namespace, reference: np.ndarray, width: int, height: int,
                  ref_pose: Pose | None) -> tuple[np.ndarray, str | None]:
    """The reference (h, w, 3) on the output canvas by --fit, padded with its own border colour (letterbox) or
    cropped around its keypoints when known; and what was done (None: nothing)."""
    from aa.poses.fit import border_colour, box_centre, describe, fit_box, fit_image
    from aa.poses.render import drawn_points
    h, w = reference.shape[:2]
    focus = None
    if ref_pose is not None:  # its keypoints, from the ref pose's canvas to the image's pixels
        centre = box_centre([drawn_points(ref_pose)])
        focus = None if centre is None else (centre[0] * w / ref_pose.width, centre[1] * h / ref_pose.height)
    fit = fit_box((0, 0, w, h), width, height, args.fit, focus)
    if (w, h) == (width, height):
        return reference, None
    return fit_image(reference, fit, border_colour(reference)), f"reference {w}x{h} {describe(fit, (w, h), args.fit)}"


def contact_sheet(reference: np.ndarray, poses: np.ndarray, frames: np.ndarray, columns: int = 8) -> Image.Image:
    """Row 1: the reference then evenly spaced poses; row 2: blank then the frames generated for them."""
    idx = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)
    h, w = frames.shape[1:3]
    sheet = Image.new("RGB", ((len(idx) + 1) * w, 2 * h), "white")
    sheet.paste(Image.fromarray(reference).resize((w, h)), (0, 0))
    for j, i in enumerate(idx, start=1):
        sheet.paste(Image.fromarray(poses[i]), (j * w, 0))
        sheet.paste(Image.fromarray(frames[i]), (j * w, h))
    return sheet


def save_png(image: Image.Image, path: Path) -> None:
    """Write a PNG atomically: beside `path`, then renamed; nothing is left on failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those it created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def uses_demo(args: argparse.Namespace) -> bool:
    """No weights flag given: the bundled demo model (and its reference and poses by default)."""
    return not any([args.weights, args.moore, args.unet])


def load_weights(args: argparse.Namespace, device: torch.device) -> tuple[Models, dict, tuple[int, int], torch.dtype]:
    """The networks of the weights flags (the bundled demo without any), the sampling settings their training
    recorded, their default (width, height), and the dtype they run in."""
    import torch

    from aa.sampling.load import demo_missing, load_for_sampling
    dtype = getattr(torch, DTYPES[args.dtype or "fp16"] if device.type == "cuda" else "float32")
    if uses_demo(args) and not (DEMO / "config.json").is_file():
        raise demo_missing(DEMO)
    models, sampling, size = load_for_sampling(
        weights=DEMO if uses_demo(args) else args.weights, moore=args.moore, unet=args.unet,
        reference_unet=args.reference_unet, motion=args.motion, pose_guider=args.pose_guider, vae=args.vae,
        clip=args.clip, cfg=config.ARCHITECTURES[args.model](), dtype=dtype, device=device)
    return models, sampling, size, dtype


def check_size(width: int, height: int, multiple: int) -> None:
    """The output size is a multiple of the model's size factor (ValueError naming the flags)."""
    if width % multiple or height % multiple:
        raise ValueError(f"--width and --height must be multiples of {multiple} for this model, got {width}x{height}")


def sampling_settings(args: argparse.Namespace, sampling: dict, dtype: torch.dtype) -> pipeline.Settings:
    """The preset, then what the weights recorded (`sampling`), then the sampling flags given."""
    from aa.sampling import pipeline
    recorded = pipeline.with_overrides(pipeline.SAMPLING_PRESETS[args.preset](), **sampling)  # the weights' defaults
    return pipeline.with_overrides(
        recorded, steps=args.steps, scheduler=args.scheduler, guidance=args.guidance, window=args.window,
        overlap=args.overlap, blend=args.blend, shift_windows=args.shift_windows, dtype=dtype, offload=args.offload,
        split_guidance=args.split_guidance)


# The flags a line of a --jobs file may set (the others, weights and device, are the process's), and those it must.
PER_JOB = ("ref", "pose", "pose-size", "fit", "extract", "align", "ref-pose", "face", "no-hands", "out", "side-by-side",
           "sheet", "fps", "frames", "width", "height", "steps", "guidance", "seed", "window", "overlap", "blend",
           "shift-windows", "scheduler")
JOB_REQUIRED = ("ref", "pose", "out")


def job_outputs(args: argparse.Namespace) -> list[Path]:
    """The files one run writes, the video first."""
    return [p for p in (args.out, args.side_by_side, args.sheet) if p is not None]


def load_for_jobs(args: argparse.Namespace) -> tuple[Models, dict, tuple[int, int], torch.dtype]:
    """`load_weights`, and the UNet readied for the device (compiled once for all the jobs of the process)."""
    from aa.sampling.plan import prepare_unet
    loaded = load_weights(args, check_device(args.device))
    prepare_unet(loaded[0].unet, loaded[0].pose_guider, compile=args.compile)
    return loaded


def animate_to_files(args: argparse.Namespace, written: list[Path],
                     loaded: tuple[Models, dict, tuple[int, int], torch.dtype] | None = None) -> None:
    """Check the inputs, load the weights (unless `loaded` by `load_for_jobs`), animate, write the outputs (appending
    each finished one to `written`)."""
    demo = uses_demo(args)
    ref_path = args.ref or (DEMO / "reference.png" if demo else None)
    pose_path = args.pose or (DEMO / "poses.json" if demo else None)
    device = check_args(args)
    if ref_path is None or pose_path is None:
        raise ValueError("--ref and --pose are required unless the bundled demo model is used")
    reference = read_image(ref_path)  # RGB uint8; fails early on a missing or unreadable file
    keypoints, fps = read_keypoints(args, pose_path)  # checked: a pose sequence that draws nothing stops here
    if keypoints is None and args.pose_size:
        raise ValueError(f"--pose-size is the canvas of keypoints JSON; --pose {pose_path} holds pose images, which "
                         "have their own size")
    if keypoints is None and pose_path.is_file():
        video_info(pose_path)  # a bad pose video fails before the weights load
    ref_pose = read_ref_pose(args, reference, keypoints)
    t0 = time.time()
    models, sampling, size, dtype = loaded or load_weights(args, device)
    width, height = args.width or size[0], args.height or size[1]
    check_size(width, height, models.size_multiple)
    poses, fps, pose_fit = load_poses(args, pose_path, width, height, keypoints, fps, ref_pose)
    reference, ref_fit = fit_reference(args, reference, width, height, ref_pose)
    if not args.quiet and (ref_fit or pose_fit):
        print(f"fit into {width}x{height} (--fit {args.fit}): {'; '.join(filter(None, (ref_fit, pose_fit)))}")
    if args.frames is not None and args.frames > len(poses):
        print(f"note: --frames {args.frames}: the pose sequence has {len(poses)} poses; animating all {len(poses)}",
              file=sys.stderr)
    settings = sampling_settings(args, sampling, dtype)
    from aa.sampling import pipeline
    from aa.sampling.plan import prepare_unet
    if loaded is None:  # a --jobs process readied it once, in load_for_jobs
        prepare_unet(models.unet, models.pose_guider, compile=args.compile)
    fps = args.fps or fps or sampling.get("fps", 8)
    chunks = pipeline.animate_iter(models, reference, poses, settings, width=width, height=height,
                                   seed=args.seed, progress=not args.quiet)  # checks the settings
    if not args.quiet:
        print(f"loaded weights in {time.time() - t0:.1f}s; animating {len(poses)} frames at {width}x{height} on "
              f"{device} ({settings.steps} steps, guidance {settings.guidance})")
    keep = args.side_by_side is not None or args.sheet is not None
    kept: list[np.ndarray] = []

    def frames():
        from tqdm.auto import tqdm
        bar = None
        for chunk in chunks:  # the first chunk comes once every denoising step is done (its own progress bar)
            if bar is None:
                bar = tqdm(total=len(poses), desc="writing", unit="frame", disable=args.quiet)
            if keep:
                kept.append(chunk)
            for frame in chunk:
                yield frame
                bar.update()
        if bar is not None:
            bar.close()

    made = [folder for path in (args.out, args.side_by_side, args.sheet) if path is not None
            for folder in make_folders(path.parent)]
    try:
        write_video(args.out, frames(), fps)
        written.append(args.out)
        if keep:
            result = np.concatenate(kept)
            ref_small = np.asarray(Image.fromarray(reference).resize((width, height), Image.Resampling.LANCZOS))
            if args.side_by_side:
                write_video(args.side_by_side, (np.concatenate([ref_small, p, f], axis=1)
                                                for p, f in zip(poses, result)), fps)
                written.append(args.side_by_side)
            if args.sheet:
                save_png(contact_sheet(reference, poses, result), args.sheet)
                written.append(args.sheet)
    except BaseException:  # a stop or a failed write: the folders made for the outputs go too, once they're empty
        for path in written:
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:  # not empty: something else is in it
                pass
        raise
    if not args.quiet:
        print(f"wrote {args.out} ({len(poses)} frames, {fps:g} fps) in {time.time() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    """Run `animate_to_files`; any bad input, failed write, SIGTERM or Ctrl-C ends in one `error:` line, and then
    none of the outputs is left behind (exit code 2, or 128 + the signal's number)."""
    args = parse_args(argv)
    written: list[Path] = []
    try:
        with StopSignals(raise_now=True):
            if args.jobs is not None:  # many videos, the weights loaded once per process
                from aa.sampling import jobs
                return jobs.main(args, build_parser(), PER_JOB, JOB_REQUIRED, check_args, job_outputs, load_for_jobs,
                                 animate_to_files, quiet=args.quiet)
            animate_to_files(args, written)
        return 0
    except (ValueError, FileNotFoundError, ImportError) as e:  # VideoError and WeightsError are ValueErrors
        message, code = str(e), EXIT_USAGE
    except OSError as e:
        message, code = write_failure(Path(e.filename or args.out), e), EXIT_USAGE
    except Stopped as e:
        message, code = f"{e}; no output written", e.code
    for path in written:
        path.unlink(missing_ok=True)
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before main's handler is in place (Python still starting): nothing written yet
        print("error: stopped by SIGINT; no output written", file=sys.stderr)
        sys.exit(128 + 2)
