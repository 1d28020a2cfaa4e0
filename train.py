"""Train Animate Anyone in two stages (paper 3.3).

    python train.py --stage 1 --data data/train.json --sd-unet weights/stable-diffusion-v1-5 \\
        --vae weights/sd-vae-ft-mse --clip weights/sd-image-variations-diffusers/image_encoder --out runs/s1
    python train.py --stage 2 --data data/train.json --stage1 runs/s1/checkpoints/step_0030000 \\
        --motion weights/animatediff/mm_sd_v15_v2.ckpt --out runs/s2
    torchrun --nproc_per_node 8 train.py ...        # data-parallel, one process per GPU (gloo on CPU)

Checkpoints (runs/x/checkpoints/step_N) load in sample.py with --weights; --export-moore writes the released layout.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from aa.data import read_manifests
from aa.safety import EXIT_USAGE, StopSignals, Stopped, check_device, check_folder, check_number, write_failure
from aa.training.loop import AMP, TrainConfig, train
from aa.training.setup import PRESETS

HELP = {
    "stage": "1: single frames, trains UNet + ReferenceNet + Pose Guider; 2: clips, trains the temporal layers only",
    "data": "training manifest(s): JSON lists of {video, keypoints} (ours) or {video_path, kps_path} (released); "
            "several are read as one dataset",
    "out": "run folder: checkpoints/, frozen/, val/, log.jsonl",
    "val_data": "manifest for validation videos (default: the training one)",
    "model": "architecture when not starting from a folder: 'sd15' (SD 1.5 + AnimateDiff v2 layout) or 'tiny'; "
             "stage 2: the temporal layers' layout and heads (pass the stage-1 run's)",
    "init": "stage 1: a native model folder to start from (all five networks it holds)",
    "sd_unet": "stage 1: SD 1.x UNet weights for both UNets (single file, diffusers folder, sd-image-variations)",
    "vae": "stage 1: VAE weights (sd-vae-ft-mse folder or file, or an SD single file)",
    "clip": "stage 1: CLIP image encoder (sd-image-variations image_encoder/ folder)",
    "pose_guider_init": "stage 1: ControlNet openpose weights for the Pose Guider (default: Gaussian init, zero "
                        "output layer)",
    "stage1": "stage 2: the stage-1 checkpoint folder to start from",
    "motion": "stage 2: motion modules to start the temporal layers from: an AnimateDiff file or a model folder "
              "with temporal layers, e.g. an earlier stage-2 checkpoint (default: new, zero output)",
    "train_image_encoder": "also train the image encoder (only for small models without a pretrained one)",
    "steps": "optimizer steps in total (a resumed run continues up to this)",
    "batch_size": "videos per process per micro-batch",
    "grad_accum": "micro-batches per optimizer step",
    "lr": "AdamW learning rate after warm-up",
    "warmup": "linear warm-up steps",
    "decay": "linear decay of the learning rate to zero over the last N steps (0: constant after warm-up)",
    "weight_decay": "AdamW weight decay",
    "clip_grad": "gradient norm clipping (0: off)",
    "mixed_precision": "autocast: 'no', 'bf16', or 'fp16' with a gradient scaler (CUDA only)",
    "gradient_checkpointing": "recompute UNet activations in backward (much less memory, ~30%% slower)",
    "frozen_dtype": "store the weights that don't train in 'bf16' or 'fp16' (halves their memory; needs "
                    "--mixed-precision; they are saved in this dtype too) or 'fp32'",
    "prediction": "what the UNet predicts: 'v' or 'eps'",
    "zero_snr": "rescale the noise schedule to zero terminal SNR",
    "min_snr_gamma": "min-SNR-gamma loss weighting (a negative value turns it off)",
    "snr_weighting": "v-prediction's min-SNR weight: 'released' min(SNR+1, g)/(SNR+1) as Moore trained, or 'hang' "
                     "min(SNR, g)/(SNR+1) (0 at zero SNR)",
    "noise_offset": "per-video, per-channel offset noise scale",
    "uncond_rate": "fraction of samples trained unconditionally (zero CLIP embedding, no reference)",
    "reference": "use the ReferenceNet (--no-reference: image-encoder cross-attention only, the paper's ablation)",
    "width": "training width in pixels (a multiple of the model's size factor: 64 for SD 1.5)",
    "height": "training height in pixels (the same multiple)",
    "frames": "stage 2: frames per clip",
    "stride": "stage 2: step between the frames of a clip",
    "min_ref_distance": "stage 1: minimum distance in frames between the target and the reference frame",
    "save_every": "checkpoint every N steps",
    "keep": "keep the newest N checkpoints",
    "log_every": "write log.jsonl every N steps",
    "val_every": "write a validation video every N steps and at the end (0: never)",
    "val_steps": "DDIM steps of validation videos",
    "seed": "seed of data order, augmentation and noise (runs are reproducible)",
    "workers": "data loader worker processes per training process",
    "fsdp": "under torchrun: shard parameters, gradients and optimizer state across processes (FSDP2) instead of "
            "keeping a copy in each (DDP)",
    "resume": "continue from a checkpoint folder, or 'auto' for the newest one in --out",
    "device": "torch device (default: this process's GPU if there is one, else cpu)",
}

CHOICES = {"stage": [1, 2], "model": sorted(PRESETS), "mixed_precision": sorted(AMP), "prediction": ["v", "eps"],
           "frozen_dtype": ["fp32", "bf16", "fp16"],
           "snr_weighting": ["released", "hang"]}


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=HELP[f.name])
        else:
            kind = {"min_snr_gamma": float}.get(f.name, type(default) if default is not None else str)
            p.add_argument(flag, type=kind, default=default, help=HELP[f.name] + f" (default: {default})",
                           required=f.name == "data", choices=CHOICES.get(f.name),
                           nargs="+" if f.name == "data" else None)
    p.add_argument("--export-moore", metavar="DIR", help="after training, also write the released Moore layout here")
    p.add_argument("--export", metavar="DIR", help="after training, write a self-contained model folder here")
    args = p.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    if cfg.min_snr_gamma is not None and cfg.min_snr_gamma < 0:
        cfg.min_snr_gamma = None
    return cfg, args


def check_args(cfg: TrainConfig, args: argparse.Namespace) -> None:
    """Every flag that can be checked before the models are built (ValueError naming the flag); the size against
    the model's real factor is checked in `train` right after building."""
    at_least = {"steps": 1, "batch_size": 1, "grad_accum": 1, "save_every": 1, "log_every": 1, "frames": 1,
                "stride": 1, "width": 1, "height": 1, "val_steps": 1, "warmup": 0, "decay": 0, "keep": 0,
                "val_every": 0, "workers": 0, "min_ref_distance": 0, "weight_decay": 0, "clip_grad": 0,
                "noise_offset": 0, "uncond_rate": 0}
    for name, minimum in at_least.items():
        check_number("--" + name.replace("_", "-"), getattr(cfg, name), minimum=minimum)
    check_number("--lr", cfg.lr, above=0)
    check_number("--min-snr-gamma", cfg.min_snr_gamma)
    if cfg.uncond_rate > 1:
        raise ValueError(f"--uncond-rate is a fraction in [0, 1], got {cfg.uncond_rate}")
    if cfg.device:
        check_device(cfg.device)
    read_manifests(cfg.data)  # each a readable, well-formed manifest
    if cfg.val_data:
        read_manifests(cfg.val_data)
    check_folder("--out", Path(cfg.out))
    for flag in ("export", "export_moore"):
        if getattr(args, flag):
            check_folder("--" + flag.replace("_", "-"), Path(getattr(args, flag)))
    for name in ("init", "sd_unet", "vae", "clip", "pose_guider_init", "stage1", "motion"):
        if getattr(cfg, name) and not Path(getattr(cfg, name)).exists():
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: no such file or folder")
    if cfg.resume not in (None, "auto") and not (Path(cfg.resume) / "train_state.pt").is_file():
        raise ValueError(f"--resume {cfg.resume}: not a checkpoint folder (no train_state.pt); or pass 'auto'")


def main(argv: list[str] | None = None) -> int:
    """Train; a bad input or failed write ends in one `error:` line (exit 2); SIGTERM or Ctrl-C saves a checkpoint
    of the current step and exits with one line (code 128 + the signal's number)."""
    cfg, args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # e.g. "WARNING aa.data: skipping x.mp4: ..."
    try:
        check_args(cfg, args)
        with StopSignals() as stop:
            last = train(cfg, stop)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"error: {(e.strerror or str(e)) if e.filename is None else write_failure(Path(e.filename), e)}",
              file=sys.stderr)
        return EXIT_USAGE
    except Stopped as e:
        print(str(e), file=sys.stderr)
        return e.code
    import torch.distributed as dist
    if last is not None and (not dist.is_initialized() or dist.get_rank() == 0):
        from aa.weights.native import export_folder, export_moore, load_models
        if args.export:
            export_folder(last, args.export)
        if args.export_moore:
            export_moore(load_models(last)[0], args.export_moore)
        print(f"last checkpoint: {last}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
