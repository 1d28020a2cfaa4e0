"""The names the sampler and the training objective accept, without torch: command lines list them as choices in
`--help`, which must not wait for torch to import (seconds)."""
from __future__ import annotations

PREDICTIONS = ("eps", "v")  # what the UNet predicts: the noise, or the velocity (Salimans & Ho 2022, sec. 4)
SNR_WEIGHTINGS = ("released", "hang")  # v-prediction's min-SNR weight: as Moore trained, or Hang et al. 2023
PRESETS = ("default", "moore")  # sampling presets: pipeline.SAMPLING_PRESETS has one settings function per name
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # flag value -> torch attribute name
SCHEDULERS = ("ddim", "dpm++2m", "unipc")  # samplers (aa/sampling/solvers.py); what each is, for --help:
SCHEDULER_HELP = {
    "ddim": "DDIM (Song et al. 2021), first order, the released inference's sampler",
    "dpm++2m": "DPM-Solver++(2M) (Lu et al. 2022), second-order multistep",
    "unipc": "UniPC-2, B(h)=expm1 (Zhao et al. 2023): DPM-Solver++(2M) plus a corrector at no extra model call",
}
