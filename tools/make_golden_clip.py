"""Generate the CLIP golden fixtures under tests/data/golden_clip/ from transformers (run in the reference env).

    OMP_NUM_THREADS=1 python tools/make_golden_clip.py [--torchvision-src DIR]

The reference env: requirements-golden.txt (transformers at the version the stored config.json names).

Writes:
- image_encoder/{config.json,model.safetensors}: a tiny `CLIPVisionModelWithProjection` (tiny().clip sizes) with
  random weights, saved by `save_pretrained`, i.e. in the public format `load_clip` reads.
- model_io.safetensors: random pixel values and the reference's `image_embeds` and `last_hidden_state` (eager
  attention, fp32).
- numerics.safetensors: the same model with the position and class embeddings, pre_layrnorm and every residual
  branch's output layer (out_proj, fc2) scaled by SMALL, run on the first image scaled by SMALL (the patch conv has
  no bias): every LayerNorm then normalises tokens of variance ~1e-5, where its eps (1e-5) counts. Stores the
  replaced parameters, the input, the outputs, and in the metadata how far eps 1e-6 in each LayerNorm kind moves
  them (the random-weight run above moves by < 1e-4 under such a change).
- preprocess.safetensors: a non-square uint8 test image and two references at size 64: `CLIPImageProcessorPil`
  (PIL resize: what `CLIPImageProcessor` was in transformers 4, which Moore used, and what it falls back to in
  transformers 5 without torchvision), and the sd-image-variations model card's squash recipe: ToTensor(), then
  torchvision's Resize((s, s), BICUBIC, antialias=False) on float tensors, then Normalize. The processor's defaults
  are stored in the metadata so tests can check our constants.
The project's tests read these files and never import transformers.

torchvision: the reference env's torch has no matching torchvision build (PyPI's wheels fail to import beside the
CPU torch: "operator torchvision::nms does not exist"). The card's resize is torchvision's pure-Python
`transforms/_functional_tensor.py::resize`, which needs no compiled ops, so `--torchvision-src` can point at an
unpacked torchvision (requirements-golden.txt gives the command) and that one file is loaded on its own. With a
working `import torchvision` the option is not needed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aa.models.config import tiny  # noqa: E402  (plain dataclasses: no torch model code from the project runs here)


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Replace HF's small init by O(1) random values, so a wrong LayerNorm affine, bias or scale shows up."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or "layernorm.weight" in name \
                    or "layrnorm.weight" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            if name.endswith("class_embedding") or name.endswith("position_embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=gen))


def make_model(out: Path, gen: torch.Generator) -> tuple[CLIPVisionModelWithProjection, torch.Tensor]:
    c = tiny().clip
    config = CLIPVisionConfig(hidden_size=c.width, intermediate_size=c.mlp_dim, num_hidden_layers=c.layers,
                              num_attention_heads=c.heads, image_size=c.image_size, patch_size=c.patch_size,
                              projection_dim=c.projection_dim, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    config._attn_implementation = "eager"  # the textbook softmax path, independent of our SDPA
    model = CLIPVisionModelWithProjection(config).eval()
    randomize(model, gen)
    model.save_pretrained(out / "image_encoder")
    pixel_values = torch.randn(3, 3, c.image_size, c.image_size, generator=gen)
    with torch.no_grad():
        ref = model(pixel_values=pixel_values)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    save_file({"pixel_values": pixel_values, "image_embeds": ref.image_embeds.contiguous(),
               "last_hidden_state": ref.last_hidden_state.contiguous()}, str(out / "model_io.safetensors"),
              metadata={"source": "transformers CLIPVisionModelWithProjection, eager attention",
                        "config": config.to_json_string()})
    return model, pixel_values


SMALL = 0.003
SCALED = ("embeddings.class_embedding", "embeddings.position_embedding.weight", "pre_layrnorm.weight",
          "pre_layrnorm.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias", "mlp.fc2.weight",
          "mlp.fc2.bias")
LAYER_NORMS = ("pre_layrnorm", "layer_norm1", "layer_norm2", "post_layernorm")


def make_numerics(out: Path, model: CLIPVisionModelWithProjection, pixel_values: torch.Tensor) -> None:
    """Scale the residual stream down to ~SMALL so every LayerNorm's eps shows; record outputs and sensitivities."""
    changed = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(SCALED):
                p.mul_(SMALL)
                changed[name] = p.detach().clone()
    pixels = pixel_values[:1] * SMALL
    moved = {}
    with torch.no_grad():
        ref = model(pixel_values=pixels)
        for kind in LAYER_NORMS:
            norms = [m for n, m in model.named_modules() if n.endswith(kind)]
            for m in norms:
                m.eps = 1e-6
            again = model(pixel_values=pixels)
            for m in norms:
                m.eps = 1e-5
            moved[f"{kind} eps 1e-5 -> 1e-6"] = max((again[key] - ref[key]).abs().max().item()
                                                    for key in ("image_embeds", "last_hidden_state"))
    blind = {k: v for k, v in moved.items() if v < 10 * 1e-4}
    assert not blind, f"the numerics run would not see: {blind}"
    print("numerics: max abs change of the outputs under one change each:", moved)
    save_file({**changed, "pixel_values": pixels.contiguous(), "image_embeds": ref.image_embeds.contiguous(),
               "last_hidden_state": ref.last_hidden_state.contiguous()}, str(out / "numerics.safetensors"),
              metadata={"scale": str(SMALL), "moved": json.dumps(moved)})


