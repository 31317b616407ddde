"""Sampling a stage over more latent frames than its training clip: at every denoising step the denoiser runs on
overlapping temporal windows of the stage's own length, and their predictions are averaged with weights that taper
towards each window's edges (MultiDiffusion, Bar-Tal et al. 2023). One x_t covers the whole sequence, so the
windows agree step by step and no seam shows.

Windows are counted in latent frames. The causal VAE's latent frame 0 encodes one video frame and every later one a
group of frames, so a window that starts inside the sequence hands the network a group latent at the position it
only ever saw a first-frame latent (and, for TSR, a low-res slice whose first latent is a group latent too). Its
prediction for that latent is made under the wrong assumption, so it gets weight 0: the window before, which sees
that latent as an interior frame, decides it. The window's other frames still see the odd first latent as context;
the tapered weights keep their say small near it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from vidiff.diffusion.samplers import DenoiseFn
from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.pipelines.stage import DiffusionStage, SamplingConfig


@dataclass(frozen=True)
class WindowPlan:
    """The windows over a sequence of `total` latent frames and how their predictions blend."""

    total: int
    length: int  # latent frames per window (the stage's own, or `total` when that is shorter)
    starts: tuple[int, ...]  # first latent frame of each window, increasing; the last window ends at `total`
    weights: Tensor  # [windows, length] float64: a window's share of each of its frames (shares sum to 1 per frame)


def default_overlap(length: int) -> int:
    """Neighbouring windows share at least half a window: each frame is blended from two windows' middles."""
    return (length + 1) // 2


def window_starts(total: int, length: int, overlap: int, align: int = 1) -> list[int]:
    """Starts of the fewest windows of `length` frames that cover `total` frames with neighbours sharing at least
    `overlap` frames, spread evenly, each a multiple of `align` (a TSR stage's temporal factor: a window's low-res
    input then starts on a low-res latent)."""
    if total <= length:
        return [0]
    if (total - length) % align:
        raise VidiffError(
            f"{total} latent frames cannot be covered by windows of {length} that start on multiples of {align}; "
            f"use 1 + {align}k latent frames"
        )
    max_step = (length - overlap) // align  # in units of align
    if not 1 <= overlap or max_step < 1:
        raise VidiffError(
            f"window overlap {overlap} does not fit windows of {length} latent frames starting on multiples of "
            f"{align}; use an overlap from 1 to {length - align}"
        )
    units = (total - length) // align
    n = -(-units // max_step) + 1  # ceil: gaps of at most max_step units
    return [round(k * units / (n - 1)) * align for k in range(n)]


def taper(length: int, first: bool) -> Tensor:
    """Unnormalised weights of a window's frames: a triangle, highest in the middle (1, 2, ..., 2, 1). A window
    that does not start the sequence (`first` False) gives its frame 0 weight 0 (see the module docstring)."""
    i = torch.arange(length, dtype=torch.float64)
    w = torch.minimum(i + 1, length - i)
    if not first:
        w[0] = 0.0
    return w


def plan_windows(total: int, length: int, overlap: int | None = None, align: int = 1) -> WindowPlan:
    """The windows (`window_starts`) and their normalised `taper` weights for a sequence of `total` latent frames."""
    length = min(length, total)
    starts = window_starts(total, length, default_overlap(length) if overlap is None else overlap, align)
    raw = torch.stack([taper(length, first=s == 0) for s in starts])
    cover = torch.zeros(total, dtype=torch.float64)
    for s, w in zip(starts, raw, strict=True):
        cover[s : s + length] += w
    weights = torch.stack([w / cover[s : s + length] for s, w in zip(starts, raw, strict=True)])
    return WindowPlan(total, length, tuple(starts), weights)


def window_cond(cond: Cond, start: int, length: int, temporal_factor: int = 1) -> Cond:
    """`cond` for the window of `length` latent frames from `start`: the matching slice of the low-res input
    (latent frame j comes from low-res latent j / temporal_factor) and of the frame mask; the image latent (the
    clip's first frame, image-to-video) only for the window that starts the clip."""
    lowres = cond.lowres
    if lowres is not None:
        lo = start // temporal_factor
        lowres = lowres[:, :, lo : lo + 1 + (length - 1) // temporal_factor]
    mask = None if cond.frame_mask is None else cond.frame_mask[:, start : start + length]
    image = cond.image_latent if start == 0 else None
    return dataclasses.replace(cond, lowres=lowres, frame_mask=mask, image_latent=image)


def windowed_denoise_fn(stage: DiffusionStage, cond: Cond, sampling: SamplingConfig, plan: WindowPlan) -> DenoiseFn:
    """The samplers' `denoise(x_t, t)` over the whole sequence: `stage.guided` (classifier-free guidance per
    window) on each window of `plan`, the predictions blended by the plan's weights. With one window this is
    `stage.guided` itself, bit for bit (weights 1)."""
    parts = [(s, stage.guided(window_cond(cond, s, plan.length, _align(stage)), sampling)) for s in plan.starts]

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        if x.shape[2] != plan.total:
            raise VidiffError(f"windowed denoiser planned for {plan.total} latent frames got x_t {tuple(x.shape)}")
        out = torch.zeros_like(x)
        for (s, fn), w in zip(parts, plan.weights, strict=True):
            window = slice(s, s + plan.length)
            out[:, :, window] += fn(x[:, :, window], t) * w.to(x).view(1, 1, -1, 1, 1)
        return out

    return denoise


@torch.no_grad()
def sample_long(
    stage: DiffusionStage,
    cond: Cond,
    num_frames: int | None = None,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
    overlap: int | None = None,
    progress: bool | str = False,
) -> Tensor:
    """Latents [B, C, T, h, w] of `num_frames` latent frames (default: the stage's own), for any T: over
    overlapping windows of the stage's `latent_frames` when T is longer, else exactly `stage.sample`. A
    super-resolution stage takes the low-res input of the whole sequence in `cond.lowres`; `overlap` is the least
    number of latent frames neighbouring windows share (default: half a window, rounded up). The denoiser runs
    about 2T / latent_frames windows per step."""
    total = num_frames or stage.config.latent_frames

    def denoise(prepared: Cond, s: SamplingConfig) -> DenoiseFn:
        # planned once the stage has checked the low-res input against `total`, so its message comes first
        plan = plan_windows(total, stage.config.latent_frames, overlap, _align(stage))
        return windowed_denoise_fn(stage, prepared, s, plan)

    return stage.sample(cond, total, sampling, seed, progress, denoise=denoise)


def _align(stage: DiffusionStage) -> int:
    """Window starts and lengths in latent frames map onto the low-res input in steps of its frame step."""
    return stage.config.lowres_frame_step if stage.config.lowres_channels else 1
