"""Score a pipeline folder's SR stages against the classical baselines on held-out toy clips (docs/evaluation.md):
TSR against linear frame blending, SSR against bicubic upsampling, all through the export's VAE.

    python scripts/sr_eval.py --checkpoint runs/toy_tsr/export [--kind tsr] [--clips 16] [--out sr_eval.json]

Prints a table per stage and writes the figures as JSON. Exits 2 with the reason on a bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.errors import VidiffError  # noqa: E402
from vidiff.eval.sr_baselines import HELDOUT_SEED, KINDS, evaluate_sr, format_sr_table  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="pipeline folder (an export of `vidiff train`, or a cascade)")
    p.add_argument("--kind", choices=KINDS, action="append",
                   help="stage kind to evaluate (repeatable); default: every TSR and SSR stage in the folder")
    p.add_argument("--stage", help="evaluate the stage of this name (its kind must be a --kind, if given)")
    p.add_argument("--clips", type=int, default=16, help="held-out toy clips (default 16)")
    p.add_argument("--frames", type=int, help="frames per true clip; default: the stage's own clip (longer clips "
                                              "are sampled over temporal windows)")
    p.add_argument("--seed", type=int, default=HELDOUT_SEED,
                   help=f"toy-world seed of the clips; clip i samples with seed + i (default {HELDOUT_SEED})")
    p.add_argument("--sampler", help="override the stage's sampler")
    p.add_argument("--steps", type=int, help="override the stage's sampling steps")
    p.add_argument("--cfg", type=float, help="override the stage's guidance scale")
    p.add_argument("--noise-aug-level", type=float,
                   help="override the level the stage corrupts its low-res input at (its stage.lowres.noise_aug_level)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="sr_eval.json", help="JSON file to write (default sr_eval.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sampling = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps), ("cfg", args.cfg),
                                            ("noise_aug_level", args.noise_aug_level)) if v is not None}
    try:
        results = evaluate_sr(args.checkpoint, args.kind, args.stage, clips=args.clips, num_frames=args.frames,
                              seed=args.seed, sampling=sampling, device=args.device, progress=not args.quiet)
    except VidiffError as exc:
        print(f"sr_eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_sr_table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
