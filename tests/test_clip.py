"""CLIP image encoder: the textbook pieces, names and shapes of the public file, strict loading, golden parity with
transformers (fixtures from tools/make_golden_clip.py), and both preprocessing conventions the public code uses."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aa.models.clip import CLIP_MEAN, CLIP_STD, CLIPAttention, CLIPImageEncoder, preprocess, quick_gelu
from aa.models.config import CLIPVisionConfig, tiny
from aa.weights import WeightsError, check_keys
from aa.weights.clip import clip_config_from_state, load_clip

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden_clip"
FORMATS = DATA / "formats"
torch.manual_seed(0)


def read_format(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """formats/*.txt: `key [d0, d1, ...] dtype` a line -> {key: (shape, dtype)}."""
    out = {}
    for line in (FORMATS / name).read_text().splitlines():
        key, shape, dtype = re.fullmatch(r"(\S+) \[([\d, ]*)\] (\w+)", line).groups()
        out[key] = (tuple(int(s) for s in shape.split(",") if s.strip()), dtype)
    return out


HF = read_format("clip_vit_l14_image_encoder_hf.txt")
HF_LEGACY = read_format("clip_vit_l14_image_encoder_hf_legacy.txt")
TINY = tiny().clip
TO_TINY = {1024: TINY.width, 4096: TINY.mlp_dim, 257: TINY.num_positions, 768: TINY.projection_dim}


def synthetic_state(listing: dict, layers: int = TINY.layers) -> dict[str, torch.Tensor]:
    """A tiny file with exactly the public names: ViT-L/14 sizes mapped to tiny().clip, layers past `layers` dropped."""
    state = {}
    for key, (shape, dtype) in listing.items():
        m = re.match(r"vision_model\.encoder\.layers\.(\d+)\.", key)
        if m and int(m[1]) >= layers:
            continue
        shape = tuple(TO_TINY.get(s, s) for s in shape)
        state[key] = torch.arange(shape[-1]).expand(shape).clone() if dtype == "int64" else torch.randn(shape)
    return state


def write_folder(folder: Path, state: dict, name: str = "model.safetensors", heads: int | None = TINY.heads) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".safetensors"):
        save_file(state, str(folder / name))
    else:
        torch.save(state, folder / name)
    if heads is not None:
        (folder / "config.json").write_text(json.dumps({"num_attention_heads": heads, "hidden_act": "quick_gelu"}))
    return folder


# the textbook pieces


def test_quick_gelu_is_x_sigmoid_1702x_not_erf_gelu():
    """quick_gelu(x) = x * sigmoid(1.702 x): 1 -> 0.8458; it is within 0.021 of erf GELU but not equal to it, so
    swapping in F.gelu would shift every layer of the pretrained tower."""
    assert quick_gelu(torch.tensor(1.0)).item() == pytest.approx(1 / (1 + math.exp(-1.702)), abs=1e-7)
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(quick_gelu(x), x / (1 + torch.exp(-1.702 * x)))
    gap = (quick_gelu(x) - F.gelu(x)).abs().max().item()
    assert 0.015 < gap < 0.021


def test_attention_equals_the_textbook_formula():
    """q/k/v projections, per head softmax(q k^T / sqrt(d)) v, out projection: SDPA gives the same numbers."""
    attn = CLIPAttention(32, heads=4)
    x = torch.randn(2, 7, 32)
    q, k, v = (rearrange(p(x), "b n (nh d) -> b nh n d", nh=4) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    textbook = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1) @ v
    torch.testing.assert_close(attn(x), attn.out_proj(rearrange(textbook, "b nh n d -> b n (nh d)")))


# names and shapes of the public file


def test_full_size_encoder_has_the_public_names_and_shapes():
    """ViT-L/14 built on the meta device has exactly the 392 tensors of sd-image-variations' image_encoder, same
    names, shapes and dtypes (the legacy file adds only the position_ids buffer, which the loader drops)."""
    with torch.device("meta"):
        model = CLIPImageEncoder(CLIPVisionConfig())
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert ours == HF
    assert HF_LEGACY.keys() - HF.keys() == {"vision_model.embeddings.position_ids"}


def test_full_size_config_is_read_from_the_public_shapes():
    """Width 1024, patch 14, 257 positions -> 224 px, 24 layers, MLP 4096, projection 768 come from the shapes;
    the 16 heads are ViT-L/14's default, and the keys pass the strict check."""
    state = {k: torch.empty(shape, device="meta") for k, (shape, _) in HF.items()}
    assert clip_config_from_state(state) == CLIPVisionConfig()
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CLIPImageEncoder(CLIPVisionConfig()).state_dict().items()}
    check_keys(shapes, state, "image_encoder/model.safetensors", "CLIP")


# loading


def test_loads_an_image_encoder_folder_with_its_config_json(tmp_path):
    """image_encoder/{model.safetensors, config.json}: sizes from the shapes, heads from config.json, every tensor
    assigned as stored."""
    state = synthetic_state(HF)
    model = load_clip(write_folder(tmp_path / "image_encoder", state))
    assert model.cfg == TINY
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_loads_a_legacy_pickle_with_position_ids_from_a_diffusers_folder(tmp_path):
    """A diffusers folder holding image_encoder/pytorch_model.bin with the old position_ids buffer: the loader finds
    the subfolder, drops position_ids by name, and loads the rest strictly."""
    state = synthetic_state(HF_LEGACY)
    write_folder(tmp_path / "sd-image-variations" / "image_encoder", state, "pytorch_model.bin")
    (tmp_path / "sd-image-variations" / "unet").mkdir()
    model = load_clip(tmp_path / "sd-image-variations", dtype=torch.float16)
    assert "vision_model.embeddings.position_ids" not in model.state_dict()
    assert model.visual_projection.weight.dtype == torch.float16
    assert torch.equal(model.visual_projection.weight, state["visual_projection.weight"].half())


def test_loads_a_bare_weights_file_given_the_config(tmp_path):
    """A file on its own has no config.json: with `cfg` it loads; without, a non-ViT-L width is refused because the
    head count can't be read from shapes."""
    file = tmp_path / "clip.safetensors"
    save_file(synthetic_state(HF), str(file))
    assert load_clip(file, cfg=TINY).cfg == TINY
    with pytest.raises(WeightsError, match=r"clip\.safetensors.*head count"):
        load_clip(file)


def test_broken_files_raise_errors_that_name_the_file(tmp_path):
    """Truncated, wrong kind, missing or extra keys, no weights in the folder, a non-quick_gelu config: each a
    WeightsError naming the file and what is wrong."""
    good = synthetic_state(HF)
    folder = write_folder(tmp_path / "truncated", good)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"truncated/model\.safetensors.*truncated"):
        load_clip(folder)

    unet = {k: torch.zeros(1) for k in ("conv_in.weight", "time_embedding.linear_1.weight",
                                         "down_blocks.0.resnets.0.conv1.weight", "conv_out.weight")}
    with pytest.raises(WeightsError, match=r"unet/model\.safetensors: not a CLIP ViT .* looks like an SD UNet"):
        load_clip(write_folder(tmp_path / "unet", unet))
    text = {"text_model.embeddings.token_embedding.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"text/model\.safetensors: not a CLIP ViT .* looks like a CLIP text"):
        load_clip(write_folder(tmp_path / "text", text))

    missing = {k: v for k, v in good.items() if not k.startswith("vision_model.encoder.layers.1.layer_norm2")}
    with pytest.raises(WeightsError, match=r"(?s)missing/model\.safetensors.*missing 2: vision_model\.encoder\.layers"):
        load_clip(write_folder(tmp_path / "missing", missing))

    extra = {**good, "text_model.embeddings.token_embedding.weight": torch.randn(10, TINY.width)}
    with pytest.raises(WeightsError, match=r"(?s)extra/model\.safetensors.*unexpected 1: text_model"):
        load_clip(write_folder(tmp_path / "extra", extra))

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=r"empty: no CLIP image encoder weights.*holds config\.json"):
        load_clip(tmp_path / "empty")

    gelu = write_folder(tmp_path / "gelu", good)
    (gelu / "config.json").write_text(json.dumps({"num_attention_heads": 2, "hidden_act": "gelu"}))
    with pytest.raises(WeightsError, match=r"gelu/config\.json: hidden_act is 'gelu'"):
        load_clip(gelu)


# golden parity with transformers


def test_matches_transformers_clip_vision_model_with_projection():
    """A tiny CLIPVisionModelWithProjection saved by transformers loads through load_clip and gives the same
    image_embeds (projected, post-LN class token, not normalised) and last hidden state within 1e-4 in fp32."""
    model = load_clip(GOLDEN / "image_encoder")
    golden = load_file(GOLDEN / "model_io.safetensors")
    with torch.no_grad():
        hidden, _ = model.vision_model(golden["pixel_values"])
        embeds = model(golden["pixel_values"])
        context = model.context(golden["pixel_values"])
    torch.testing.assert_close(hidden, golden["last_hidden_state"], atol=1e-4, rtol=0)
    torch.testing.assert_close(embeds, golden["image_embeds"], atol=1e-4, rtol=0)
    assert context.shape == (3, 1, TINY.projection_dim) and torch.equal(context[:, 0], embeds)


def test_layer_norm_eps_matches_transformers():
    """With the residual stream scaled to ~3e-3 (embeddings, pre_layrnorm and each branch's output layer scaled,
    tokens of variance ~1e-5), the encoder still matches transformers: eps 1e-5 in pre_layrnorm, layer_norm1,
    layer_norm2 and post_layernorm (1e-6 in any one moves transformers' outputs by > 0.2 here)."""
    model = load_clip(GOLDEN / "image_encoder")
    golden = load_file(GOLDEN / "numerics.safetensors")
    state = model.state_dict()
    replaced = {k: v for k, v in golden.items() if k in state}
    assert len(replaced) == 4 + 4 * TINY.layers, sorted(replaced)
    model.load_state_dict({**state, **replaced})
    with torch.no_grad():
        hidden, _ = model.vision_model(golden["pixel_values"])
        embeds = model(golden["pixel_values"])
    torch.testing.assert_close(hidden, golden["last_hidden_state"], atol=1e-4, rtol=0)
    torch.testing.assert_close(embeds, golden["image_embeds"], atol=1e-4, rtol=0)


# preprocessing


def golden_preprocess() -> tuple[dict, dict]:
    with safe_open(str(GOLDEN / "preprocess.safetensors"), "pt") as f:
        meta = f.metadata()
    return load_file(GOLDEN / "preprocess.safetensors"), meta


def test_squash_is_the_model_card_recipe_for_pil_and_tensors_alike():
    """Default "squash" == the sd-image-variations card (ToTensor, torchvision Resize((s, s), BICUBIC,
    antialias=False), Normalize) to 1e-6 (same torch kernel on the same floats), from a PIL image, a uint8 HWC
    tensor, or a float CHW tensor: training and inference take the same path."""
    golden, meta = golden_preprocess()
    size, image = int(meta["size"]), golden["image"]
    for x in (Image.fromarray(image.numpy()), image, image.numpy(), rearrange(image, "h w c -> c h w") / 255):
        torch.testing.assert_close(preprocess(x, size=size), golden["squash_card"], atol=1e-6, rtol=0)


def test_crop_matches_clip_image_processor_up_to_8_bit_rounding():
    """"crop" vs CLIPImageProcessor (PIL path) on a 157x100 image with a hard-edged disc: mean |diff| < 0.006,
    max < 0.07 in normalised units (~4/255 of a pixel). PIL resizes horizontally then vertically and rounds and
    clips to 8 bits in between; we resize once in float (tensors in training have no 8 bits to round to)."""
    golden, meta = golden_preprocess()
    diff = (preprocess(Image.fromarray(golden["image"].numpy()), "crop", int(meta["size"])) - golden["crop_processor"])
    assert diff.abs().mean() < 0.006 and diff.abs().max() < 0.07


def test_pil_two_8_bit_passes_explain_the_crop_difference():
    """Emulate PIL with our own kernel (width pass, round to 8 bits, height pass, round): the processor's output is
    then matched to one 8-bit level (1/255/std) at worst and ~1e-6 on average, so the gap above is rounding only."""
    golden, meta = golden_preprocess()
    size = int(meta["size"])
    x = rearrange(golden["image"], "h w c -> 1 c h w").float() / 255
    h, w = x.shape[-2:]
    new_w = int(size * w / h)

    def resize_8bit(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        t = F.interpolate(t, size=hw, mode="bicubic", align_corners=False, antialias=True)
        return (t * 255).round().clamp(0, 255) / 255

    y = resize_8bit(resize_8bit(x, (h, new_w)), (size, new_w))
    left = (new_w - size) // 2
    y = (y[..., left:left + size] - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    diff = (y - golden["crop_processor"]).abs()
    assert diff.max() <= 1 / 255 / min(CLIP_STD) + 1e-5 and diff.mean() < 1e-5


def test_constants_are_the_processor_defaults():
    """CLIP mean/std and the 224 bicubic (PIL 3) short-side + 224 crop are CLIPImageProcessor's own defaults."""
    _, meta = golden_preprocess()
    defaults = json.loads(meta["processor_defaults"])
    assert defaults["image_mean"] == list(CLIP_MEAN) and defaults["image_std"] == list(CLIP_STD)
    assert defaults["shortest_edge"] == 224 and defaults["crop_size"] == [224, 224] and defaults["resample"] == 3
    assert CLIPVisionConfig().image_size == 224


def test_squash_keeps_the_whole_portrait_crop_cuts_head_and_feet():
    """A tall 2:1 image whose top and bottom quarters are red: squash keeps both red bands, the centre crop
    keeps none (why squash is the default for whole-body reference images)."""
    img = np.zeros((200, 100, 3), np.uint8)
    img[:50, :, 0] = img[150:, :, 0] = 255
    red = (1 - CLIP_MEAN[0]) / CLIP_STD[0]
    squash, crop = preprocess(img, "squash", 28), preprocess(img, "crop", 28)
    assert squash[0, 0, 0].mean() > red - 0.1 and squash[0, 0, -1].mean() > red - 0.1
    assert crop[0, 0, 0].mean() < 0 and crop[0, 0, -1].mean() < 0


def test_image_modes_batches_and_bad_inputs():
    """Transparent pixels become white (as CLIPImageProcessor does), L is grey RGB, a list of different sizes is a
    batch; channel-last floats, RGBA arrays, [-1, 1] tensors, 16-bit PIL images and unknown modes are refused."""
    rgba = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    white = preprocess(Image.new("RGB", (30, 20), (255, 255, 255)))
    torch.testing.assert_close(preprocess(rgba), white)
    grey = preprocess(Image.new("L", (30, 20), 128))
    torch.testing.assert_close(grey, preprocess(Image.new("RGB", (30, 20), (128, 128, 128))))
    batch = preprocess([Image.new("RGB", (30, 20)), torch.zeros(2, 3, 50, 40)], size=28)
    assert batch.shape == (3, 3, 28, 28) and batch.dtype == torch.float32
    bad = [(torch.rand(1, 20, 30, 3), "float image must be"), (np.zeros((20, 30, 4), np.uint8), "drop an alpha"),
           (torch.rand(3, 20, 30) * 2 - 1, r"\(x \+ 1\) / 2"), (Image.new("I;16", (30, 20)), "16/32-bit"),
           (torch.zeros(3, 20, 30, dtype=torch.int64), "uint8")]
    for x, message in bad:
        with pytest.raises(ValueError, match=message):
            preprocess(x)
    with pytest.raises(ValueError, match="unknown CLIP preprocessing mode 'center'"):
        preprocess(rgba, mode="center")


def test_preprocessed_image_gives_one_context_token():
    """preprocess at the tower's size, then context(): (b, 1, projection_dim) for the UNets' cross-attention; a
    wrong input size is refused with the expected shape."""
    model = CLIPImageEncoder(TINY)
    pixels = preprocess(Image.new("RGB", (40, 60), (10, 200, 30)), size=TINY.image_size)
    assert model.context(pixels).shape == (1, 1, TINY.projection_dim)
    with pytest.raises(AssertionError, match=r"expected \(b, 3, 28, 28\)"):
        model(torch.zeros(1, 3, 224, 224))


def test_pil_squash_is_moore_inference():
    """'pil-squash' = PIL's bicubic resize of the 8-bit image to size x size, then CLIP normalisation (Moore's
    `ref_image.resize((224, 224))` before the processor); it differs from the unantialiased 'squash'."""
    from aa.models.clip import CLIP_MEAN, CLIP_STD, preprocess
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8))
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC), np.float32) / 255
    expected = (expected - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    got = preprocess(image, mode="pil-squash", size=32)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not torch.allclose(preprocess(image, mode="squash", size=32), preprocess(image, mode="pil-squash", size=32))
