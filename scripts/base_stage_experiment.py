"""Train a base stage (U-Net or DiT) on an existing latent cache with config overrides, then score it like
the demo does.

The demo's base-stage step is the one worth experimenting with (backbone, loss weighting, steps, width);
this reruns only that step on a demo's latent cache (same curated clips, same VAE) and scores held-out
and training prompts with the toy-world oracle, using the demo's held-out split. Prints one JSON line
(with the training time per step) and writes it to OUT/result.json. Rerunning with the same --out
resumes training and reuses videos.

    python scripts/base_stage_experiment.py --latents demo_out/latents --out runs/dit_s0 \\
        [--config configs/toy/base_unet.yaml] [--seeds-per-prompt 6] [--threads 1] train.max_steps=2400 train.seed=0

The result records this host's reference speed (vidiff.hostspeed) measured before training, so training
minutes from different days can be compared.
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

from vidiff.config import load_config  # noqa: E402
from vidiff.demo import DemoConfig  # noqa: E402
from vidiff.errors import VidiffError  # noqa: E402
from vidiff.eval.toy_generation import generate_and_score  # noqa: E402
from vidiff.hostspeed import format_host_reference, host_reference  # noqa: E402
from vidiff.toyworld import ATTRIBUTES  # noqa: E402
from vidiff.toyworld.prompts import heldout_prompts, holdout_triples, train_prompts  # noqa: E402
from vidiff.training.train_stage import TrainRunConfig, train_stage  # noqa: E402

BASE_CONFIG = ROOT / "configs" / "toy" / f"base_{DemoConfig().denoiser}.yaml"  # the demo's base-stage config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latents", required=True, help="latent cache folder (the demo's latents/ or vidiff encode)")
    p.add_argument("--out", required=True, help="run folder: base/ (checkpoints, export), generated/, result.json")
    p.add_argument("--seeds-per-prompt", type=int, default=6, help="videos per prompt (12 prompts each side)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    p.add_argument("--seed", type=int, default=0, help="demo seed: picks the held-out split and sampling noise")
    p.add_argument("--config", default=str(BASE_CONFIG), help=f"training config (default: the demo's, {BASE_CONFIG.name})")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = p.parse_args()
    if not (Path(args.latents) / "meta.json").is_file():
        p.error(f"--latents {args.latents} is not a latent cache (no meta.json); point it at a demo's latents/ folder")
    if args.seeds_per_prompt < 1:
        p.error(f"--seeds-per-prompt must be >= 1, got {args.seeds_per_prompt}")
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    holdout = holdout_triples(args.seed)  # the demo's held-out split for this seed
    host = host_reference()
    print(format_host_reference(host), flush=True)
    t0 = time.perf_counter()
    try:
        run = load_config(
            TrainRunConfig, args.config, [*args.overrides, f"data.latents={Path(args.latents)}", f"out_dir={out / 'base'}"]
        )
        export = train_stage(run)
    except VidiffError as e:
        p.error(str(e))
    seconds = time.perf_counter() - t0
    result: dict = {"config": args.config, "overrides": args.overrides, "train_seconds": round(seconds, 1),
                    "seconds_per_step": round(seconds / run.train.max_steps, 4), "threads": torch.get_num_threads(), "host": host}
    for name, prompts in (("heldout", heldout_prompts(holdout)), ("train", train_prompts(args.seed, holdout))):
        _, _, scores = generate_and_score(
            export, prompts, out / "generated" / name, args.seeds_per_prompt, seed=args.seed * 1000
        )
        result[name] = {"n": scores["n_videos"], **{k: round(scores[f"{k}_accuracy"], 3) for k in ATTRIBUTES}}
    line = json.dumps(result)
    print(line)
    (out / "result.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
