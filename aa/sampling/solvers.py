"""Multistep ODE solvers for few-step sampling, as pure functions over tensors: DPM-Solver++(2M) and UniPC-2.

Notation (ddim.py's): ab = alpha_bar_t, alpha_t = sqrt(ab), sigma_t = sqrt(1 - ab), lambda_t = log(alpha_t / sigma_t)
(half the log-SNR), x_t = alpha_t x0 + sigma_t eps. Both solvers integrate the probability-flow ODE in data
prediction form, whose exact solution from s to t (variation of constants; DPM-Solver++, Lu et al. 2022) is

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0(lambda) dlambda,

with h = lambda_t - lambda_s. Taking x0 constant over the step gives the first-order update

    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_s,                                     (*)

which is DDIM with eta 0 (Song et al. 2021, eq. 12) written in lambda. The multistep solvers keep the x0 of earlier
steps (their `History`) to extrapolate x0 linearly in lambda.

Zero terminal SNR: the first step starts at ab = 0, where lambda_s = -inf and h = +inf. Nothing here divides by
alpha_s: e^{-h} is computed as (alpha_s sigma_t) / (sigma_s alpha_t), exactly 0 there, so (*) becomes
x_t = sigma_t x_T + alpha_t x0, finite. An x0 predicted at lambda = -inf is never used for extrapolation (the step
after it is first order): the linear-in-lambda model behind the second-order terms spans an infinite interval
there, and its weight 1 / (2 r) = h / (2 h_prev) is 0 in the limit anyway. The last step, to ab = 1 (sigma_t = 0,
lambda_t = +inf), is first order too: (*) gives x_t = x0 exactly and the second-order weight h / (2 h_prev) is
undefined (diffusers' `lower_order_final` and `final_sigmas_type="zero"` do the same).

Timesteps: a multistep solver must step from each timestep to the NEXT one it will evaluate (`chained`), or the
lambdas it extrapolates over would not be those of the points where x0 was predicted; ddim.timesteps' t_prev
(t - train_steps // num_steps) differs from the next timestep when num_steps does not divide train_steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from aa.sampling import ddim
from aa.sampling.choices import SCHEDULER_HELP, SCHEDULERS  # noqa: F401 (defined there without torch)


@dataclass(frozen=True)
class History:
    """What a multistep solver carries to the next step: the data predictions of the steps so far, newest last
    (at most two are kept), the alpha_bar each was predicted at, and for UniPC the sample the last step started from
    and the order of its update (the corrector redoes that step with the new x0)."""

    x0: tuple[Tensor, ...]
    ab: tuple[float, ...]
    x: Tensor | None = None
    order: int = 1


def lam(ab: float) -> float:
    """lambda = log(alpha / sigma) = (log ab - log(1 - ab)) / 2; -inf at ab = 0, +inf at ab = 1."""
    if ab <= 0.0:
        return -math.inf
    if ab >= 1.0:
        return math.inf
    return 0.5 * (math.log(ab) - math.log1p(-ab))


def chained(steps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """ddim.timesteps' (t, t_prev) pairs re-paired as (t, next t), the last one to -1 (alpha_bar = 1, clean)."""
    ts = [t for t, _ in steps]
    return list(zip(ts, ts[1:] + [-1]))


def to_x0(pred: Tensor, x: Tensor, ab: float, prediction: str) -> Tensor:
    """The model output at x turned into the data prediction x0 (ddim.to_x0_eps). At ab = 0 only v-prediction
    defines x0 (x0 = -v); eps-prediction would divide by alpha = 0."""
    if ab <= 0.0 and prediction == "eps":
        raise ValueError("eps-prediction has no x0 at alpha_bar = 0 (zero terminal SNR): use v-prediction, or a "
                         "schedule without zero terminal SNR")
    return ddim.to_x0_eps(pred, x, ab, prediction)[0]


def _first_order(ab_s: float, ab_t: float) -> tuple[float, float]:
    """The coefficients (sigma_t / sigma_s, alpha_t (1 - e^{-h})) of (*), with e^{-h} = alpha_s sigma_t /
    (sigma_s alpha_t) so that alpha_t (1 - e^{-h}) = alpha_t - sigma_t alpha_s / sigma_s: no division by alpha_s
    or alpha_t (both may be 0 or 1 at the ends). sigma_s > 0: no step starts from the clean end."""
    a_s, s_s = math.sqrt(ab_s), math.sqrt(1.0 - ab_s)
    a_t, s_t = math.sqrt(ab_t), math.sqrt(1.0 - ab_t)
    return s_t / s_s, a_t - s_t * a_s / s_s


def _extrapolation(history: History | None, ab_s: float, ab_t: float) -> tuple[Tensor, float] | None:
    """The previous step's (x0, 1 / (2 r)) with r = h_prev / h (DPM-Solver++ Algorithm 2), or None where the update
    must be first order: no history, the previous x0 was predicted at lambda = -inf, or the step ends at ab = 1."""
    if history is None or history.ab[-1] <= 0.0 or ab_t >= 1.0 or ab_s <= 0.0:
        return None
    h = lam(ab_t) - lam(ab_s)
    h_prev = lam(ab_s) - lam(history.ab[-1])
    return history.x0[-1], h / (2.0 * h_prev)


