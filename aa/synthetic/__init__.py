"""Synthetic characters with exact OpenPose keypoints: a small dataset for tests, demo training and quality metrics.

    character.py  Character: proportions, skin, hair, clothes, logo, accessories, background (sampled from a seed)
    skeleton.py   PoseState (joint angles) -> joints, hands, face in pixels (forward kinematics, projection)
    motions.py    walk, wave, dance, jump, turn, squat, arm_circles, kick: t -> PoseState
    shapes.py     per-pixel capsules, polygons, fabric patterns, logos
    render.py     render_frame: draw a posed character, read its keypoints off the drawing
    dataset.py    make_clip, write_dataset: splits with held-out characters and motions
    __main__.py   the command line: python -m aa.synthetic --help

Quality is measured on this data, where the ground truth is exact: held-out characters and motions stand in for
the paper's benchmark videos, which can't be fetched at run time.
"""
from aa.synthetic.character import Character, sample_character
from aa.synthetic.dataset import FPS, character_seed, make_clip, plan_splits, reference, write_dataset
from aa.synthetic.motions import HELD_OUT_MOTIONS, MOTIONS, TRAIN_MOTIONS, MotionParams, sample_params
from aa.synthetic.render import render_frame
from aa.synthetic.skeleton import Limb, PoseState, pose_figure

__all__ = ["Character", "sample_character", "FPS", "character_seed", "make_clip", "plan_splits", "reference",
           "write_dataset", "HELD_OUT_MOTIONS", "MOTIONS", "TRAIN_MOTIONS", "MotionParams", "sample_params",
           "render_frame", "Limb", "PoseState", "pose_figure"]
