"""SD 1.x loaders: names and shapes against the published lists, the rename rules, every file layout, the errors.

Full-size models are checked on the meta device against tests/data/formats/ (copies of the published key lists);
real files are written at tiny size from the golden fixtures (tools/make_golden_sd.py), whose LDM names the
reference library produced, so nothing here is renamed by the rules under test.
"""
from __future__ import annotations

import csv
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aa.models.config import VAEConfig, sd15_unet
from aa.models.unet import UNet
from aa.models.vae import AutoencoderKL
from aa.weights import WeightsError
from aa.weights import files as files_module
from aa.weights.detect import describe, read_keys
from aa.weights.rules import UNET_RULES, VAE_RULES, convert, rename, squeeze_conv_attention
from aa.weights.sd import (
    UNET_DIFFUSERS,
    UNET_SINGLE_FILE,
    VAE_DIFFUSERS,
    VAE_DIFFUSERS_LEGACY,
    VAE_LDM,
    VAE_SINGLE_FILE,
    Format,
    detect_unet_format,
    detect_vae_format,
    load_unet,
    load_vae,
    resolve,
    save_native,
    unet_state_dict,
)
from tests.helpers import FORMATS_DIR, GOLDEN_SD_DIR, golden_sd_configs, read_format_list

UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
GOLDEN_UNET, GOLDEN_VAE = golden_sd_configs()


def read_map(name: str) -> list[dict[str, str]]:
    with open(FORMATS_DIR / name, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.strip("[]").split(","))


def meta_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module, what: str = "") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), what
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa), what


def golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN_SD_DIR / name))


def golden_vae_ldm() -> dict[str, torch.Tensor]:
    return torch.load(GOLDEN_SD_DIR / "vae_ldm.ckpt", weights_only=True)["state_dict"]


# ---------------------------------------------------------------- full size: names and shapes on the meta device

def test_full_unet_has_the_published_diffusers_names_and_shapes() -> None:
    """The SD 1.5 UNet built on the meta device has exactly the keys and shapes of unet/diffusion_pytorch_model."""
    with torch.device("meta"):
        unet = UNet(sd15_unet())
    assert meta_shapes(unet) == read_format_list("sd15_unet_diffusers.txt")


def test_full_vae_has_the_published_diffusers_names_and_shapes() -> None:
    """The SD VAE built on the meta device has exactly the keys and shapes of vae/diffusion_pytorch_model."""
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig())
    assert meta_shapes(vae) == read_format_list("sd15_vae_diffusers.txt")


# ---------------------------------------------------------------- rename rules on the full key lists

def test_unet_rules_map_the_single_file_one_to_one() -> None:
    """Every `model.diffusion_model.*` key of v1-5-pruned-emaonly lands on its diffusers name (as in the published
    map), no two on the same, and the shapes agree with the diffusers list."""
    single = read_format_list("sd15_ldm_single_file.txt")
    ldm = {k[len(UNET_PREFIX):]: s for k, s in single.items() if k.startswith(UNET_PREFIX)}
    ours = read_format_list("sd15_unet_diffusers.txt")
    cfg = sd15_unet()
    mapped = {rename(k, UNET_RULES, cfg): s for k, s in ldm.items()}
    assert len(mapped) == len(ldm) == len(ours)
    assert mapped == ours
    for row in read_map("map_sd15_unet_ldm_to_diffusers.tsv"):
        assert rename(row["ldm_key"][len(UNET_PREFIX):], UNET_RULES, cfg) == row["diffusers_key"]
        assert ours[row["diffusers_key"]] == shape(row["shape"])


