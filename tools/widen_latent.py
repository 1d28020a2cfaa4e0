"""Give a trained model a VAE with more latent channels and widen its UNets to match: the start of a fine-tune.

    python tools/train_vae.py --data data/synth data/synth-many --out runs/vae16 \\
        --init weights/demo/vae.safetensors --widen-latent 16 --anchor 0.1 --colour-augment 0.8 --lr 2e-4
    python tools/widen_latent.py --model weights/demo --vae runs/vae16/vae.safetensors --out runs/demo16 \\
        --data data/synth
    python train.py --stage 1 --model demo --init runs/demo16 ...     # then stage 2 with --motion weights/demo

The denoising UNet and the ReferenceNet of --model get the new VAE's latent channels: the new inputs read through
zero weights and the UNet predicts zero for the new outputs (aa.training.latent), so the folder samples as --model
did, up to how far the VAE moved the old channels, until stage-1 training teaches the UNets the new ones. The image
encoder, the Pose Guider and the temporal layers are copied unchanged. With --data the VAE's new channels are
rescaled to the old ones' spread (aa.training.latent.match_new_channels: the decoder's output is unchanged), so
the diffusion noise drowns them as much as the old ones; a VAE trained by --widen-latent starts them small. Writes
a native model folder in fp32.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python tools/widen_latent.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.training.latent import match_new_channels, widen_models  # noqa: E402
from aa.training.vae import load_frames, to_tensor  # noqa: E402
from aa.weights.files import WeightsError  # noqa: E402
from aa.weights.native import load_models, save_models  # noqa: E402
from aa.weights.sd import load_vae, vae_config_beside  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a native model folder (weights/demo, a checkpoint)")
    p.add_argument("--vae", type=Path, required=True,
                   help="the wider VAE (tools/train_vae.py --widen-latent; its vae_config.json beside it)")
    p.add_argument("--out", type=Path, required=True, help="the new model folder")
    p.add_argument("--data", type=Path,
                   help="a synthetic dataset folder: rescale the VAE's new channels to the old ones' spread, "
                        "measured on its validation frames (without it the VAE is taken as it is)")
    args = p.parse_args(argv)
    if args.out.resolve() == args.model.resolve():
        p.error("--out must be a new folder, not --model itself")
    try:
        models, sampling = load_models(args.model, dtype=torch.float32)
        vae = load_vae(args.vae, vae_config_beside(args.vae, models.vae.cfg), dtype=torch.float32)
        wide = widen_models(models, vae)
        frames = None if args.data is None else to_tensor(load_frames(args.data, "val", 4)[:64])
    except (WeightsError, ValueError, OSError) as e:
        p.error(str(e))
    old = models.vae.cfg.latent_channels
    if frames is not None:  # in place, on the VAE the widened folder holds
        scale = match_new_channels(wide.vae, old, frames)
        print("new channels scaled by " + " ".join(f"{s:.2f}" for s in scale[old:]))
    save_models(wide, args.out, sampling=sampling)
    print(f"wrote {args.out}: latent channels {old} -> {wide.vae.cfg.latent_channels}")


if __name__ == "__main__":
    main()