def test_image(gen: torch.Generator, width: int = 157, height: int = 100) -> np.ndarray:
    """Smooth gradients, a hard-edged disc and mild noise: resampling differences show at edges and in noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 7.0 + yy / 11.0)], axis=-1)
    disc = (xx - 0.6 * width) ** 2 + (yy - 0.45 * height) ** 2 < (0.3 * height) ** 2
    img[disc] = (0.95, 0.1, 0.2)
    noise = torch.randn(height, width, 3, generator=gen).numpy() * 0.05
    return (np.clip(img + noise, 0, 1) * 255).round().astype(np.uint8)


def torchvision_tensor_resize(src: Path | None):
    """torchvision's `resize` for tensors (what `transforms.Resize` runs on a float tensor), and where it came from."""
    try:
        import torchvision
        from torchvision.transforms import _functional_tensor as ft
        return ft.resize, f"torchvision {torchvision.__version__}"
    except (ImportError, RuntimeError):
        if src is None:
            raise SystemExit("torchvision does not import here: pass --torchvision-src DIR (an unpacked torchvision)")
    file = src / "torchvision/transforms/_functional_tensor.py"
    spec = importlib.util.spec_from_file_location("tv_functional_tensor", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = next(src.glob("torchvision-*.dist-info"), Path("torchvision-unknown.dist-info"))
    version = info.name.removeprefix("torchvision-").removesuffix(".dist-info")
    return module.resize, f"torchvision {version} {file.relative_to(src)} loaded on its own"


def make_preprocess(out: Path, gen: torch.Generator, tv_src: Path | None, size: int = 64) -> None:
    image = test_image(gen)
    pil = Image.fromarray(image)
    processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    crop = processor(images=pil, return_tensors="pt").pixel_values
    # the model card's recipe: ToTensor(), Resize((s, s), BICUBIC, antialias=False), Normalize(mean, std)
    resize, tv = torchvision_tensor_resize(tv_src)
    x = torch.from_numpy(np.array(pil).transpose(2, 0, 1)).contiguous().float().div(255)  # ToTensor
    x = resize(x, [size, size], interpolation="bicubic", antialias=False)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    squash = x.sub(mean).div(std)  # Normalize
    d = CLIPImageProcessorPil()
    meta = {"size": str(size), "squash_card_resize": tv, "processor_defaults": json.dumps({
        "shortest_edge": d.size["shortest_edge"], "crop_size": [d.crop_size["height"], d.crop_size["width"]],
        "resample": int(d.resample), "image_mean": list(d.image_mean), "image_std": list(d.image_std),
        "rescale_factor": d.rescale_factor})}
    save_file({"image": torch.from_numpy(image), "crop_processor": crop.contiguous(),
               "squash_card": squash[None].contiguous()}, str(out / "preprocess.safetensors"), metadata=meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests/data/golden_clip", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights, inputs and test image")
    parser.add_argument("--torchvision-src", type=Path, default=None,
                        help="folder holding an unpacked torchvision, used when `import torchvision` fails")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    model, pixel_values = make_model(args.out, gen)
    make_numerics(args.out, model, pixel_values)
    make_preprocess(args.out, gen, args.torchvision_src)
    for f in sorted(args.out.rglob("*")):
        if f.is_file():
            print(f"{f}  {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
