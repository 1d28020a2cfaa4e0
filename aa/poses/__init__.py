"""Poses: keypoints and their JSON files, drawing them as the pose images the Pose Guider reads (render, raster),
retargeting onto the reference's body, extraction from video (extract/: DWPose, MediaPipe), and sample.py's pose and
reference inputs read and fitted to the output (inputs)."""
