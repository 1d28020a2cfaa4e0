"""Sampling: `animate()` (pipeline), what the step loop precomputes (plan), windows over the frames, the noise
schedule and DDIM (ddim), loading the networks for sampling from any public layout (load), what sample.py's weights
and sampling flags load and set (command), and many videos from a jobs file (jobs)."""
