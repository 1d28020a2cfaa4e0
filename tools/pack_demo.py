"""Pack a trained checkpoint as the bundled demo: a self-contained fp16 model folder plus a reference image and a
pose sequence from held-out data (the last step of the demo recipe in the README).

    python tools/pack_demo.py --checkpoint runs/demo-s2/checkpoints/step_0002000 --data data/synth96 \\
        --split test_chars --clip 0 --out weights/demo
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python tools/pack_demo.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.poses.keypoints import load_json, save_json  # noqa: E402
from aa.weights.files import read_state_dict, save_state_dict  # noqa: E402
from aa.weights.native import CONFIG, read_config  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a native checkpoint folder (from train.py)")
    p.add_argument("--data", type=Path, required=True, help="the synthetic dataset folder")
    p.add_argument("--split", default="test_chars", help="split to take the reference and poses from")
    p.add_argument("--clip", type=int, default=0, help="index of the clip in the split's manifest")
    p.add_argument("--reference-from", type=int, default=None,
                   help="index of the clip whose character is the reference (default: --clip's)")
    p.add_argument("--out", type=Path, required=True, help="the demo folder to write")
    p.add_argument("--guidance", type=float, default=None,
                   help="record this guidance scale as the demo's default (chosen on the val split)")
    p.add_argument("--steps", type=int, default=None, help="record this many DDIM steps as the demo's default")
    args = p.parse_args(argv)

    _, _, files = read_config(args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, path in files.items():
        state = read_state_dict(path, dtype=torch.float16)  # half the size; loaded back as fp32 on the CPU
        save_state_dict(state, args.out / f"{name}.safetensors")
        total += (args.out / f"{name}.safetensors").stat().st_size
    meta = json.loads((args.checkpoint / CONFIG).read_text())
    meta["paths"] = {}
    meta.setdefault("sampling", {}).update({k: v for k, v in (("guidance", args.guidance), ("steps", args.steps))
                                            if v is not None})
    (args.out / CONFIG).write_text(json.dumps(meta, indent=2))

    entries = json.loads((args.data / f"{args.split}.json").read_text())
    clip = entries[args.clip]
    ref_clip = entries[args.reference_from if args.reference_from is not None else args.clip]
    shutil.copyfile(args.data / ref_clip["reference"], args.out / "reference.png")
    save_json(args.out / "poses.json", load_json(args.data / clip["keypoints"]))
    print(f"wrote {args.out}: weights {total / 2**20:.1f} MiB (fp16), reference of character "
          f"{ref_clip['character']}, {clip['motion']} poses")


if __name__ == "__main__":
    main()
