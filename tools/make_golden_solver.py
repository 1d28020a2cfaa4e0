"""Write the goldens of tests/test_solvers.py: diffusers' DPMSolverMultistepScheduler (DPM-Solver++ 2M) and
UniPCMultistepScheduler (UniPC-2, bh2) stepped on fixed random model outputs.

    /tmp/golden_dpm/bin/python tools/make_golden_solver.py      # the side env: requirements-golden.txt

Both schedulers are configured as our default sampling: scaled_linear betas (0.00085 to 0.012 over 1000 steps),
v-prediction, zero terminal SNR, trailing spacing, first order at the last step. diffusers clips the zero-SNR
alphas_cumprod[-1] to 2**-24 so that its first lambda is finite; the golden stores the alphas_cumprod it used, so the
test feeds our solvers the same schedule. The model outputs are random and fixed (not a function of the sample): the
solver's arithmetic alone is compared. Writes tests/data/golden_solver/<scheduler>.safetensors with alphas_cumprod
(1000,), timesteps (n,), outputs (n, b, c, h, w) and xs (n + 1, b, c, h, w): xs[0] is x_T, xs[k + 1] the sample
after step k.
"""
from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden_solver"
COMMON = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
          "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
          "solver_order": 2, "lower_order_final": True, "final_sigmas_type": "zero"}
SCHEDULERS = {
    "dpm++2m": lambda: DPMSolverMultistepScheduler(**COMMON, algorithm_type="dpmsolver++", solver_type="midpoint"),
    "unipc": lambda: UniPCMultistepScheduler(**COMMON, predict_x0=True, solver_type="bh2"),
}
STEPS = 6  # does not divide 1000: the solvers must step to the next timestep, not to t - 1000 // steps
SHAPE = (2, 4, 6, 6)  # b c h w


def run(name: str, seed: int) -> dict[str, torch.Tensor]:
    """x_T, the outputs and every sample of one scheduler over STEPS steps."""
    scheduler = SCHEDULERS[name]()
    scheduler.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float32)
    outputs = torch.randn((STEPS, *SHAPE), generator=g, dtype=torch.float32)
    xs = [x]
    for k, t in enumerate(scheduler.timesteps):
        x = scheduler.step(outputs[k], t, x).prev_sample
        xs.append(x)
    return {"alphas_cumprod": scheduler.alphas_cumprod.to(torch.float64).contiguous(),
            "timesteps": scheduler.timesteps.to(torch.int64).contiguous(), "outputs": outputs,
            "xs": torch.stack(xs)}


def main() -> None:
    """Write one golden per scheduler."""
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "config": json.dumps(COMMON)}
    for seed, name in enumerate(SCHEDULERS):
        tensors = run(name, seed)
        save_file(tensors, OUT / f"{name}.safetensors", metadata=meta)
        print(f"{name}: timesteps {tensors['timesteps'].tolist()}, |x_0| max {tensors['xs'][-1].abs().max():.3f}")


if __name__ == "__main__":
    main()
