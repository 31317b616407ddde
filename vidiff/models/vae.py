"""CausalVAE3D: a KL video autoencoder with causal 3D convs, chunked (exact) and tiled encode/decode.

The first frame is encoded on its own, so `1 + t*k` frames give `1 + k` latent frames and an image
(T == 1) gives one latent frame: images and videos share one latent space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from vidiff.errors import ConfigError, VidiffError
from vidiff.models.causal_conv import CausalConv3d, streaming
from vidiff.models.pretrained import PretrainedMixin, tensors_hash
from vidiff.models.vae_blocks import CausalDownsample, CausalResBlock, CausalUpsample, match_channels


@dataclass
class VAEConfig:
    in_channels: int = 3  # video channels (RGB)
    latent_channels: int = 16  # a diffusion stage's latent_channels must match
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)  # level widths; a resampling between levels
    layers_per_block: int = 2  # encoder CausalResBlocks per level
    decoder_layers_per_block: int | None = None  # None: same as layers_per_block
    mid_layers: int = 2  # CausalResBlocks at the bottleneck
    temporal_compression: int = 4  # c: 1 + c*k frames encode to 1 + k latent frames (a power of two)
    spatial_compression: int = 8  # H and W over the latent's (power of two, a multiple of patch_size)
    # Space-to-depth before the first conv (LTX-Video style); cuts full-resolution compute by patch_size**2.
    patch_size: int = 1
    # CausalResBlocks of the first N levels (the highest resolutions) convolve in space only; time is still mixed by
    # the causal resampling convs and the deeper levels. Cuts full-resolution compute ~3x.
    spatial_only_levels: int = 0
    # what pads the past before the first frame: copies of it ("replicate"; an image and a still video then
    # share latents) or "zeros"
    causal_padding: Literal["replicate", "zeros"] = "replicate"
    # Parameter-free residual paths around every resampler and the latent bottleneck (DC-AE style): space/time
    # folded into channels and averaged on the way down, repeated and unfolded on the way up. The network then
    # learns a correction to a fixed average-pool autoencoder.
    shortcuts: bool = True
    # Latent normalisation for diffusion: z_diff = (z - latent_mean) / latent_std, per channel (set after
    # training). One value serves every channel. Per channel matters: a few channels (the shortcut's colour
    # averages) carry most of the variance, and one shared scale would leave the others, which hold shape
    # and motion, drowned by diffusion noise at a fraction of the noise level.
    latent_mean: list[float] = field(default_factory=lambda: [0.0])
    latent_std: list[float] = field(default_factory=lambda: [1.0])  # see latent_mean
    # Memory bounds, on by default; they switch on only above these sizes.
    tiling: bool = True  # encode/decode frames larger than tile_sample_size in overlapping tiles
    tile_sample_size: int = 256  # pixels; frames larger than this in H or W are tiled
    tile_overlap: int = 64  # pixels of overlap between neighbouring tiles, cross-faded
    chunking: bool = True  # encode/decode long videos chunk_latent_frames at a time, with a causal cache
    chunk_latent_frames: int = 2  # latent frames per temporal chunk

    def __post_init__(self):
        self.latent_mean = _per_channel(self.latent_mean)
        self.latent_std = _per_channel(self.latent_std)
        for name in ("latent_mean", "latent_std"):
            if len(getattr(self, name)) not in (1, self.latent_channels):
                raise ConfigError(
                    f"vae.{name} has {len(getattr(self, name))} values; give one, or one per latent channel "
                    f"({self.latent_channels})"
                )
        if min(self.latent_std) <= 0:
            raise ConfigError(f"vae.latent_std must be positive, got {self.latent_std}")
        if not self.block_out_channels or min(self.layers_per_block, self.dec_layers, self.mid_layers) < 0:
            raise ConfigError("vae: block_out_channels must be non-empty and layer counts >= 0")
        n_trans = len(self.block_out_channels) - 1
        for name in ("temporal_compression", "spatial_compression", "patch_size"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ConfigError(f"vae.{name} must be a power of two, got {v}")
        if self.spatial_compression % self.patch_size:
            raise ConfigError(
                f"vae.spatial_compression ({self.spatial_compression}) must be a multiple of patch_size ({self.patch_size})"
            )
        if max(self.n_spatial_down, self.n_temporal_down) > n_trans:
            raise ConfigError(
                f"vae: {len(self.block_out_channels)} blocks allow {n_trans} downsampling steps, but "
                f"spatial_compression/patch_size needs {self.n_spatial_down} and temporal_compression needs "
                f"{self.n_temporal_down}; add entries to block_out_channels or lower the compression"
            )
        if self.tile_sample_size % self.spatial_compression or self.tile_overlap % self.spatial_compression:
            raise ConfigError(
                f"vae.tile_sample_size ({self.tile_sample_size}) and vae.tile_overlap ({self.tile_overlap}) must be "
                f"multiples of spatial_compression ({self.spatial_compression})"
            )
        if not 0 <= self.tile_overlap < self.tile_sample_size:
            raise ConfigError("vae.tile_overlap must be >= 0 and smaller than vae.tile_sample_size")
        if self.chunk_latent_frames < 1:
            raise ConfigError("vae.chunk_latent_frames must be >= 1")

    @property
    def n_spatial_down(self) -> int:
        return int(math.log2(self.spatial_compression // self.patch_size))

    @property
    def n_temporal_down(self) -> int:
        return int(math.log2(self.temporal_compression))

    @property
    def dec_layers(self) -> int:
        return (
            self.layers_per_block if self.decoder_layers_per_block is None else self.decoder_layers_per_block
        )


def _level_kt(cfg: VAEConfig, level: int) -> int:
    return 1 if level < cfg.spatial_only_levels else 3


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, pad, p = cfg.block_out_channels, cfg.causal_padding, cfg.patch_size
        self.patch = p
        self.conv_in = CausalConv3d(cfg.in_channels * p * p, ch[0], 3, padding=pad)
        blocks: list[nn.Module] = []
        for i, c in enumerate(ch):
            blocks += [CausalResBlock(c, pad, _level_kt(cfg, i)) for _ in range(cfg.layers_per_block)]
            if i < len(ch) - 1:
                blocks.append(
                    CausalDownsample(
                        c, ch[i + 1], i < cfg.n_spatial_down, i < cfg.n_temporal_down, pad, cfg.shortcuts
                    )
                )
        blocks += [CausalResBlock(ch[-1], pad) for _ in range(cfg.mid_layers)]
        self.blocks = nn.Sequential(*blocks)
        # No norm + activation before conv_out (unlike SD's VAE): on the toy world it slowed training ~2x.
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, 3, padding=pad)
        with torch.no_grad():  # start with a small posterior std, so early samples are not pure noise
            self.conv_out.conv.bias[cfg.latent_channels :].fill_(-6.0)
        self.latent_channels, self.shortcut = cfg.latent_channels, cfg.shortcuts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=self.patch, q=self.patch)
        h = self.blocks(self.conv_in(x))
        moments = self.conv_out(h)
        mean_shortcut = match_channels(h, self.latent_channels) if self.shortcut else None
        if mean_shortcut is None:
            return moments
        mean, logvar = moments.chunk(2, dim=1)
        return torch.cat([mean + mean_shortcut, logvar], dim=1)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, pad, p = cfg.block_out_channels, cfg.causal_padding, cfg.patch_size
        self.patch = p
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[-1], 3, padding=pad)
        blocks: list[nn.Module] = [CausalResBlock(ch[-1], pad) for _ in range(cfg.mid_layers)]
        for i in reversed(range(len(ch))):
            blocks += [CausalResBlock(ch[i], pad, _level_kt(cfg, i)) for _ in range(cfg.dec_layers)]
            if i > 0:
                blocks.append(
                    CausalUpsample(
                        ch[i],
                        ch[i - 1],
                        i - 1 < cfg.n_spatial_down,
                        i - 1 < cfg.n_temporal_down,
                        pad,
                        cfg.shortcuts,
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.conv_out = CausalConv3d(ch[0], cfg.in_channels * p * p, 3, padding=pad)
        self.width, self.shortcut = ch[-1], cfg.shortcuts

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        z_shortcut = match_channels(z, self.width) if self.shortcut else None
        x = self.conv_out(self.blocks(h if z_shortcut is None else h + z_shortcut))
        return rearrange(x, "b (c p q) t h w -> b c t (h p) (w q)", p=self.patch, q=self.patch)


class LatentDistribution:
    """Diagonal Gaussian posterior over latents [B, C, T, H, W]."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over latent elements, one value per batch item."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3, 4))