def test_vae_rules_map_the_single_file_one_to_one_and_squeeze_the_attention() -> None:
    """Every `first_stage_model.*` key lands on its diffusers name, one to one, and the 1x1-conv attention weights
    [512, 512, 1, 1] become the Linear weights [512, 512] of the diffusers list."""
    single = read_format_list("sd15_ldm_single_file.txt")
    ldm = {k[len(VAE_PREFIX):]: s for k, s in single.items() if k.startswith(VAE_PREFIX)}
    ours = read_format_list("sd15_vae_diffusers.txt")
    state = {k: torch.empty(s, device="meta") for k, s in ldm.items()}
    mapped = convert(state, VAE_RULES, VAEConfig(), "sd15_ldm_single_file.txt")
    assert {k: tuple(v.shape) for k, v in mapped.items()} == ours
    for row in read_map("map_sd15_vae_ldm_to_diffusers.tsv"):
        key = row["ldm_key(first_stage_model. prefix in single-file; none in standalone VAE files)"]
        assert rename(key, VAE_RULES, VAEConfig()) == row["diffusers_key"]
        assert ldm[key] == shape(row["ldm_shape"]) and ours[row["diffusers_key"]] == shape(row["diffusers_shape"])


def test_vae_rules_map_the_legacy_diffusers_attention_names() -> None:
    """diffusers < 0.14 names (`query/key/value/proj_attn`) map one to one onto the current list."""
    legacy = read_format_list("sd15_vae_diffusers_legacy_attention_names.txt")
    mapped = {rename(k, VAE_RULES, VAEConfig()): s for k, s in legacy.items()}
    assert mapped == read_format_list("sd15_vae_diffusers.txt")


def test_rules_leave_our_own_names_alone() -> None:
    """Applied to keys that already carry our names, the rules change nothing (a rule never fires twice)."""
    for name, rules, cfg in [("sd15_unet_diffusers.txt", UNET_RULES, sd15_unet()),
                             ("sd15_vae_diffusers.txt", VAE_RULES, VAEConfig())]:
        assert all(rename(k, rules, cfg) == k for k in read_format_list(name))


def test_rules_leave_blocks_the_config_lacks_for_strict_loading_to_report() -> None:
    """LDM block numbers beyond the config's levels are not forced onto some name: they stay as they are."""
    cfg = sd15_unet()
    for key in ["input_blocks.12.0.in_layers.0.weight", "output_blocks.12.0.in_layers.0.weight",
                "input_blocks.10.1.proj_in.weight", "output_blocks.1.1.conv.weight"]:
        assert rename(key, UNET_RULES, cfg).startswith(key.split(".")[0] + ".")


def test_renaming_copies_no_tensor() -> None:
    """Conversion only renames: every tensor out shares memory with a tensor in, the squeezed attention a view."""
    state = golden_vae_ldm()
    ptrs = {t.data_ptr() for t in state.values()}
    out = convert(state, VAE_RULES, GOLDEN_VAE, "vae_ldm.ckpt")
    assert all(t.data_ptr() in ptrs for t in out.values())
    squeezed = squeeze_conv_attention("decoder.mid_block.attentions.0.to_q.weight", torch.zeros(8, 8, 1, 1))
    assert squeezed.shape == (8, 8) and squeezed._base is not None


def test_two_names_for_one_tensor_are_refused() -> None:
    """A file holding both `q` and `to_q` for one projection is ambiguous: the error names both keys."""
    state = {"encoder.mid.attn_1.q.weight": torch.zeros(2, 2), "encoder.mid.attn_1.to_q.weight": torch.zeros(2, 2)}
    with pytest.raises(WeightsError, match=r"attn_1\.q\.weight.*attn_1\.to_q\.weight"):
        convert(state, VAE_RULES, VAEConfig(), "odd.safetensors")


# ---------------------------------------------------------------- what is this file

@pytest.mark.parametrize("name, phrase", [
    ("sd15_ldm_single_file.txt", "SD single file"),
    ("sd15_unet_diffusers.txt", "SD UNet in diffusers names"),
    ("moore_reference_unet.txt", "without the output head"),
    ("sd15_vae_diffusers.txt", "SD VAE in diffusers names"),
    ("sd15_vae_diffusers_legacy_attention_names.txt", "diffusers < 0.14"),
    ("clip_vit_l14_image_encoder_hf.txt", "CLIP image encoder"),
    ("animatediff_mm_sd_v15_v2.txt", "AnimateDiff motion modules"),
    ("moore_pose_guider.txt", "Pose Guider"),
])
def test_describe_names_what_a_published_file_is(name: str, phrase: str) -> None:
    """The sniffer tells the published layouts apart from their key names alone."""
    assert phrase in describe(read_format_list(name))