def dpmpp_2m_step(x: Tensor, pred: Tensor, ab_s: float, ab_t: float, prediction: str = "v",
                  history: History | None = None) -> tuple[Tensor, History]:
    """One DPM-Solver++(2M) step x_s -> x_t (Lu et al. 2022, Algorithm 2; its eq. for the multistep update):

        x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) D,  D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev,

    r = h_prev / h; D = x0_s (first order, exactly (*)) where `_extrapolation` says so. `pred` is the model output
    at x_s (eps or v). Returns x_t and the history for the next step (x0_s and its ab)."""
    x0 = to_x0(pred, x, ab_s, prediction)
    ratio, c = _first_order(ab_s, ab_t)
    d = x0
    ext = _extrapolation(history, ab_s, ab_t)
    if ext is not None:
        x0_prev, w = ext
        d = x0 + w * (x0 - x0_prev)
    return ratio * x + c * d, History((x0,), (ab_s,))


def _unic_weights(h: float, r1: float) -> tuple[float, float]:
    """UniC-2's (rho_1, rho_t) for B(h) = expm1(-h) ('bh2'): the solution of [[1, 1], [r1, 1]] rho = g with
    g_1 = (phi / (-h) - 1) / B, g_2 = 2 ((phi / (-h) - 1) / (-h) - 1/2) / B, phi = B = expm1(-h) (Zhao et al. 2023,
    Algorithm 2 with the data-prediction phi functions; diffusers' `multistep_uni_c_bh_update`)."""
    hh = -h
    b = math.expm1(hh)
    phi = b / hh - 1.0
    g1 = phi / b
    g2 = 2.0 * (phi / hh - 0.5) / b
    rho1 = (g1 - g2) / (1.0 - r1)
    return rho1, g1 - rho1


def unipc_step(x: Tensor, pred: Tensor, ab_s: float, ab_t: float, prediction: str = "v",
               history: History | None = None) -> tuple[Tensor, History]:
    """One UniPC step (Zhao et al. 2023, UniPC-2, B(h) = expm1(-h), data prediction): first the corrector UniC
    redoes the previous step from its start x_{s0} with the new x0_s (evaluated at the uncorrected x_s, so it costs
    no model call),

        x_s <- (sigma_s / sigma_s0) x_s0 + alpha_s (1 - e^{-h}) [x0_s0 + rho_t (x0_s - x0_s0) + rho_1 D_1],

    with h = lambda_s - lambda_s0, rho_t = 1/2 after a first-order step, else (rho_1, rho_t) from `_unic_weights`
    and D_1 = (x0_s1 - x0_s0) / r1, r1 = (lambda_s1 - lambda_s0) / h; then the predictor UniP-2, which with this
    B(h) is exactly DPM-Solver++(2M)'s update (`dpmpp_2m_step`), from the corrected x_s. The orders fall to one
    where `_extrapolation` says so (see the module docstring for lambda = -inf and ab = 1)."""
    x0 = to_x0(pred, x, ab_s, prediction)
    if history is not None and history.x is not None:
        ab0, x0_0 = history.ab[-1], history.x0[-1]
        ratio, c = _first_order(ab0, ab_s)
        if history.order == 2:
            h = lam(ab_s) - lam(ab0)
            r1 = (lam(history.ab[-2]) - lam(ab0)) / h
            rho1, rho_t = _unic_weights(h, r1)
            d = x0_0 + rho_t * (x0 - x0_0) + rho1 * (history.x0[-2] - x0_0) / r1
        else:
            d = x0_0 + 0.5 * (x0 - x0_0)
        x = ratio * history.x + c * d
    ratio, c = _first_order(ab_s, ab_t)
    d, order = x0, 1
    ext = _extrapolation(history, ab_s, ab_t)
    if ext is not None:
        x0_prev, w = ext
        d, order = x0 + w * (x0 - x0_prev), 2
    kept = History(((history.x0[-1],) if history else ()) + (x0,), ((history.ab[-1],) if history else ()) + (ab_s,),
                   x, order)
    return ratio * x + c * d, kept


STEPS = {"dpm++2m": dpmpp_2m_step, "unipc": unipc_step}


def solver_step(scheduler: str, x: Tensor, pred: Tensor, ab_s: float, ab_t: float, prediction: str,
                history: History | None) -> tuple[Tensor, History]:
    """One step of the multistep solver `scheduler` ('dpm++2m' or 'unipc'); see their functions."""
    if scheduler not in STEPS:
        raise ValueError(f"unknown multistep solver {scheduler!r}: expected one of {tuple(STEPS)}")
    return STEPS[scheduler](x, pred, ab_s, ab_t, prediction, history)
