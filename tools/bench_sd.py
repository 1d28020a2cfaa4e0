"""CPU benchmark: one SD 1.5 UNet forward and one VAE decode at a 32x32 latent, fp32, ours vs diffusers.

    PYTHONPATH=. .venv/bin/python tools/bench_sd.py --compare

Builds the full-size models with random weights (no files needed) and prints the median of a few timed runs after
a warm-up, and the minimum (on a shared machine the steadier number). With --compare, diffusers'
UNet2DConditionModel and AutoencoderKL with the same configuration are timed by the reference environment's python
in a child process (this script again, `--backend diffusers`) after our models are freed, so the two never share
the CPU.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def wall_times(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall time of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def models_aa() -> tuple[torch.nn.Module, Callable, torch.nn.Module, Callable]:
    from aa.models.config import VAEConfig, sd15_unet
    from aa.models.unet import UNet
    from aa.models.vae import AutoencoderKL

    unet, vae = UNet(sd15_unet()).eval(), AutoencoderKL(VAEConfig()).eval()
    return unet, lambda x, t, c: unet(x, t, c), vae, lambda z: vae.decode(z)


def models_diffusers() -> tuple[torch.nn.Module, Callable, torch.nn.Module, Callable]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64).eval()  # SD 1.5
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512).eval()
    sf = 0.18215  # our decode divides by the scaling factor; diffusers' leaves it to the caller
    return (unet, lambda x, t, c: unet(x, t, encoder_hidden_states=c).sample,
            vae, lambda z: vae.decode(z / sf).sample)


def run(backend: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds of each timed UNet forward and VAE decode for one backend, in this process."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet, unet_fn, vae, vae_fn = (models_aa if backend == "aa" else models_diffusers)()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, args.latent, args.latent, generator=g)
    context = torch.randn(1, args.context_tokens, 768, generator=g)
    t = torch.tensor([500])
    with torch.inference_mode():
        result = {"unet": wall_times(lambda: unet_fn(x, t, context), args.warmup, args.repeats),
                  "vae": wall_times(lambda: vae_fn(x), args.warmup, args.repeats)}
    del unet, vae
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["aa", "diffusers"], default="aa",
                        help="implementation timed in this process")
    parser.add_argument("--compare", action="store_true",
                        help="also time diffusers in a child process run by --ref-python")
    parser.add_argument("--ref-python", default="/work/refenv/bin/python",
                        help="python of the environment that has diffusers (for --compare)")
    parser.add_argument("--latent", type=int, default=32, help="latent height and width (image = 8x)")
    parser.add_argument("--context-tokens", type=int, default=77,
                        help="cross-attention context length (77 text tokens in SD; 1 CLIP image token in AA)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table (internal)")
    args = parser.parse_args()

    results = {args.backend: run(args.backend, args)}
    if args.compare:
        child = [a for a in sys.argv[1:] if a != "--compare"] + ["--backend", "diffusers", "--json"]
        out = subprocess.run([args.ref_python, __file__, *child], check=True, capture_output=True, text=True)
        results["diffusers"] = json.loads(out.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results[args.backend]))
        return

    print(f"SD 1.5, fp32, CPU ({torch.get_num_threads()} threads), batch 1, latent {args.latent}x{args.latent}, "
          f"{args.context_tokens} context tokens; seconds: median (min) of {args.repeats} after {args.warmup} warm-up")
    names = list(results)
    print(f"{'':<18}" + "".join(f"{n:>18}" for n in names) + ("   ratio of medians" if len(names) == 2 else ""))
    for key, label in [("unet", "UNet forward"), ("vae", "VAE decode")]:
        times = [results[n][key] for n in names]
        cells = "".join(f"{f'{statistics.median(t):.3f} ({min(t):.3f})':>18}" for t in times)
        ratio = f"{statistics.median(times[0]) / statistics.median(times[1]):>19.2f}" if len(times) == 2 else ""
        print(f"{label:<18}" + cells + ratio)


if __name__ == "__main__":
    main()
