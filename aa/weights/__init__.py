"""Loaders for the public checkpoints: format detection by key names, rename rules, strict loading."""
from aa.weights.animate import insert_motion_modules, load_motion_modules
from aa.weights.clip import load_clip
from aa.weights.detect import describe
from aa.weights.files import WeightsError, read_state_dict, save_state_dict
from aa.weights.moore import MooreWeights, load_moore
from aa.weights.sd import detect_unet_format, detect_vae_format, load_unet, load_vae, save_native
from aa.weights.strict import build_and_load, check_keys

__all__ = ["WeightsError", "read_state_dict", "save_state_dict", "build_and_load", "check_keys", "load_clip",
           "load_motion_modules", "insert_motion_modules", "load_moore", "MooreWeights",
           "describe", "load_unet", "load_vae", "save_native", "detect_unet_format", "detect_vae_format"]