@pytest.mark.parametrize("name, detect, fmt", [
    ("sd15_ldm_single_file.txt", detect_unet_format, UNET_SINGLE_FILE),
    ("sd15_unet_diffusers.txt", detect_unet_format, UNET_DIFFUSERS),
    ("sd15_ldm_single_file.txt", detect_vae_format, VAE_SINGLE_FILE),
    ("sd15_vae_diffusers.txt", detect_vae_format, VAE_DIFFUSERS),
    ("sd15_vae_diffusers_legacy_attention_names.txt", detect_vae_format, VAE_DIFFUSERS_LEGACY),
])
def test_formats_are_recognised_by_key_names(name: str, detect: Callable[..., Format], fmt: Format) -> None:
    """Each published layout is recognised as its format from the key names (file names play no part)."""
    assert detect(read_format_list(name)) == fmt


def test_describe_other_files() -> None:
    """A diffusers ControlNet is not mistaken for a UNet; an empty or unknown file says so."""
    controlnet = {"conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.resnets.0.conv1.weight",
                  "controlnet_cond_embedding.conv_in.weight"}
    assert describe(controlnet) == "a ControlNet"
    assert describe([]) == "an empty file (no tensors)"
    assert describe(["foo.weight", "bar.bias"]).startswith("no weights this project knows (2 tensors")


def test_a_standalone_vae_is_recognised_without_prefix() -> None:
    """`vae-ft-mse-840000-ema-pruned` keys are the single file's VAE keys without `first_stage_model.`."""
    keys = [k[len(VAE_PREFIX):] for k in read_format_list("sd15_ldm_single_file.txt") if k.startswith(VAE_PREFIX)]
    assert detect_vae_format(keys) == VAE_LDM


@pytest.mark.parametrize("name, detect, phrase", [
    ("sd15_vae_diffusers.txt", detect_unet_format, "SD VAE"),
    ("clip_vit_l14_image_encoder_hf.txt", detect_unet_format, "CLIP image encoder"),
    ("animatediff_mm_sd_v15_v2.txt", detect_unet_format, "AnimateDiff"),
    ("sd15_unet_diffusers.txt", detect_vae_format, "SD UNet"),
    ("moore_pose_guider.txt", detect_vae_format, "Pose Guider"),
])
def test_the_wrong_kind_of_file_is_named_in_the_error(name: str, detect: Callable[..., Format],
                                                      phrase: str) -> None:
    """A file of another kind is refused with what it looks like, not a key-mismatch dump."""
    with pytest.raises(WeightsError, match=f"{name}: not an SD .*{phrase}"):
        detect(read_format_list(name), name)


# ---------------------------------------------------------------- every layout, at tiny size

