"""The training loss of both stages: denoise VAE latents of the target frames given the pose, the reference image's
features and its CLIP embedding (paper 3.3, as the released Moore-AnimateAnyone code trains it).

L = w(t) || target(z0, eps, t) - UNet(z_t, t, CLIP(ref), ReferenceNet(ref), PoseGuider(pose)) ||^2, with
target = eps or v, w = min-SNR-gamma (Hang et al. 2023; for v as the release computes it: ddim.min_snr_weight),
and a fraction of samples trained unconditionally (zero CLIP embedding and no reference, exactly what the
unconditional guidance branch sees at inference). Optionally the squared error is weighted up near the pose's
skeleton (`pose_region_weights`): where the character is, so the background doesn't dominate the loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aa.models.bundle import Models
from aa.models.vae import AutoencoderKL
from aa.sampling import ddim


@dataclass(frozen=True)
class Objective:
    """Loss options. Defaults follow Moore-AnimateAnyone's training (v-prediction, zero SNR, min-SNR 5 weighted as
    its train_stage_{1,2}.py do, noise offset 0.05, 10% unconditional)."""

    prediction: str = "v"  # 'v' or 'eps'
    beta_schedule: str = "scaled_linear"
    zero_snr: bool = True  # zero-terminal-SNR rescale of the schedule
    min_snr_gamma: float | None = 5.0  # None: unweighted MSE
    noise_offset: float = 0.05  # extra per-video, per-channel noise (helps very dark/bright frames)
    uncond_rate: float = 0.1  # fraction of samples with zero CLIP embedding and no reference
    reference: bool = True  # False: no ReferenceNet at all (the paper's "CLIP only" ablation)
    train_steps: int = 1000
    snr_weighting: str = "released"  # v-prediction's min-SNR variant: 'released' or 'hang' (ddim.min_snr_weight)
    region_weight: float = 0.0  # extra loss weight near the skeleton (0: the plain mean, as Moore trains)
    region_radius: int = 2  # how far, in latent cells, the weighted region reaches beyond the skeleton's cells

    def __post_init__(self) -> None:
        if self.snr_weighting not in ddim.SNR_WEIGHTINGS:
            raise ValueError(f"unknown snr_weighting {self.snr_weighting!r}: expected one of {ddim.SNR_WEIGHTINGS}")


def pose_region_weights(pose: Tensor, size: tuple[int, int], weight: float, radius: int) -> Tensor:
    """Loss weights (n, 1, h, w) on the latent grid `size` from pose images (n, 3, H, W) in [0, 1]: 1 + weight in
    the cells within `radius` cells of one the skeleton is drawn in, 1 elsewhere, divided by each frame's mean so a
    frame's loss keeps the scale of the unweighted mean. The character's body lies around its skeleton, and at a
    small scale it covers a small part of the frame, whose background the plain mean then mostly trains on."""
    drawn = (pose.amax(1, keepdim=True) > 0.05).float()  # rendered skeletons are drawn on black
    near = F.max_pool2d(F.adaptive_max_pool2d(drawn, size), 2 * radius + 1, stride=1, padding=radius)
    w = 1 + weight * near
    return w / w.mean(dim=(2, 3), keepdim=True)


@dataclass
class Noise:
    """Every random draw of a batch (one row per video), from per-sample generators (see `draw_noise`)."""

    t: Tensor  # (b,) timesteps
    eps: Tensor  # (b f, c, h, w) diffusion noise (noise offset included)
    drop: Tensor  # (b,) bool: train this video unconditionally
    vae_target: Tensor  # (b f, c, h, w) posterior sampling noise of the target frames
    vae_reference: Tensor  # (b, c, h, w) and of the reference frame


def draw_noise(seeds: list[int], frames: int, latent: tuple[int, int, int], obj: Objective) -> Noise:
    """Draw each video's randomness from its own generator, so it doesn't depend on batch layout or process."""
    rows = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, obj.train_steps, (1,), generator=g)
        drop = torch.rand(1, generator=g) < obj.uncond_rate
        eps = torch.randn(frames, *latent, generator=g)
        eps = eps + obj.noise_offset * torch.randn(1, latent[0], 1, 1, generator=g)
        rows.append((t, eps, drop, torch.randn(frames, *latent, generator=g), torch.randn(1, *latent, generator=g)))
    t, eps, drop, vt, vr = zip(*rows)
    return Noise(torch.cat(t), torch.cat(eps), torch.cat(drop), torch.cat(vt), torch.cat(vr))


@torch.no_grad()
def encode(vae: AutoencoderKL, images: Tensor, noise: Tensor) -> Tensor:
    """Scaled latents sampled from the posterior with explicit noise: (n, 3, H, W) -> (n, c, H/8, W/8)."""
    q = vae.posterior(images)
    return ((q.mean + q.std * noise.to(q.mean)) * vae.cfg.scaling_factor).to(images.dtype)


class Trainable(nn.Module):
    """The networks that can train, with a forward that returns the loss: what DDP/FSDP wrap.

    The VAE is frozen and runs before it (`encode`); the image encoder is frozen too (paper 3.3) unless a small
    demo model trains its own."""

    def __init__(self, models: Models, obj: Objective) -> None:
        super().__init__()
        self.unet, self.reference_net, self.pose_guider = models.unet, models.reference_net, models.pose_guider
        self.image_encoder = models.image_encoder
        self.obj = obj
        self.register_buffer("alphas_cumprod", ddim.alphas_cumprod(obj.beta_schedule, obj.zero_snr,
                                                                   obj.train_steps).float(), persistent=False)

    def forward(self, z0: Tensor, reference: Tensor, clip: Tensor, pose: Tensor, noise: Noise) -> Tensor:
        """z0: (b f) c h w target latents; reference: (b, c, h, w) reference latents; clip: (b, 3, S, S) image
        encoder input; pose: (b f) 3 H W pose images in [0, 1]. Returns the scalar loss."""
        context = self.image_encoder.context(clip)  # (b, 1, c)
        b = reference.shape[0]
        f = z0.shape[0] // b
        # unconditional videos last: the UNet gives the reference to the leading videos only
        order = torch.argsort(noise.drop.to(torch.int8), stable=True).to(z0.device)
        frames = (order[:, None] * f + torch.arange(f, device=z0.device)).reshape(-1)
        z0, eps, pose = z0[frames], noise.eps.to(z0)[frames], pose[frames]
        reference, context, t = reference[order], context[order], noise.t.to(z0.device)[order]
        kept = int((~noise.drop).sum())
        context = torch.cat([context[:kept], torch.zeros_like(context[kept:])])

        ab = self.alphas_cumprod[t].repeat_interleave(f)  # (b f)
        x_t = ddim.add_noise(z0, eps, ab)
        ref_kv = None
        if self.obj.reference:
            # run even when every video is unconditional: all processes must call the same modules (DDP, FSDP)
            features = self.reference_net(reference[:max(kept, 1)], context[:max(kept, 1)])
            ref_kv = self.unet.reference_kv(features)
        pose_features = self.pose_guider(pose)
        if self.pose_guider.adds_to_latent:
            x_t, pose_features = x_t + pose_features, None
        pred = self.unet(x_t, t, context, ref_kv=ref_kv if kept else None, pose_features=pose_features,
                         num_frames=f)

        target = ddim.training_target(z0, eps, ab, self.obj.prediction)
        error = F.mse_loss(pred.float(), target.float(), reduction="none")  # (b f, c, h, w)
        if self.obj.region_weight:
            error = error * pose_region_weights(pose.float(), error.shape[-2:], self.obj.region_weight,
                                                self.obj.region_radius)
        per_video = error.mean(dim=(1, 2, 3)).view(b, f).mean(1)
        if self.obj.min_snr_gamma:
            per_video = per_video * ddim.min_snr_weight(self.alphas_cumprod[t].double(), self.obj.min_snr_gamma,
                                                        self.obj.prediction, self.obj.snr_weighting).float()
        loss = per_video.mean()
        if ref_kv is not None and not kept:  # all unconditional: keep the ReferenceNet in the graph with zero
            loss = loss + 0.0 * sum(k.mean() + v.mean() for k, v in ref_kv)  # gradient (DDP wants every grad)
        return loss
