"""Golden fixtures for the SD 1.x parity tests (tests/test_sd_parity.py), made with the reference library.

Builds a tiny random-weight diffusers `UNet2DConditionModel` and `AutoencoderKL` (the layout of
`aa.models.config.tiny()` at a narrower width, so the files stay small), writes their weights in the public formats,
runs them on fixed inputs, and records DDIMScheduler runs. Run from the repository root in the reference
environment (requirements-golden.txt: its packages, their versions and the command that makes it):

    OMP_NUM_THREADS=1 python tools/make_golden_sd.py

numerics.safetensors holds a second set of runs on the same models with a few parameters replaced, where the
GroupNorm eps values and the exact (erf) GELU change the outputs far beyond the tests' tolerance (see
`numerics_fixture`; the random-weight runs above are blind to them). Re-running rewrites every file; the other
files then change by float noise only (~3e-6).

The tests read tests/data/golden_sd/ and never import diffusers. The LDM (single-file) names are produced here by
inverting the original layout, as diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py does,
independently of aa/weights/rules.py, and checked against diffusers' own LDM -> diffusers converters.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from diffusers.models.activations import GEGLU
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from safetensors.torch import save_file

# aa.models.config field names, stored in the fixture so the tests build the same models
UNET = dict(block_out_channels=[8, 16], attention_levels=[True, False], layers_per_block=1, num_heads=2,
            context_dim=8, norm_groups=4)
VAE = dict(block_out_channels=[4, 8, 8, 8], layers_per_block=1, norm_groups=4)
SCALING = 0.18215
DDIM_CASES = [  # name -> scheduler settings and number of steps
    dict(name="moore", beta_schedule="linear", prediction_type="v_prediction", rescale_betas_zero_snr=True,
         timestep_spacing="trailing", steps_offset=1, steps=25),
    dict(name="sd15", beta_schedule="scaled_linear", prediction_type="epsilon", rescale_betas_zero_snr=False,
         timestep_spacing="leading", steps_offset=1, steps=50),
    dict(name="musepose", beta_schedule="scaled_linear", prediction_type="v_prediction",
         rescale_betas_zero_snr=True, timestep_spacing="trailing", steps_offset=1, steps=20),
    dict(name="linspace", beta_schedule="linear", prediction_type="epsilon", rescale_betas_zero_snr=False,
         timestep_spacing="linspace", steps_offset=0, steps=10),
]


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Random weights, biases and norm scales moved off their init (so they are tested), rounded to values fp16
    holds exactly: the fp16 single file then carries the very weights the fp32 reference ran with."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.add_(0.1 * noise if p.ndim == 1 else 0.02 * noise)
            p.copy_(p.half().float())


def map_prefixes(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename by the longest matching diffusers prefix: pairs are (ldm prefix, diffusers prefix)."""
    out = {}
    for key, t in state.items():
        ldm, hf = max(((lp, h) for lp, h in pairs if key.startswith(h)), key=lambda p: len(p[1]), default=("", ""))
        out[ldm + key[len(hf):]] = t
    return out


RESNET_LEAVES = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."),
                 ("out_layers.3.", "conv2."), ("emb_layers.1.", "time_emb_proj."),
                 ("skip_connection.", "conv_shortcut.")]


