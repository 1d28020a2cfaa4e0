"""Loaders for the public checkpoints: format detection by key names, rename rules, strict loading."""
from .files import WeightsError, read_state_dict, save_state_dict
from .strict import build_and_load, check_keys
from .clip import load_clip
from .animate import insert_motion_modules, load_motion_modules
from .moore import MooreWeights, load_moore
from .detect import describe
from .sd import detect_unet_format, detect_vae_format, load_unet, load_vae, save_native

__all__ = ["WeightsError", "read_state_dict", "save_state_dict", "build_and_load", "check_keys", "load_clip",
           "load_motion_modules", "insert_motion_modules", "load_moore", "MooreWeights",
           "describe", "load_unet", "load_vae", "save_native", "detect_unet_format", "detect_vae_format"]
