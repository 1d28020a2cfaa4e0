"""Sampling: `animate()` (pipeline), what the step loop precomputes (plan), windows over the frames, the noise
schedule and DDIM (ddim), and loading the networks for sampling from any public layout (load)."""
