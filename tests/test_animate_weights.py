"""Motion-module and Moore-AnimateAnyone loaders: full-size names and shapes on the meta device against the
published lists (tests/data/formats/), version detection, every file format at tiny size, and the errors broken
files get."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor

from aa.models import config
from aa.models.config import UNetConfig
from aa.models.pose_guider import PoseGuider
from aa.models.reference import ReferenceNet
from aa.models.resnet import ResnetBlock2D
from aa.models.temporal import sinusoid_table
from aa.models.unet import UNet
from aa.weights import WeightsError
from aa.weights.animate import insert_motion_modules, load_motion_modules, motion_shapes, rename_diffusers
from aa.weights.moore import load_moore, pose_guider_config

FORMATS = Path(__file__).parent / "data" / "formats"
TINY = config.tiny().unet  # its motion config only lends the head count (2): versions come from the files
STAGE1 = replace(TINY, motion=None)
SD15 = UNetConfig()


def read_list(name: str) -> dict[str, tuple[int, ...]]:
    """A formats/ list, `key [d0, d1, ...] dtype` a line -> {key: shape}."""
    out = {}
    for line in (FORMATS / name).read_text().splitlines():
        key, shape = re.fullmatch(r"(\S+) \[([\d, ]*)\] \S+", line).groups()
        out[key] = tuple(int(d) for d in shape.split(",") if d.strip())
    return out


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@cache
def sinusoid(length: int, dim: int) -> Tensor:
    return sinusoid_table(length, dim)[None]


def listed_state(name: str) -> dict[str, Tensor]:
    """A full-size file's tensors in a few bytes: every weight a stride-0 view of one zero (torch.save stores one
    storage; loaders assign views without copying), the positional tables real (they are checked)."""
    zero = torch.zeros(())
    return {k: sinusoid(*s[1:]) if k.endswith(".pe") else zero.expand(s) for k, s in read_list(name).items()}


def to_diffusers(key: str) -> str:
    """AnimateDiff -> diffusers MotionAdapter names, written independently of the loader's rules to build folders."""
    key = key.replace(".temporal_transformer.", ".").replace(".ff_norm.", ".norm3.")
    key = re.sub(r"\.attention_blocks\.(\d)\.", lambda m: f".attn{int(m[1]) + 1}.", key)
    return re.sub(r"\.norms\.(\d)\.", lambda m: f".norm{int(m[1]) + 1}.", key)


# ---- full size: meta builds, and files whose tensors are stride-0 views ----

@pytest.mark.parametrize("name, build", [
    ("moore_denoising_unet.txt", lambda: UNet(SD15)),
    ("moore_reference_unet.txt", lambda: ReferenceNet(SD15)),
    ("moore_pose_guider.txt", lambda: PoseGuider(config.sd15().pose_guider)),
    ("novita_pose_guider.txt", lambda: PoseGuider(config.novita().pose_guider)),
])
def test_full_size_models_match_the_published_lists(name, build):
    """Built on the meta device, each model's state dict has exactly the public file's names and shapes."""
    with torch.device("meta"):
        model = build()
    assert shapes(model) == read_list(name)


@pytest.mark.parametrize("name, version", [
    ("animatediff_mm_sd_v15.txt", "v1"), ("animatediff_mm_sd_v15_v2.txt", "v2"),
    ("animatediff_v3_sd15_mm.txt", "v3"), ("moore_motion_module.txt", "v2")])
def test_full_size_motion_modules_match_the_published_lists(name, version):
    """A UNet with that version's motion modules has every tensor of the file but the positional tables, which are
    (1, max_len, C): the sinusoid the model regenerates rather than stores."""
    listed = read_list(name)
    motion = config.animatediff(version)
    ours = {k: tuple(s) for k, s in motion_shapes(replace(SD15, motion=motion)).items()}
    assert ours == {k: s for k, s in listed.items() if not k.endswith(".pe")}
    for key, shape in listed.items():
        if key.endswith("pos_encoder.pe"):
            assert shape == (1, motion.max_len, ours[key.replace("pos_encoder.pe", "to_q.weight")][0])


def test_rename_rules_reproduce_the_published_map():
    """The diffusers rules map every MotionAdapter key to its AnimateDiff key; the only rows without a diffusers
    key are the 42 positional tables (dropped and regenerated)."""
    rows = [line.split("\t") for line in (FORMATS / "map_animatediff_to_diffusers_motion_adapter.tsv")
            .read_text().splitlines()[1:]]
    kept = [(ad, df) for ad, df, _ in rows if not df.startswith("(dropped")]
    assert len(rows) - len(kept) == 42
    for animatediff, diffusers in kept:
        assert rename_diffusers(diffusers) == animatediff
        assert to_diffusers(animatediff) == diffusers  # the helper that builds this file's synthetic folders


