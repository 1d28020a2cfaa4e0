"""Evaluation: video metrics against ground truth, memory estimates on the meta device, and time and peak device
memory measured on a real device (speed, with the runs of a measuring command in parts: runs)."""