def unet_to_ldm(state: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """diffusers UNet names -> LDM `model.diffusion_model.*` names (the original block numbering)."""
    levels, layers, attn = len(cfg["block_out_channels"]), cfg["layers_per_block"], cfg["attention_levels"]
    blocks = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
              ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."),
              ("middle_block.0.", "mid_block.resnets.0."), ("middle_block.1.", "mid_block.attentions.0."),
              ("middle_block.2.", "mid_block.resnets.1.")]
    for i in range(levels):
        for j in range(layers):
            n = (layers + 1) * i + j + 1
            blocks.append((f"input_blocks.{n}.0.", f"down_blocks.{i}.resnets.{j}."))
            blocks.append((f"input_blocks.{n}.1.", f"down_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            blocks.append((f"input_blocks.{(layers + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        for j in range(layers + 1):
            n = (layers + 1) * i + j
            blocks.append((f"output_blocks.{n}.0.", f"up_blocks.{i}.resnets.{j}."))
            blocks.append((f"output_blocks.{n}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            n, m = (layers + 1) * i + layers, 2 if attn[levels - 1 - i] else 1
            blocks.append((f"output_blocks.{n}.{m}.", f"up_blocks.{i}.upsamplers.0."))
    renamed = {}
    for key, t in state.items():
        if ".resnets." in key:
            for ldm, hf in RESNET_LEAVES:
                key = key.replace(hf, ldm)
        renamed[key] = t
    return {"model.diffusion_model." + k: v for k, v in map_prefixes(renamed, blocks).items()}


def vae_to_ldm(state: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """diffusers VAE names -> LDM names (no prefix), attention projections as 1x1 convs [c, c, 1, 1]."""
    levels, layers = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    blocks = []
    for part in ("encoder", "decoder"):
        blocks += [(f"{part}.norm_out.", f"{part}.conv_norm_out."),
                   (f"{part}.mid.attn_1.norm.", f"{part}.mid_block.attentions.0.group_norm."),
                   (f"{part}.mid.attn_1.q.", f"{part}.mid_block.attentions.0.to_q."),
                   (f"{part}.mid.attn_1.k.", f"{part}.mid_block.attentions.0.to_k."),
                   (f"{part}.mid.attn_1.v.", f"{part}.mid_block.attentions.0.to_v."),
                   (f"{part}.mid.attn_1.proj_out.", f"{part}.mid_block.attentions.0.to_out.0."),
                   (f"{part}.mid.block_1.", f"{part}.mid_block.resnets.0."),
                   (f"{part}.mid.block_2.", f"{part}.mid_block.resnets.1.")]
    for i in range(levels):
        for j in range(layers):
            blocks.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        for j in range(layers + 1):
            blocks.append((f"decoder.up.{levels - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
        if i < levels - 1:
            blocks.append((f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0."))
            blocks.append((f"decoder.up.{levels - 1 - i}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
    out = {}
    for key, t in map_prefixes(state, blocks).items():
        key = key.replace("conv_shortcut.", "nin_shortcut.")
        if ".mid.attn_1." in key and key.endswith("weight") and t.ndim == 2:
            t = t[:, :, None, None]
        out[key] = t
    return out


def vae_to_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Current diffusers VAE names -> the names diffusers < 0.14 saved (query/key/value/proj_attn)."""
    old = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    out = {}
    for key, t in state.items():
        for new, legacy in old.items():
            key = key.replace(f"attentions.0.{new}", f"attentions.0.{legacy}")
        out[key] = t
    return out


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: keys differ: {sorted(a.keys() ^ b.keys())[:5]}"
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"{what}: tensors differ: {bad[:5]}"


def ddpm_buffers(ac: torch.Tensor) -> dict[str, torch.Tensor]:
    """The 12 schedule buffers an LDM single file carries (values as LDM computes them; loaders drop them)."""
    prev = torch.cat([torch.ones(1), ac[:-1]])
    betas = 1 - ac / prev
    var = betas * (1 - prev) / (1 - ac)
    return {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": prev, "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(), "log_one_minus_alphas_cumprod": (1 - ac).log(),
            "sqrt_recip_alphas_cumprod": ac.rsqrt(), "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(),
            "posterior_variance": var, "posterior_log_variance_clipped": var.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * prev.sqrt() / (1 - ac),
            "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - ac)}


def make_unet() -> UNet2DConditionModel:
    levels = UNET["attention_levels"]
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=UNET["layers_per_block"],
        block_out_channels=tuple(UNET["block_out_channels"]),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
        attention_head_dim=UNET["num_heads"],  # SD 1.x semantics: the number of heads
        cross_attention_dim=UNET["context_dim"], norm_num_groups=UNET["norm_groups"]).eval()
    perturb(unet, seed=1)
    return unet


def make_vae() -> AutoencoderKL:
    n = len(VAE["block_out_channels"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=VAE["layers_per_block"],
                        block_out_channels=tuple(VAE["block_out_channels"]), norm_num_groups=VAE["norm_groups"],
                        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                        sample_size=32, scaling_factor=SCALING).eval()
    perturb(vae, seed=2)
    return vae


def ddim_runs() -> tuple[dict[str, torch.Tensor], list[dict]]:
    """alphas_cumprod, timesteps and a few steps (eta 0, and one eta 0.5 with a seeded generator) per case."""
    g = torch.Generator().manual_seed(3)
    tensors = {"sample": torch.randn(1, 4, 4, 4, generator=g), "model_output": torch.randn(1, 4, 4, 4, generator=g)}
    cases = []
    for case in DDIM_CASES:
        c = dict(case)
        name, steps = c.pop("name"), c.pop("steps")
        sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=True, **c)
        sched.set_timesteps(steps)
        ts = sched.timesteps
        tensors[f"{name}.alphas_cumprod"] = sched.alphas_cumprod.clone()
        tensors[f"{name}.timesteps"] = ts.clone()
        picks = sorted({0, 1, len(ts) // 2, len(ts) - 1})
        if c["prediction_type"] == "epsilon" and c["rescale_betas_zero_snr"]:
            picks.remove(0)  # eps at SNR 0 has no x0
        for i in picks:
            out = sched.step(tensors["model_output"], ts[i], tensors["sample"], eta=0.0).prev_sample
            tensors[f"{name}.step{i}"] = out
        seed, i = 7, len(ts) // 2
        out = sched.step(tensors["model_output"], ts[i], tensors["sample"], eta=0.5,
                         generator=torch.Generator().manual_seed(seed)).prev_sample
        tensors[f"{name}.eta0.5.step{i}"] = out
        cases.append(dict(case, steps_checked=picks, eta_step=i, eta_seed=seed))
    return tensors, cases


SMALL = 0.01  # activation scale of the numerics runs: GroupNorm groups of variance ~1e-6..1e-4, eps comparable
GATE_SHIFT, FF_GAIN = -2.5, 50.0  # GEGLU gates near -2.5: gelu = -0.016 there, and tanh-GELU is off by ~3%


def small_activations(model: torch.nn.Module, keep: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Scale conv_in, every GroupNorm affine, every other bias and the time projections by SMALL (fp16-exact):
    activations stay ~SMALL all the way, so each GroupNorm (but those in `keep`) normalises tiny groups."""
    modules, changed = dict(model.named_modules()), {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner, leaf = name.rsplit(".", 1)
            if owner.endswith(keep):
                continue
            if owner.endswith("conv_in") or isinstance(modules[owner], torch.nn.GroupNorm) or leaf == "bias" \
                    or owner.endswith("time_emb_proj"):
                p.copy_((p * SMALL).half().float())
                changed[name] = p.detach().clone()
    return changed


def negative_gates(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """Shift every GEGLU gate bias (the second half of `ff.net.0.proj.bias`) by GATE_SHIFT and raise `ff.net.2`
    by FF_GAIN, so the feed-forward output is made of gelu's small negative tail, where the approximations differ."""
    changed = {}
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("ff.net.0.proj.bias"):
                p[p.shape[0] // 2:] += GATE_SHIFT
            elif name.endswith("ff.net.2.weight"):
                p.mul_(FF_GAIN)
            else:
                continue
            p.copy_(p.half().float())
            changed[name] = p.detach().clone()
    return changed


def set_eps(model: torch.nn.Module, kind: type, attr: tuple[str, ...], eps: float) -> None:
    for module in model.modules():
        if isinstance(module, kind):
            for a in attr:
                getattr(module, a).eps = eps


def set_out_eps(parts: tuple[torch.nn.Module, ...], eps: float) -> None:
    for part in parts:
        part.conv_norm_out.eps = eps


def set_tanh_gelu(model: torch.nn.Module, tanh: bool) -> None:
    for module in model.modules():
        if isinstance(module, GEGLU):
            module.gelu = (lambda g: F.gelu(g, approximate="tanh")) if tanh else (lambda g: F.gelu(g))


def sensitivity(run: Callable[[], torch.Tensor], changes: dict[str, tuple[Callable, Callable]]) -> dict[str, float]:
    """Max abs change of `run()` under each (apply, undo) pair of one-constant changes to the reference."""
    base, out = run(), {}
    for what, (apply, undo) in changes.items():
        apply()
        out[what] = (run() - base).abs().max().item()
        undo()
    return out


def numerics_fixture(unet: UNet2DConditionModel, vae: AutoencoderKL, io: dict) -> tuple[dict, dict]:
    """Replaced parameters (`unet.<name>`, `vae.<name>`, fp16) and the reference's outputs on io's inputs, plus
    how far each single numerics change moves them (the maker refuses a fixture that would not see one)."""
    unet_changed = {**small_activations(unet, keep=("conv_norm_out", "conv_out")), **negative_gates(unet)}
    vae_changed = small_activations(vae, keep=("conv_norm_out", "conv_out", "quant_conv"))

    def run_unet() -> torch.Tensor:
        return unet(io["unet.sample"], io["unet.timestep"], encoder_hidden_states=io["unet.context"]).sample

    def run_vae() -> dict[str, torch.Tensor]:
        posterior = vae.encode(io["vae.image"]).latent_dist
        return {"out.vae_decoded": vae.decode(io["vae.latent"] / SCALING).sample,
                "out.vae_mean": posterior.mean * SCALING, "out.vae_std": posterior.std}

    tensors = {**{f"unet.{k}": v.half() for k, v in unet_changed.items()},
               **{f"vae.{k}": v.half() for k, v in vae_changed.items()}}
    with torch.no_grad():
        tensors["out.unet"] = run_unet()
        tensors.update(run_vae())
        r = ResnetBlock2D
        moved = sensitivity(run_unet, {
            "unet resnet eps 1e-5 -> 1e-6": (lambda: set_eps(unet, r, ("norm1", "norm2"), 1e-6),
                                             lambda: set_eps(unet, r, ("norm1", "norm2"), 1e-5)),
            "unet Transformer2D eps 1e-6 -> 1e-5": (lambda: set_eps(unet, Transformer2DModel, ("norm",), 1e-5),
                                                    lambda: set_eps(unet, Transformer2DModel, ("norm",), 1e-6)),
            "unet conv_norm_out eps 1e-5 -> 1e-6": (lambda: set_out_eps((unet,), 1e-6),
                                                    lambda: set_out_eps((unet,), 1e-5)),
            "unet GEGLU erf -> tanh GELU": (lambda: set_tanh_gelu(unet, True), lambda: set_tanh_gelu(unet, False))})
        moved |= sensitivity(lambda: torch.cat([v.flatten() for v in run_vae().values()]), {
            "vae attention eps 1e-6 -> 1e-5": (lambda: set_eps(vae, Attention, ("group_norm",), 1e-5),
                                               lambda: set_eps(vae, Attention, ("group_norm",), 1e-6)),
            "vae resnet eps 1e-6 -> 1e-5": (lambda: set_eps(vae, r, ("norm1", "norm2"), 1e-5),
                                            lambda: set_eps(vae, r, ("norm1", "norm2"), 1e-6)),
            "vae conv_norm_out eps 1e-6 -> 1e-5": (lambda: set_out_eps((vae.encoder, vae.decoder), 1e-5),
                                                   lambda: set_out_eps((vae.encoder, vae.decoder), 1e-6))})
    blind = {k: v for k, v in moved.items() if v < 10 * 1e-4}
    assert not blind, f"the numerics runs would not see: {blind}"
    return {k: v.contiguous() for k, v in tensors.items()}, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tests/data/golden_sd", help="folder for the fixture files")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    unet, vae = make_unet(), make_vae()
    unet_sd = {k: v.contiguous() for k, v in unet.state_dict().items()}
    vae_sd = {k: v.contiguous() for k, v in vae.state_dict().items()}

    # the LDM names, checked against diffusers' own converters (and its loader's legacy-name fix)
    unet_ldm = unet_to_ldm(unet_sd, UNET)
    same(convert_ldm_unet_checkpoint(unet_ldm, unet.config), unet_sd, "UNet LDM names")
    vae_ldm = vae_to_ldm(vae_sd, VAE)
    same(convert_ldm_vae_checkpoint({"first_stage_model." + k: v for k, v in vae_ldm.items()}, vae.config),
         vae_sd, "VAE LDM names")
    vae_legacy = vae_to_legacy(vae_sd)
    same(vae._fix_state_dict_keys_on_load(dict(vae_legacy)), vae_sd, "VAE legacy names")

    config = {"unet": json.dumps(UNET), "vae": json.dumps(dict(VAE, scaling_factor=SCALING))}
    save_file(unet_sd, str(out / "unet_diffusers.safetensors"), metadata=config)
    save_file(vae_sd, str(out / "vae_diffusers.safetensors"), metadata=config)
    save_file(vae_legacy, str(out / "vae_legacy.safetensors"), metadata=config)
    torch.save({"state_dict": vae_ldm, "global_step": 840000}, out / "vae_ldm.ckpt")  # like vae-ft-mse-840000
    text = {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.randn(10, 8),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(8)}
    schedule = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    single = {**unet_ldm, **{"first_stage_model." + k: v for k, v in vae_ldm.items()}, **text,
              **ddpm_buffers(schedule)}
    save_file({k: v.half().contiguous() for k, v in single.items()}, str(out / "sd_single_file.fp16.safetensors"),
              metadata=config)  # like v1-5-pruned-emaonly-fp16.safetensors

    g = torch.Generator().manual_seed(4)
    io = {"unet.sample": torch.randn(2, 4, 8, 8, generator=g), "unet.timestep": torch.tensor([999, 10]),
          "unet.context": torch.randn(2, 3, UNET["context_dim"], generator=g),
          "vae.latent": torch.randn(1, 4, 4, 4, generator=g),
          "vae.image": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1}
    with torch.no_grad():
        io["unet.out"] = unet(io["unet.sample"], io["unet.timestep"], encoder_hidden_states=io["unet.context"]).sample
        io["vae.decoded"] = vae.decode(io["vae.latent"] / SCALING).sample
        posterior = vae.encode(io["vae.image"]).latent_dist
        io["vae.mean"] = posterior.mean * SCALING
        io["vae.std"] = posterior.std
    save_file({k: v.contiguous() for k, v in io.items()}, str(out / "io.safetensors"), metadata=config)

    numerics, moved = numerics_fixture(unet, vae, io)  # last: it changes the models' parameters
    save_file(numerics, str(out / "numerics.safetensors"), metadata={**config, "moved": json.dumps(moved)})
    print("numerics fixture: max abs change of the reference outputs under one change each:",
          json.dumps({k: float(f"{v:.2g}") for k, v in moved.items()}, indent=1))

    ddim, cases = ddim_runs()
    save_file(ddim, str(out / "ddim.safetensors"), metadata={"cases": json.dumps(cases)})
    for f in sorted(out.iterdir()):
        print(f"{f}  {f.stat().st_size / 1024:.0f} KiB")
    print("output ranges:", {k: round(v.abs().max().item(), 3) for k, v in io.items() if v.is_floating_point()})


if __name__ == "__main__":
    main()
