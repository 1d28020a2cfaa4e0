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

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

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
from aa.io.video import VideoError, read_frames_folder, read_image, read_video, video_info, write_video
from aa.models import config
from aa.sampling import pipeline
from aa.sampling.load import demo_missing, load_for_sampling
from aa.sampling.plan import prepare_unet
from aa.sampling.windows import check_window
from aa.weights import WeightsError

ROOT = Path(__file__).resolve().parent
DEMO = ROOT / "weights" / "demo"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--ref", type=Path, help="reference image of the character (default: the demo's)")
    io.add_argument("--pose", type=Path, help="pose sequence: a pose video, a folder of pose images, or keypoints "
                                              "JSON (rendered at the output size) (default: the demo's)")
    io.add_argument("--extract", choices=["mediapipe", "dwpose"],
                    help="--pose is a driving video of a person: extract its keypoints with this backend (optional "
                         "extras, requirements-pose.txt)")
    io.add_argument("--align", choices=["limbs", "global"],
                    help="retarget the driving keypoints to the reference character: per-limb rescale about the "
                         "neck, or one scale and shift (needs keypoints: JSON --pose or --extract)")
    io.add_argument("--ref-pose", type=Path, help="the reference image's keypoints JSON for --align (default: "
                                                  "extracted from --ref with --extract's backend, or mediapipe)")
    io.add_argument("--face", action="store_true", help="draw face keypoints (off by default: they over-constrain "
                                                        "faces)")
    io.add_argument("--no-hands", action="store_true", help="leave hand keypoints out of the rendered poses")
    io.add_argument("--out", type=Path, default=Path("out.mp4"), help="output video (H.264 mp4)")
    io.add_argument("--side-by-side", type=Path, help="also write a reference | pose | result video here "
                                                      "(keeps the frames in memory)")
    io.add_argument("--sheet", type=Path, help="also write a PNG contact sheet (reference, poses, frames) here")
    io.add_argument("--fps", type=float, help="frame rate of the output (default: the pose video's, else 8)")
    io.add_argument("--frames", type=int, help="animate only the first N poses")
    io.add_argument("--width", type=int, help="output width, a multiple of the model's size factor (the VAE's "
                                              "downscale x 2^(UNet levels - 1): 64 for SD 1.5, 32 for the demo) "
                                              "(default: the model's training size); also the canvas of keypoints "
                                              "JSON without one")
    io.add_argument("--height", type=int, help="output height, the same multiple (default: the model's); keypoints "
                                               "JSON without a canvas size and no --width/--height is taken to be "
                                               "in the reference image's pixels")

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
                   help="architecture of --moore/--unet weights (native folders carry their own)")

    s = p.add_argument_group("sampling")
    s.add_argument("--preset", choices=sorted(pipeline.SAMPLING_PRESETS), default="default",
                   help="'default': our settings; 'moore': the released inference exactly (linear betas, "
                        "wrap-around windows, uniform blending)")
    s.add_argument("--steps", type=int, help="DDIM steps (default: the weights' recorded value, else 25)")
    s.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale (default: the weights' recorded value, else 3.5; 1: off)")
    s.add_argument("--seed", type=int, default=42, help="random seed of the initial noise")
    s.add_argument("--window", type=int, help="frames per temporal window (default 24)")
    s.add_argument("--overlap", type=int, help="frames shared by neighbouring windows (default 4)")
    s.add_argument("--blend", choices=["triangular", "uniform"], help="how overlapping windows are averaged")
    s.add_argument("--shift-windows", action="store_true", default=None,
                   help="move the window seams at every step")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
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
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> torch.device:
    """Every flag that can be checked without the weights (ValueError naming the flag); returns the device."""
    for flag, value in (("--steps", args.steps), ("--window", args.window), ("--frames", args.frames),
                        ("--width", args.width), ("--height", args.height)):
        check_number(flag, value, minimum=1)
    check_number("--overlap", args.overlap, minimum=0)
    if args.window is not None and args.overlap is not None:  # one given alone meets the weights' default later
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
    return check_device(args.device)


def read_keypoints(args: argparse.Namespace, path: Path, canvas: tuple[int, int]) -> tuple[list | None, float | None]:
    """Keypoints from a JSON file or folder (`canvas` (w, h): the pixel size of files that don't record one, like
    OpenPose's own), or extracted from a driving video/image folder (--extract); None if --pose holds rendered pose
    images."""
    from aa.poses.keypoints import load_json
    if path.suffix.lower() == ".json" or (path.is_dir() and any(path.glob("*.json"))):
        return load_json(path, *canvas)[:args.frames], None
    if args.extract is None:
        return None, None
    from aa.poses.extract import extract_poses
    if path.is_dir():
        frames, fps = read_frames_folder(path), None
    else:
        info = video_info(path)
        n = min(info.frames, args.frames or info.frames)
        frames, fps = read_video(path, range(n)), info.fps
    return extract_poses(frames[:args.frames], args.extract, ROOT / "weights", progress=not args.quiet), fps


def load_poses(args: argparse.Namespace, path: Path, reference: np.ndarray, width: int, height: int,
               keypoints: list | None, fps: float | None) -> tuple[np.ndarray, float | None]:
    """Pose images (f, height, width, 3) uint8 and the driving video's fps (if any): rendered from keypoints
    (from `read_keypoints`, retargeted with --align), or read from a pose video or image folder and resized."""
    if keypoints is not None:
        from aa.poses.render import render_pose
        if args.align:
            from aa.poses.keypoints import load_json
            from aa.poses.retarget import retarget
            if args.ref_pose:
                ref_pose = load_json(args.ref_pose, reference.shape[1], reference.shape[0])[0]
            else:
                from aa.poses.extract import extract_poses
                ref_pose = extract_poses([reference], args.extract or "mediapipe", ROOT / "weights", video=False)[0]
            keypoints = retarget(keypoints, ref_pose, method=args.align)
        return np.stack([render_pose(p, width, height, hands=not args.no_hands, face=args.face)
                         for p in keypoints]), fps
    if args.align:
        raise ValueError("--align needs keypoints: pass --pose as keypoints JSON, or --extract a driving video")
    if path.is_dir():
        images = read_frames_folder(path)[:args.frames]
    else:
        info = video_info(path)
        fps = info.fps
        images = read_video(path, range(min(info.frames, args.frames or info.frames)))
    if len(images) == 0:
        raise ValueError(f"--pose {path}: no frames")
    if images.shape[1:3] != (height, width):
        images = np.stack([np.asarray(Image.fromarray(im).resize((width, height), Image.Resampling.BILINEAR))
                           for im in images])
    return images, fps


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


def animate_to_files(args: argparse.Namespace, written: list[Path]) -> None:
    """Check the inputs, load the weights, animate, write the outputs (appending each finished one to `written`)."""
    demo = not any([args.weights, args.moore, args.unet])
    ref_path = args.ref or (DEMO / "reference.png" if demo else None)
    pose_path = args.pose or (DEMO / "poses.json" if demo else None)
    device = check_args(args)
    if ref_path is None or pose_path is None:
        raise ValueError("--ref and --pose are required unless the bundled demo model is used")
    reference = read_image(ref_path)  # RGB uint8; fails early on a missing or unreadable file
    keypoints, fps = read_keypoints(args, pose_path, (args.width or reference.shape[1],
                                                      args.height or reference.shape[0]))
    if keypoints is None and pose_path.is_file():
        video_info(pose_path)  # a bad pose video fails before the weights load
    dtype = DTYPES[args.dtype or "fp16"] if device.type == "cuda" else torch.float32
    t0 = time.time()
    if demo and not (DEMO / "config.json").is_file():
        raise demo_missing(DEMO)
    models, sampling, size = load_for_sampling(
        weights=DEMO if demo else args.weights, moore=args.moore, unet=args.unet,
        reference_unet=args.reference_unet, motion=args.motion, pose_guider=args.pose_guider, vae=args.vae,
        clip=args.clip, cfg=config.ARCHITECTURES[args.model](), dtype=dtype, device=device)
    width, height = args.width or size[0], args.height or size[1]
    if width % models.size_multiple or height % models.size_multiple:
        raise ValueError(f"--width and --height must be multiples of {models.size_multiple} for this model, got "
                         f"{width}x{height}")
    poses, fps = load_poses(args, pose_path, reference, width, height, keypoints, fps)
    recorded = pipeline.with_overrides(pipeline.SAMPLING_PRESETS[args.preset](), **sampling)  # the weights' defaults
    settings = pipeline.with_overrides(
        recorded, steps=args.steps, guidance=args.guidance, window=args.window, overlap=args.overlap,
        blend=args.blend, shift_windows=args.shift_windows, dtype=dtype, offload=args.offload,
        split_guidance=args.split_guidance)
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
        for chunk in chunks:
            if keep:
                kept.append(chunk)
            yield from chunk

    for path in (args.out, args.side_by_side, args.sheet):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    write_video(args.out, tqdm(frames(), total=len(poses), desc="writing", unit="frame", disable=args.quiet), fps)
    written.append(args.out)
    if keep:
        result = np.concatenate(kept)
        ref_small = np.asarray(Image.fromarray(reference).resize((width, height), Image.Resampling.LANCZOS))
        if args.side_by_side:
            write_video(args.side_by_side, (np.concatenate([ref_small, p, f], axis=1) for p, f in zip(poses, result)),
                        fps)
            written.append(args.side_by_side)
        if args.sheet:
            save_png(contact_sheet(reference, poses, result), args.sheet)
            written.append(args.sheet)
    if not args.quiet:
        print(f"wrote {args.out} ({len(poses)} frames, {fps:g} fps) in {time.time() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    """Run `animate_to_files`; any bad input, failed write, SIGTERM or Ctrl-C ends in one `error:` line, and then
    none of the outputs is left behind (exit code 2, or 128 + the signal's number)."""
    args = parse_args(argv)
    written: list[Path] = []
    try:
        with StopSignals(raise_now=True):
            animate_to_files(args, written)
        return 0
    except (ValueError, VideoError, WeightsError, FileNotFoundError, ImportError) as e:
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
    sys.exit(main())