def unet_layouts(tmp: Path) -> dict[str, Path]:
    """The tiny UNet in each layout load_unet accepts; the LDM names are the reference tool's."""
    diffusers = golden("unet_diffusers.safetensors")
    single = golden("sd_single_file.fp16.safetensors")
    (tmp / "unet").mkdir()
    shutil.copy(GOLDEN_SD_DIR / "unet_diffusers.safetensors", tmp / "unet" / "diffusion_pytorch_model.safetensors")
    (tmp / "fp16" / "unet").mkdir(parents=True)
    save_file({k: v.half() for k, v in diffusers.items()},
              str(tmp / "fp16" / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    torch.save(diffusers, tmp / "diffusion_pytorch_model.bin")
    torch.save({"state_dict": {**single, "model_ema.decay": torch.tensor(0.9999)}, "global_step": 1},
               tmp / "v1-5-pruned.ckpt")
    return {"diffusers file": GOLDEN_SD_DIR / "unet_diffusers.safetensors", "unet folder": tmp / "unet",
            "whole model folder (fp16 variant)": tmp / "fp16", "diffusers .bin": tmp / "diffusion_pytorch_model.bin",
            "single file .safetensors": GOLDEN_SD_DIR / "sd_single_file.fp16.safetensors",
            "single file .ckpt": tmp / "v1-5-pruned.ckpt"}


def test_every_unet_layout_loads_the_same_weights(tmp_path: Path) -> None:
    """Single files (.safetensors, .ckpt), diffusers folders and files (.safetensors, .bin, fp16 variant) all give
    the very same fp32 UNet."""
    reference = load_unet(GOLDEN_SD_DIR / "unet_diffusers.safetensors", GOLDEN_UNET)
    for name, path in unet_layouts(tmp_path).items():
        unet = load_unet(path, GOLDEN_UNET, dtype=torch.float32)
        assert_same_tensors(unet, reference, name)


def vae_layouts(tmp: Path) -> dict[str, Path]:
    """The tiny VAE in each layout load_vae accepts; the LDM and legacy names are the reference tool's."""
    ldm = golden_vae_ldm()
    # the old converter's variant: to_q/to_k/to_v/to_out.0 with 2-D weights inside LDM names
    old = {".q.": ".to_q.", ".k.": ".to_k.", ".v.": ".to_v.", ".proj_out.": ".to_out.0."}
    community = {}
    for key, t in ldm.items():
        if ".mid.attn_1." in key:
            for a, b in old.items():
                key = key.replace(f"attn_1{a}", f"attn_1{b}")
            t = t.flatten(1) if t.ndim == 4 else t
        community[VAE_PREFIX + key] = t
    save_file(community, str(tmp / "community.safetensors"))
    (tmp / "model" / "vae").mkdir(parents=True)
    shutil.copy(GOLDEN_SD_DIR / "vae_legacy.safetensors", tmp / "model" / "vae" / "diffusion_pytorch_model.safetensors")
    return {"diffusers file": GOLDEN_SD_DIR / "vae_diffusers.safetensors",
            "legacy names in a model folder": tmp / "model",
            "standalone .ckpt": GOLDEN_SD_DIR / "vae_ldm.ckpt",
            "single file": GOLDEN_SD_DIR / "sd_single_file.fp16.safetensors",
            "community single file": tmp / "community.safetensors"}


def test_every_vae_layout_loads_the_same_weights(tmp_path: Path) -> None:
    """Single files (also with to_q-style attention), standalone LDM files, diffusers files with current or legacy
    attention names all give the very same fp32 VAE."""
    reference = load_vae(GOLDEN_SD_DIR / "vae_diffusers.safetensors", GOLDEN_VAE)
    for name, path in vae_layouts(tmp_path).items():
        vae = load_vae(path, GOLDEN_VAE, dtype="fp32")
        assert_same_tensors(vae, reference, name)


def test_a_single_file_reads_only_the_model_it_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the UNet from a single file never reads the VAE's or the text encoder's tensors from disk."""
    read: list[str] = []

    class Spy:
        def __init__(self, *args, **kwargs) -> None:
            self.inner = safe_open(*args, **kwargs)

        def __enter__(self) -> Spy:
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc) -> None:
            self.inner.__exit__(*exc)

        def keys(self) -> list[str]:
            return self.f.keys()

        def get_tensor(self, key: str) -> torch.Tensor:
            read.append(key)
            return self.f.get_tensor(key)

    monkeypatch.setattr(files_module, "safe_open", Spy)
    state, _, fmt = unet_state_dict(GOLDEN_SD_DIR / "sd_single_file.fp16.safetensors", GOLDEN_UNET)
    assert fmt == UNET_SINGLE_FILE.name and read and all(k.startswith(UNET_PREFIX) for k in read)


def test_a_folder_prefers_safetensors_and_full_precision_unless_half_is_asked(tmp_path: Path) -> None:
    """With several weight files in a folder: .safetensors before .bin, the .fp16 variant only for a half dtype."""
    for name in ["diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors",
                 "diffusion_pytorch_model.fp16.safetensors"]:
        (tmp_path / name).write_bytes(b"x")
    assert resolve(tmp_path, "unet").name == "diffusion_pytorch_model.safetensors"
    assert resolve(tmp_path, "unet", half=True).name == "diffusion_pytorch_model.fp16.safetensors"


# ---------------------------------------------------------------- dtype and the native format

def test_dtype_argument_and_default(tmp_path: Path) -> None:
    """`dtype` casts on load (torch dtypes or 'fp16'/'bf16' names); without it the file's own dtype is kept."""
    single = GOLDEN_SD_DIR / "sd_single_file.fp16.safetensors"
    assert {p.dtype for p in load_unet(single, GOLDEN_UNET).parameters()} == {torch.float16}
    assert {p.dtype for p in load_unet(single, GOLDEN_UNET, dtype="bf16").parameters()} == {torch.bfloat16}
    vae = load_vae(GOLDEN_SD_DIR / "vae_diffusers.safetensors", GOLDEN_VAE, dtype=torch.float16)
    reference = load_vae(GOLDEN_SD_DIR / "vae_diffusers.safetensors", GOLDEN_VAE)
    assert all(torch.equal(a, b.half()) for a, b in zip(vae.state_dict().values(), reference.state_dict().values()))
    with pytest.raises(ValueError, match="unknown dtype"):
        load_vae(GOLDEN_SD_DIR / "vae_diffusers.safetensors", GOLDEN_VAE, dtype="fp8")


def test_native_save_round_trips_bit_for_bit(tmp_path: Path) -> None:
    """save_native writes our (diffusers) names as safetensors; loading it back gives identical tensors."""
    unet = load_unet(GOLDEN_SD_DIR / "sd_single_file.fp16.safetensors", GOLDEN_UNET, dtype=torch.float32)
    vae = load_vae(GOLDEN_SD_DIR / "vae_ldm.ckpt", GOLDEN_VAE)
    save_native(unet, tmp_path / "unet.safetensors")
    save_native(vae, tmp_path / "vae.safetensors")
    assert_same_tensors(load_unet(tmp_path / "unet.safetensors", GOLDEN_UNET), unet)
    assert_same_tensors(load_vae(tmp_path / "vae.safetensors", GOLDEN_VAE), vae)
    assert set(read_keys(tmp_path / "unet.safetensors")) == set(golden("unet_diffusers.safetensors"))
    assert not list(tmp_path.glob(".*tmp*")), "the atomic write leaves no temporary file"


# ---------------------------------------------------------------- errors

def test_a_vae_passed_as_a_unet_is_named(tmp_path: Path) -> None:
    """load_unet on a VAE file fails with the file name and what the file is."""
    path = GOLDEN_SD_DIR / "vae_diffusers.safetensors"
    with pytest.raises(WeightsError, match=f"{path}: not an SD UNet; it looks like an SD VAE"):
        load_unet(path, GOLDEN_UNET)


def test_a_clip_file_passed_as_a_unet_is_named(tmp_path: Path) -> None:
    """load_unet on a CLIP image encoder fails saying so (shapes don't matter: the names tell)."""
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(1) for k in read_format_list("clip_vit_l14_image_encoder_hf.txt")}, str(path))
    with pytest.raises(WeightsError, match="not an SD UNet; it looks like a CLIP image encoder"):
        load_unet(path)