@pytest.mark.parametrize("name, version", [
    ("animatediff_mm_sd_v15.txt", "v1"), ("animatediff_mm_sd_v15_v2.txt", "v2"),
    ("animatediff_v3_sd15_mm.txt", "v3"), ("moore_motion_module.txt", "v2"),
    ("diffusers_motion_adapter_v2.txt", "v2")])
def test_full_size_files_load_and_tell_their_version(tmp_path, name, version):
    """A file with the published keys and shapes loads. A mid-block module means v2; otherwise the table length
    tells v1 (24, trained with pooled ResNet norms) from v3 (32). Moore's file is v2; a diffusers MotionAdapter
    folder is renamed to our keys. Tables are checked, then dropped."""
    if name.startswith("diffusers"):
        (path := tmp_path / "motion_adapter").mkdir()
        torch.save(listed_state(name), path / "diffusion_pytorch_model.bin")
    else:
        torch.save(listed_state(name), path := tmp_path / "mm.ckpt")
    state, motion = load_motion_modules(path)
    assert motion == config.animatediff(version)
    ours = rename_diffusers if name.startswith("diffusers") else str
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        ours(k): s for k, s in read_list(name).items() if not k.endswith(".pe")}


@pytest.mark.parametrize("guider, expected", [("moore_pose_guider.txt", config.sd15()),
                                              ("novita_pose_guider.txt", config.novita())])
def test_full_size_moore_folder_loads(tmp_path, guider, expected):
    """A folder of files with the published keys and shapes (Moore's, or novita-ai's Pose Guider) loads strictly:
    the video UNet is SD 1.5 + v2 motion modules, the guider variant is read from its shapes."""
    files = {"denoising_unet": "moore_denoising_unet.txt", "reference_unet": "moore_reference_unet.txt",
             "motion_module": "moore_motion_module.txt", "pose_guider": guider}
    for file, name in files.items():
        torch.save(listed_state(name), tmp_path / f"{file}.pth")
    moore = load_moore(tmp_path)
    assert moore.motion == expected.unet.motion and moore.denoising_unet.cfg == expected.unet
    assert moore.pose_guider.cfg == expected.pose_guider
    assert shapes(moore.reference_net) == read_list("moore_reference_unet.txt")
    assert shapes(moore.denoising_unet) == read_list("moore_denoising_unet.txt") | {
        k: s for k, s in read_list("moore_motion_module.txt").items() if not k.endswith(".pe")}


def test_paper_pose_guider_is_read_from_the_shapes():
    """A 4-channel conv_out (the paper's variant) adds to the latent; 320 channels (released) after conv_in."""
    with torch.device("meta"):
        paper = PoseGuider(config.paper_pose_guider()).state_dict()
    assert pose_guider_config(paper, "p", SD15) == config.paper_pose_guider()


# ---- tiny files in every format ----

def animatediff_state(version: str, seed: int = 0) -> dict[str, Tensor]:
    """A tiny AnimateDiff-format file: random motion modules for TINY's widths, a sinusoid per attention block."""
    motion = replace(config.animatediff(version), num_heads=TINY.motion.num_heads)
    torch.manual_seed(seed)
    state = {k: torch.randn_like(v) for k, v in UNet(replace(TINY, motion=motion)).state_dict().items()
             if ".motion_modules." in k}
    for key in list(state):
        if key.endswith("to_q.weight"):
            state[key.replace("to_q.weight", "pos_encoder.pe")] = sinusoid(motion.max_len, state[key].shape[0]).clone()
    return state


def write(state: dict[str, Tensor], folder: Path, fmt: str) -> Path:
    """Save `state` (AnimateDiff names) as `fmt`: .ckpt (plain or {"state_dict": ...}), .safetensors, or a diffusers
    MotionAdapter folder (one pos_embed.pe per block, a config.json with the head count)."""
    if fmt == "ckpt":
        torch.save(state, path := folder / "mm.ckpt")
    elif fmt == "ckpt-wrapped":
        torch.save({"state_dict": state}, path := folder / "mm.ckpt")
    elif fmt == "safetensors":
        save_file(state, str(path := folder / "mm.safetensors"))
    else:
        path = folder / "adapter"
        path.mkdir()
        adapter = {to_diffusers(k): v for k, v in state.items() if not k.endswith(".pe")}
        adapter |= {to_diffusers(k).replace(".attn1.pos_encoder.", ".pos_embed."): v
                    for k, v in state.items() if k.endswith("attention_blocks.0.pos_encoder.pe")}
        assert sum(k.endswith(".transformer_blocks.0.pos_embed.pe") for k in adapter) == \
            sum(k.endswith(".proj_in.weight") for k in adapter)  # one table per module, as diffusers saves
        if fmt == "diffusers":
            save_file(adapter, str(path / "diffusion_pytorch_model.safetensors"))
        else:
            torch.save(adapter, path / "diffusion_pytorch_model.bin")
        (path / "config.json").write_text(json.dumps({"_class_name": "MotionAdapter",
                                                      "motion_num_attention_heads": TINY.motion.num_heads}))
    return path


