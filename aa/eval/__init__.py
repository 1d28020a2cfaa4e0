"""Evaluation: video metrics against ground truth, and memory estimates on the meta device."""
