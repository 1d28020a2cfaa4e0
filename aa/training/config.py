"""The options of a training run, one dataclass field each; every field also describes its train.py flag (help,
choices, bounds), so the command line is built from this table and checked by the same `TrainConfig.check`."""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aa.io.cli import check_number
from aa.models.config import ARCHITECTURES
from aa.sampling import choices
from aa.sampling.choices import DTYPE_NAMES

if TYPE_CHECKING:  # torch and the objective are imported where used: train.py --help builds its flags from here
    import torch

    from aa.training.objective import Objective

# dtypes by name, resolved to torch dtypes where used (`torch_dtype`), so reading this table needs no torch
DTYPES = dict(DTYPE_NAMES)  # --frozen-dtype
STAGES = (1, 2)  # --stage: 1 single frames, 2 clips with temporal layers
AMP = {"no": None, "bf16": DTYPES["bf16"], "fp16": DTYPES["fp16"]}  # --mixed-precision: autocast off, or its dtype


def torch_dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype of a DTYPES/AMP value ('bfloat16' -> torch.bfloat16; None stays None: autocast off)."""
    if name is None:
        return None
    import torch
    return getattr(torch, name)


@dataclass(frozen=True)
class Flag:
    """How a field reads on the command line and which values it takes."""

    help: str
    choices: Callable[[], Collection] | None = None  # called when used: the module constant stays the one list
    minimum: float | None = None  # value >= minimum
    above: float | None = None  # value > above
    maximum: float | None = None  # value <= maximum
    required: bool = False  # on the command line (the library accepts the default)
    metavar: str | None = None
    many: bool = False  # takes one or more values
    exists: bool = False  # a file or folder that must exist


def flag(help: str, **options: Any) -> dict[str, Flag]:
    """A field's metadata: its flag's description."""
    return {"flag": Flag(help, **options)}


def flag_name(name: str) -> str:
    """The command-line flag of a field: val_data -> --val-data."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Everything a run needs; `train.py` builds its flags from the fields' metadata and fills it from them."""

    stage: int = field(default=1, metadata=flag(
        "1: single frames, trains UNet + ReferenceNet + Pose Guider; 2: runs of --frames frames, trains the temporal "
        "layers only", choices=lambda: STAGES))
    data: str | list[str] = field(default="", metadata=flag(
        "training manifest(s): JSON lists of {video, keypoints} (ours) or {video_path, kps_path} (released); several "
        "are read as one dataset", required=True, many=True, metavar="JSON"))
    out: str = field(default="runs/aa", metadata=flag("run folder: checkpoints/, frozen/, val/, log.jsonl",
                                                      metavar="DIR"))
    val_data: str | None = field(default=None, metadata=flag(
        "manifest for validation videos (default: the training one)", metavar="JSON"))
    model: str = field(default="sd15", metadata=flag(
        "architecture preset when not starting from a folder (sd15: SD 1.5 + AnimateDiff v2 layout); stage 2: the "
        "temporal layers' layout and heads (pass the stage-1 run's)", choices=lambda: sorted(ARCHITECTURES)))
    init: str | None = field(default=None, metadata=flag(
        "stage 1: a native model folder to start from (all five networks it holds)", metavar="DIR", exists=True))
    sd_unet: str | None = field(default=None, metadata=flag(
        "stage 1: SD 1.x UNet weights for both UNets (single file, diffusers folder, sd-image-variations)",
        metavar="PATH", exists=True))
    vae: str | None = field(default=None, metadata=flag(
        "stage 1: VAE weights (sd-vae-ft-mse folder or file, or an SD single file)", metavar="PATH", exists=True))
    clip: str | None = field(default=None, metadata=flag(
        "stage 1: CLIP image encoder (sd-image-variations image_encoder/ folder)", metavar="DIR", exists=True))
    pose_guider_init: str | None = field(default=None, metadata=flag(
        "stage 1: ControlNet openpose weights for the Pose Guider (default: Gaussian init, zero output layer)",
        metavar="PATH", exists=True))
    stage1: str | None = field(default=None, metadata=flag(
        "stage 2: the stage-1 checkpoint folder to start from", metavar="DIR", exists=True))
    motion: str | None = field(default=None, metadata=flag(
        "stage 2: motion modules to start the temporal layers from: an AnimateDiff file or a model folder with "
        "temporal layers, e.g. an earlier stage-2 checkpoint (default: new, zero output)", metavar="PATH",
        exists=True))
    train_image_encoder: bool = field(default=False, metadata=flag(
        "also train the image encoder (only for small models without a pretrained one)"))
    steps: int = field(default=1000, metadata=flag(
        "optimizer steps in total (a resumed run continues up to this)", minimum=1))
    batch_size: int = field(default=1, metadata=flag("videos per process per micro-batch", minimum=1))
    grad_accum: int = field(default=1, metadata=flag("micro-batches per optimizer step", minimum=1, metavar="N"))
    lr: float = field(default=1e-5, metadata=flag("AdamW learning rate after warm-up", above=0))
    warmup: int = field(default=1, metadata=flag("linear warm-up steps", minimum=0, metavar="N"))
    decay: int = field(default=0, metadata=flag(
        "linear decay of the learning rate to zero over the last N steps (0: constant after warm-up)", minimum=0,
        metavar="N"))
    fast: list[str] | None = field(default=None, metadata=flag(
        "parameter-name prefixes (e.g. unet.down_blocks.0.attentions) trained at --fast-lr-scale times the learning "
        "rate: blocks grown into a trained model (tools/add_attention.py), whose zero output layers would otherwise "
        "take thousands of steps to reach their neighbours' scale", many=True, metavar="PREFIX"))
    fast_lr_scale: float = field(default=10.0, metadata=flag("the learning-rate factor of --fast", above=0,
                                                             metavar="X"))
    weight_decay: float = field(default=1e-2, metadata=flag("AdamW weight decay", minimum=0))
    clip_grad: float = field(default=1.0, metadata=flag(
        "largest gradient norm: larger gradients are scaled down to it (0: off)", minimum=0, metavar="NORM"))
    mixed_precision: str = field(default="no", metadata=flag(
        "autocast dtype, or no; fp16 adds a gradient scaler and needs CUDA", choices=lambda: sorted(AMP)))
    gradient_checkpointing: bool = field(default=False, metadata=flag(
        "recompute UNet activations in backward (much less memory, ~30% slower)"))
    frozen_dtype: str = field(default="fp32", metadata=flag(
        "dtype of the weights that don't train (bf16 and fp16 halve their memory and need --mixed-precision; they "
        "are saved in this dtype too)", choices=lambda: sorted(DTYPES)))
    prediction: str = field(default="v", metadata=flag(
        "what the UNet predicts: the velocity v or the noise eps", choices=lambda: choices.PREDICTIONS))
    zero_snr: bool = field(default=True, metadata=flag("rescale the noise schedule to zero terminal SNR"))
    min_snr_gamma: float | None = field(default=5.0, metadata=flag(
        "min-SNR-gamma loss weighting (a negative value turns it off)", metavar="GAMMA"))
    snr_weighting: str = field(default="released", metadata=flag(
        "v-prediction's min-SNR weight: released min(SNR+1, g)/(SNR+1) as Moore trained, or hang min(SNR, g)/(SNR+1) "
        "(0 at zero SNR)", choices=lambda: choices.SNR_WEIGHTINGS))
    noise_offset: float = field(default=0.05, metadata=flag(
        "per-video, per-channel offset noise scale", minimum=0, metavar="SCALE"))
    region_weight: float = field(default=0.0, metadata=flag(
        "extra loss weight near the pose skeleton, where the character is: weight 1 + X there, 1 elsewhere, "
        "normalised per frame; the skeleton is the pose image's non-black pixels, as aa renders poses (0: the plain "
        "mean, as Moore trains)", minimum=0, metavar="X"))
    region_radius: int = field(default=2, metadata=flag(
        "how many latent cells the --region-weight region reaches beyond the skeleton's own", minimum=0,
        metavar="CELLS"))
    uncond_rate: float = field(default=0.1, metadata=flag(
        "fraction of samples trained unconditionally (zero CLIP embedding, no reference)", minimum=0, maximum=1,
        metavar="FRACTION"))
    reference: bool = field(default=True, metadata=flag(
        "use the ReferenceNet (--no-reference: image-encoder cross-attention only, the paper's ablation)"))
    width: int = field(default=512, metadata=flag(
        "training width in pixels (a multiple of the model's size factor: 64 for SD 1.5)", minimum=1,
        metavar="PIXELS"))
    height: int = field(default=512, metadata=flag(
        "training height in pixels (the same multiple)", minimum=1, metavar="PIXELS"))
    frames: int = field(default=24, metadata=flag("stage 2: frames per training sample", minimum=1, metavar="N"))
    stride: int = field(default=1, metadata=flag("stage 2: step between a sample's frames", minimum=1, metavar="N"))
    min_ref_distance: int = field(default=0, metadata=flag(
        "stage 1: minimum distance in frames between the target and the reference frame", minimum=0,
        metavar="FRAMES"))
    colour_augment: float = field(default=0.0, metadata=flag(
        "probability that a sample's frames (targets and reference alike) get one random colour transform (hue "
        "turn, channel permutation, saturation, brightness): the colours can then only come from the reference",
        minimum=0, maximum=1, metavar="P"))
    save_every: int = field(default=500, metadata=flag("checkpoint every N steps", minimum=1, metavar="N"))
    keep: int = field(default=3, metadata=flag("keep the newest N checkpoints", minimum=0, metavar="N"))
    log_every: int = field(default=10, metadata=flag("write log.jsonl every N steps", minimum=1, metavar="N"))
    val_every: int = field(default=0, metadata=flag(
        "write a validation video every N steps and at the end (0: never)", minimum=0, metavar="N"))
    val_steps: int = field(default=20, metadata=flag("DDIM steps of validation videos", minimum=1, metavar="N"))
    seed: int = field(default=0, metadata=flag("seed of data order, augmentation and noise (runs are reproducible)"))
    workers: int = field(default=2, metadata=flag(
        "data loader worker processes per training process", minimum=0, metavar="N"))
    fsdp: bool = field(default=False, metadata=flag(
        "under torchrun: shard parameters, gradients and optimizer state across processes (FSDP2) instead of keeping "
        "a copy in each (DDP)"))
    resume: str | None = field(default=None, metadata=flag(
        "continue from a checkpoint folder, or 'auto' for the newest one in --out", metavar="DIR"))
    device: str | None = field(default=None, metadata=flag(
        "torch device (default: this process's GPU if there is one, else cpu)"))

    def frozen_torch_dtype(self) -> torch.dtype:
        """The torch dtype of --frozen-dtype."""
        return torch_dtype(DTYPES[self.frozen_dtype])

    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype of --mixed-precision (None: no autocast)."""
        return torch_dtype(AMP[self.mixed_precision])

    @property
    def clip_frames(self) -> int:
        """Target frames per sample: 1 in stage 1, --frames in stage 2."""
        return 1 if self.stage == 1 else self.frames

    def objective(self) -> Objective:
        """The loss options (the schedule is the one SD was trained with: scaled_linear)."""
        from aa.training.objective import Objective
        return Objective(self.prediction, "scaled_linear", self.zero_snr, self.min_snr_gamma, self.noise_offset,
                         self.uncond_rate, reference=self.reference, snr_weighting=self.snr_weighting,
                         region_weight=self.region_weight, region_radius=self.region_radius)

    def sampling(self) -> dict:
        """What inference must use with these weights (recorded in every checkpoint's config.json)."""
        recorded = {"prediction": self.prediction, "beta_schedule": "scaled_linear", "zero_snr": self.zero_snr,
                    "reference": self.reference, "width": self.width, "height": self.height}
        if self.stage == 2:  # the temporal layers learned windows of this length
            recorded["window"] = self.frames
            recorded["overlap"] = min(4, self.frames // 3)
        return recorded

    def check(self, device: torch.device | None = None) -> None:
        """Refuse settings that can't run, before any heavy work: each field's bounds, choices and input path, then
        the rules between fields (ValueError naming the flag). With `device`, also what that device can't run."""
        for f in fields(self):
            spec, value, name = f.metadata["flag"], getattr(self, f.name), flag_name(f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                check_number(name, value, minimum=spec.minimum, above=spec.above)
                if spec.maximum is not None and value > spec.maximum:
                    raise ValueError(f"{name} must be at most {spec.maximum:g}, got {value:g}")
            if spec.choices is not None and value not in spec.choices():
                raise ValueError(f"{name} must be one of {', '.join(map(str, spec.choices()))}, got {value!r}")
            if spec.exists and value and not Path(value).exists():
                raise ValueError(f"{name} {value}: no such file or folder")
        if self.resume not in (None, "auto") and not (Path(self.resume) / "train_state.pt").is_file():
            raise ValueError(f"--resume {self.resume}: not a checkpoint folder (no train_state.pt); or pass 'auto'")
        if self.frozen_dtype != "fp32" and (self.mixed_precision == "no" or self.fsdp):
            raise ValueError("--frozen-dtype needs --mixed-precision (autocast reads the weights in low precision) "
                             "and does not go with --fsdp (its units need one dtype)")
        if self.fast and self.fsdp:
            raise ValueError("--fast does not go with --fsdp (its flattened parameters lose their names)")
        if self.width % 8 or self.height % 8:
            raise ValueError(f"--width and --height must be multiples of 8, got {self.width}x{self.height}")
        if device is not None and self.mixed_precision == "fp16" and device.type != "cuda":
            raise ValueError("--mixed-precision fp16 needs CUDA (its gradient scaler); use bf16 on the CPU")