@pytest.mark.parametrize("fmt", ["ckpt", "ckpt-wrapped", "safetensors", "diffusers", "diffusers-bin"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_every_format_loads_to_the_same_tensors(tmp_path, version, fmt):
    """Whatever the container and naming, the loader returns the file's tensors under our names, minus the tables,
    and the version's config (a diffusers folder's config.json gives the head count)."""
    state = animatediff_state(version)
    loaded, motion = load_motion_modules(write(state, tmp_path, fmt), STAGE1 if "diffusers" in fmt else TINY)
    assert motion == replace(config.animatediff(version), num_heads=TINY.motion.num_heads)
    assert loaded.keys() == {k for k in state if not k.endswith(".pe")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_insert_puts_the_modules_into_a_stage1_unet(tmp_path):
    """Stage 2's init: the file's tensors become the motion modules (cast to the UNet's dtype), nothing else
    changes; v1 pools the ResNet norms over frames. Inserting v2, then v3, over it leaves no trace of the
    earlier modules (v3 has no mid-block module)."""
    unet = UNet(STAGE1).double()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    v1 = animatediff_state("v1")
    motion = insert_motion_modules(unet, write(v1, tmp_path, "safetensors"), num_heads=2)
    after = unet.state_dict()
    assert motion.pooled_resnet_norm and unet.cfg.motion == motion
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(torch.equal(after[k], v.double()) for k, v in v1.items() if not k.endswith(".pe"))
    assert all(m.pool_frames for m in unet.modules() if isinstance(m, ResnetBlock2D))

    for version, seed in [("v2", 1), ("v3", 2)]:
        (folder := tmp_path / version).mkdir()
        state = animatediff_state(version, seed)
        insert_motion_modules(unet, write(state, folder, "ckpt"), num_heads=2)
        assert unet.state_dict().keys() == before.keys() | {k for k in state if not k.endswith(".pe")}
    assert not any(m.pool_frames for m in unet.modules() if isinstance(m, ResnetBlock2D))
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    assert unet(x, 10, torch.randn(1, 1, 16, dtype=torch.float64), num_frames=3).shape == x.shape


# ---- broken motion-module files ----

def test_a_table_that_is_not_the_sinusoid_is_refused(tmp_path):
    """A stored table shifted by one position is not the formula: the error names the file and the key."""
    state = animatediff_state("v2")
    key = "up_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    state[key] = sinusoid_table(33, state[key].shape[-1])[None, 1:]
    path = write(state, tmp_path, "safetensors")
    with pytest.raises(WeightsError, match=rf"{re.escape(str(path))}: {re.escape(key)} is not the sinusoid"):
        load_motion_modules(path, TINY)


def test_fp16_tables_pass_within_fp16_rounding(tmp_path):
    """An fp16 file stores an fp16-rounded sinusoid: accepted (the tolerance follows the stored dtype)."""
    state = {k: v.half() for k, v in animatediff_state("v3").items()}
    loaded, motion = load_motion_modules(write(state, tmp_path, "safetensors"), TINY)
    assert motion.max_len == 32 and all(v.dtype == torch.float16 for v in loaded.values())


def test_a_missing_module_is_named(tmp_path):
    """Without up_blocks.1's second module the error names the file, the version recognised and the group."""
    state = {k: v for k, v in animatediff_state("v2").items() if ".up_blocks.1.motion_modules.1." not in f".{k}"}
    path = write(state, tmp_path, "ckpt")
    with pytest.raises(WeightsError) as e:
        load_motion_modules(path, TINY)
    assert str(path) in str(e.value) and "AnimateDiff v2" in str(e.value)
    assert re.search(r"missing 26: up_blocks\.1\.motion_modules \(26 keys", str(e.value)), str(e.value)


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_a_truncated_file_is_reported_as_such(tmp_path, fmt):
    """Half a download is a WeightsError that names the file and suggests truncation, not a torch traceback."""
    path = write(animatediff_state("v2"), tmp_path, fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match=rf"{re.escape(str(path))}: unreadable .* truncated"):
        load_motion_modules(path, TINY)


def test_a_file_of_another_kind_is_refused(tmp_path):
    """An SD UNet is not a motion-module file: the error says no motion-module keys were found."""
    save_file(UNet(STAGE1).state_dict(), str(path := tmp_path / "unet.safetensors"))
    with pytest.raises(WeightsError, match="no motion-module keys"):
        load_motion_modules(path, TINY)


# ---- Moore folders ----

def as_views_of_one_buffer(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MusePose's layout: every tensor a view into one flat buffer (torch.save then stores the whole buffer)."""
    flat = torch.cat([v.flatten() for v in state.values()])
    out, offset = {}, 0
    for k, v in state.items():
        out[k] = flat[offset: offset + v.numel()].view(v.shape)
        offset += v.numel()
    return out


def write_moore(folder: Path, dtype: torch.dtype = torch.float32, views: bool = False,
                skip: tuple[str, ...] = ()) -> dict[str, dict[str, Tensor]]:
    """A tiny Moore folder: random UNet, ReferenceNet, Pose Guider (TINY widths) and v2 motion modules."""
    torch.manual_seed(0)
    states = {"denoising_unet.pth": UNet(STAGE1).state_dict(), "reference_unet.pth": ReferenceNet(STAGE1).state_dict(),
              "pose_guider.pth": PoseGuider(config.tiny().pose_guider).state_dict(),
              "motion_module.pth": animatediff_state("v2")}
    states = {name: {k: (torch.randn_like(v) if not k.endswith(".pe") else v).to(dtype) for k, v in s.items()}
              for name, s in states.items()}
    folder.mkdir(exist_ok=True)
    for name, state in states.items():
        if name not in skip:
            torch.save(as_views_of_one_buffer(state) if views else state, folder / name)
    return states


def test_moore_folder_loads_strictly(tmp_path):
    """denoising_unet.pth + motion_module.pth make the video UNet, reference_unet.pth the ReferenceNet,
    pose_guider.pth the guider (variant from its shapes); every tensor arrives unchanged."""
    states = write_moore(tmp_path)
    moore = load_moore(tmp_path, TINY)
    assert moore.motion == replace(config.animatediff("v2"), num_heads=2)
    expected_unet = states["denoising_unet.pth"] | states["motion_module.pth"]
    for model, expected in [(moore.denoising_unet, expected_unet), (moore.reference_net, states["reference_unet.pth"]),
                            (moore.pose_guider, states["pose_guider.pth"])]:
        got = model.state_dict()
        assert got.keys() == {k for k in expected if not k.endswith(".pe")}
        assert all(torch.equal(v, expected[k]) for k, v in got.items())
    assert moore.pose_guider.cfg == config.tiny().pose_guider


def test_musepose_fp16_views_get_their_own_storage(tmp_path):
    """MusePose's fp16 tensors are views of one big buffer: loaded, each owns exactly its bytes (no tensor keeps
    the whole file alive), values unchanged; dtype= casts while reading."""
    states = write_moore(tmp_path, torch.float16, views=True)
    size = (tmp_path / "denoising_unet.pth").stat().st_size
    moore = load_moore(tmp_path, TINY)
    for model in [moore.denoising_unet, moore.reference_net, moore.pose_guider]:
        for p in model.parameters():
            assert p.dtype == torch.float16 and p.untyped_storage().nbytes() == p.numel() * p.element_size() < size
    assert torch.equal(moore.denoising_unet.conv_in.weight, states["denoising_unet.pth"]["conv_in.weight"])
    as_fp32 = load_moore(tmp_path, TINY, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in as_fp32.denoising_unet.parameters())


def test_moore_folder_missing_a_file_says_which(tmp_path):
    """No reference_unet.pth: the error names it, lists what the folder holds and points at weights/README.md."""
    write_moore(tmp_path, skip=("reference_unet.pth",))
    with pytest.raises(WeightsError, match=r"missing reference_unet\.pth\. The folder holds denoising_unet\.pth, "
                                           r"motion_module\.pth, pose_guider\.pth.*weights/README\.md"):
        load_moore(tmp_path, TINY)


def test_stage1_folder_needs_video_false(tmp_path):
    """A stage-1 folder has no motion_module.pth: an error that suggests video=False, which loads it as an image
    model."""
    write_moore(tmp_path, skip=("motion_module.pth",))
    with pytest.raises(WeightsError, match=r"missing motion_module\.pth \(.*video=False"):
        load_moore(tmp_path, TINY)
    moore = load_moore(tmp_path, TINY, video=False)
    assert moore.motion is None and not any(".motion_modules." in k for k in moore.denoising_unet.state_dict())


def test_moore_denoising_unet_with_wrong_keys_names_that_file(tmp_path):
    """A denoising_unet.pth without its output head: the error names that file (not the motion module's)."""
    states = write_moore(tmp_path)
    torch.save({k: v for k, v in states["denoising_unet.pth"].items() if not k.startswith("conv_out.")},
               tmp_path / "denoising_unet.pth")
    with pytest.raises(WeightsError, match=r"denoising_unet\.pth: recognised as Moore denoising_unet\.pth.*\n"
                                           r"  missing 2: conv_out\.bias"):
        load_moore(tmp_path, TINY)
