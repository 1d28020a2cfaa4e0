"""Loaders for the public checkpoints: format detection by key names, rename rules, strict loading."""
from .files import WeightsError, read_state_dict, save_state_dict
from .strict import build_and_load, check_keys

__all__ = ["WeightsError", "read_state_dict", "save_state_dict", "build_and_load", "check_keys"]
