"""Animate Anyone (Hu et al. 2023, arXiv 2311.17117) in plain PyTorch.

Shape glossary used in comments and asserts throughout the package (einops notation):
    b   batch (videos)            f   frames
    c   channels                  h w spatial height and width
    n   tokens (h w)              m   context or reference tokens
    nh  attention heads           d   head dim
The UNets run on frames folded into the batch, `(b f) c h w`; only the temporal layers unfold `f`.
"""
