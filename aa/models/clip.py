"""CLIP ViT image encoder (transformers `CLIPVisionModelWithProjection` names) and its preprocessing.

Animate Anyone feeds the reference image's CLIP embedding to every cross-attention in place of the text embedding
(paper 3.2). The released weights (Moore-AnimateAnyone's) use `image_embeds`: the projected class token after
`post_layernorm`, 768-d for ViT-L/14, not L2-normalised, as a single context token (b, 1, 768).
Reference checkpoint: `lambdalabs/sd-image-variations-diffusers/image_encoder`
(formats/clip_vit_l14_image_encoder_hf.txt).

Preprocessing comes in the two conventions the public code uses:
- "squash" (the default): resize to size x size ignoring the aspect ratio, bicubic without antialias, as in the
  sd-image-variations model card's training recipe (`torchvision.transforms.Resize((224, 224), BICUBIC,
  antialias=False)` on float tensors) and in Moore's inference. The default because it is what the image encoder's
  consumer, the sd-image-variations UNet that Animate Anyone starts from, was trained on, and because it keeps the
  whole reference character in view (a centre crop of a portrait image cuts off head and feet).
- "crop": `CLIPImageProcessor` (Moore's training): resize the short side to `size` (bicubic, antialiased),
  centre-crop size x size.
Both run on float tensors with `F.interpolate`, so training (tensors, on any device) and inference (PIL images) go
through the same code. Use the same mode in training and inference.
- "pil-squash": Moore's inference exactly (`ref_image.resize((224, 224))` with PIL's antialiased bicubic on the
  8-bit image, then the processor's normalisation); used by the `moore` sampling preset.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import Tensor, nn

from aa.io.image import pil_to_rgb
from aa.models.config import CLIPVisionConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's per-channel mean and std of [0, 1] pixels
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("squash", "crop", "pil-squash")
ImageInput = Image.Image | np.ndarray | Tensor | Sequence[Image.Image | np.ndarray | Tensor]


def quick_gelu(x: Tensor) -> Tensor:
    """x * sigmoid(1.702 x): OpenAI CLIP's GELU approximation; the weights were trained with it, not with erf GELU."""
    return x * torch.sigmoid(1.702 * x)


class CLIPVisionEmbeddings(nn.Module):
    """Patch conv (no bias), a learned class token in front, learned absolute positions (ViT, Dosovitskiy et al.)."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(cfg.width))
        self.patch_embedding = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.width)  # 257 = 16 x 16 patches + class

    def forward(self, pixel_values: Tensor) -> Tensor:
        # pixel_values: (b, 3, h, w), normalised
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (b, c, h/p, w/p)
        x = rearrange(x, "b c h w -> b (h w) c")
        cls = self.class_embedding.expand(x.shape[0], 1, -1)  # (b, 1, c)
        x = torch.cat([cls, x], dim=1)  # (b, 1 + n, c)
        return x + self.position_embedding.weight


class CLIPAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections, on `F.scaled_dot_product_attention`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        assert dim % heads == 0, f"width {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        # x: (b, n, c)
        q, k, v = (rearrange(proj(x), "b n (nh d) -> b nh n d", nh=self.heads)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "b nh n d -> b n (nh d)"))


class CLIPMLP(nn.Module):
    """Linear -> quick_gelu -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(cfg.width, cfg.heads)
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=1e-5)
        self.mlp = CLIPMLP(cfg.width, cfg.mlp_dim)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    """The stack of encoder layers (a module of its own so keys read `encoder.layers.N`)."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg) for _ in range(cfg.layers)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPVisionTransformer(nn.Module):
    """Embeddings, `pre_layrnorm` (sic, the checkpoint's spelling), encoder, `post_layernorm` of the class token."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.width, eps=1e-5)
        self.encoder = CLIPEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=1e-5)

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """(last hidden state (b, 1 + n, c), pooled output (b, c) = post_layernorm of the class token)."""
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))  # (b, 1 + n, c)
        return x, self.post_layernorm(x[:, 0])


