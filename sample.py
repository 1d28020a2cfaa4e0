"""Animate a character: one reference image and a pose sequence in, an H.264 mp4 out.

    python sample.py                                   # the bundled demo model, reference and poses
    python sample.py --ref me.png --pose dance.mp4     # your own inputs (the demo model draws synthetic characters)
    python sample.py --moore weights/moore-animate-anyone --ref me.png --pose dance.mp4 --preset moore

Weights: a native folder written by train.py (`--weights`, default the bundled demo), a Moore-AnimateAnyone folder
(`--moore`, with the SD VAE and the CLIP image encoder), or the parts one by one. weights/README.md lists the files.
"""
from __future__ import annotations

import argparse
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
    make_folders,
    write_failure,
)
from aa.io.image import contact_sheet, save_png
from aa.io.video import read_image, video_info, write_video
from aa.models import config
from aa.poses import inputs
from aa.poses.fit import FIT_MODES
from aa.sampling import command
from aa.sampling.choices import DTYPE_NAMES, PRESETS, SCHEDULER_HELP, SCHEDULERS

# torch and the networks (seconds to import) are imported inside the functions that use them: `--help` and the
# flag checks answer at once, and a Ctrl-C while they import is a stop like any other (main's handler is in place).
if TYPE_CHECKING:
    import torch

    from aa.models.bundle import Models


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
    w.add_argument("--weights", type=Path, help=f"a native checkpoint folder from train.py (default: {command.DEMO})")
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
    s.add_argument("--dtype", choices=sorted(DTYPE_NAMES),
                   help="precision of the weights on CUDA (default fp16); the networks run in it, without "
                        "autocast; the CPU runs fp32")
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


def animate_to_files(args: argparse.Namespace, written: list[Path],
                     loaded: tuple[Models, dict, tuple[int, int], torch.dtype] | None = None) -> None:
    """Check the inputs, load the weights (unless `loaded` by aa.sampling.jobs.load_for_jobs), animate, write the
    outputs (appending each finished one to `written`)."""
    demo = command.uses_demo(args)
    ref_path = args.ref or (command.DEMO_REFERENCE if demo else None)
    pose_path = args.pose or (command.DEMO_POSES if demo else None)
    device = check_args(args)
    if ref_path is None or pose_path is None:
        raise ValueError("--ref and --pose are required unless the bundled demo model is used")
    reference = read_image(ref_path)  # RGB uint8; fails early on a missing or unreadable file
    # checked: a pose sequence that draws nothing stops here
    keypoints, fps = inputs.read_keypoints(args, pose_path, command.WEIGHTS)
    if keypoints is None and args.pose_size:
        raise ValueError(f"--pose-size is the canvas of keypoints JSON; --pose {pose_path} holds pose images, which "
                         "have their own size")
    if keypoints is None and pose_path.is_file():
        video_info(pose_path)  # a bad pose video fails before the weights load
    ref_pose = inputs.read_ref_pose(args, reference, keypoints, command.WEIGHTS)
    t0 = time.time()
    models, sampling, size, dtype = loaded or command.load_weights(args, device)
    width, height = args.width or size[0], args.height or size[1]
    command.check_size(width, height, models.size_multiple)
    poses, fps, pose_fit = inputs.load_poses(args, pose_path, width, height, keypoints, fps, ref_pose)
    reference, ref_fit = inputs.fit_reference(args, reference, width, height, ref_pose)
    if not args.quiet and (ref_fit or pose_fit):
        print(f"fit into {width}x{height} (--fit {args.fit}): {'; '.join(filter(None, (ref_fit, pose_fit)))}")
    if args.frames is not None and args.frames > len(poses):
        print(f"note: --frames {args.frames}: the pose sequence has {len(poses)} poses; animating all {len(poses)}",
              file=sys.stderr)
    settings = command.sampling_settings(args, sampling, dtype)
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
                return jobs.main(args, build_parser(), check_args, animate_to_files, quiet=args.quiet)
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
