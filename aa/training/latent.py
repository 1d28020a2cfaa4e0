"""A wider latent space for a trained model: more VAE latent channels on the same grid, so the latents can carry
what the old ones dropped (the colour of parts a few pixels wide), without starting every network again.

Each step keeps what the networks compute. The widened VAE encodes the old channels exactly as before and adds new
ones, which its decoder ignores at first (their input weights are zero). The denoising UNet and the ReferenceNet
read the new channels through zero weights, and the UNet predicts zero for them. Training then teaches the VAE to
use the new channels (tools/train_vae.py --widen-latent, with --anchor keeping the old channels where they were),
and the UNets to denoise them (train.py --init on the folder tools/widen_latent.py writes): a fine-tune, not a
restart.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from aa.models.bundle import Models
from aa.models.reference import ReferenceNet
from aa.models.unet import UNet
from aa.models.vae import AutoencoderKL


def moment_rows(old: int, new: int) -> Tensor:
    """Where the old VAE's 2*old moment channels (old means, then old log-variances) sit among the widened VAE's
    2*new (new means, then new log-variances): the first `old` of each half."""
    return torch.cat([torch.arange(old), new + torch.arange(old)])


def in_corner(old: Tensor, like: Tensor) -> Tensor:
    """`old` itself where it has `like`'s shape; else zeros of `like`'s shape with `old` in their leading corner
    (a convolution grown in its input or output channels that ignores the new inputs and gives 0 on the new
    outputs)."""
    if old.shape == like.shape:
        return old
    out = torch.zeros_like(like)
    out[tuple(slice(0, n) for n in old.shape)] = old
    return out


@torch.no_grad()
def widen_vae(vae: AutoencoderKL, channels: int, init_logvar: float = -8.0) -> AutoencoderKL:
    """`vae` with `channels` latent channels, the first `vae.cfg.latent_channels` of them the old ones.

    The encoder's old moments and the decoder's output are unchanged. The new means start as the freshly
    initialised rows of the encoder's conv_out, so they vary with the image and the decoder's new (zero) input
    weights get gradients at once. The new log-variances start constant at `init_logvar`, nearly deterministic,
    as a fresh VAE in tools/train_vae.py does."""
    old = vae.cfg.latent_channels
    if channels <= old:
        raise ValueError(f"a wider latent needs more than the VAE's {old} channels, got {channels}")
    new = AutoencoderKL(replace(vae.cfg, latent_channels=channels)).to(vae.quant_conv.weight.dtype)
    state, rows, new_means = new.state_dict(), moment_rows(old, channels), torch.arange(old, channels)
    for k, v in vae.state_dict().items():  # the moments are interleaved below; everything else grows at its end
        if not k.startswith(("encoder.conv_out.", "quant_conv.")):
            state[k] = in_corner(v, state[k])
    state["post_quant_conv.weight"][new_means, new_means] = 1.0  # the new channels passed through to the decoder
    for name in ("weight", "bias"):  # the old rows in place; the others keep their fresh initial values
        state[f"encoder.conv_out.{name}"][rows] = getattr(vae.encoder.conv_out, name)

    # quant_conv mixes moments (1x1): the old block in place, each new mean passed through, new log-variances constant
    quant = torch.zeros_like(state["quant_conv.weight"])
    quant[rows[:, None], rows[None, :]] = vae.quant_conv.weight
    quant[new_means, new_means] = 1.0
    quant_bias = torch.zeros_like(state["quant_conv.bias"])
    quant_bias[rows] = vae.quant_conv.bias
    quant_bias[channels + new_means] = init_logvar
    state["quant_conv.weight"], state["quant_conv.bias"] = quant, quant_bias
    new.load_state_dict(state)
    return new


@torch.no_grad()
def widen_unet(unet: UNet, channels: int) -> UNet:
    """`unet` (a denoising UNet or a ReferenceNet) taking and predicting `channels` latent channels: the new inputs
    are read through zero weights and the new outputs are zero, so on the old channels it computes what it did."""
    old = unet.cfg.in_channels
    if channels <= old:
        raise ValueError(f"a wider latent needs more than the UNet's {old} channels, got {channels}")
    if unet.cfg.out_channels != old:
        raise ValueError(f"cannot widen a UNet of {old} -> {unet.cfg.out_channels} channels")
    cfg = replace(unet.cfg, in_channels=channels, out_channels=channels)
    new = (ReferenceNet(cfg) if isinstance(unet, ReferenceNet) else UNet(cfg)).to(unet.conv_in.weight.dtype)
    fresh = new.state_dict()
    new.load_state_dict({k: in_corner(v, fresh[k]) for k, v in unet.state_dict().items()})
    return new


@torch.no_grad()
def rescale_channels(vae: AutoencoderKL, scale: Tensor) -> None:
    """Multiply each latent channel c by scale[c], in place, without changing what the VAE computes: quant_conv's
    mean rows are scaled (and its log-variance biases raised by 2 log scale), post_quant_conv's input columns
    divided. The decoder sees the same values; the UNet sees the latents in new units. Used to give the new
    channels of a widened latent the old ones' spread, so the diffusion noise drowns them alike."""
    c = vae.cfg.latent_channels
    if scale.shape != (c,) or not (scale > 0).all():
        raise ValueError(f"expected {c} positive scales, got {tuple(scale.shape)}")
    scale = scale.to(vae.quant_conv.weight)
    vae.quant_conv.weight[:c] *= scale[:, None, None, None]
    vae.quant_conv.bias[:c] *= scale
    vae.quant_conv.bias[c:] += 2 * scale.log()
    vae.post_quant_conv.weight /= scale[None, :, None, None]


