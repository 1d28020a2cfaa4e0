"""Poses: keypoints and their JSON files, drawing them as the pose images the Pose Guider reads (render, raster),
retargeting onto the reference's body, and extraction from video (extract/: DWPose, MediaPipe)."""
