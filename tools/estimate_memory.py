"""Peak device memory of `animate()` at full size without a GPU: the five networks on the `meta` device, the real
pipeline functions run on meta tensors, the live tensor bytes tracked by aa/eval/memory.py (CUDA's fused attention and
autocast emulated).

    python tools/estimate_memory.py                                  # SD 1.5, 24 frames 512x768 fp16, guidance 3.5
    python tools/estimate_memory.py --offload --decode-chunk 2       # an 8 GB card
    python tools/estimate_memory.py --offload --split-guidance       # the guidance branches one at a time
    python tools/estimate_memory.py --before                         # the pipeline before the fast path, for comparison

Phases: encoding the reference (VAE encoder, CLIP, ReferenceNet, K/V projection), one DDIM step over the video's
windows (Pose Guider features for the video, both guidance branches in one batch unless --split-guidance),
decoding one chunk of frames.
Only device tensors count (host-side pose images and decoded frames do not). `--before` runs the same networks as the
code before the inference fast path (commit 595cf31) did: the feed-forward unsliced, nothing offloaded, eight frames
per decode (a lower bound: its autocast's fp32 norm outputs are left out; aa.eval.memory.Emulate's autocast
over-counts on this pipeline). Not counted: the CUDA context (~0.4 GB), kernel workspaces, allocator rounding and
fragmentation.
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.eval.memory import Emulate, MemoryTracker, gb, nbytes  # noqa: E402
from aa.models import attention, config  # noqa: E402
from aa.models.bundle import Models  # noqa: E402
from aa.sampling import pipeline  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}



def estimate(model: str, frames: int, width: int, height: int, dtype: torch.dtype, guidance: float,
             window: int = 24, offload: bool = False, decode_chunk: int = 8, before: bool = False,
             split_guidance: bool = False) -> dict[str, int]:
    """Peak live device bytes per phase ('encode', 'step', 'decode') and overall ('peak'), and the weights."""
    with torch.device("meta"):
        models = Models.build(config.ARCHITECTURES[model]())
    models.to(dtype=dtype)
    emulate = Emulate("cuda")
    chunk_elements = attention.FF_CHUNK_ELEMENTS
    if before:
        attention.FF_CHUNK_ELEMENTS = 2**62
    settings = pipeline.Settings(steps=1, guidance=guidance, window=window, split_guidance=split_guidance)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    poses = np.zeros((frames, height, width, 3), np.uint8)
    out: dict[str, int] = {"weights": nbytes(p for m in models.modules().values() for p in m.parameters())}
    try:
        # meta stands in for the GPU: host tensors (pose images, decoded frames) are not device memory
        with MemoryTracker(device="meta") as mem, emulate:
            for name, module in models.modules().items():
                mem.track(module.parameters(), "weights")
            context, ref_kv = pipeline.encode_reference(models, reference, width, height)
            out["encode"], mem.peak = mem.peak, 0
            if offload:  # what `Settings.offload` does on CUDA: their weights leave the device
                models.reference_net = models.image_encoder = None
                gc.collect()
            down = models.vae.downscale
            z = torch.zeros(frames, models.vae.cfg.latent_channels, height // down, width // down, device="meta")
            z = pipeline.denoise(models, z, poses, context, ref_kv, settings, progress=False)
            out["step"], mem.peak = mem.peak, mem.total
            with torch.inference_mode():
                models.vae.decode(z[:decode_chunk].to(dtype))
            out["decode"] = mem.peak
    finally:
        attention.FF_CHUNK_ELEMENTS = chunk_elements
    out["peak"] = max(out["encode"], out["step"], out["decode"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(config.ARCHITECTURES), default="sd15", help="architecture")
    p.add_argument("--frames", type=int, default=24, help="video length")
    p.add_argument("--width", type=int, default=512, help="video width in pixels")
    p.add_argument("--height", type=int, default=768, help="video height in pixels")
    p.add_argument("--window", type=int, default=24, help="frames per temporal window")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="weights precision")
    p.add_argument("--guidance", type=float, default=3.5, help="guidance scale (1: no unconditional branch)")
    p.add_argument("--offload", action="store_true", help="ReferenceNet and CLIP off the device after encoding")
    p.add_argument("--split-guidance", action="store_true", help="the two guidance branches one after the other")
    p.add_argument("--decode-chunk", type=int, default=8, help="frames per VAE decode call")
    p.add_argument("--before", action="store_true", help="the pipeline before the inference fast path "
                                                         "(unsliced feed-forward, no offload; use with the default "
                                                         "--decode-chunk 8)")
    args = p.parse_args(argv)
    r = estimate(args.model, args.frames, args.width, args.height, DTYPES[args.dtype], args.guidance, args.window,
                 args.offload, args.decode_chunk, args.before, args.split_guidance)
    options = [name for name, on in (("offload", args.offload), ("split guidance", args.split_guidance),
                                     ("before the fast path", args.before)) if on]
    print(f"{args.model}, {args.frames} frames at {args.width}x{args.height}, {args.dtype}, guidance {args.guidance}, "
          f"window {args.window}, " + "".join(f"{o}, " for o in options) + f"decode chunk {args.decode_chunk}")
    print(f"  weights (all five)  {gb(r['weights']):6.2f} GiB")
    for phase in ("encode", "step", "decode"):
        print(f"  peak in {phase:<11} {gb(r[phase]):6.2f} GiB")
    print(f"  peak                {gb(r['peak']):6.2f} GiB (+ CUDA context ~0.4 GiB, workspaces, fragmentation)")


if __name__ == "__main__":
    main()
