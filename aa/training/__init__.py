"""Two-stage training (paper 3.3): stage 1 on single frames, stage 2 on clips with temporal layers only."""