def _ramp(n: int, overlap: int, start: bool, end: bool) -> torch.Tensor:
    """Blend weights along one axis of a tile: 1 inside, 0 for the overlap/4 pixels next to a shared edge
    (where zero padding corrupts the tile most), linear over the middle half of the overlap."""
    w = torch.ones(n)
    if overlap > 0:
        d = torch.arange(n, dtype=torch.float32) + 0.5
        ramp = lambda dist: ((dist - overlap / 4) / (overlap / 2)).clamp(0.0, 1.0)
        if start:
            w = torch.minimum(w, ramp(d))
        if end:
            w = torch.minimum(w, ramp(d.flip(0)))
    return w


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap)) + [size - tile]
    return sorted(set(starts))


def tiled_apply(
    fn, x: torch.Tensor, tile: int, overlap: int, scale: float, out_channels: int
) -> torch.Tensor:
    """Run `fn` on overlapping spatial tiles of x and blend the results with linear ramps.

    `tile` and `overlap` are in x's pixels; `scale` maps x's pixels to the output's (8 for a decoder).
    """
    b, _, _, h, w = x.shape
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    out = wsum = None
    ov = round(overlap * scale)
    for y0 in ys:
        for x0 in xs:
            y = fn(x[:, :, :, y0 : y0 + tile, x0 : x0 + tile])
            if out is None:
                t_out = y.shape[2]
                out = y.new_zeros(b, out_channels, t_out, round(h * scale), round(w * scale))
                wsum = y.new_zeros(out.shape[-2:])
            oy, ox = round(y0 * scale), round(x0 * scale)
            th, tw = y.shape[-2:]
            wy = _ramp(th, ov, oy > 0, oy + th < out.shape[-2]).to(y)
            wx = _ramp(tw, ov, ox > 0, ox + tw < out.shape[-1]).to(y)
            wt = wy[:, None] * wx[None, :]
            out[..., oy : oy + th, ox : ox + tw] += y * wt
            wsum[oy : oy + th, ox : ox + tw] += wt
            del y
    return out.div_(wsum)


