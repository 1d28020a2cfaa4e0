"""The multistep solvers (aa/sampling/solvers.py): DPM-Solver++(2M) and UniPC-2 against diffusers' goldens, their
order of convergence on an ODE with a closed-form solution, the exact zero-terminal-SNR first step, and their use
over blended windows in `pipeline.denoise`."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aa.sampling import ddim, pipeline, solvers
from tests.helpers import tiny_animation_models

GOLDEN = Path(__file__).parent / "data" / "golden_solver"
MULTISTEP = ("dpm++2m", "unipc")


@pytest.mark.parametrize("name", MULTISTEP)
def test_solver_matches_diffusers(name):
    """Six steps on fixed random v-predictions land on every sample diffusers' scheduler produced (DPMSolverMultistep
    'dpmsolver++' order 2, or UniPCMultistep bh2; zero SNR with its clipped last alpha_bar, which we are fed here;
    trailing timesteps, which equal ddim.timesteps'; tools/make_golden_solver.py) to float32 rounding."""
    g = load_file(GOLDEN / f"{name}.safetensors")
    ab = g["alphas_cumprod"]
    steps = ddim.timesteps(len(g["timesteps"]), spacing="trailing")
    assert [t for t, _ in steps] == g["timesteps"].tolist()
    x, history = g["xs"][0], None
    for k, (t, t_next) in enumerate(solvers.chained(steps)):
        x, history = solvers.solver_step(name, x, g["outputs"][k], ddim.alpha_bar(ab, t), ddim.alpha_bar(ab, t_next),
                                         "v", history)
        torch.testing.assert_close(x, g["xs"][k + 1], atol=2e-6, rtol=2e-6, msg=f"{name} step {k}")


@pytest.mark.parametrize("name", MULTISTEP)
def test_zero_snr_first_step_is_finite_and_ddim(name):
    """From alpha_bar = 0 exactly (lambda = -inf) the first step is finite and equals DDIM's; the next step, whose
    only history was predicted at lambda = -inf, equals a first-order step (that x0 is never extrapolated)."""
    ab = ddim.alphas_cumprod(zero_snr=True)
    assert ab[-1] == 0.0
    (_, t1), (_, t2) = solvers.chained(ddim.timesteps(10))[:2]
    g = torch.Generator().manual_seed(0)
    x, v0, v1 = (torch.randn(2, 4, 5, 5, generator=g) for _ in range(3))
    x1, history = solvers.solver_step(name, x, v0, 0.0, float(ab[t1]), "v", None)
    assert torch.isfinite(x1).all()
    torch.testing.assert_close(x1, ddim.ddim_step(x, v0, 0.0, float(ab[t1]), "v"), atol=1e-6, rtol=1e-6)
    x2, _ = solvers.solver_step(name, x1, v1, float(ab[t1]), float(ab[t2]), "v", history)
    if name == "dpm++2m":  # UniPC also corrects x1 from x with the new x0 here, which a first step cannot do
        torch.testing.assert_close(x2, ddim.ddim_step(x1, v1, float(ab[t1]), float(ab[t2]), "v"), atol=1e-6,
                                   rtol=1e-6)
    assert torch.isfinite(x2).all()


@pytest.mark.parametrize("name", MULTISTEP)
def test_last_step_to_clean_is_first_order(name):
    """The step to alpha_bar = 1 returns the data prediction itself, whatever the history (no extrapolation to
    lambda = +inf)."""
    g = torch.Generator().manual_seed(1)
    x, v, x0_old = (torch.randn(3, 4, generator=g) for _ in range(3))
    history = solvers.History((x0_old,), (0.5,))
    out, _ = solvers.solver_step(name, x, v, 0.9, 1.0, "v", history)
    torch.testing.assert_close(out, ddim.to_x0_eps(v, x, 0.9, "v")[0])


def test_inputs_are_not_mutated():
    """A step leaves the caller's sample, output and history tensors as they were."""
    g = torch.Generator().manual_seed(2)
    x, v, x0_old, x_old = (torch.randn(3, 4, generator=g) for _ in range(4))
    for name in MULTISTEP:
        history = solvers.History((x0_old, x0_old + 1), (0.2, 0.3), x_old, 2)
        before = [t.clone() for t in (x, v, x0_old, x_old)]
        solvers.solver_step(name, x, v, 0.4, 0.6, "v", history)
        assert all(torch.equal(a, b) for a, b in zip(before, (x, v, x0_old, x_old)))


# ----------------------------------------------------------------------------------------- order on an exact ODE
MU, S = 0.7, 0.5  # data ~ N(MU, S^2) in every coordinate


def gaussian_model(x: torch.Tensor, ab: float, prediction: str) -> torch.Tensor:
    """The ideal model output for N(MU, S^2) data: x0 = E[x0 | x_t] = MU + a S^2 (x_t - a MU) / (a^2 S^2 + s^2),
    as eps or v (ddim.py's conventions)."""
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    x0 = MU + a * S ** 2 * (x - a * MU) / (a ** 2 * S ** 2 + s ** 2)
    eps = (x - a * x0) / s
    return eps if prediction == "eps" else a * eps - s * x0


