"""Train the SD autoencoder architecture at a small width on a synthetic dataset (the bundled demo's VAE).

    python tools/train_vae.py --data data/synth --out runs/vae --steps 3000
    python tools/train_vae.py --data data/synth --out runs/vae-dec --init weights/demo/vae.safetensors \\
        --decoder-only --crop 64 --l1 0 --steps 550 --batch-size 8 --lr 2e-4     # same latent space
    python tools/train_vae.py --data data/synth --out runs/vae-wide --init weights/demo/vae.safetensors \\
        --decoder-only --decoder-channels 32,128,128 --decoder-layers 2 --crop 32   # a new, wider decoder
    python tools/train_vae.py --data data/synth data/synth-extra --out runs/vae-wide --channels 64,128,128 \\
        --crop 32 --lr 1e-3                             # a fresh, wider VAE on two datasets: a new latent space
    python tools/train_vae.py --data data/synth data/synth-many --out runs/vae-colour --decoder-only \\
        --init weights/demo/vae.safetensors --colour-augment 0.8 --l1 0    # a decoder for colours never trained on
    python tools/train_vae.py --data data/synth data/synth-many --out runs/vae16 --init runs/vae/vae.safetensors \\
        --widen-latent 16 --anchor 0.1 --colour-augment 0.8 --lr 2e-4   # 8 more latent channels (tools/widen_latent.py)
    python tools/train_vae.py --data data/synth --out runs/vae-smooth --init weights/demo/vae.safetensors \\
        --decoder-only --latent-noise 0.4 --l1 0       # a decoder that smooths the grain of sampled latents

Stable Diffusion's VAE was trained with perceptual and adversarial losses (LDM, Rombach et al. 2022, sec. 3); at
this scale plain L1 + MSE reconstruction with a small KL term (weight 1e-6, as LDM) is enough for flat synthetic
characters, trained on random crops to save compute. `--decoder-only` fine-tunes the decoder and post_quant_conv of
an existing VAE with the encoder frozen, as sd-vae-ft-mse did for SD's (a drop-in replacement: latents, and so every
model trained on them, are unchanged; ft-MSE used MSE + 0.1 LPIPS, we have no LPIPS and use MSE, i.e. PSNR itself);
with --decoder-channels/--decoder-layers the decoder is a new one of that size, trained from scratch (pack it with
tools/pack_vae_decoder.py --config), and with --widen-decoder K the old decoder made K times as wide. --channels/
--layers size a fresh VAE (a new latent space: every network must be trained again on it; `train.py --vae` reads
its architecture from the vae_config.json beside it). Decoder-only runs encode every training frame once and train
on crops of the whole-frame latents; with --colour-augment P each frame is recoloured with probability P (a random
hue turn, channel permutation, saturation and brightness) and encoded at its step instead: a decoder fine-tuned on a
few hundred characters otherwise learns their palettes and shifts the colours of new ones. Writes
`vae.safetensors` (our names, fp32, loadable by aa.weights.load_vae) and `vae_config.json` (its architecture), and
prints validation PSNR, and the held-out reconstruction PSNR/SSIM on `--eval-split` before and after.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as `python tools/train_vae.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.eval.metrics import psnr  # noqa: E402
from aa.models import config  # noqa: E402
from aa.models.vae import AutoencoderKL  # noqa: E402
from aa.training.latent import anchor_loss, widen_vae  # noqa: E402
from aa.training.vae import (  # noqa: E402
    decoder_parameters,
    encode_moments,
    latent_crop,
    load_frames,
    noisy_latents,
    recolour,
    reconstruction,
    save,
    to_tensor,
    widen_decoder,
    with_new_decoder,
)
from aa.weights.sd import load_vae, vae_config_beside  # noqa: E402


def channels(text: str) -> tuple[int, ...]:
    """argparse type: "64,128,128" -> (64, 128, 128)."""
    try:
        widths = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return widths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="synthetic dataset folder(s) (aa/synthetic); the training frames come from all of them, "
                        "validation and --eval-split from the first")
    p.add_argument("--out", type=Path, required=True, help="output folder for vae.safetensors and log.jsonl")
    p.add_argument("--model", choices=sorted(config.ARCHITECTURES), default="demo",
                   help="architecture preset (its VAE)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="frames per step")
    p.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate (cosine decay to 10%%)")
    p.add_argument("--kl", type=float, default=1e-6, help="KL weight")
    p.add_argument("--every", type=int, default=2, help="use every N-th frame of the training videos")
    p.add_argument("--crop", type=int, default=48, help="train on random square crops of this size (a multiple "
                                                        "of 8; the VAE is convolutional, so it runs on full frames)")
    p.add_argument("--channels", type=channels, help="a fresh VAE of these widths (comma-separated, top level "
                                                     "first) instead of the preset's; the latent space is new")
    p.add_argument("--layers", type=int, help="with a fresh VAE: ResNets per encoder level (the decoder has one more)")
    p.add_argument("--init-logvar", type=float, default=-8.0, help="initial posterior log-variance (bias)")
    p.add_argument("--init", type=Path, help="start from this VAE file (native or any format aa.weights.load_vae "
                                             "reads; loaded as fp32; its architecture from a vae_config.json "
                                             "beside it, else the preset's) instead of a fresh one")
    p.add_argument("--decoder-only", action="store_true",
                   help="train only the decoder and post_quant_conv of --init; the encoder stays bit-identical")
    p.add_argument("--decoder-channels", type=channels,
                   help="with --decoder-only: a new decoder of these widths (comma-separated, top level first, as "
                        "many levels as the encoder), trained from scratch on the same latents")
    p.add_argument("--decoder-layers", type=int, help="with --decoder-channels: ResNets per decoder level, minus one")
    p.add_argument("--widen-decoder", type=int, metavar="K",
                   help="with --decoder-only: start from --init's decoder made K times as wide, computing the same "
                        "function (Net2WiderNet), instead of training a new one from scratch")
    p.add_argument("--widen-latent", type=int, metavar="N",
                   help="start from --init with N latent channels instead of its own (aa.training.latent: the old "
                        "channels unchanged, the new ones ignored by the decoder at first) and train the whole VAE, "
                        "so the new channels carry what the old ones lose; tools/widen_latent.py then widens the "
                        "model's UNets to match")
    p.add_argument("--anchor", type=float, default=0.0, metavar="W",
                   help="with --widen-latent: weight of the squared distance of the old channels' posterior means "
                        "from --init's, which keeps the networks trained on them nearly valid (0: free)")
    p.add_argument("--l1", type=float, default=1.0, help="weight of the L1 term next to the MSE (0: MSE only)")
    p.add_argument("--eval-split", default="test_chars", help="split for the before/after reconstruction scores")
    p.add_argument("--eval-every", type=int, default=4, help="score every N-th frame of --eval-split's videos")
    p.add_argument("--val-every", type=int, default=100, help="score the validation frames and save every N steps")
    p.add_argument("--colour-augment", type=float, default=0.0, metavar="P",
                   help="probability that a training frame gets a random colour transform (hue turn, channel "
                        "permutation, saturation, brightness: aa.training.augment), so the VAE learns to carry "
                        "every colour, not only the training characters' (0: off)")
    p.add_argument("--latent-noise", type=float, default=0.0, metavar="S",
                   help="with --decoder-only: add Gaussian noise of standard deviation S*u (u uniform in [0, 1), one "
                        "per frame) to the decoder's latents, so it learns to smooth the grain a diffusion model's "
                        "latents carry instead of drawing it (0: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args(argv)

    if args.decoder_only and args.init is None:
        p.error("--decoder-only fine-tunes an existing VAE: give it with --init")
    if (args.decoder_channels or args.decoder_layers is not None) and not args.decoder_only:
        p.error("--decoder-channels/--decoder-layers build a new decoder for a frozen encoder: add --decoder-only")
    if args.widen_decoder is not None and (not args.decoder_only or args.widen_decoder < 2
                                           or args.decoder_channels or args.decoder_layers is not None):
        p.error("--widen-decoder K (K >= 2) widens --init's decoder: it needs --decoder-only and excludes "
                "--decoder-channels/--decoder-layers")
    if args.widen_latent is not None and (args.init is None or args.decoder_only):
        p.error("--widen-latent N widens --init's latent and trains the whole VAE: it needs --init and excludes "
                "--decoder-only")
    if args.anchor and args.widen_latent is None:
        p.error("--anchor keeps the old channels of a widened latent where they were: add --widen-latent N")
    if args.anchor < 0:
        p.error(f"--anchor must be >= 0, got {args.anchor}")
    if args.latent_noise and not args.decoder_only:
        p.error("--latent-noise trains a decoder for noisy latents: add --decoder-only")
    if args.latent_noise < 0:
        p.error(f"--latent-noise must be >= 0, got {args.latent_noise}")
    if not 0 <= args.colour_augment <= 1:
        p.error(f"--colour-augment is a probability in [0, 1], got {args.colour_augment}")
    if args.crop % 8 or args.crop < 8:
        p.error(f"--crop must be a positive multiple of 8, got {args.crop}")
    preset = config.ARCHITECTURES[args.model]().vae
    if (args.channels or args.layers is not None) and args.init is not None:
        p.error("--channels/--layers size a fresh VAE: drop --init (or use --decoder-channels with --decoder-only)")
    if args.layers is not None and args.layers < 0:
        p.error(f"--layers must be >= 0, got {args.layers}")
    fresh = replace(preset, block_out_channels=args.channels or preset.block_out_channels,
                    layers_per_block=preset.layers_per_block if args.layers is None else args.layers)
    if len(fresh.block_out_channels) != len(preset.block_out_channels):
        p.error(f"--channels needs {len(preset.block_out_channels)} levels, as the {args.model} preset (the same "
                f"downscaling, which its UNet expects), got {args.channels}")
    if any(c % fresh.norm_groups for c in fresh.block_out_channels):
        p.error(f"--channels {fresh.block_out_channels} must be multiples of norm_groups={fresh.norm_groups}")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = load_frames(args.data, "train", args.every)
    if args.crop > min(train.shape[1:3]):
        p.error(f"--crop {args.crop} is larger than the frames ({train.shape[2]}x{train.shape[1]})")
    val = to_tensor(load_frames(args.data[0], "val", 8)[:64])
    held_out = load_frames(args.data[0], args.eval_split, args.eval_every)
    if args.init is not None:
        vae = load_vae(args.init, vae_config_beside(args.init, preset), dtype=torch.float32)
        if args.decoder_channels or args.decoder_layers is not None:
            try:
                vae = with_new_decoder(vae, args.decoder_channels, args.decoder_layers)
            except ValueError as e:
                p.error(str(e))
        if args.widen_decoder:
            vae = widen_decoder(vae, args.widen_decoder)
        if args.widen_latent is not None:
            try:
                anchor, vae = vae.requires_grad_(False), widen_vae(vae, args.widen_latent)
            except ValueError as e:
                p.error(str(e))
    else:
        vae = AutoencoderKL(fresh)
        with torch.no_grad():  # start nearly deterministic: with log-variance 0 the posterior's unit noise drowns
            vae.quant_conv.bias[vae.cfg.latent_channels:] = args.init_logvar  # the small initial means
    params = list(vae.parameters())
    if args.decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        params = decoder_parameters(vae)
    cached = args.decoder_only and not args.colour_augment  # recoloured frames must be encoded at each step
    if cached:  # the encoder is frozen: encode every frame (and its mirror image) once, whole
        mirrored = np.ascontiguousarray(train[:, :, ::-1])
        moments = {False: encode_moments(vae, train), True: encode_moments(vae, mirrored)}
    before = reconstruction(vae, held_out)
    print(f"{args.eval_split} reconstruction before: PSNR {before['psnr']:.2f} dB, SSIM {before['ssim']:.4f} "
          f"({len(held_out)} frames)")
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1.0))))
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("w")
    bar = tqdm(range(args.steps), desc="vae")
    t0, score = time.time(), math.nan
    for step in bar:
        idx = rng.integers(0, len(train), args.batch_size)
        if args.decoder_only:  # a crop of whole-frame latents, on the latent grid, and the pixels under it
            frames = train if cached else recolour(train[idx], rng, args.colour_augment)
            c = args.crop // vae.downscale
            y0, x0 = (int(rng.integers(0, n // vae.downscale - c + 1)) for n in train.shape[1:3])
            mirror = bool(rng.random() < 0.5)
            if cached:
                x, z = latent_crop(mirrored if mirror else train, moments[mirror], idx, y0, x0, c)
            else:  # the recoloured frames, encoded now by the frozen encoder
                frames = np.ascontiguousarray(frames[:, :, ::-1]) if mirror else frames
                x, z = latent_crop(frames, encode_moments(vae, frames, progress=False), np.arange(len(idx)), y0, x0, c)
            z = noisy_latents(z, args.latent_noise, rng)
        else:
            y0, x0 = rng.integers(0, train.shape[1] - args.crop + 1), rng.integers(0, train.shape[2] - args.crop + 1)
            x = to_tensor(recolour(train[idx], rng, args.colour_augment)[:, y0:y0 + args.crop, x0:x0 + args.crop])
            if rng.random() < 0.5:
                x = x.flip(-1)
            q = vae.posterior(x)
            z = q.sample()
        recon = vae.decoder(vae.post_quant_conv(z))
        rec = args.l1 * F.l1_loss(recon, x) + F.mse_loss(recon, x)
        loss = rec if args.decoder_only else rec + args.kl * q.kl().mean()
        if args.anchor:
            with torch.no_grad():
                old = anchor.posterior(x).mean
            loss = loss + args.anchor * anchor_loss(q.mean, old)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(rec=f"{rec.item():.4f}")
        if (step + 1) % args.val_every == 0 or step + 1 == args.steps:
            with torch.no_grad():
                out = vae(val).clamp(-1, 1)
            score = psnr((out.permute(0, 2, 3, 1) + 1) / 2, (val.permute(0, 2, 3, 1) + 1) / 2)
            log.write(json.dumps({"step": step + 1, "rec": rec.item(), "val_psnr": score,
                                  "time": time.time() - t0}) + "\n")
            log.flush()
            save(vae, args.out)
    save(vae, args.out)
    after = reconstruction(vae, held_out)
    print(f"{args.eval_split} reconstruction after: PSNR {after['psnr']:.2f} dB, SSIM {after['ssim']:.4f}")
    (args.out / "reconstruction.json").write_text(json.dumps({"split": args.eval_split, "frames": len(held_out),
                                                              "before": before, "after": after}, indent=1))
    with torch.no_grad():  # the scale that gives the UNet unit-variance latents (SD's 0.18215 was found the same way)
        sample = to_tensor(train[rng.integers(0, len(train), 256)])
        means = torch.cat([vae.posterior(x).mean for x in sample.split(32)])
    std = means.std().item()
    scale = "unchanged (decoder only)" if args.decoder_only else f"scaling_factor = {1 / std:.5f}"
    if args.widen_latent is not None:  # the UNets were trained at the old scale: it stays, whatever the new std
        old = anchor.cfg.latent_channels
        scale = (f"keep scaling_factor {vae.cfg.scaling_factor}; std of the old channels "
                 f"{means[:, :old].std().item():.4f}, of the new {means[:, old:].std().item():.4f}")
    print(f"validation PSNR {score:.2f} dB after {args.steps} steps ({time.time() - t0:.0f} s); "
          f"wrote {args.out / 'vae.safetensors'}; latent std {std:.4f}: {scale}")


if __name__ == "__main__":
    main()
