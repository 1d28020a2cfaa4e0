"""Train the SD autoencoder architecture at a small width on a synthetic dataset (the bundled demo's VAE).

    python tools/train_vae.py --data data/synth --out runs/vae --steps 3000

Stable Diffusion's VAE was trained with perceptual and adversarial losses (LDM, Rombach et al. 2022, sec. 3); at
this scale plain L1 + MSE reconstruction with a small KL term (weight 1e-6, as LDM) is enough for flat synthetic
characters, trained on random crops to save compute. Writes `vae.safetensors` (our names, loadable by
aa.weights.load_vae) and prints validation PSNR.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as `python tools/train_vae.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa import config  # noqa: E402
from aa.metrics import psnr  # noqa: E402
from aa.vae import AutoencoderKL  # noqa: E402
from aa.video import read_video  # noqa: E402
from aa.weights.sd import save_native  # noqa: E402

PRESETS = {"demo": config.demo, "tiny": config.tiny}


def load_frames(data: Path, split: str, every: int) -> np.ndarray:
    """Every `every`-th frame of every video of a split, (n, h, w, 3) uint8."""
    entries = json.loads((data / f"{split}.json").read_text())
    return np.concatenate([read_video(data / e["video"])[::every] for e in entries])


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="synthetic dataset folder (tools/synthetic)")
    p.add_argument("--out", type=Path, required=True, help="output folder for vae.safetensors and log.jsonl")
    p.add_argument("--model", choices=sorted(PRESETS), default="demo", help="architecture preset (its VAE)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="frames per step")
    p.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate (cosine decay to 10%%)")
    p.add_argument("--kl", type=float, default=1e-6, help="KL weight")
    p.add_argument("--every", type=int, default=2, help="use every N-th frame of the training videos")
    p.add_argument("--crop", type=int, default=48, help="train on random square crops of this size (a multiple "
                                                        "of 8; the VAE is convolutional, so it runs on full frames)")
    p.add_argument("--init-logvar", type=float, default=-8.0, help="initial posterior log-variance (bias)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = load_frames(args.data, "train", args.every)
    val = to_tensor(load_frames(args.data, "val", 8)[:64])
    vae = AutoencoderKL(PRESETS[args.model]().vae)
    with torch.no_grad():  # start nearly deterministic: with log-variance 0 the posterior's unit noise drowns the
        vae.quant_conv.bias[vae.cfg.latent_channels:] = args.init_logvar  # small initial means and slows learning
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1.0))))
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("w")
    bar = tqdm(range(args.steps), desc="vae")
    t0 = time.time()
    for step in bar:
        idx = rng.integers(0, len(train), args.batch_size)
        y0, x0 = rng.integers(0, train.shape[1] - args.crop + 1), rng.integers(0, train.shape[2] - args.crop + 1)
        x = to_tensor(train[idx, y0:y0 + args.crop, x0:x0 + args.crop])
        if rng.random() < 0.5:
            x = x.flip(-1)
        q = vae.posterior(x)
        recon = vae.decoder(vae.post_quant_conv(q.sample()))
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        loss = rec + args.kl * q.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(rec=f"{rec.item():.4f}")
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            with torch.no_grad():
                out = vae(val).clamp(-1, 1)
            score = psnr((out.permute(0, 2, 3, 1) + 1) / 2, (val.permute(0, 2, 3, 1) + 1) / 2)
            log.write(json.dumps({"step": step + 1, "rec": rec.item(), "val_psnr": score,
                                  "time": time.time() - t0}) + "\n")
            log.flush()
            save_native(vae, args.out / "vae.safetensors")
    with torch.no_grad():  # the scale that gives the UNet unit-variance latents (SD's 0.18215 was found the same way)
        sample = to_tensor(train[rng.integers(0, len(train), 256)])
        std = torch.cat([vae.posterior(x).mean for x in sample.split(32)]).std().item()
    print(f"validation PSNR {score:.2f} dB after {args.steps} steps ({time.time() - t0:.0f} s); "
          f"wrote {args.out / 'vae.safetensors'}; latent std {std:.4f}: scaling_factor = {1 / std:.5f}")


if __name__ == "__main__":
    main()
