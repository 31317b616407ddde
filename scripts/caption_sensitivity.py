"""Which words of a toy-world caption does a trained base stage use? A diagnostic on a latent cache.

For cached training clips it noises the latents to several levels and measures the denoiser's x0 error
with the true caption, with one word swapped (colour, shape or direction) and with no caption. A word
the model uses raises the error when it is swapped; a word it ignores leaves the error unchanged.

    python scripts/caption_sensitivity.py --checkpoint demo_out/base/export --latents demo_out/latents
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.diffusion.objectives import add_noise, convert_prediction  # noqa: E402
from vidiff.models.cond import Cond  # noqa: E402
from vidiff.pipelines.pipeline_folder import load_pipeline  # noqa: E402
from vidiff.toyworld import COLORS, SHAPES  # noqa: E402
from vidiff.toyworld.prompts import DIRECTIONS  # noqa: E402
from vidiff.training.latent_cache import load_latent_cache  # noqa: E402
from vidiff.training.train_stage import encode_with_blanks  # noqa: E402

# word position in "a {colour} {shape} moving {direction}" and the words that may replace it
SWAPS = {"colour": (1, tuple(COLORS)), "shape": (2, SHAPES), "direction": (4, DIRECTIONS)}


def swapped(caption: str, position: int, pool, rng: random.Random) -> str:
    words = caption.split()
    words[position] = rng.choice([w for w in pool if w != words[position]])
    return " ".join(words)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a pipeline export folder (e.g. demo_out/base/export)")
    ap.add_argument("--latents", required=True, help="the latent cache it trained on")
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--levels", type=int, nargs="+", default=[950, 850, 700, 500, 300])
    args = ap.parse_args()

    pipe = load_pipeline(args.checkpoint)
    stage = pipe.stages[0]
    cache = load_latent_cache(args.latents)
    idx = [i for i, c in enumerate(cache.captions) if " moving " in c and cache.latents[i].shape[1] > 1]
    idx = idx[: args.clips]
    if not idx:
        raise SystemExit(f"{args.latents} has no toy-world video clips with 'moving' captions")
    x0 = torch.stack([cache.latents[i] for i in idx]).float()
    captions = [cache.captions[i] for i in idx]
    rng = random.Random(0)
    variants = {"true": captions, "empty": [""] * len(captions)}
    for name, (position, pool) in SWAPS.items():
        variants[name] = [swapped(c, position, pool, rng) for c in captions]
    conds = {name: Cond(*encode_with_blanks(pipe.text_encoder, caps)) for name, caps in variants.items()}

    gen = torch.Generator().manual_seed(0)
    print(f"x0 mean squared error of {len(idx)} clips; higher than 'true' = the model uses that word")
    print("noise level  " + "  ".join(f"{name:>9}" for name in conds))
    for level in args.levels:
        t = torch.full((len(idx),), level)
        alpha, sigma = stage.schedule.alpha(t).float(), stage.schedule.sigma(t).float()
        x_t = add_noise(x0, torch.randn(x0.shape, generator=gen), alpha, sigma)
        errors = []
        for cond in conds.values():
            with torch.no_grad():
                pred = stage(x_t, t, cond)
            x0_hat = convert_prediction(pred, stage.config.prediction, "x0", x_t, alpha, sigma)
            errors.append(((x0_hat - x0) ** 2).mean().item())
        print(f"{level:>11}  " + "  ".join(f"{e:9.4f}" for e in errors))


if __name__ == "__main__":
    main()
