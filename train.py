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

from aa.io.cli import EXIT_USAGE, Stopped, StopSignals, check_device, check_folder, write_failure
from aa.training.config import TrainConfig, flag_name


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows a flag's default once, where there is one to show (none for required flags or a default of None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        # "%(default)" already there: Python 3.10's BooleanOptionalAction adds it itself
        if action.default not in (None, argparse.SUPPRESS) and not action.required and "%(default)" not in help:
            help += " (default: %(default)s)"
        return help


def parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field, as the field's `Flag` describes it, and the export folders."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    for f in fields(TrainConfig):
        spec = f.metadata["flag"]
        help = spec.help.replace("%", "%%")  # argparse %-formats help texts
        if isinstance(f.default, bool):
            p.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, default=f.default, help=help)
        else:
            p.add_argument(flag_name(f.name), type=str if f.default is None else type(f.default), default=f.default,
                           choices=spec.choices() if spec.choices else None, required=spec.required,
                           nargs="+" if spec.many else None, metavar=spec.metavar, help=help)
    p.add_argument("--export-moore", metavar="DIR", help="after training, also write the released Moore layout here")
    p.add_argument("--export", metavar="DIR", help="after training, write a self-contained model folder here")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    args = parser().parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    if cfg.min_snr_gamma is not None and cfg.min_snr_gamma < 0:  # the command line's way to turn it off
        cfg.min_snr_gamma = None
    return cfg, args


def check_args(cfg: TrainConfig, args: argparse.Namespace) -> None:
    """Every flag that can be checked before the models are built (ValueError naming the flag); the size against
    the model's real factor is checked in `train` right after building."""
    from aa.training.data import read_manifests  # imported here, like `train`'s loop
    cfg.check()  # bounds, choices, input paths, and the rules between options
    if cfg.device:
        check_device(cfg.device)
    read_manifests(cfg.data)  # each a readable, well-formed manifest
    if cfg.val_data:
        read_manifests(cfg.val_data)
    check_folder("--out", Path(cfg.out))
    for name in ("export", "export_moore"):
        if getattr(args, name):
            check_folder(flag_name(name), Path(getattr(args, name)))


def train(cfg: TrainConfig, stop: StopSignals) -> Path:
    """`aa.training.loop.train`, imported only when training: the training stack takes a second to import, which
    --help and a refused flag don't need."""
    from aa.training.loop import train
    return train(cfg, stop)


def main(argv: list[str] | None = None) -> int:
    """Train; a bad input or failed write ends in one `error:` line (exit 2); SIGTERM or Ctrl-C saves a checkpoint
    of the current step and exits with one line (code 128 + the signal's number)."""
    cfg, args = parse_args(argv)
    # e.g. "WARNING aa.training.data: skipping x.mp4: ..."
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
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
