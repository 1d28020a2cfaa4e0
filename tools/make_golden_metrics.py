"""Generate tests/data/golden_metrics.safetensors: SSIM and PSNR of small video pairs computed by scikit-image.

    python tools/make_golden_metrics.py     # in the reference env of requirements-golden.txt (with scikit-image)

The oracle is `skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)` (Wang et al. 2004's settings: 11-tap gaussian window,
population covariance; skimage filters with reflect padding, then averages the map without its 5-pixel border, which
is `aa.eval.metrics.ssim_frames`'s 'valid' convention) and `peak_signal_noise_ratio(b, a, data_range=1)`, per frame, on
uint8 frames divided by 255.

Writes (all tiny): `truth` and `generated` uint8 (f, h, w, 3), a non-square 20x28 textured scene and, per frame, a
different corruption (noise, blur plus brightness shift, a shifted copy, an unrelated image); `ssim` and `psnr`
float64 (f,). Metadata: the skimage version. The project's tests read the file and never import skimage.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage
from safetensors.numpy import save_file
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "golden_metrics.safetensors"


def scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour gradient with a few rectangles and mild noise: float (h, w, 3) in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * np.sin(6 * xx * yy)], axis=-1)
    for _ in range(4):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        img[y0:y0 + rng.integers(3, 9), x0:x0 + rng.integers(3, 11)] = rng.uniform(0, 1, 3)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="output .safetensors file")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the scenes and corruptions")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    h, w = 20, 28
    truth = [scene(rng, h, w) for _ in range(4)]
    generated = [
        truth[0] + rng.normal(0, 0.08, truth[0].shape),  # noise
        gaussian_filter(truth[1], sigma=(1.2, 1.2, 0)) + 0.05,  # blur and a brightness shift
        np.roll(truth[2], shift=(2, -3), axis=(0, 1)),  # misplaced content
        scene(rng, h, w),  # an unrelated image
    ]
    truth8, gen8 = to_uint8(np.stack(truth)), to_uint8(np.stack(generated))
    t, g = truth8 / 255.0, gen8 / 255.0
    ssim = np.array([structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=1, channel_axis=-1) for a, b in zip(g, t)])
    psnr = np.array([peak_signal_noise_ratio(b, a, data_range=1) for a, b in zip(g, t)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"truth": truth8, "generated": gen8, "ssim": ssim.astype(np.float64), "psnr": psnr.astype(np.float64)},
              str(args.out), metadata={"skimage": skimage.__version__})
    print(f"wrote {args.out}: ssim {np.round(ssim, 4).tolist()}, psnr {np.round(psnr, 2).tolist()}")


if __name__ == "__main__":
    main()
