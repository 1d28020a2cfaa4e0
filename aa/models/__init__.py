"""The networks of Animate Anyone, named after the checkpoints' keys: VAE, CLIP image encoder, the denoising UNet
and the ReferenceNet (SD 1.5 UNets, the first with AnimateDiff temporal layers), the Pose Guider, and `Models`, the
five together. Nothing here samples, trains, reads video or loads files."""
