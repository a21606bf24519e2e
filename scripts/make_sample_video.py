"""Make a sample video from the public-domain photos in tests/data/photos.

    python scripts/make_sample_video.py sample.mp4 [--frames 100] [--size 1280x720]

Two people (official portraits of Barack Obama and Joe Biden, US government works)
move and zoom across a blurred background, with an audio tone, at 25 fps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import media  # noqa: E402  (the tests' own clip maker)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    clip = media.moving_faces_clip(n_frames=args.frames, size=(w, h), path=args.output, audio=True, seed=args.seed)
    print(f"wrote {clip.path}: {args.frames} frames {w}x{h} at {clip.fps} fps with audio, "
          f"{len(clip.boxes[0])} faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
