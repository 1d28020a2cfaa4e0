"""Generate the Moore-AnimateAnyone pipeline golden under tests/data/golden_moore/ (run in a side venv, not ours).

The oracle is the RELEASED inference: `Pose2VideoPipeline` of `src/pipelines/pipeline_pose2vid_long.py` in
github:MooreThreads/Moore-AnimateAnyone at commit a914ef38aae3733c2f02f29853dd0593372e0cc9 ("revise parameter
format", 2024-05-29), with its models built and loaded as its `scripts/pose2vid.py` does (UNet3D from a base SD UNet
folder via `from_pretrained_2d` with `unet_additional_kwargs` of `configs/inference/inference_v2.yaml`, then
`denoising_unet.pth` loaded with strict=False; reference UNet from the same base then `reference_unet.pth`; DDIM
from that yaml's `noise_scheduler_kwargs`). Nothing of that source is copied here: `--moore-src` puts it on
sys.path. Regenerate in the Moore env of requirements-golden.txt (its own pins: the release needs 2023 library
versions), with the release source at the commit above (a clone of MooreThreads/Moore-AnimateAnyone checked out at
it, or a `git archive` of that commit) unpacked to DIR:

    python tools/make_golden_moore.py --moore-src DIR

The model is TINY and random (weights drawn here, see `randomize`), in the release layout, written to --out:
- config.json: the architecture as an `aa.models.config.ModelConfig` dict (`aa.models.config.from_dict` reads it);
  the release models below are built from it: 4 UNet levels of 32 channels (the release's `from_pretrained_2d`
  fixes 4 levels, attention in the first 3), 1 layer per block, 8 heads (SD 1.5's `attention_head_dim: 8`), 32 norm
  groups (the release's motion modules fix 32), CLIP projection 16 as the cross-attention width; the yaml's
  `unet_additional_kwargs` unchanged (8 motion heads, pe length 32, mid-block module). The VAE has 3 levels (4x, so
  the latents are 16x32 for 64x128 frames: with one channel per norm group the 8x VAE's 8x16 latents left 1x2
  maps at the UNet's bottom, where GroupNorm is nearly a sign function and fp32 rounding noise grew to 0.4 in the
  prediction); the release takes its latent scale from the VAE's depth, and the Pose Guider (8/16/32) matches it.
- denoising_unet.pth, reference_unet.pth (no conv_norm_out/conv_out, as released), motion_module.pth, pose_guider.pth:
  torch.save'd state dicts with the release's key names, values drawn fp16-representable and stored fp16 (as
  MusePose's files are; half the size), except the motion modules' `pos_encoder.pe` sinusoids, kept fp32. Both
  pipelines compute in fp32 on the same values.
- vae/: a diffusers AutoencoderKL folder (8/16/16, 1 layer, 4 groups); image_encoder/: a transformers
  CLIPVisionModelWithProjection folder (width 32, 2 layers, 2 heads, 224 px in 16 px patches: the release
  hard-codes a 224x224 CLIP input); both fp32.
- single.safetensors, long.safetensors: one video each. `reference` uint8 (96, 72, 3) (resized to the output size
  by both pipelines), `poses` uint8 (f, 128, 64, 3), `latents` fp32 (f, 4, 32, 16): the z_T the released pipeline
  drew (its `prepare_latents` is called without `latents`: it always draws `randn((1, 4, f, 32, 16))` from the
  generator, here `torch.manual_seed(seed)` on the CPU; we record what it drew), `frames` fp16 (f, 128, 64, 3): the
  released output `videos` in [0, 1], not rounded to 8 bits (fp16 adds < 0.07/255). Metadata: steps, guidance,
  window (context_frames), overlap (context_overlap), seed, width, height, moore_commit (as JSON, key "golden").
  `single` has 4 frames (one window), `long` 10: windows start every 3 frames (0, 3, 6, 9) and the last one wraps
  round to frames 0-2.
3 DDIM steps (trailing: t = 999, 666, 332, each stepping to alpha_bar(t - 333)), guidance 3.5, eta 0, fp32, CPU.
Every file is the same bytes on every run.

One release quirk we do not copy: `ReferenceAttentionControl.update` casts the ReferenceNet's features to fp16
(its `dtype` default) even in an fp32 run. Measured on this golden: it moves the release's guided prediction by
up to 3e-4 from ours (4e-5 once we round the same way) and the frames by up to 0.06/255; ours end within
0.1/255 of the release's float frames, 0.58/255 after our rounding to 8 bits. `--trace FILE` saves the
released run's stages (CLIP input and embedding, reference latent, every step's latents and guided prediction) to
compare ours with, stage by stage, when the test fails.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aa.eval.speed import draw_parameter  # noqa: E402
from aa.models.config import (  # noqa: E402
    CLIPVisionConfig,
    ModelConfig,
    MotionConfig,
    PoseGuiderConfig,
    UNetConfig,
    VAEConfig,
    to_dict,
)

COMMIT = "a914ef38aae3733c2f02f29853dd0593372e0cc9"
WIDTH, HEIGHT, REF_SIZE = 64, 128, (72, 96)
STEPS, GUIDANCE, WINDOW, OVERLAP = 3, 3.5, 4, 1
VIDEOS = {"single": (4, 1), "long": (10, 2)}  # name: (frames, seed)


def golden_config() -> ModelConfig:
    """The tiny architecture, in our terms (shapes the release can build, see the module docstring)."""
    return ModelConfig(
        unet=UNetConfig(block_out_channels=(32, 32, 32, 32), attention_levels=(True, True, True, False),
                        layers_per_block=1, num_heads=8, context_dim=16, norm_groups=32,
                        motion=MotionConfig(num_heads=8, max_len=32, mid_block=True)),
        vae=VAEConfig(block_out_channels=(8, 16, 16), layers_per_block=1, norm_groups=4),  # 4x: latents 16x32
        clip=CLIPVisionConfig(image_size=224, patch_size=16, width=32, layers=2, heads=2, mlp_dim=64,
                              projection_dim=16),
        pose_guider=PoseGuiderConfig(channels=(8, 16, 32), out_channels=32))


def unet_config_json(cfg: UNetConfig) -> dict:
    """An SD 1.5 `unet/config.json` at the tiny sizes (only the sizes differ from SD 1.5's)."""
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels)]
    return {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": cfg.num_heads,
            "block_out_channels": list(cfg.block_out_channels), "center_input_sample": False,
            "cross_attention_dim": cfg.context_dim, "down_block_types": down, "downsample_padding": 1,
            "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": cfg.in_channels,
            "layers_per_block": cfg.layers_per_block, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
            "norm_num_groups": cfg.norm_groups, "out_channels": cfg.out_channels, "sample_size": 16,
            "up_block_types": up}


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int, fp16: bool = False) -> None:
    """Every parameter drawn afresh (the release zero-initialises proj_out and the guider's conv_out; a golden must
    exercise them): weights N(0, 1/fan_in), norm scales 1 + N(0, 0.2^2), biases N(0, 0.1^2). Buffers (the motion
    modules' sinusoid) are kept. `fp16`: values rounded to fp16 (the model stays fp32)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        r = draw_parameter(name, p.shape, g)
        p.copy_(r.half() if fp16 else r)  # fp16-representable values: stored as fp16 without loss


def save_fp16(state: dict, path: Path) -> None:
    """torch.save a state dict with fp16 tensors (as MusePose's files are), keeping the sinusoid `pos_encoder.pe`
    in fp32: it is a fixed table that loaders recompute, and the release would use a rounded copy as it is."""
    torch.save({k: v if k.endswith("pos_encoder.pe") else v.half() for k, v in state.items()}, path)


def reference_image(seed: int = 0) -> np.ndarray:
    """A smooth random colour field with a bright disc: uint8 (96, 72, 3), not the output size."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    img = np.asarray(low.resize(REF_SIZE, Image.Resampling.BICUBIC)).astype(np.float32)
    y, x = np.mgrid[:REF_SIZE[1], :REF_SIZE[0]]
    disc = ((y - 40) ** 2 + (x - 36) ** 2 < 15 ** 2)[..., None]
    return np.where(disc, 0.5 * img + 120, img).clip(0, 255).astype(np.uint8)


def pose_frames(n: int, seed: int) -> np.ndarray:
    """Coloured bars on black that move from frame to frame (a stand-in for rendered poses): uint8 (n, h, w, 3)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, HEIGHT, WIDTH, 3), np.uint8)
    bars = [(rng.integers(10, HEIGHT - 30), rng.integers(5, WIDTH - 20), rng.integers(40, 256, 3)) for _ in range(5)]
    for i in range(n):
        for k, (y, x, colour) in enumerate(bars):
            dy, dx = int(6 * np.sin(0.7 * i + k)), int(4 * np.cos(0.5 * i + 2 * k))
            y0, x0 = int(np.clip(y + dy, 0, HEIGHT - 24)), int(np.clip(x + dx, 0, WIDTH - 16))
            frames[i, y0:y0 + 24, x0:x0 + 4] = colour if k % 2 else 0
            frames[i, y0:y0 + 4, x0:x0 + 16] = colour
    return frames


def write_weights(out: Path, base: Path, cfg: ModelConfig, additional: dict) -> None:
    """Draw the tiny model and save it in the release layout (plus the base SD UNet folder the release builds on)."""
    from diffusers import AutoencoderKL
    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel
    from transformers import CLIPVisionConfig as HFCLIPConfig
    from transformers import CLIPVisionModelWithProjection

    (base / "unet").mkdir(parents=True)
    (base / "unet" / "config.json").write_text(json.dumps(unet_config_json(cfg.unet), indent=2))
    sd = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
    randomize(sd, 1)
    sd.save_pretrained(base / "unet")  # the "SD 1.5" the release starts from; denoising_unet.pth overrides it
    reference = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    randomize(reference, 2, fp16=True)
    save_fp16(reference.state_dict(), out / "reference_unet.pth")
    denoising = UNet3DConditionModel.from_pretrained_2d(base, base / "none.pth", subfolder="unet",  # no such file:
                                                        unet_additional_kwargs=additional)  # fresh motion modules
    randomize(denoising, 3, fp16=True)
    state = denoising.state_dict()
    save_fp16({k: v for k, v in state.items() if "motion_modules." not in k}, out / "denoising_unet.pth")
    save_fp16({k: v for k, v in state.items() if "motion_modules." in k}, out / "motion_module.pth")
    guider = PoseGuider(cfg.unet.block_out_channels[0], block_out_channels=cfg.pose_guider.channels)
    randomize(guider, 4, fp16=True)
    save_fp16(guider.state_dict(), out / "pose_guider.pth")
    v = cfg.vae
    levels = len(v.block_out_channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * levels,
                        up_block_types=["UpDecoderBlock2D"] * levels, block_out_channels=list(v.block_out_channels),
                        layers_per_block=v.layers_per_block, latent_channels=v.latent_channels,
                        norm_num_groups=v.norm_groups, sample_size=WIDTH, scaling_factor=v.scaling_factor)
    randomize(vae, 5)
    vae.save_pretrained(out / "vae")
    c = cfg.clip
    clip = CLIPVisionModelWithProjection(HFCLIPConfig(
        hidden_size=c.width, intermediate_size=c.mlp_dim, num_hidden_layers=c.layers, num_attention_heads=c.heads,
        image_size=c.image_size, patch_size=c.patch_size, projection_dim=c.projection_dim))
    randomize(clip, 6)
    clip.save_pretrained(out / "image_encoder")


def released_pipeline(out: Path, base: Path, cfg: ModelConfig, additional: dict, scheduler_kwargs: dict):
    """The release's inference models, loaded from the files just written as `scripts/pose2vid.py` loads them."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel
    from src.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline
    from transformers import CLIPVisionModelWithProjection

    vae = AutoencoderKL.from_pretrained(out / "vae")
    reference = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    denoising = UNet3DConditionModel.from_pretrained_2d(base, out / "motion_module.pth", subfolder="unet",
                                                        unet_additional_kwargs=additional)
    guider = PoseGuider(cfg.unet.block_out_channels[0], block_out_channels=cfg.pose_guider.channels)
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(out / "image_encoder")
    missing, unexpected = denoising.load_state_dict(torch.load(out / "denoising_unet.pth", map_location="cpu"),
                                                    strict=False)
    assert not unexpected and all("motion_modules." in k for k in missing), (missing, unexpected)
    reference.load_state_dict(torch.load(out / "reference_unet.pth", map_location="cpu"))
    guider.load_state_dict(torch.load(out / "pose_guider.pth", map_location="cpu"))
    pipe = Pose2VideoPipeline(vae=vae, image_encoder=image_encoder, reference_unet=reference, denoising_unet=denoising,
                              pose_guider=guider, scheduler=DDIMScheduler(**scheduler_kwargs))
    return pipe.to("cpu", dtype=torch.float32)


class Recorder:
    """Wraps the pipeline's `prepare_latents` (to keep the z_T it draws) and, when tracing, the scheduler step, the
    CLIP tower and the reference UNet (to keep each stage's values); `close` undoes it."""

    def __init__(self, pipe, trace: bool) -> None:
        self.pipe, self.values, self.hooks = pipe, {}, []
        self.prepare, self.step = pipe.prepare_latents, pipe.scheduler.step
        pipe.prepare_latents = self.prepare_latents
        if trace:
            pipe.scheduler.step = self.scheduler_step
            self.hooks = [pipe.image_encoder.register_forward_hook(self.clip_hook),
                          pipe.reference_unet.register_forward_hook(self.reference_hook)]

    def prepare_latents(self, *args, **kwargs):
        self.values["latents"] = z = self.prepare(*args, **kwargs)  # (1, c, f, h, w)
        return z

    def scheduler_step(self, pred, t, x, **kwargs):
        for name, v in (("x", x), ("pred", pred)):  # the latents each step starts from, the guided prediction
            self.values.setdefault(name, []).append(v[0].permute(1, 0, 2, 3).clone())  # (f, c, h, w)
        return self.step(pred, t, x, **kwargs)

    def clip_hook(self, module, inputs, output) -> None:
        self.values["clip_in"], self.values["context"] = inputs[0].clone(), output.image_embeds.clone()

    def reference_hook(self, module, inputs, output) -> None:
        self.values["ref_latent"] = inputs[0][1:].clone()  # the batch is (uncond, cond): the same latent twice

    def close(self) -> dict:
        self.pipe.prepare_latents, self.pipe.scheduler.step = self.prepare, self.step
        for h in self.hooks:
            h.remove()
        return {k: torch.stack(v) if isinstance(v, list) else v for k, v in self.values.items()}


def run_video(pipe, reference: np.ndarray, poses: np.ndarray, seed: int, trace: bool) -> tuple[dict, dict]:
    """One released-pipeline run -> the tensors of a golden file, and the per-stage values if `trace`."""
    rec = Recorder(pipe, trace)
    video = pipe(Image.fromarray(reference), [Image.fromarray(p) for p in poses], WIDTH, HEIGHT, len(poses), STEPS,
                 GUIDANCE, generator=torch.manual_seed(seed), context_frames=WINDOW,
                 context_overlap=OVERLAP).videos  # (1, 3, f, h, w) in [0, 1]
    values = rec.close()
    z = values.pop("latents")
    assert torch.equal(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)))
    golden = {"reference": torch.from_numpy(reference), "poses": torch.from_numpy(poses),
              "latents": z[0].permute(1, 0, 2, 3).contiguous(),  # (1, c, f, h, w) -> (f, c, h, w)
              "frames": video[0].permute(1, 2, 3, 0).half().contiguous()}  # (f, h, w, 3); fp16 rounding < 0.07/255
    return golden, values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--moore-src", required=True, type=Path,
                   help=f"Moore-AnimateAnyone source tree (commit {COMMIT[:12]}), put on sys.path")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "golden_moore", help="output folder")
    p.add_argument("--trace", type=Path, default=None,
                   help="also save per-stage values of the released run (CLIP input and embedding, reference "
                        "latent, per-step latents and guided predictions) to this safetensors file, for debugging")
    args = p.parse_args()
    if not (args.moore_src / "src" / "pipelines" / "pipeline_pose2vid_long.py").is_file():
        raise SystemExit(f"{args.moore_src}: not a Moore-AnimateAnyone source tree (no src/pipelines/"
                         f"pipeline_pose2vid_long.py)")
    sys.path.insert(0, str(args.moore_src.resolve()))
    from omegaconf import OmegaConf

    torch.set_grad_enabled(False)
    infer = OmegaConf.load(args.moore_src / "configs" / "inference" / "inference_v2.yaml")
    additional = OmegaConf.to_container(infer.unet_additional_kwargs)
    scheduler_kwargs = OmegaConf.to_container(infer.noise_scheduler_kwargs)
    cfg = golden_config()
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    traces = {}
    with tempfile.TemporaryDirectory() as base:
        write_weights(tmp, Path(base), cfg, additional)
        (tmp / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        pipe = released_pipeline(tmp, Path(base), cfg, additional, scheduler_kwargs)
        ref = reference_image()
        for name, (frames, seed) in VIDEOS.items():
            tensors, values = run_video(pipe, ref, pose_frames(frames, seed), seed, args.trace is not None)
            meta = {"steps": STEPS, "guidance": GUIDANCE, "window": WINDOW, "overlap": OVERLAP, "seed": seed,
                    "width": WIDTH, "height": HEIGHT, "moore_commit": COMMIT}
            # one metadata entry: safetensors writes several in a random order, and the golden should be the same bytes
            save_file(tensors, tmp / f"{name}.safetensors", metadata={"golden": json.dumps(meta)})
            traces.update({f"{name}.{k}": v.contiguous() for k, v in values.items()})
            f = tensors["frames"].float()
            print(f"{name}: {frames} frames, output mean {f.mean():.3f} std {f.std():.3f}, "
                  f"clipped {((f == 0) | (f == 1)).float().mean():.1%}")
    if args.trace:
        save_file(traces, args.trace)
    old = args.out.with_name(args.out.name + ".old")
    if args.out.exists():
        args.out.rename(old)
    tmp.rename(args.out)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
