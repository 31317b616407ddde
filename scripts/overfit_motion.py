"""Can the toy base U-Net learn text -> motion at all? A diagnostic on a finished demo folder.

Trains a fresh toy U-Net (configs/toy/base_unet.yaml) on the demo's cached clips of a single (colour, shape)
in all four directions, then samples each direction's prompt 4 times and scores the videos with the oracle.

    python scripts/overfit_motion.py --demo demo_out [--steps 2000]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.config import load_config  # noqa: E402
from vidiff.eval.oracle_metric import oracle_metric  # noqa: E402
from vidiff.models.cond import Cond  # noqa: E402
from vidiff.models.text_encoder import TextEncoder, encode_captions  # noqa: E402
from vidiff.models.vae import CausalVAE3D  # noqa: E402
from vidiff.toyworld import ATTRIBUTES  # noqa: E402
from vidiff.toyworld.prompts import DIRECTIONS, prompt_of  # noqa: E402
from vidiff.training.diffusion_module import DiffusionModule  # noqa: E402
from vidiff.training.latent_cache import load_latent_cache  # noqa: E402
from vidiff.training.sample_keys import SampleKeys  # noqa: E402
from vidiff.training.train_stage import TrainRunConfig, encode_with_blanks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", required=True, help="a `vidiff demo --out` folder with latents/ and vae/")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.manual_seed(0)
    cache = load_latent_cache(Path(args.demo) / "latents")
    caps = cache.captions

    def clips_of(colour: str, shape: str, direction: str) -> int:
        return sum(c == f"a {colour} {shape} moving {direction}" for c in caps)

    pairs = {tuple(c.split()[1:3]) for c in caps if c}
    colour, shape = max(sorted(pairs), key=lambda k: min(clips_of(*k, d) for d in DIRECTIONS))
    idx = [
        i
        for i, c in enumerate(caps)
        if c.startswith(f"a {colour} {shape} moving") and cache.latents[i].shape[1] > 1
    ]
    print(
        f"training on {len(idx)} clips of a {colour} {shape}:",
        dict(collections.Counter(caps[i] for i in idx)),
    )

    cfg = load_config(TrainRunConfig, ROOT / "configs/toy/base_unet.yaml", [])
    module = DiffusionModule(cfg.stage, cfg.train)  # the toy config's objective: its weighting and caption dropout
    stage, objective = module.stage, module.objective
    text_encoder = TextEncoder(cfg.text)
    text, mask = encode_with_blanks(text_encoder, [caps[i] for i in idx])
    latents = torch.stack([cache.latents[i] for i in idx]).float()
    opt = torch.optim.AdamW(stage.denoiser.parameters(), lr=1e-3)
    t0 = time.time()
    for step in range(args.steps):
        j = torch.randint(len(idx), (args.batch_size,))
        keys = SampleKeys.for_rank(cfg.train.seed, step, args.batch_size)
        loss = objective(stage, latents[j], Cond(text=text[j], text_mask=mask[j]), keys).objective
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(stage.denoiser.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)

    stage.eval()
    vae = CausalVAE3D.from_pretrained(Path(args.demo) / "vae")
    prompts = [prompt_of(colour, shape, d) for d in DIRECTIONS for _ in range(4)]
    encoded = encode_captions(text_encoder, prompts)
    videos = []
    for i in range(len(prompts)):
        z = stage.sample(
            Cond(text=encoded["text"][i : i + 1], text_mask=encoded["text_mask"][i : i + 1]), seed=i
        )
        with torch.no_grad():
            videos.append(vae.decode_latents(z)[0])
    scores = oracle_metric([(f"video {i}", v, p) for i, (v, p) in enumerate(zip(videos, prompts, strict=True))], progress=False)
    print("oracle:", {k: round(scores[f"{k}_accuracy"], 3) for k in ATTRIBUTES})
    print(
        "asked -> seen:",
        [(p.split()[-1], it["predicted"]["motion"]) for p, it in zip(prompts, scores["per_video"], strict=True)],
    )


if __name__ == "__main__":
    main()
