"""Train a base U-Net on an existing latent cache with config overrides, then score it like the demo does.

The demo's U-Net step is the one worth experimenting with (loss weighting, steps, width); this reruns
only that step on a demo's latent cache (same curated clips, same VAE) and scores held-out and
training prompts with the toy-world oracle, using the demo's held-out split. Prints one JSON line
and writes it to OUT/result.json. Rerunning with the same --out resumes training and reuses videos.

    python scripts/unet_experiment.py --latents demo_out/latents --out runs/learned_6k \\
        [--seeds-per-prompt 6] [--threads 1] train.max_steps=6000 train.loss_weighting=learned
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.demo import Demo, DemoConfig  # noqa: E402
from vidiff.errors import VidiffError  # noqa: E402
from vidiff.toyworld import ATTRIBUTES  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latents", required=True, help="latent cache folder (the demo's latents/ or vidiff encode)")
    p.add_argument("--out", required=True, help="run folder: base/ (checkpoints, export), generated/, result.json")
    p.add_argument("--seeds-per-prompt", type=int, default=6, help="videos per prompt (12 prompts each side)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    p.add_argument("--seed", type=int, default=0, help="demo seed: picks the held-out split and sampling noise")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/toy/base_unet.yaml")
    args = p.parse_args()
    if not (Path(args.latents) / "meta.json").is_file():
        p.error(f"--latents {args.latents} is not a latent cache (no meta.json); point it at a demo's latents/ folder")
    if args.seeds_per_prompt < 1:
        p.error(f"--seeds-per-prompt must be >= 1, got {args.seeds_per_prompt}")
    if args.threads:
        torch.set_num_threads(args.threads)

    demo = Demo(args.out, DemoConfig(seed=args.seed, base_overrides=args.overrides,
                                     seeds_per_prompt=args.seeds_per_prompt))
    t0 = time.perf_counter()
    try:
        export = demo.train_base(Path(args.latents))
    except VidiffError as e:
        p.error(str(e))
    result: dict = {"overrides": args.overrides, "train_seconds": round(time.perf_counter() - t0, 1)}
    for name, prompts in (("heldout", demo.heldout_prompts()), ("train", demo.train_prompts())):
        _, _, scores = demo.generate_and_score(export, prompts, name)
        result[name] = {"n": scores["n"], **{k: round(scores[k], 3) for k in ATTRIBUTES}}
    line = json.dumps(result)
    print(line)
    (Path(args.out) / "result.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