def exact(x: torch.Tensor, ab_from: float, ab_to: float) -> torch.Tensor:
    """The probability-flow ODE's solution for Gaussian data: z = (x - a MU) / sqrt(a^2 S^2 + s^2) is constant."""
    def scale(ab):
        return math.sqrt(ab * S ** 2 + 1 - ab)
    z = (x - math.sqrt(ab_from) * MU) / scale(ab_from)
    return math.sqrt(ab_to) * MU + scale(ab_to) * z


def solve(name: str, n: int, prediction: str, x: torch.Tensor) -> torch.Tensor:
    """n steps on a cosine schedule from alpha_bar 0.006 to 0.994 (finite lambda at both ends)."""
    abs_ = [math.cos(math.pi / 2 * (0.05 + 0.9 * u)) ** 2 for u in np.linspace(1, 0, n + 1)]
    history = None
    for ab_s, ab_t in itertools.pairwise(abs_):
        pred = gaussian_model(x, ab_s, prediction)
        if name == "ddim":
            x = ddim.ddim_step(x, pred, ab_s, ab_t, prediction)
        else:
            x, history = solvers.solver_step(name, x, pred, ab_s, ab_t, prediction, history)
    return x


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("name, low, high", [("ddim", 0.7, 1.3), ("dpm++2m", 1.7, 2.3), ("unipc", 2.3, 3.5)])
def test_order_of_convergence(name, low, high, prediction):
    """The error against the exact ODE solution falls as steps^-order: ~1 for DDIM, ~2 for DPM-Solver++(2M), at
    least 2 for UniPC-2 (its corrector raises it to 3 on smooth problems), for eps and v outputs alike (the slope
    of a log-log fit over 16 to 128 steps, in float64; measured 0.99, 1.98 and 2.68)."""
    x_t = torch.randn(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.2
    truth = exact(x_t, math.cos(math.pi / 2 * 0.95) ** 2, math.cos(math.pi / 2 * 0.05) ** 2)
    ns = [16, 32, 64, 128]
    errors = [(solve(name, n, prediction, x_t) - truth).abs().max().item() for n in ns]
    slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert low < slope < high, f"{name}: order {slope:.2f}, errors {errors}"


# ----------------------------------------------------------------------------------------- in the pipeline
@pytest.fixture(scope="module")
def models():
    return tiny_animation_models()


def framewise(unet, x, t, *args) -> torch.Tensor:
    """A stand-in for the guided UNet whose output at a frame depends on that frame alone (and on t)."""
    return torch.tanh(x) * (1 + t.float() / 1000) - 0.1 * x


@pytest.mark.parametrize("name", MULTISTEP)
@pytest.mark.parametrize("shift", [False, True])
def test_windows_feed_the_blended_x0(models, monkeypatch, name, shift):
    """With a frame-wise model, overlapping windows (4 frames, overlap 2, seams moving or not) give the latents of
    the solver run on the whole video at once: each step's history is each frame's blended prediction, carried to
    the next step, and the solver steps from each timestep to the next one it evaluates."""
    monkeypatch.setattr(pipeline, "guided_prediction", framewise)
    z = pipeline.initial_latents(10, 32, 32, seed=4)
    poses = np.zeros((10, 32, 32, 3), np.uint8)
    s = pipeline.Settings(steps=6, scheduler=name, window=4, overlap=2, shift_windows=shift)
    windows = pipeline.denoise(models, z, poses, torch.zeros(1, 1, 8), None, s, progress=False)
    ab = ddim.alphas_cumprod(s.beta_schedule, s.zero_snr)
    x, history = z, None
    for t, t_next in solvers.chained(ddim.timesteps(s.steps)):
        pred = framewise(None, x, torch.tensor(t))
        x, history = solvers.solver_step(name, x, pred, ddim.alpha_bar(ab, t), ddim.alpha_bar(ab, t_next), "v",
                                         history)
    torch.testing.assert_close(windows, x, atol=1e-5, rtol=1e-5)


def test_unknown_scheduler_and_eta_are_refused(models):
    """animate_iter names a scheduler it does not know, and refuses eta > 0 with a deterministic solver."""
    ref, poses = np.zeros((32, 32, 3), np.uint8), np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown scheduler"):
        pipeline.animate_iter(models, ref, poses, pipeline.Settings(scheduler="euler"))
    with pytest.raises(ValueError, match="needs the ddim scheduler"):
        pipeline.animate_iter(models, ref, poses, pipeline.Settings(scheduler="dpm++2m", eta=0.5))


def test_sample_scheduler_flag_reaches_the_settings():
    """sample.py --scheduler sets Settings.scheduler; without it the sampler stays DDIM."""
    import sample
    from aa.sampling.command import sampling_settings
    assert sampling_settings(sample.parse_args(["--scheduler", "unipc"]), {}, torch.float32).scheduler == "unipc"
    assert sampling_settings(sample.parse_args([]), {}, torch.float32).scheduler == "ddim"
