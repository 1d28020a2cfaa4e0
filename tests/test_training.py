"""Training (aa/training, train.py) on the tiny config, CPU, 32x32 frames: what trains in each stage, that the loss
can fall, that checkpoints load and resume exactly, that 2 processes (DDP or FSDP on gloo) train like one, and that
a corrupt video doesn't stop a run."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import train as train_script
from aa.io.video import read_video
from aa.models import config
from aa.models.bundle import Models
from aa.models.config import ModelConfig
from aa.models.pose_guider import PoseGuider
from aa.sampling import ddim
from aa.synthetic import write_dataset
from aa.training.checkpoint import STATE, load_train_state
from aa.training.config import TrainConfig
from aa.training.data import DataConfig, PoseVideoDataset, read_manifest
from aa.training.loop import Trainer, train
from aa.training.objective import Objective, Trainable, draw_noise, encode, pose_region_weights
from aa.training.sampler import Layout, micro_batch
from aa.training.setup import build_models, set_trainable, single_token_query_parameters
from aa.weights import WeightsError, load_moore
from aa.weights.animate import load_motion_modules
from aa.weights.clip import load_clip
from aa.weights.native import export_moore, load_models, save_models
from aa.weights.sd import load_vae, unet_state_dict
from tests.helpers import GOLDEN_SD_DIR, golden_sd_configs

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
GOLDEN_CLIP = ROOT / "tests" / "data" / "golden_clip" / "image_encoder"
GOLDEN_MOTION = ROOT / "tests" / "data" / "golden_motion" / "mm_tiny_v2.safetensors"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: the machine's cores are shared, and the torchrun runs use one per process too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The training manifest of two 8-frame 64x64 synthetic clips."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, 64, 64, train_characters=2, val_characters=1, test_characters=1, clips_per_character=1,
                  frames=8, progress=False)
    return root / "train.json"


def tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    """A few steps of the tiny model at 32x32 on CPU, half the videos unconditional, no data workers."""
    base = TrainConfig(stage=1, data=str(data), out=str(out), model="tiny", width=32, height=32, steps=2,
                       batch_size=2, lr=1e-3, save_every=100, log_every=1, workers=0, uncond_rate=0.5)
    return replace(base, **changes)


def flags(cfg: TrainConfig) -> list[str]:
    """The train.py command line of a config (only the fields that differ from the defaults)."""
    out, defaults = [], TrainConfig()
    for name, value in vars(cfg).items():
        if value != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                out += [flag] if value else ["--no-" + flag[2:]]
            else:
                out += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return out


def stage1_models() -> Models:
    """Random tiny networks without temporal layers."""
    cfg = config.tiny()
    return Models.build(replace(cfg, unet=replace(cfg.unet, motion=None)))


def batch_of(data: Path, size: int = 32, n: int = 2) -> dict[str, torch.Tensor]:
    """A stacked batch of n samples of the dataset."""
    dataset = PoseVideoDataset(read_manifest(data), DataConfig(size, size, clip_size=28))
    items = [dataset[(i % len(dataset), i)] for i in range(n)]
    return {k: torch.stack([x[k] for x in items]) for k in items[0]}


def checkpoint_tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint folder holds, as {network.key: tensor}."""
    folder = run / "checkpoints" / f"step_{step:07d}"
    return {f"{f.stem}.{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def unconditional_loss_by_hand(models: Models, batch: dict[str, torch.Tensor], obj: Objective,
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One unconditional video (obj.uncond_rate 1, seed 3) through `Trainable`, and what its loss is made of,
    computed here by hand: the UNet with a zero CLIP embedding and no reference features, its squared error
    against the v target (f, c, h, w), the default min-SNR-5 weight (as Moore trained) and the pose images."""
    noise = draw_noise([3], 1, (4, 4, 4), obj)
    pose = batch["pose"].flatten(0, 1)
    with torch.no_grad():
        z0 = encode(models.vae, batch["target"].flatten(0, 1), noise.vae_target)
        ref = encode(models.vae, batch["reference"], noise.vae_reference)
        loss = Trainable(models, obj)(z0, ref, batch["clip"], pose, noise)
        ab = ddim.alphas_cumprod("scaled_linear", True).float()[noise.t]
        pred = models.unet(ddim.add_noise(z0, noise.eps, ab), noise.t, torch.zeros(1, 1, 16),
                           pose_features=models.pose_guider(pose))
        error = (pred - ddim.v_target(z0, noise.eps, ab)).pow(2)
    return loss, error, ddim.min_snr_weight(ab.double(), 5.0, "v", "released"), pose


# ----------------------------------------------------------------------------------------------- building blocks
def test_sample_stream_is_independent_of_processes_and_accumulation():
    """Step s uses stream positions [s B, (s + 1) B) with the same dataset indices and seeds however the global
    batch B = 8 is split into processes x micro-batches x accumulation steps."""
    def global_batch(step: int, layout: Layout) -> list[tuple[int, int, int]]:
        return sorted(x for micro in range(layout.accumulation) for rank in range(layout.world)
                      for x in micro_batch(step, micro, rank, layout, num_items=5, seed=3))
    one = global_batch(4, Layout(8))
    assert [p for p, _, _ in one] == list(range(32, 40))
    for layout in (Layout(4, 2), Layout(2, 2, 2), Layout(1, 8), Layout(1, 1, 8)):
        assert global_batch(4, layout) == one


def test_noise_of_a_sample_does_not_depend_on_its_batch():
    """draw_noise gives each video the same timestep, noise and dropout alone or in any batch."""
    obj = TrainConfig().objective()
    both = draw_noise([11, 12], 2, (4, 4, 4), obj)
    for row, seed in enumerate([11, 12]):
        alone = draw_noise([seed], 2, (4, 4, 4), obj)
        assert torch.equal(alone.t, both.t[row:row + 1]) and torch.equal(alone.drop, both.drop[row:row + 1])
        assert torch.equal(alone.eps, both.eps[2 * row:2 * row + 2])
        assert torch.equal(alone.vae_reference, both.vae_reference[row:row + 1])


def test_batch_loss_is_the_mean_of_the_videos_losses(data):
    """The loss of a batch (one video unconditional, so reordered to the end) is the mean of each video's loss
    alone: what makes N processes with batch b train like one with batch N x b."""
    torch.manual_seed(0)
    models = stage1_models()
    obj = replace(TrainConfig().objective(), uncond_rate=0.5)
    trainable = Trainable(models, obj)
    batch = batch_of(data, n=3)
    seeds = [0, 1, 4]
    assert draw_noise(seeds, 1, (4, 4, 4), obj).drop.tolist() == [False, True, False]

    def loss(rows: list[int]) -> torch.Tensor:
        noise = draw_noise([seeds[i] for i in rows], 1, (4, 4, 4), obj)
        z0 = encode(models.vae, batch["target"][rows].flatten(0, 1), noise.vae_target)
        ref = encode(models.vae, batch["reference"][rows], noise.vae_reference)
        return trainable(z0, ref, batch["clip"][rows], batch["pose"][rows].flatten(0, 1), noise)
    with torch.no_grad():
        torch.testing.assert_close(loss([0, 1, 2]), sum(loss([i]) for i in range(3)) / 3, rtol=1e-5, atol=0)


def test_unconditional_videos_see_a_zero_embedding_and_no_reference(data):
    """A dropped video's loss is the UNet's (min-SNR-weighted v) loss with a zero CLIP embedding and no reference
    features: exactly the unconditional branch of classifier-free guidance at inference."""
    torch.manual_seed(0)
    models = stage1_models()
    obj = replace(TrainConfig().objective(), uncond_rate=1.0)
    loss, error, weight, _ = unconditional_loss_by_hand(models, batch_of(data, n=1), obj)
    torch.testing.assert_close(loss, (error.mean() * weight).float().squeeze(), rtol=1e-5, atol=0)


def test_snr_weighting_reaches_the_loss(data):
    """At t = 999 (SNR 0 under zero SNR) the v loss is the plain MSE under the default 'released' weighting (weight
    1) and exactly 0 under 'hang' (weight 0: the last step never trains); at t = 100 (SNR 7.8 > gamma) both weigh
    the same. An unknown weighting is refused."""
    torch.manual_seed(0)
    models = stage1_models()
    batch = batch_of(data, n=1)
    losses = {}
    for weighting, gamma in (("released", 5.0), ("hang", 5.0), ("none", None)):
        obj = Objective("v", "scaled_linear", True, gamma, 0.0, uncond_rate=0.0,
                        snr_weighting="hang" if weighting == "hang" else "released")
        for t in (999, 100):
            noise = replace(draw_noise([5], 1, (4, 4, 4), obj), t=torch.tensor([t]))
            with torch.no_grad():
                z0 = encode(models.vae, batch["target"].flatten(0, 1), noise.vae_target)
                ref = encode(models.vae, batch["reference"], noise.vae_reference)
                losses[weighting, t] = Trainable(models, obj)(z0, ref, batch["clip"], batch["pose"].flatten(0, 1),
                                                              noise).item()
    assert losses["none", 999] > 0 and losses["released", 999] == pytest.approx(losses["none", 999], rel=1e-6)
    assert losses["hang", 999] == 0.0
    assert losses["hang", 100] == pytest.approx(losses["released", 100], rel=1e-6)
    assert losses["released", 100] == pytest.approx(losses["none", 100] * 5 / (1 + 7.830902), rel=1e-5)
    with pytest.raises(ValueError, match="snr_weighting"):
        Objective(snr_weighting="paper")


def test_region_weights_cover_the_cells_near_the_skeleton():
    """One drawn pose pixel at (y 13, x 9) of a 32x32 pose image lies in cell (3, 2) of an 8x8 latent grid; with
    radius 1 the nine cells around it weigh 1 + 4 and the other 55 weigh 1, all divided by the frame's mean weight
    (64 + 9 * 4) / 64. A frame without a skeleton weighs 1 everywhere."""
    pose = torch.zeros(2, 3, 32, 32)
    pose[0, 1, 13, 9] = 1.0
    w = pose_region_weights(pose, (8, 8), 4.0, 1)
    expected = torch.ones(8, 8)
    expected[2:5, 1:4] = 5.0
    torch.testing.assert_close(w[0, 0], expected / ((64 + 9 * 4) / 64))
    torch.testing.assert_close(w[1, 0], torch.ones(8, 8))


def test_region_weight_reaches_the_loss(data):
    """With --region-weight the loss is the min-SNR-weighted mean of the squared error times the pose's region
    weights, and differs from the plain mean."""
    torch.manual_seed(0)
    models = stage1_models()
    batch, obj = batch_of(data, n=1), Objective(uncond_rate=1.0, region_weight=3.0, region_radius=0)
    loss, error, weight, pose = unconditional_loss_by_hand(models, batch, obj)
    plain = unconditional_loss_by_hand(models, batch, replace(obj, region_weight=0.0))[0]
    region = pose_region_weights(pose, (4, 4), 3.0, 0)
    assert region.std() > 0  # the skeleton covers some cells, not all
    torch.testing.assert_close(loss, ((error * region).mean() * weight).float().squeeze(), rtol=1e-5, atol=0)
    assert abs(loss.item() - plain.item()) > 1e-4 * plain.item()


def test_objective_options_and_the_no_reference_ablation(data, tmp_path):
    """eps and v prediction, with and without zero SNR, min-SNR and noise offset give a finite loss at both ends of
    the schedule (t = 999 has SNR 0 under zero SNR); the --no-reference ablation trains without the ReferenceNet,
    and its checkpoints hold none and record it for inference."""
    torch.manual_seed(0)
    models = stage1_models()
    batch = batch_of(data)
    for prediction, zero_snr, gamma, offset in (("eps", True, 5.0, 0.1), ("eps", False, None, 0.0),
                                                ("v", True, 1.0, 0.0)):
        obj = Objective(prediction, "scaled_linear", zero_snr, gamma, offset, uncond_rate=0.0)
        noise = replace(draw_noise([1, 2], 1, (4, 4, 4), obj), t=torch.tensor([999, 0]))
        with torch.no_grad():
            z0 = encode(models.vae, batch["target"].flatten(0, 1), noise.vae_target)
            ref = encode(models.vae, batch["reference"], noise.vae_reference)
            loss = Trainable(models, obj)(z0, ref, batch["clip"], batch["pose"].flatten(0, 1), noise)
        assert torch.isfinite(loss), (prediction, zero_snr, gamma)
    last = train(tiny_config(data, tmp_path / "ablation", reference=False))
    assert not (last / "reference_net.safetensors").exists()
    assert load_models(last)[1]["reference"] is False


def test_what_each_stage_trains():
    """Stage 1: UNet, Pose Guider and ReferenceNet minus its unused tail (the UNet also with --no-reference); stage 2:
    only the temporal layers. VAE and image encoder never."""
    models = stage1_models()
    assert set_trainable(models, 1) == ("unet", "pose_guider", "reference_net")
    grads = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert not grads(models.vae) and not grads(models.image_encoder)
    assert grads(models.pose_guider) == {n for n, _ in models.pose_guider.named_parameters()}
    unused = {id(p) for p in models.reference_net.unused_parameters()}
    assert unused and all(not p.requires_grad for p in models.reference_net.parameters() if id(p) in unused)
    assert "conv_in.weight" in grads(models.reference_net) and "conv_out.weight" in grads(models.unet)

    models = stage1_models()
    assert set_trainable(models, 1, reference=False) == ("unet", "pose_guider")
    assert "conv_in.weight" in grads(models.unet) and not grads(models.reference_net)

    models = Models.build(config.tiny())
    assert set_trainable(models, 2) == ("unet",)
    assert grads(models.unet) and all(".motion_modules." in n for n in grads(models.unet))
    assert not any(grads(getattr(models, n)) for n in ("vae", "image_encoder", "reference_net", "pose_guider"))


def test_single_token_cross_attention_ignores_queries_and_keys():
    """With one context token, softmax over one key is 1: perturbing attn2's to_q, to_k and norm2 leaves the UNet's
    output unchanged (why training freezes them: their gradient is only rounding noise)."""
    torch.manual_seed(0)
    unet = stage1_models().unet
    x, context = torch.randn(2, 4, 8, 8), torch.randn(2, 1, 16)
    with torch.no_grad():
        before = unet(x, torch.tensor([10, 500]), context)
        for p in single_token_query_parameters(unet):
            p.add_(torch.randn_like(p))
        torch.testing.assert_close(unet(x, torch.tensor([10, 500]), context), before, rtol=0, atol=1e-6)


def test_every_trainable_parameter_gets_a_gradient_even_if_all_videos_are_unconditional(data):
    """DDP requires a gradient for every trainable parameter in every step: also when every video of a process's
    micro-batch is unconditional (the ReferenceNet is then kept in the graph with zero weight)."""
    torch.manual_seed(0)
    models = stage1_models()
    set_trainable(models, 1)
    for rate in (0.0, 1.0):
        cfg = TrainConfig(stage=1, width=32, height=32, uncond_rate=rate, batch_size=2)
        trainer = Trainer(models, cfg, 1, CPU)
        trainer.loss([5, 6], batch_of(data)).backward()
        assert all(p.grad is not None for p in trainer.params), rate
        models.unet.zero_grad(set_to_none=True)
        models.reference_net.zero_grad(set_to_none=True)
        models.pose_guider.zero_grad(set_to_none=True)


def test_stage1_starts_from_public_weights(tmp_path):
    """--init with --sd-unet, --vae, --clip and --pose-guider-init: both UNets hold the SD UNet's tensors (the
    ReferenceNet without the output head), the VAE and image encoder theirs, the Pose Guider ControlNet's condition
    encoder (diffusers names)."""
    unet_cfg, vae_cfg = golden_sd_configs()
    tiny = config.tiny()
    guider_cfg = replace(tiny.pose_guider, out_channels=unet_cfg.block_out_channels[0])
    save_models(Models.build(ModelConfig(unet_cfg, vae_cfg, tiny.clip, guider_cfg)), tmp_path / "init")
    controlnet = {f"controlnet_cond_embedding.{k}": torch.randn_like(v)
                  for k, v in PoseGuider(guider_cfg).state_dict().items()}
    controlnet["controlnet_down_blocks.0.weight"] = torch.zeros(8, 8, 1, 1)  # the rest of a ControlNet: ignored
    save_file(controlnet, tmp_path / "controlnet.safetensors")
    cfg = TrainConfig(init=str(tmp_path / "init"), sd_unet=str(GOLDEN_SD_DIR / "unet_diffusers.safetensors"),
                      vae=str(GOLDEN_SD_DIR / "vae_diffusers.safetensors"), clip=str(GOLDEN_CLIP),
                      pose_guider_init=str(tmp_path / "controlnet.safetensors"))
    models, names = build_models(cfg)
    assert names == ("unet", "pose_guider", "reference_net") and models.unet.cfg.motion is None
    sd, _, _ = unet_state_dict(GOLDEN_SD_DIR / "unet_diffusers.safetensors", unet_cfg)
    assert models.unet.state_dict().keys() == sd.keys()
    assert all(torch.equal(v, sd[k]) for k, v in models.unet.state_dict().items())
    ref = models.reference_net.state_dict()
    assert ref.keys() == {k for k in sd if not k.startswith(("conv_norm_out.", "conv_out."))}
    assert all(torch.equal(v, sd[k]) for k, v in ref.items())
    vae = load_vae(GOLDEN_SD_DIR / "vae_diffusers.safetensors", vae_cfg).state_dict()
    assert all(torch.equal(v, vae[k]) for k, v in models.vae.state_dict().items())
    clip = load_clip(GOLDEN_CLIP).state_dict()
    assert all(torch.equal(v, clip[k]) for k, v in models.image_encoder.state_dict().items())
    assert all(torch.equal(v, controlnet[f"controlnet_cond_embedding.{k}"])
               for k, v in models.pose_guider.state_dict().items())


def test_stage2_starts_from_animatediff(tmp_path):
    """--motion puts an AnimateDiff file's modules (v2 layout, with the preset's head count) into the stage-1 UNet;
    only they train."""
    tiny = config.tiny()
    stage1 = Models.build(replace(tiny, unet=replace(tiny.unet, motion=None)))
    save_models(stage1, tmp_path / "stage1")
    models, names = build_models(TrainConfig(stage=2, model="tiny", stage1=str(tmp_path / "stage1"),
                                             motion=str(GOLDEN_MOTION)))
    assert names == ("unet",) and models.unet.cfg.motion == replace(config.animatediff("v2"), num_heads=2)
    file, _ = load_motion_modules(GOLDEN_MOTION, tiny.unet)
    trained = {k: p for k, p in models.unet.named_parameters() if p.requires_grad}
    assert trained.keys() == file.keys()
    assert all(torch.equal(p.detach(), file[k].float()) for k, p in trained.items())


def test_stage2_starts_from_an_earlier_run(tmp_path):
    """--motion also takes one of our model folders with temporal layers (an earlier stage-2 run, the demo): its
    modules and recorded heads go into the stage-1 UNet; a folder without temporal layers is refused by name."""
    tiny = config.tiny()
    stage1 = Models.build(replace(tiny, unet=replace(tiny.unet, motion=None)))
    save_models(stage1, tmp_path / "stage1")
    earlier = Models.build(tiny)
    for name, p in earlier.unet.named_parameters():  # non-zero, so a fresh zero-initialised module can't pass
        p.data.normal_()
    save_models(earlier, tmp_path / "earlier")
    models, names = build_models(TrainConfig(stage=2, model="sd15", stage1=str(tmp_path / "stage1"),
                                             motion=str(tmp_path / "earlier")))
    assert names == ("unet",) and models.unet.cfg.motion == tiny.unet.motion  # not the sd15 preset's heads
    expected = {k: v for k, v in earlier.unet.state_dict().items() if ".motion_modules." in k}
    trained = {k: p for k, p in models.unet.named_parameters() if p.requires_grad}
    assert trained.keys() == expected.keys()
    assert all(torch.equal(p.detach(), expected[k]) for k, p in trained.items())
    with pytest.raises(WeightsError, match="no temporal layers"):
        build_models(TrainConfig(stage=2, model="tiny", stage1=str(tmp_path / "stage1"),
                                 motion=str(tmp_path / "stage1")))


def test_half_precision_folders_train_in_fp32(tmp_path):
    """--init and --vae from fp16 files (the bundled demo is one) give fp32 networks: AdamW on fp16 weights would
    lose most of its updates to rounding."""
    tiny = config.tiny()
    models = Models.build(replace(tiny, unet=replace(tiny.unet, motion=None)))
    half = {name: {k: v.half() for k, v in m.state_dict().items()} for name, m in models.modules().items()}
    save_models(models, tmp_path / "half", states=half)
    save_file(half["vae"], tmp_path / "vae.safetensors")
    built, _ = build_models(TrainConfig(init=str(tmp_path / "half"), vae=str(tmp_path / "vae.safetensors")))
    for name, module in built.modules().items():
        state = module.state_dict()
        assert all(v.dtype == torch.float32 for v in state.values()), name
        assert all(torch.equal(v, half[name][k].float()) for k, v in state.items()), name


def test_every_config_field_is_a_flag():
    """TrainConfig's fields map one to one onto train.py's flags, each with help; a negative --min-snr-gamma turns
    the weighting off."""
    actions = {a.dest: a for a in train_script.parser()._actions}
    assert all(actions[f.name].help for f in fields(TrainConfig))
    cfg = tiny_config(Path("train.json"), Path("run"), stage=2, zero_snr=False, fsdp=True, prediction="eps",
                      noise_offset=0.0, stage1="s1", resume="auto", snr_weighting="hang")
    cfg = replace(cfg, data=["a/train.json", "b/train.json"])  # several manifests
    assert train_script.parse_args(flags(cfg))[0] == cfg
    assert train_script.parse_args(["--data", "x", "--min-snr-gamma", "-1"])[0].min_snr_gamma is None


# ----------------------------------------------------------------------------------------------- training runs
def test_stage1_overfits_one_batch(data):
    """Thirty AdamW steps on one fixed batch (same frames, noise and timesteps) cut the stage-1 loss twentyfold."""
    torch.manual_seed(0)
    models = stage1_models()
    set_trainable(models, 1)
    trainer = Trainer(models, TrainConfig(stage=1, width=32, height=32, lr=2e-3, uncond_rate=0.0), 1, CPU)
    batch = batch_of(data)
    losses = [trainer.step([([11, 12], batch)]) for _ in range(30)]
    assert losses[-1] < losses[0] / 20, losses


def test_mixed_precision_flags():
    """bf16 autocast runs on the CPU too; fp16 (with its gradient scaler) needs CUDA and says so."""
    TrainConfig(mixed_precision="bf16").check(CPU)
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        TrainConfig(mixed_precision="fp16").check(CPU)
    with pytest.raises(ValueError, match="multiples of 8"):
        TrainConfig(width=100).check(CPU)


@pytest.fixture(scope="module")
def stage1_run(data, tmp_path_factory) -> tuple[Path, Path, TrainConfig]:
    """A 4-step stage-1 run through train.py: checkpoints every 2 steps keeping 1, a validation video at the end,
    both exports. Returns the run folder, the export root and the config."""
    out = tmp_path_factory.mktemp("stage1")
    cfg = tiny_config(data, out / "run", steps=4, save_every=2, keep=1, val_every=4, val_steps=2)
    assert train_script.main(flags(cfg) + ["--export-moore", str(out / "moore"), "--export", str(out / "export")]) == 0
    return out / "run", out, cfg


def test_checkpoints_logs_and_validation(stage1_run):
    """A checkpoint is a native folder (trainable networks + config pointing at the frozen ones) that
    load_models reads; only the newest `keep` remain, no temporary folder is left; log.jsonl has one line per step
    with loss, lr and throughput; the validation video shows truth | pose | generated."""
    run, _, cfg = stage1_run
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000004"]
    folder = run / "checkpoints" / "step_0000004"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", STATE, "unet.safetensors", "reference_net.safetensors", "pose_guider.safetensors"])
    models, sampling = load_models(folder)
    assert sampling["prediction"] == "v" and sampling["width"] == 32
    saved = load_file(folder / "unet.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in models.unet.state_dict().items())
    assert load_train_state(folder)["step"] == 4
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and all(np.isfinite(x["loss"]) for x in lines)
    assert all(x["lr"] == cfg.lr and x["samples_per_s"] > 0 for x in lines)
    video = read_video(run / "val" / "step_0000004.mp4")
    assert video.shape == (8, 32, 3 * 32, 3)


def test_exports_load(stage1_run):
    """--export writes a self-contained native folder; --export-moore writes the released layout, which
    load_moore reads strictly (a stage-1 folder: no motion module) with the same tensors."""
    run, out, _ = stage1_run
    trained, _ = load_models(run / "checkpoints" / "step_0000004")
    exported, _ = load_models(out / "export")
    moore = load_moore(out / "moore", replace(config.tiny().unet, motion=None), video=False)
    for name in ("unet", "reference_net", "pose_guider"):
        expected = getattr(trained, name).state_dict()
        for loaded in (getattr(exported, name), getattr(moore, "denoising_unet" if name == "unet" else name)):
            assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items()), name
    assert all(torch.equal(v, trained.vae.state_dict()[k]) for k, v in exported.vae.state_dict().items())


def test_resume_is_exact(data, tmp_path):
    """Training 4 steps equals training 2, stopping, and resuming for 2, bitwise (weights and optimizer state), with
    warm-up and gradient accumulation."""
    cfg = tiny_config(data, tmp_path / "a", steps=4, save_every=2, keep=5, warmup=3, grad_accum=2, batch_size=1)
    train(cfg)
    train(replace(cfg, out=str(tmp_path / "b"), steps=2))
    train(replace(cfg, out=str(tmp_path / "b"), resume="auto"))
    a, b = checkpoint_tensors(tmp_path / "a", 4), checkpoint_tensors(tmp_path / "b", 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a = load_train_state(tmp_path / "a" / "checkpoints" / "step_0000004")
    state_b = load_train_state(tmp_path / "b" / "checkpoints" / "step_0000004")
    assert state_a["schedule"] == state_b["schedule"]
    opt_a, opt_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys() and all(torch.equal(opt_a[p][k], opt_b[p][k]) for p in opt_a for k in opt_a[p])


def test_stage2_trains_only_the_temporal_layers(stage1_run, tmp_path):
    """Stage 2 from a stage-1 checkpoint adds zero-initialised temporal layers and trains only them: every other
    tensor of all five networks is bitwise what stage 1 saved; the result exports to the Moore layout with its
    motion module."""
    run, _, stage1 = stage1_run
    start = run / "checkpoints" / "step_0000004"
    last = train(tiny_config(Path(stage1.data), tmp_path / "s2", stage=2, stage1=str(start), frames=4, batch_size=1))
    before, _ = load_models(start)
    after, _ = load_models(last)
    for name in ("vae", "image_encoder", "reference_net", "pose_guider", "unet"):
        old = getattr(before, name).state_dict()
        for k, v in getattr(after, name).state_dict().items():
            if ".motion_modules." not in k:
                assert torch.equal(v, old[k]), f"{name}.{k} changed"
    proj_out = [v for k, v in after.unet.state_dict().items() if ".motion_modules." in k and "proj_out.weight" in k]
    assert proj_out and all(v.abs().sum() > 0 for v in proj_out)  # zero at the start: they trained
    export_moore(after, tmp_path / "moore")
    moore = load_moore(tmp_path / "moore", config.tiny().unet)
    assert all(torch.equal(v, after.unet.state_dict()[k]) for k, v in moore.denoising_unet.state_dict().items())


def test_a_corrupt_video_trains_on_the_rest(data, tmp_path, caplog):
    """A manifest with a corrupt video trains to the end on the readable ones, with a warning naming the file."""
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00garbage" * 200)
    items = json.loads(data.read_text())
    items = [{"video": str(tmp_path / "corrupt.mp4"), "keypoints": str(data.parent / items[0]["keypoints"])},
             *[{k: str(data.parent / v) for k, v in x.items() if k in ("video", "keypoints")} for x in items]]
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps(items))
    with caplog.at_level(logging.WARNING, logger="aa.training.data"):
        last = train(tiny_config(manifest, tmp_path / "run", steps=3, batch_size=2))
    assert last.name == "step_0000003"
    assert any("corrupt.mp4" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------------- torchrun
@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """3 steps of one process with batch 2, and of two processes with batch 1 each under torchrun: DDP, and FSDP with
    gradient checkpointing and a validation video at the end. The two torchruns run side by side."""
    root = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(data, root / "one", steps=3)
    ddp = replace(cfg, out=str(root / "ddp"), batch_size=1)
    fsdp = replace(ddp, out=str(root / "fsdp"), fsdp=True, gradient_checkpointing=True, val_every=3, val_steps=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
              str(ROOT / "train.py")]
    procs = [subprocess.Popen(launch + flags(c), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c in (ddp, fsdp)]
    train(cfg)
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        assert proc.returncode == 0, output[-4000:]
    return {"one": root / "one", "ddp": root / "ddp", "fsdp": root / "fsdp"}


def assert_same_training(one: Path, two: Path) -> None:
    """Same averaged gradients (AdamW's first moments, relative to each tensor's largest) and the same parameters
    up to float noise (AdamW divides by the gradient's size, so rounding-level differences in near-zero gradient
    entries become differences of a few percent of a step: 2e-4 for 3 steps of lr 1e-3)."""
    a, b = checkpoint_tensors(one, 3), checkpoint_tensors(two, 3)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-4, msg=k)
    state_a = load_train_state(one / "checkpoints" / "step_0000003")["optimizer"]["state"]
    state_b = load_train_state(two / "checkpoints" / "step_0000003")["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for name, s in state_a.items():
        m = s["exp_avg"]
        torch.testing.assert_close(state_b[name]["exp_avg"], m, rtol=0, atol=1e-3 * float(m.abs().max()), msg=name)


def test_torchrun_ddp_matches_one_process(runs):
    """torchrun with 2 processes (DDP on gloo), batch 1 each, trains like one process with batch 2."""
    assert_same_training(runs["one"], runs["ddp"])


def test_torchrun_fsdp_matches_one_process(runs):
    """FSDP2 (fully_shard) runs on CPU/gloo: 2 processes, batch 1 each, with gradient checkpointing, train like one
    process with batch 2; the checkpoint holds whole (gathered) tensors; every rank runs validation, rank 0 writes."""
    assert_same_training(runs["one"], runs["fsdp"])
    assert (runs["fsdp"] / "val" / "step_0000003.mp4").is_file()
    models, _ = load_models(runs["fsdp"] / "checkpoints" / "step_0000003")
    assert models.unet.conv_in.weight.shape == (32, 4, 3, 3)


def test_learning_rate_warms_up_holds_and_decays_to_zero():
    from aa.training.loop import lr_factor
    cfg = TrainConfig(steps=10, warmup=2, decay=4)
    assert [round(lr_factor(cfg, s), 3) for s in range(10)] == [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    assert lr_factor(TrainConfig(steps=10, warmup=2), 9) == 1.0


def test_fast_prefixes_train_at_their_own_learning_rate(data):
    """--fast: the parameters whose names start with a prefix form a group at fast_lr_scale x lr, which warm-up and
    decay scale like the rest; one step moves them that much further (AdamW's first step moves every parameter by
    about its lr); a prefix that names no trained parameter is refused, and so is --fast with --fsdp, and resuming
    a checkpoint with other groups."""
    torch.manual_seed(0)
    models = stage1_models()
    set_trainable(models, 1)
    cfg = TrainConfig(stage=1, width=32, height=32, batch_size=2, lr=1e-4, warmup=2, weight_decay=0.0,
                      fast=["unet.down_blocks.1.", "reference_net.mid_block."], fast_lr_scale=8.0)
    trainer = Trainer(models, cfg, 1, CPU)
    slow, fast = trainer.optimizer.param_groups
    names = {id(p): n for n, p in trainer.trainable.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in fast["params"]} == {"unet", "reference_net"}
    assert all(names[id(p)].startswith(tuple(cfg.fast)) for p in fast["params"])
    assert len(slow["params"]) + len(fast["params"]) == len(trainer.params)
    assert fast["lr"] == pytest.approx(8 * slow["lr"]) == pytest.approx(8 * 0.5e-4)  # warm-up step 1 of 2
    before = {id(p): p.detach().clone() for p in trainer.params}
    trainer.step([([5, 6], batch_of(data))])
    moved = {g: max((p.detach() - before[id(p)]).abs().max().item() for p in grp["params"])
             for g, grp in (("slow", slow), ("fast", fast))}
    assert moved["fast"] == pytest.approx(8 * moved["slow"], rel=0.05), moved
    with pytest.raises(ValueError, match="--fast unet.nothing"):
        Trainer(models, replace(cfg, fast=["unet.nothing"]), 1, CPU)
    state = trainer.state()  # resuming needs the same groups: one error, not an IndexError deep in torch
    Trainer(models, cfg, 1, CPU).load_state(state)
    with pytest.raises(ValueError, match="resume with the checkpoint's --fast"):
        Trainer(models, replace(cfg, fast=None), 1, CPU).load_state(state)
    with pytest.raises(ValueError, match="--fsdp"):
        replace(cfg, fsdp=True).check()
