"""Conditioning shared by every denoiser backbone: the per-sample embedding (timestep, fps, noise level,
pooled text), the text context with its learned null token, and the low-res / image latents brought
onto the stage's latent grid as extra input channels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.layers import ScalarEmbedding


@dataclass
class ConditioningConfig:
    """What a backbone is conditioned on, besides x_t. A backbone's config extends this class (UNetConfig
    does), so its YAML keeps these keys flat; `ConditioningConfig.from_config(its_config)` gathers them.
    The fps and noise-level embeddings start at zero, so they can be switched on for a trained model.
    """

    text_dim: int = 64  # width of the Cond.text tokens (the text encoder's width)
    lowres_channels: int = 0  # channels of Cond.lowres concatenated to x (super-resolution); 0: none
    # channels of Cond.image_latent concatenated to every frame of x, with one more channel that marks the
    # conditioning frame (image-to-video); 0: none
    image_channels: int = 0
    timestep_scale: float = 1000.0  # t in [0, 1] is embedded as t * timestep_scale (so is the noise level)
    fps_conditioning: bool = False  # embed Cond.fps
    pooled_text: bool = True  # add a projection of the mean text token (null token included) to the embedding
    # embed Cond.noise_aug_level: the noise added to the conditioning input (Cond.lowres, or Cond.image_latent)
    noise_aug_conditioning: bool = False

    @classmethod
    def from_config(cls, config: Any) -> ConditioningConfig:
        """The conditioning settings of a backbone config that declares the same field names."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    @property
    def extra_channels(self) -> int:
        """Input channels added to x by `concat_conditioning`: the low-res input's, the image's and its mask."""
        return self.lowres_channels + (self.image_channels + 1 if self.image_channels else 0)


class Embedded(NamedTuple):
    """`ConditioningEmbedding`'s output: emb [B, emb_dim] for every block, and the text context
    [B, 1 + L, text_dim] with its key mask [B, 1 + L] (the learned null token first, always attended)."""

    emb: Tensor
    context: Tensor
    context_mask: Tensor


# Modules that were attributes of FactorizedUNet before they moved into ConditioningEmbedding.
LEGACY_KEYS = ("null_text", "time_embed", "fps_embed", "noise_aug_embed", "pooled_text_embed")


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over the tokens [B, L, D] where mask [B, L] is True (every row keeps at least one)."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1)


class ConditioningEmbedding(nn.Module):
    """(t [B] or scalar, cond) -> Embedded(emb, context, context_mask), the same for every backbone.

    emb = time_embed(t) [+ fps_embed(cond.fps)] [+ noise_aug_embed(cond.noise_aug_level)]
    [+ pooled_text_embed(mean of the context under its mask)]. A dropped caption (all-False mask row)
    leaves only the learned null token in the context.
    """

    def __init__(self, config: ConditioningConfig, emb_dim: int):
        super().__init__()
        self.config = config
        self.emb_dim = emb_dim
        # Creation order fixes the initial weights drawn from a seed: keep it.
        self.time_embed = ScalarEmbedding(emb_dim, scale=config.timestep_scale)
        # Extra conditioning embeddings start at zero so they can be added to a trained model.
        self.fps_embed = ScalarEmbedding(emb_dim, zero_init=True) if config.fps_conditioning else None
        self.noise_aug_embed = (
            ScalarEmbedding(emb_dim, scale=config.timestep_scale, zero_init=True)
            if config.noise_aug_conditioning
            else None
        )
        self.null_text = nn.Parameter(torch.randn(1, 1, config.text_dim))
        self.pooled_text_embed = (
            nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, emb_dim))
            if config.pooled_text
            else None
        )

    def check(self, cond: Cond, batch: int, frames: int, who: str) -> None:
        """Raise VidiffError if `cond` does not fit a batch of `batch` clips of `frames` latent frames."""
        if cond.batch_size != batch:
            raise VidiffError(f"cond has batch size {cond.batch_size} but x has {batch}")
        if cond.text.shape[-1] != self.config.text_dim:
            raise VidiffError(
                f"text features have dim {cond.text.shape[-1]} but the {who} was built for "
                f"text_dim={self.config.text_dim}; use the matching text encoder or set text_dim"
            )
        if cond.frame_mask is not None and cond.frame_mask.shape[1] != frames:
            raise VidiffError(f"cond.frame_mask has {cond.frame_mask.shape[1]} frames but x has {frames}")

    def forward(self, t: Tensor, cond: Cond, dtype: torch.dtype = torch.float32) -> Embedded:
        b = cond.batch_size
        context, context_mask = self.context(cond, dtype)
        emb = self.time_embed(t.reshape(-1).expand(b))
        if self.fps_embed is not None and cond.fps is not None:
            emb = emb + self.fps_embed(cond.fps)
        if self.noise_aug_embed is not None and cond.noise_aug_level is not None:
            emb = emb + self.noise_aug_embed(cond.noise_aug_level)
        emb = emb.to(dtype)
        if self.pooled_text_embed is not None:
            emb = emb + self.pooled_text_embed(masked_mean(context, context_mask)).to(dtype)
        return Embedded(emb, context, context_mask)

    def context(self, cond: Cond, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The null token prepended to cond.text, and the mask that always keeps it."""
        b = cond.batch_size
        null = self.null_text.to(dtype).expand(b, -1, -1)
        context = torch.cat([null, cond.text.to(dtype)], dim=1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=cond.text_mask.device)
        return context, torch.cat([ones, cond.text_mask], dim=1)


def rename_legacy_keys(state_dict: dict[str, Tensor], prefix: str, into: str = "conditioning") -> None:
    """Rename, in place, a backbone's pre-ConditioningEmbedding keys under `prefix` (e.g. `time_embed.*`,
    `null_text`) to their place in its `into` submodule (`conditioning.time_embed.*`, ...)."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest.split(".", 1)[0] in LEGACY_KEYS:
            state_dict[f"{prefix}{into}.{rest}"] = state_dict.pop(key)