class CLIPImageEncoder(nn.Module):
    """CLIP ViT image tower + `visual_projection`: normalised pixels -> `image_embeds` (transformers
    `CLIPVisionModelWithProjection`; keys as in sd-image-variations' `image_encoder/`)."""

    def __init__(self, cfg: CLIPVisionConfig = CLIPVisionConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_model = CLIPVisionTransformer(cfg)
        self.visual_projection = nn.Linear(cfg.width, cfg.projection_dim, bias=False)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """`image_embeds` (b, projection_dim), not L2-normalised, from `preprocess`ed pixels (b, 3, size, size)."""
        s = self.cfg.image_size
        assert pixel_values.ndim == 4 and pixel_values.shape[1:] == (3, s, s), \
            f"expected (b, 3, {s}, {s}) from preprocess(), got {tuple(pixel_values.shape)}"
        _, pooled = self.vision_model(pixel_values)
        return self.visual_projection(pooled)  # (b, projection_dim)

    def context(self, pixel_values: Tensor) -> Tensor:
        """The UNets' cross-attention context: `image_embeds` as one token, (b, 1, projection_dim), as the released
        weights were trained with it."""
        return self(pixel_values)[:, None]


def preprocess(images: ImageInput, mode: str = "squash", size: int = 224) -> Tensor:
    """Images -> normalised pixels (b, 3, size, size) float32 for `CLIPImageEncoder`.

    `images`: a PIL image (any 8-bit mode: transparency is composited on white, as `CLIPImageProcessor` does, then
    converted to RGB), a uint8 array/tensor (h, w, 3) or (b, h, w, 3) as images are stored, a float tensor/array
    (3, h, w) or (b, 3, h, w) in [0, 1] as torch models take them, or a list of those (sizes may differ).
    `mode`: "squash" (default; resize to size x size, bicubic, no antialias: the sd-image-variations recipe),
    "crop" (`CLIPImageProcessor`: short side to `size` bicubic antialiased, centre crop) or "pil-squash" (Moore's
    inference: PIL's resize of the 8-bit image). Tensors stay on their device.
    """
    if mode not in MODES:
        raise ValueError(f"unknown CLIP preprocessing mode {mode!r}: expected one of {MODES}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("preprocess() got an empty list of images")
        return torch.cat([preprocess(image, mode, size) for image in images])
    x = to_float_rgb(images)  # (b, 3, h, w) in [0, 1]
    if mode == "pil-squash":
        pil = [Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)
               for a in (x * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()]
        x = to_float_rgb(np.stack([np.asarray(p) for p in pil])).to(x.device)
    elif mode == "squash":
        # no clamp: the recipe resizes float tensors, and bicubic overshoots [0, 1] slightly at edges
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    else:
        x = resize_short_side(x, size).clamp(0, 1)  # clamp: the processor resizes 8-bit images
        x = center_crop(x, size)
    mean = x.new_tensor(CLIP_MEAN)[:, None, None]
    std = x.new_tensor(CLIP_STD)[:, None, None]
    return (x - mean) / std


def to_float_rgb(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """One image or a batch -> float32 (b, 3, h, w) in [0, 1], with a clear error for what doesn't fit."""
    if isinstance(image, Image.Image):
        image = np.asarray(pil_to_rgb(image))  # (h, w, 3) uint8
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image))  # a copy: PIL's arrays are read-only
    if not isinstance(image, Tensor):
        raise TypeError(f"expected a PIL image, an array or a tensor, got {type(image).__name__}")
    if image.dtype == torch.uint8:
        if image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise ValueError(f"a uint8 image must be (h, w, 3) or (b, h, w, 3) RGB, got shape {tuple(image.shape)}"
                             " (drop an alpha channel, or pass a PIL image to composite it on white)")
        image = rearrange(image.reshape(-1, *image.shape[-3:]), "b h w c -> b c h w")
        return image.float() / 255
    if not image.is_floating_point():
        raise ValueError(f"expected uint8 (b, h, w, 3) or float (b, 3, h, w) in [0, 1], got {image.dtype}")
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"a float image must be (3, h, w) or (b, 3, h, w) in [0, 1], got shape {tuple(image.shape)}")
    lo, hi = image.aminmax()
    if lo < -0.01 or hi > 1.01:  # a little slack for values that went through a resize already
        raise ValueError(f"float images must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}] "
                         "(from the VAE's [-1, 1] convention, pass (x + 1) / 2)")
    return image.reshape(-1, *image.shape[-3:]).float()


def resize_short_side(x: Tensor, size: int) -> Tensor:
    """Bicubic antialiased resize of (b, c, h, w) so the short side is `size`; the long side is truncated to an int
    as transformers' `get_resize_output_image_size` does."""
    h, w = x.shape[-2:]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)


def center_crop(x: Tensor, size: int) -> Tensor:
    """The central size x size window of (b, c, h, w) (top-left offsets rounded down, as transformers does)."""
    h, w = x.shape[-2:]
    assert h >= size and w >= size, f"can't crop {size} x {size} from {h} x {w}"
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]