@pytest.mark.parametrize("name", ["unet_diffusers.safetensors", "vae_ldm.ckpt"])
def test_truncated_and_empty_files_get_a_clear_error(tmp_path: Path, name: str) -> None:
    """A half-downloaded file (safetensors or zip pickle) and an empty file raise WeightsError naming the file."""
    data = (GOLDEN_SD_DIR / name).read_bytes()
    cut, empty = tmp_path / f"cut_{name}", tmp_path / f"empty_{name}"
    cut.write_bytes(data[: len(data) // 2])
    empty.write_bytes(b"")
    load = load_unet if name.startswith("unet") else load_vae
    with pytest.raises(WeightsError, match=f"{cut}: .*truncated"):
        load(cut)
    with pytest.raises(WeightsError, match=f"{empty}: the file is empty"):
        load(empty)


def test_a_missing_path_and_an_empty_folder_get_a_clear_error(tmp_path: Path) -> None:
    """A path that does not exist, or a folder without diffusers weights, says what was looked for."""
    with pytest.raises(WeightsError, match="does not exist"):
        load_unet(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="folder without diffusers vae weights"):
        load_vae(tmp_path)


def save_edited(path: Path, source: str, edit: Callable[[dict[str, torch.Tensor]], object]) -> Path:
    state = golden(source)
    edit(state)
    save_file(state, str(path))
    return path


def test_missing_unexpected_and_misshapen_keys_are_reported(tmp_path: Path) -> None:
    """Strict loading: a missing, an unexpected and a wrongly shaped tensor each fail with the file, the format
    recognised and the offending key."""
    src = "unet_diffusers.safetensors"
    missing = save_edited(tmp_path / "missing.safetensors", src, lambda s: s.pop("conv_out.bias"))
    extra = save_edited(tmp_path / "extra.safetensors", src, lambda s: s.update({"conv_out.scale": torch.ones(1)}))
    wrong = save_edited(tmp_path / "wrong.safetensors", src, lambda s: s.update({"conv_out.bias": torch.ones(5)}))
    fmt = "recognised as a diffusers UNet"
    with pytest.raises(WeightsError, match=rf"(?s){missing}: {fmt}.*missing 1: conv_out.bias"):
        load_unet(missing, GOLDEN_UNET)
    with pytest.raises(WeightsError, match=rf"(?s){extra}: {fmt}.*unexpected 1: conv_out.scale"):
        load_unet(extra, GOLDEN_UNET)
    with pytest.raises(WeightsError, match=rf"(?s){wrong}: {fmt}.*wrong shape 1: conv_out.bias: file \(5,\)"):
        load_unet(wrong, GOLDEN_UNET)


def test_a_config_that_does_not_fit_the_file_is_reported(tmp_path: Path) -> None:
    """The tiny file against the full SD 1.5 config: shapes and missing blocks are reported, grouped by prefix."""
    with pytest.raises(WeightsError, match=r"(?s)recognised as an SD single file.*missing \d+: down_blocks"):
        load_unet(GOLDEN_SD_DIR / "sd_single_file.fp16.safetensors")


def test_only_named_keys_are_dropped_from_a_single_file(tmp_path: Path) -> None:
    """A single file's schedule buffers, text encoder and EMA are dropped by name; an unknown top-level key is not."""
    path = save_edited(tmp_path / "odd.safetensors", "sd_single_file.fp16.safetensors",
                       lambda s: s.update({"lvlb_weights": torch.ones(3)}))
    with pytest.raises(WeightsError, match=r"(?s)unexpected 1: lvlb_weights"):
        load_unet(path, GOLDEN_UNET)


class RunsCode:
    """Unpickling this calls os.system: what a malicious .ckpt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


class OpensFile:
    """Unpickling this calls builtins.open in write mode."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [RunsCode, OpensFile])
@pytest.mark.parametrize("container", ["torch-zip", "legacy-pickle"])
def test_a_ckpt_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path: Path, payload: type,
                                                                        container: str) -> None:
    """A .ckpt whose unpickling would run code (os.system, open) is refused with a WeightsError, and the marker
    file that code would have created does not exist."""
    marker = tmp_path / "pwned"
    path = tmp_path / "v1-5-pruned-emaonly.ckpt"
    obj = {"state_dict": {"model.diffusion_model.conv_in.weight": torch.zeros(1), "x": payload(marker)}}
    if container == "torch-zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refused to unpickle"):
        load_unet(path)
    assert not marker.exists()


def test_saved_weights_are_atomic_and_get_the_usual_permissions(tmp_path) -> None:
    """save_state_dict leaves no temp file and, unlike safetensors' own 0600, honours the umask."""
    path = tmp_path / "w.safetensors"
    files_module.save_state_dict({"a": torch.ones(2)}, path)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    assert torch.equal(load_file(path)["a"], torch.ones(2))