def _fill_along_time(chunks, frames: int) -> torch.Tensor:
    """Write chunk outputs [B, C, t_i, H, W] one after another into one preallocated [B, C, frames, H, W] tensor:
    no list of chunk outputs and no concatenated copy, so peak memory holds one output plus one chunk's work."""
    out, pos = None, 0
    for y in chunks:
        if out is None:
            out = y.new_empty(*y.shape[:2], frames, *y.shape[3:])
        out[:, :, pos : pos + y.shape[2]] = y
        pos += y.shape[2]
        del y
    assert out is not None and pos == frames, (pos, frames)
    return out


class CausalVAE3D(PretrainedMixin, nn.Module):
    """Causal 3D KL-VAE. Video [B, C, T, H, W] in [-1, 1] <-> latents [B, latent, 1 + (T-1)/t, H/s, W/s]."""

    config_class = VAEConfig
    model_kind = "vae"
    written_by = "`vidiff train-vae`"

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.use_tiling = self.config.tiling
        self.use_chunking = self.config.chunking
        self.tile_sample_size = self.config.tile_sample_size
        self.tile_overlap = self.config.tile_overlap
        self.chunk_latent_frames = self.config.chunk_latent_frames

    def fingerprint(self) -> str:
        """A short hash of the weights and the latent normalisation: what the latents a diffusion stage learns
        depend on. A stage records the hash of the VAE it was trained on (StageConfig.vae_hash)."""
        return tensors_hash(self.state_dict(), self.config.latent_mean, self.config.latent_std)

    # ---- switches (diffusers style) ----
    def enable_tiling(self, tile_sample_size: int | None = None, tile_overlap: int | None = None) -> None:
        s = self.config.spatial_compression
        size = tile_sample_size or self.tile_sample_size
        overlap = self.tile_overlap if tile_overlap is None else tile_overlap
        if size % s or overlap % s or not 0 <= overlap < size:
            raise VidiffError(
                f"tile size {size} and overlap {overlap} must be multiples of {s} with 0 <= overlap < size"
            )
        self.use_tiling, self.tile_sample_size, self.tile_overlap = True, size, overlap

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def enable_chunking(self, chunk_latent_frames: int | None = None) -> None:
        if chunk_latent_frames is not None and chunk_latent_frames < 1:
            raise VidiffError(f"chunk_latent_frames must be >= 1, got {chunk_latent_frames}")
        self.use_chunking = True
        self.chunk_latent_frames = chunk_latent_frames or self.chunk_latent_frames

    def disable_chunking(self) -> None:
        self.use_chunking = False

    # ---- shapes ----
    def latent_frames(self, num_frames: int) -> int:
        return 1 + (num_frames - 1) // self.config.temporal_compression

    def sample_frames(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.config.temporal_compression

    def valid_num_frames(self, num_frames: int) -> bool:
        return num_frames >= 1 and (num_frames - 1) % self.config.temporal_compression == 0

    def latent_shape(self, video_shape) -> tuple[int, ...]:
        b, _, t, h, w = video_shape
        s = self.config.spatial_compression
        return (b, self.config.latent_channels, self.latent_frames(t), h // s, w // s)

    # ---- public API ----
    def encode(self, x: torch.Tensor) -> LatentDistribution:
        """Video [B, C, T, H, W] in [-1, 1] -> posterior over latents. Use `.mode()` or `.sample()`."""
        self._check_video(x)
        return LatentDistribution(self._encode_tiles(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, latent_channels, t, h, w] -> video [B, C, 1 + (t-1)*temporal_compression, h*s, w*s]."""
        self._check_latents(z)
        return self._decode_tiles(z)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator=None):
        dist = self.encode(x)
        z = dist.sample(generator) if sample_posterior else dist.mode()
        return self.decode(z), dist

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents [B, C, T, h, w] -> zero-mean, unit-variance latents per channel, for diffusion."""
        mean, std = self._latent_stats(z)
        return (z - mean) / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(z)
        return z * std + mean

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Video [B, C, T, H, W] in [-1, 1] -> the latents diffusion stages work on: the posterior's mode, normalised."""
        return self.normalize_latents(self.encode(x).mode())

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """A diffusion stage's (normalised) latents -> video [B, C, T, H, W] in [-1, 1]."""
        return self.decode(self.denormalize_latents(z)).clamp(-1, 1)

    def _latent_stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=z.dtype, device=z.device).view(-1, *(1,) * (z.dim() - 2))

        return column(self.config.latent_mean), column(self.config.latent_std)

    # ---- memory-bounded paths ----
    def _encode_tiles(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.use_tiling and max(h, w) > self.tile_sample_size:
            s = self.config.spatial_compression
            return tiled_apply(
                self._encode_chunks,
                x,
                self.tile_sample_size,
                self.tile_overlap,
                1 / s,
                2 * self.config.latent_channels,
            )
        return self._encode_chunks(x)

    def _decode_tiles(self, z: torch.Tensor) -> torch.Tensor:
        s = self.config.spatial_compression
        h, w = z.shape[-2:]
        tile = self.tile_sample_size // s
        if self.use_tiling and max(h, w) > tile:
            return tiled_apply(
                self._decode_chunks, z, tile, self.tile_overlap // s, s, self.config.in_channels
            )
        return self._decode_chunks(z)

    def _encode_chunks(self, x: torch.Tensor) -> torch.Tensor:
        n, tc = self.chunk_latent_frames, self.config.temporal_compression
        if not self.use_chunking or self.latent_frames(x.shape[2]) <= n:
            return self.encoder(x)
        # First chunk 1 + tc*(n-1) frames, then tc*n: every chunk yields exactly n latent frames.
        bounds = [0, 1 + tc * (n - 1)]
        while bounds[-1] < x.shape[2]:
            bounds.append(min(bounds[-1] + tc * n, x.shape[2]))
        with streaming(self.encoder):
            return _fill_along_time(
                (self.encoder(x[:, :, a:b]) for a, b in zip(bounds, bounds[1:], strict=False)),
                self.latent_frames(x.shape[2]),
            )

    def _decode_chunks(self, z: torch.Tensor) -> torch.Tensor:
        n = self.chunk_latent_frames
        if not self.use_chunking or z.shape[2] <= n:
            return self.decoder(z)
        with streaming(self.decoder):
            return _fill_along_time(
                (self.decoder(z[:, :, i : i + n]) for i in range(0, z.shape[2], n)),
                self.sample_frames(z.shape[2]),
            )

    # ---- input checks ----
    def _check_video(self, x) -> None:
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise VidiffError(
                f"VAE input must be a video tensor [B, C, T, H, W], got {shape}; add a batch axis with x[None]"
            )
        _, c, t, h, w = x.shape
        if c != cfg.in_channels:
            raise VidiffError(
                f"VAE input has {c} channels, the model takes {cfg.in_channels} (shape {tuple(x.shape)}, layout [B, C, T, H, W])"
            )
        if not self.valid_num_frames(t):
            tc = cfg.temporal_compression
            lo = 1 + (t - 1) // tc * tc if t > 1 else 1
            raise VidiffError(
                f"VAE input has {t} frames; it takes 1 + {tc}*k frames (e.g. {lo} or {lo + tc}): "
                f"trim or pad the clip to one of those"
            )
        s = cfg.spatial_compression
        if h % s or w % s:
            raise VidiffError(
                f"VAE input is {h}x{w}; height and width must be multiples of {s}: resize or crop to {h // s * s or s}x{w // s * s or s}"
            )
        self._check_finite(x, "video")

    def _check_latents(self, z) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 5:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise VidiffError(f"VAE latents must be a tensor [B, C, T, H, W], got {shape}")
        if z.shape[1] != self.config.latent_channels:
            raise VidiffError(
                f"latents have {z.shape[1]} channels, this VAE's latents have {self.config.latent_channels}"
            )
        self._check_finite(z, "latents")

    @staticmethod
    def _check_finite(x: torch.Tensor, what: str) -> None:
        if x.is_meta:  # shape-only runs (parameter counts, shape checks) have no values
            return
        if not torch.isfinite(x).all():
            n = int((~torch.isfinite(x)).sum())
            raise VidiffError(
                f"VAE {what} contain {n} NaN/inf values; check the data (or the sampler) that produced them"
            )


def count_parameters(config: VAEConfig) -> int:
    """Parameter count without allocating weights (built on the meta device)."""
    with torch.device("meta"):
        model = CausalVAE3D(config)
    return sum(p.numel() for p in model.parameters())


def _per_channel(values) -> list[float]:
    """A scalar (older configs) or a sequence of numbers, as a list of floats."""
    if isinstance(values, (int, float)):
        return [float(values)]
    return [float(v) for v in values]
