"""Write a synthetic dataset: python -m aa.synthetic --out data/synth --size 64 (see --help)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python aa/synthetic`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "aa.synthetic"

from aa.synthetic.character import BACKGROUNDS  # noqa: E402
from aa.synthetic.dataset import FPS, VIDEO_FORMATS, write_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m aa.synthetic", description=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="output folder (created; existing files are overwritten)")
    ap.add_argument("--size", type=int, nargs="+", default=[64], metavar="PX",
                    help="frame size: one number for square frames, or WIDTH HEIGHT")
    ap.add_argument("--train-characters", type=int, default=40, help="characters in the train split")
    ap.add_argument("--val-characters", type=int, default=5, help="held-out characters for the val split")
    ap.add_argument("--test-characters", type=int, default=8,
                    help="held-out characters for test_chars (and how many train characters test_motions uses)")
    ap.add_argument("--clips-per-character", type=int, default=3, help="clips per character in every split")
    ap.add_argument("--frames", type=int, default=24, help="frames per clip")
    ap.add_argument("--fps", type=float, default=FPS, help="frame rate of the motions and of the video files")
    ap.add_argument("--seed", type=int, default=0, help="master seed: same arguments, same bytes")
    ap.add_argument("--backgrounds", nargs="+", choices=BACKGROUNDS, default=list(BACKGROUNDS),
                    help="backdrop kinds to draw from (default: all)")
    ap.add_argument("--video-format", choices=VIDEO_FORMATS, default="mp4",
                    help="clips as lossless H.264 .mp4 (small; reading needs PyAV) or as raw .npz frames (about ten "
                         "times larger, faster to load, and no FFmpeg needed): the same frames either way")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if len(args.size) not in (1, 2) or min(args.size) < 16:
        ap.error("--size takes one or two numbers (WIDTH HEIGHT), each at least 16")
    width, height = (args.size * 2)[:2]
    for name in ("train_characters", "val_characters", "test_characters", "clips_per_character", "frames"):
        if getattr(args, name) < (1 if name in ("clips_per_character", "frames") else 0):
            ap.error(f"--{name.replace('_', '-')} is too small")
    start = time.time()
    manifests = write_dataset(args.out, width, height, args.train_characters, args.val_characters,
                              args.test_characters, args.clips_per_character, args.frames, args.seed, args.fps,
                              progress=not args.quiet, backgrounds=tuple(args.backgrounds),
                              video_format=args.video_format)
    counts = ", ".join(f"{k} {len(v)}" for k, v in manifests.items())
    print(f"wrote {args.out} ({width}x{height}, {args.frames} frames per clip): {counts} clips "
          f"in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