def resize_latent_video(video: Tensor, frames: int, height: int, width: int) -> Tensor:
    """Resample a latent video [B, C, T', h, w] of the causal VAE onto a [B, C, frames, height, width] grid.

    The causal VAE's latent frame 0 encodes the first video frame alone, and each latent frame 1..
    encodes the next group of `temporal_compression` frames. So frame 0 is resized on its own (in
    space only), and the group frames 1.. among themselves (trilinear in time and space); frame 0 is
    never blended into the groups, and output frame 0 depends only on input frame 0. A one-frame
    input (T' = 1, an image) fills the group frames by repeating its resized frame 0. Both videos
    must come from the same VAE (same temporal_compression), so a group frame spans the same number
    of video frames at either rate. A video already on the grid is returned unchanged.
    """
    if tuple(video.shape[2:]) == (frames, height, width):
        return video
    first = F.interpolate(video[:, :, 0], size=(height, width), mode="bilinear", align_corners=False)
    first = first.unsqueeze(2)
    if frames == 1:
        return first
    if video.shape[2] == 1:
        groups = first.expand(-1, -1, frames - 1, -1, -1)
    else:
        groups = F.interpolate(
            video[:, :, 1:], size=(frames - 1, height, width), mode="trilinear", align_corners=False
        )
    return torch.cat([first, groups], dim=2)


def concat_conditioning(x: Tensor, cond: Cond, config: ConditioningConfig, who: str = "denoiser") -> Tensor:
    """x [B, C, T, H, W] with cond.lowres, then cond.image_latent and its mask appended as channels, as `config` asks.

    cond.lowres [B, lowres_channels, T', h, w] is brought onto x's grid by `resize_latent_video`.
    cond.image_latent [B, image_channels, 1, H, W], the video's first frame, is repeated on every frame (as SVD and
    DynamiCrafter give it), followed by a mask channel that is 1 on the conditioning frame (frame 0) of the rows that
    have an image: a row whose image latent is all zeros (dropped in training, the image-free branch of guidance) has
    no conditioning frame. A field the batch does not have gives zeros. Returns x itself when the config asks for
    neither.
    """
    b, _, frames, height, width = x.shape
    parts = [x]
    if config.lowres_channels:
        lr = cond.lowres
        if lr is None:
            lr = x.new_zeros(b, config.lowres_channels, frames, height, width)
        elif lr.shape[1] != config.lowres_channels:
            raise VidiffError(
                f"cond.lowres has shape {tuple(lr.shape)}; the {who} expects [B, {config.lowres_channels}, T', h, w] "
                f"(lowres_channels={config.lowres_channels}): pass latents of the low-res stage's VAE"
            )
        else:
            lr = resize_latent_video(lr.to(x.dtype), frames, height, width)
        parts.append(lr.to(x.dtype))
    if config.image_channels:
        parts.extend(image_inputs(x, cond.image_latent, config.image_channels, who))
    return torch.cat(parts, dim=1) if len(parts) > 1 else x


def image_inputs(x: Tensor, image: Tensor | None, channels: int, who: str) -> tuple[Tensor, Tensor]:
    """The image latent [B, channels, 1, H, W] repeated on x's frames and its mask [B, 1, T, H, W], as
    `concat_conditioning` appends them; zeros for both when `image` is None."""
    b, _, frames, height, width = x.shape
    if image is None:
        return x.new_zeros(b, channels, frames, height, width), x.new_zeros(b, 1, frames, height, width)
    if image.shape[1] != channels or image.shape[3:] != x.shape[3:]:
        raise VidiffError(
            f"cond.image_latent has shape {tuple(image.shape)}; the {who} expects [B, {channels}, 1, {height}, "
            f"{width}] (image_channels={channels}, the latent grid of x): encode the image with the stage's VAE at "
            "the stage's size"
        )
    image = image.to(x.dtype)
    has_image = image.flatten(1).ne(0).any(1).to(x.dtype)  # [B]
    mask = x.new_zeros(b, 1, frames, height, width)
    mask[:, :, 0] = has_image[:, None, None, None]
    return image.expand(-1, -1, frames, -1, -1), mask


@torch.no_grad()
def zero_conditioning_channels_(weight: Tensor, in_channels: int) -> Tensor:
    """Zero the input-channel slice [:, in_channels:] of an input projection's weight (dim 1 = input
    channels, as in nn.Conv2d/Conv3d), so the concatenated conditioning channels start ignored and
    a model without them loads into one with them without changing its output."""
    weight[:, in_channels:].zero_()
    return weight
