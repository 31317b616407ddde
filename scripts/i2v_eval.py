"""Image-to-video on held-out toy stills (docs/evaluation.md): first-frame fidelity, where the object starts, and
the oracle's colour, shape and motion.

    python scripts/i2v_eval.py --checkpoint runs/toy_i2v/export [--per-triple 6] [--set i2v.image_cfg=1.5]
        [--out DIR]

The stills are first frames of fresh toy clips (seed --seed) for the demo's held-out (colour, shape, direction)
triples (12 for `--demo-seed`), each animated with its caption: 72 videos by default. Exits 2 with the reason on a
bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.errors import VidiffError  # noqa: E402
from vidiff.eval.image_to_video_eval import SEED, evaluate_image_to_video, format_result  # noqa: E402
from vidiff.toyworld.prompts import holdout_triples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True,
                   help="an image-to-video pipeline folder (`vidiff train --config configs/toy/i2v.yaml`'s export)")
    p.add_argument("--demo-seed", type=int, default=0, help="the demo seed whose held-out split gives the triples")
    p.add_argument("--per-triple", type=int, default=6, help="stills per held-out triple (default 6: 72 videos)")
    p.add_argument("--seed", type=int, default=SEED, help=f"toy-world seed of the stills and the sampling (default {SEED})")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="the stage's sampling setting, as `vidiff animate --set` (repeatable), e.g. i2v.image_cfg=1.5")
    p.add_argument("--out", default="i2v_eval", help="folder for the stills, the videos and i2v_eval.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.per_triple < 1:
        p.error(f"--per-triple must be >= 1, got {args.per_triple}")
    try:
        result = evaluate_image_to_video(args.checkpoint, holdout_triples(args.demo_seed), args.per_triple,
                                         seed=args.seed, out_dir=args.out, overrides=args.set,
                                         progress=not args.quiet)
    except VidiffError as exc:
        print(f"i2v_eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_result(result))
    print(f"wrote {Path(args.out) / 'i2v_eval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
