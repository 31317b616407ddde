"""Per-frame reconstruction PSNR of a VAE on held-out toy clips of several lengths (docs/vae.md): shows whether it
reconstructs the later frames of clips longer than it trained on as well as the first ones.

    python scripts/vae_per_frame.py --checkpoint runs/vae [--frames 9 17] [--clips 16] [--seed 2121]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vidiff.errors import VidiffError  # noqa: E402
from vidiff.eval.psnr import psnr  # noqa: E402
from vidiff.models.vae import CausalVAE3D  # noqa: E402
from vidiff.toyworld import ToyWorldDataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="VAE folder (config.yaml + model.safetensors)")
    p.add_argument("--frames", type=int, nargs="+", default=[9, 17], help="clip lengths (1 + 4k for the toy VAE)")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seed", type=int, default=2121, help="toy-world seed of the held-out clips")
    p.add_argument("--size", type=int, default=32, help="frame height and width")
    args = p.parse_args(argv)
    try:
        vae = CausalVAE3D.from_pretrained(args.checkpoint).eval()
        for frames in args.frames:
            ds = ToyWorldDataset(args.clips, frames, args.size, args.size, seed=args.seed)
            clips = torch.stack([ds[i]["video"] for i in range(args.clips)])
            with torch.no_grad():
                recon = vae.decode_latents(vae.encode_latents(clips))
            per_frame = [psnr(recon[:, :, t : t + 1], clips[:, :, t : t + 1]).mean().item() for t in range(frames)]
            print(f"{frames} frames: {psnr(recon, clips).mean().item():.2f} dB; per frame "
                  + " ".join(f"{db:.1f}" for db in per_frame))
    except VidiffError as exc:
        print(f"vae_per_frame: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