@torch.no_grad()
def match_new_channels(vae: AutoencoderKL, old: int, images: Tensor, batch: int = 32) -> Tensor:
    """Give the channels after the first `old` the old channels' statistics over `images` (b, 3, H, W) in
    [-1, 1]: each is rescaled (rescale_channels) to the old channels' mean standard deviation, and its posterior
    log-variance is set to the old channels' mean, the same for every image. The posterior means, and so the
    decoded means, are unchanged. Returns the scales.

    The second step matters for training the UNets, which sample the posterior: where the decoder hardly reads a
    new channel, the KL term (tiny, but Adam normalises its gradient) raises its variance towards 1, and the
    samples' noise then drowns what the channel carries."""
    moments = [vae.posterior(x) for x in images.split(batch)]
    std = torch.cat([q.mean for q in moments]).std(dim=(0, 2, 3))
    logvar = torch.cat([q.logvar[:, :old] for q in moments]).mean()
    scale = torch.ones_like(std)
    scale[old:] = std[:old].mean() / std[old:]
    rescale_channels(vae, scale)
    c = vae.cfg.latent_channels
    vae.quant_conv.weight[c + old:] = 0
    vae.quant_conv.bias[c + old:] = logvar
    return scale


def widen_models(models: Models, vae: AutoencoderKL) -> Models:
    """`models` with `vae` (a wider latent of the same grid, e.g. trained by tools/train_vae.py --widen-latent) and
    the denoising UNet and ReferenceNet widened to read and predict its channels. The image encoder and the Pose
    Guider are shared, not copied."""
    if models.pose_guider.cfg.adds_to != "conv_in":
        raise ValueError("the Pose Guider adds to the latent itself; widening its output is not supported")
    if vae.downscale != models.vae.downscale:
        raise ValueError(f"the new VAE downscales {vae.downscale}x, the model's {models.vae.downscale}x: "
                         "only the number of latent channels may change")
    channels = vae.cfg.latent_channels
    unet, reference_net = widen_unet(models.unet, channels), widen_unet(models.reference_net, channels)
    cfg = None if models.cfg is None else replace(models.cfg, vae=vae.cfg, unet=unet.cfg)
    return Models(vae=vae, image_encoder=models.image_encoder, reference_net=reference_net, unet=unet,
                  pose_guider=models.pose_guider, cfg=cfg)


def anchor_loss(posterior_mean: Tensor, anchor_mean: Tensor) -> Tensor:
    """Mean squared distance of the old channels' posterior means (the first anchor_mean.shape[1] channels) from
    where the widened-from VAE put them: what keeps the networks trained on those latents valid."""
    return nn.functional.mse_loss(posterior_mean[:, :anchor_mean.shape[1]], anchor_mean)
