"""Noise schedules, prediction targets and the DDIM sampler as pure functions over tensors.

Notation: ab = alpha_bar_t = prod_{s<=t} (1 - beta_s); x_t = sqrt(ab) x0 + sqrt(1 - ab) eps (DDPM, Ho et al. 2020,
eq. 4); v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022, sec. 4). Schedules are float64; values are cast to
the data's dtype where they meet it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from aa.sampling.choices import PREDICTIONS, SNR_WEIGHTINGS  # defined there: command lines read them without torch

SPACINGS = ("leading", "trailing", "linspace")


def betas(schedule: str = "scaled_linear", train_steps: int = 1000, start: float = 0.00085,
          end: float = 0.012) -> Tensor:
    """SD betas: 'linear' = linspace(start, end); 'scaled_linear' = linspace(sqrt(start), sqrt(end)) ** 2."""
    if schedule == "linear":
        return torch.linspace(start, end, train_steps, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(start ** 0.5, end ** 0.5, train_steps, dtype=torch.float64) ** 2
    raise ValueError(f"unknown beta schedule {schedule!r}: expected 'linear' or 'scaled_linear'")


def rescale_zero_terminal_snr(b: Tensor) -> Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has SNR exactly 0 and the first is unchanged
    (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", algorithm 1)."""
    s = torch.cumprod(1.0 - b, dim=0).sqrt()
    first, last = s[0].clone(), s[-1].clone()
    s = (s - last) * first / (first - last)
    ab = s ** 2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def alphas_cumprod(schedule: str = "scaled_linear", zero_snr: bool = False, train_steps: int = 1000,
                   start: float = 0.00085, end: float = 0.012) -> Tensor:
    """alpha_bar_t for t = 0 .. train_steps - 1 (float64)."""
    b = betas(schedule, train_steps, start, end)
    if zero_snr:
        b = rescale_zero_terminal_snr(b)
    return torch.cumprod(1.0 - b, dim=0)


def timesteps(num_steps: int, train_steps: int = 1000, spacing: str = "trailing",
              steps_offset: int = 0) -> list[tuple[int, int]]:
    """The DDIM steps as (t, t_prev) pairs from noisy to clean; t_prev = -1 means "alpha_bar = 1" (clean).

    Spacings as in diffusers' DDIMScheduler: 'leading' (0, k, 2k, ... + steps_offset), 'trailing' (ends at
    train_steps - 1; Lin et al. 2024, sec. 3.3), 'linspace'. t_prev = t - train_steps // num_steps in every case.
    """
    if not 1 <= num_steps <= train_steps:
        raise ValueError(f"num_steps must be in [1, {train_steps}], got {num_steps}")
    if spacing == "leading":
        ts = np.arange(num_steps) * (train_steps // num_steps) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(train_steps, 0, -train_steps / num_steps)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, train_steps - 1, num_steps).round()
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}: expected one of {SPACINGS}")
    ts = sorted((int(t) for t in ts), reverse=True)
    step = train_steps // num_steps
    return [(t, t - step) for t in ts]


def alpha_bar(ab: Tensor, t: int) -> float:
    """alpha_bar at step t, with alpha_bar_{-1} = 1 (the clean image; diffusers' `set_alpha_to_one`)."""
    return 1.0 if t < 0 else float(ab[t])


def _coeffs(ab: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(ab), sqrt(1 - ab)) in float64, then cast to x's dtype and shaped to broadcast against x (b, ...);
    ab is a scalar or one value per sample (b,)."""
    ab = torch.as_tensor(ab, dtype=torch.float64, device=x.device)
    if ab.ndim:
        ab = ab.reshape(-1, *([1] * (x.ndim - 1)))
    return ab.sqrt().to(x.dtype), (1 - ab).sqrt().to(x.dtype)


def add_noise(x0: Tensor, noise: Tensor, ab: Tensor | float) -> Tensor:
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps (DDPM eq. 4)."""
    a, s = _coeffs(ab, x0)
    return a * x0 + s * noise


def v_target(x0: Tensor, noise: Tensor, ab: Tensor | float) -> Tensor:
    """v = sqrt(ab) eps - sqrt(1 - ab) x0."""
    a, s = _coeffs(ab, x0)
    return a * noise - s * x0


def training_target(x0: Tensor, noise: Tensor, ab: Tensor | float, prediction: str) -> Tensor:
    """What the UNet learns to output: the noise ('eps') or the velocity ('v')."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}: expected one of {PREDICTIONS}")
    return noise if prediction == "eps" else v_target(x0, noise, ab)


def to_x0_eps(pred: Tensor, x_t: Tensor, ab: Tensor | float, prediction: str) -> tuple[Tensor, Tensor]:
    """The model output at x_t turned into (x0_hat, eps_hat).

    eps: x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab); v: x0 = sqrt(ab) x_t - sqrt(1 - ab) v,
    eps = sqrt(1 - ab) x_t + sqrt(ab) v (both well defined at ab = 0, the zero-SNR last step).
    """
    a, s = _coeffs(ab, x_t)
    if prediction == "eps":
        return (x_t - s * pred) / a, pred
    if prediction == "v":
        return a * x_t - s * pred, s * x_t + a * pred
    raise ValueError(f"unknown prediction type {prediction!r}: expected one of {PREDICTIONS}")


def ddim_sigma(ab_t: float, ab_prev: float, eta: float) -> float:
    """sigma_t(eta) = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev) (DDIM, eq. 16)."""
    if eta == 0.0:
        return 0.0
    return eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) ** 0.5


def ddim_step(x_t: Tensor, pred: Tensor, ab_t: float, ab_prev: float, prediction: str = "eps", eta: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
    """One DDIM step x_t -> x_prev (Song et al. 2021, eq. 12):
    x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z."""
    x0, eps = to_x0_eps(pred, x_t, ab_t, prediction)
    sigma = ddim_sigma(ab_t, ab_prev, eta)
    x_prev = ab_prev ** 0.5 * x0 + max(1 - ab_prev - sigma ** 2, 0.0) ** 0.5 * eps
    if sigma > 0:
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        x_prev = x_prev + sigma * z
    return x_prev


def min_snr_weight(ab: Tensor, gamma: float, prediction: str, weighting: str = "released") -> Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023) per sample, SNR = ab / (1 - ab).

    eps: min(SNR, gamma) / SNR in both variants (at SNR 0, zero-terminal-SNR's last step, its limit 1).
    v, 'released': min(SNR + 1, gamma) / (SNR + 1), what Moore-AnimateAnyone trained with (train_stage_1.py and
    train_stage_2.py add 1 to the SNR before the minimum, as diffusers' train_text_to_image.py): 1 wherever
    SNR <= gamma - 1, including SNR 0.
    v, 'hang': min(SNR, gamma) / (SNR + 1), the paper's weight for v: 0 at SNR 0 and small wherever SNR is.
    """
    if weighting not in SNR_WEIGHTINGS:
        raise ValueError(f"unknown min-SNR weighting {weighting!r}: expected one of {SNR_WEIGHTINGS}")
    snr = ab / (1 - ab)
    if prediction == "eps":
        return (gamma / snr).clamp(max=1.0)
    if prediction == "v":
        if weighting == "released":
            return (snr + 1).clamp(max=gamma) / (snr + 1)
        return snr.clamp(max=gamma) / (snr + 1)
    raise ValueError(f"unknown prediction type {prediction!r}: expected one of {PREDICTIONS}")
