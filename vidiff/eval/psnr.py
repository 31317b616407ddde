"""PSNR of reconstructed or generated video against a reference, for videos in [-1, 1]."""

from __future__ import annotations

import torch


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per item of [B, C, T, H, W] videos in [-1, 1] (peak = full range)."""
    mse = ((recon.clamp(-1, 1) - target) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))
