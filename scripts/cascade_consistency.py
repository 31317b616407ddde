"""Consistency of a cascade on held-out toy prompts (docs/evaluation.md): its final output brought back to the base
grid against the base output (PSNR), the oracle on both, toy FVD beside them.

    python scripts/cascade_consistency.py --checkpoint runs/cascade [--seeds-per-prompt 6] [--fvd] [--set ssr.cfg=1]
        [--out DIR]

The prompts are the demo's held-out ones (12 colour/shape/direction combinations no training clip shows, for the
demo's `--demo-seed`), each with `--seeds-per-prompt` seeds: 72 videos by default. Exits 2 with the reason on a bad
input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.errors import VidiffError  # noqa: E402
from vidiff.eval.cascade_consistency import evaluate_cascade, format_consistency  # noqa: E402
from vidiff.toyworld.prompts import heldout_prompts, holdout_triples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a cascade folder (`vidiff cascade`; the demo's demo_out/cascade)")
    p.add_argument("--demo-seed", type=int, default=0, help="the demo seed whose held-out split gives the prompts")
    p.add_argument("--seeds-per-prompt", type=int, default=6, help="videos per held-out prompt (default 6: 72 videos)")
    p.add_argument("--seed", type=int, default=0, help="video i is sampled with seed + i")
    p.add_argument("--fvd", action="store_true", help="toy FVD of the base and the final videos too (trains the toy "
                                                      "classifier on first use, a few minutes, then cached)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="a stage's sampling setting, as `vidiff generate --set` (repeatable), e.g. ssr.cfg=1")
    p.add_argument("--stages", help="run only the cascade's first stages, e.g. base,tsr (as `vidiff generate`)")
    p.add_argument("--out", default="cascade_consistency", help="folder for the videos and consistency.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.seeds_per_prompt < 1:
        p.error(f"--seeds-per-prompt must be >= 1, got {args.seeds_per_prompt}")
    prompts = [q for q in heldout_prompts(holdout_triples(args.demo_seed)) for _ in range(args.seeds_per_prompt)]
    try:
        result = evaluate_cascade(args.checkpoint, prompts, seed=args.seed, fvd=args.fvd, out_dir=args.out,
                                  progress=not args.quiet, overrides=args.set,
                                  stages=args.stages.split(",") if args.stages else None)
    except VidiffError as exc:
        print(f"cascade_consistency: error: {exc}", file=sys.stderr)
        return 2
    print(format_consistency(result))
    print(f"wrote {Path(args.out) / 'consistency.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
