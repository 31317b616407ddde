"""How much latent error can a VAE's decoder take before the toy-world oracle stops seeing the caption?

A diffusion model never generates latents exactly; this diagnostic adds Gaussian noise of a given std
(in normalised latent units, the units the diffusion model works in) to cached training latents,
decodes them and scores the videos against their captions with the oracle. A decoder trained without
`train.latent_noise` loses shape and motion at errors a small U-Net makes.

    python scripts/latent_robustness.py --latents demo_out/latents [--vae demo_out/vae] [--noise 0 0.1 0.2 0.3]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.eval.oracle_metric import oracle_metric  # noqa: E402
from vidiff.models.vae import CausalVAE3D  # noqa: E402
from vidiff.toyworld import Oracle  # noqa: E402
from vidiff.training.latent_cache import load_latent_cache  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latents", required=True, help="latent cache folder (vidiff encode / the demo's latents/)")
    p.add_argument("--vae", help="VAE folder; default: the one the cache was encoded with")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if any(s < 0 for s in args.noise):
        p.error(f"--noise takes stds >= 0, got {args.noise}")

    cache = load_latent_cache(args.latents)
    vae = CausalVAE3D.from_pretrained(args.vae or cache.vae_dir).eval()
    videos = [i for i, z in enumerate(cache.latents) if z.shape[1] > 1 and " moving " in (cache.captions[i] or "")]
    if not videos:
        p.error(f"{args.latents} holds no captioned toy-world video latents ('a <colour> <shape> moving <direction>')")
    picked = random.Random(args.seed).sample(videos, min(args.clips, len(videos)))
    z = torch.stack([cache.latents[i] for i in picked]).float()
    captions = [cache.captions[i] for i in picked]
    gen = torch.Generator().manual_seed(args.seed)
    oracle = Oracle()
    print(f"{len(picked)} clips; noise std in normalised latent units (the latents' own std is 1)")
    print("noise  colour  shape  motion")
    for std in args.noise:
        with torch.no_grad():
            video = vae.decode_latents(z + std * torch.randn(z.shape, generator=gen))
        items = [(f"clip {i}", v, c) for i, v, c in zip(picked, video, captions, strict=True)]
        s = oracle_metric(items, oracle=oracle, progress=False)
        print(f"{std:5.2f}  {s['color_accuracy']:6.2f}  {s['shape_accuracy']:5.2f}  {s['motion_accuracy']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
