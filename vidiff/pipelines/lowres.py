"""A super-resolution stage's low-res input, made from the previous stage's latents: as they are
(`stage.lowres.resample: latent`; the network resizes them), or resampled in pixels onto the stage's own grid
(`pixel`: decoded, linear frame blending and bicubic upsampling, encoded again) — the classical answer, which a
residual stage (`residual_scale`) then only corrects. Training caches, the cascade and the SR evaluation all
prepare it here, so the three see one input."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from vidiff.errors import VidiffError

RESAMPLE_MODES = ("latent", "pixel")


def blend_frames(video: Tensor, factor: int) -> Tensor:
    """Linear frame blending: [B, C, T', H, W] -> [B, C, 1 + factor (T' - 1), H, W], the kept frames as they are
    and each in-between frame the linear mix of its two neighbours by its distance to them."""
    if factor == 1:
        return video
    b, c, t, h, w = video.shape
    return F.interpolate(video, size=(1 + factor * (t - 1), h, w), mode="trilinear", align_corners=True)


def bicubic_upsample(video: Tensor, factor: int) -> Tensor:
    """Each frame of [B, C, T, H, W] bicubic-upsampled to factor x H, factor x W (pixel centres aligned as by
    block-mean downsampling), clamped to [-1, 1]."""
    if factor == 1:
        return video
    frames = rearrange(video, "b c t h w -> (b t) c h w")
    up = F.interpolate(frames, scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)
    return rearrange(up, "(b t) c h w -> b c t h w", b=video.shape[0])


def resample_pixels(video: Tensor, temporal_factor: int, spatial_factor: int) -> Tensor:
    """[B, C, T', H', W'] pixels onto a grid `temporal_factor` x finer in time (1 + f (T' - 1) frames) and
    `spatial_factor` x in height and width: frame blending, then bicubic upsampling."""
    return bicubic_upsample(blend_frames(video, temporal_factor), spatial_factor)


def downsample_grid(video: Tensor, temporal_factor: int, spatial_factor: int) -> Tensor:
    """[..., C, T, H, W] pixels onto a grid `temporal_factor` x coarser in time (every f-th frame: the first and last
    of 1 + f k frames) and `spatial_factor` x in height and width (block means, an antialiased area resize): how SR
    training degrades its targets, and how a cascade's output is brought back to its base grid."""
    kept = video[..., ::temporal_factor, :, :]
    return reduce(kept, "... t (h a) (w b) -> ... t h w", "mean", a=spatial_factor, b=spatial_factor)


def prepare_lowres(vae, latents: Tensor, lowres) -> Tensor:
    """The low-res input Cond.lowres of a stage whose `stage.lowres` is `lowres` (a LowresConfig), from the
    previous stage's latents [B, C, T', h', w'] of `vae`: the latents themselves (resample "latent"), or on the
    stage's grid: decoded, `resample_pixels`, encoded again ("pixel")."""
    if lowres.resample == "latent":
        return latents
    if vae is None:
        raise VidiffError(
            "a stage with stage.lowres.resample: pixel needs the VAE to bring its low-res input onto its grid; run it "
            "from a pipeline folder (which holds the VAE), or pass the VAE"
        )
    pixels = vae.decode_latents(latents)
    return vae.encode_latents(resample_pixels(pixels, lowres.temporal_factor, lowres.spatial_factor))
