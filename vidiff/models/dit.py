"""VideoDiT: a text-conditioned video diffusion transformer (Latte / STDiT style, factorized).

Latents are cut into patches (`patch_size` t x h x w, default 1 x 2 x 2) and embedded as tokens. Each
block runs spatial self-attention over the tokens of a frame, temporal self-attention across frames
at each spatial position, cross-attention to the text tokens, and an MLP; the spatial attention, the
temporal attention and the MLP are modulated by adaLN-Zero (shift, scale and gate from the shared
conditioning embedding), q and k are RMS-normalised per head, and positions are rotary: 2D (rows,
columns) in space, 1D in time, so neither the clip length nor the resolution is baked into the weights.
With `temporal_span="clip"` the temporal attention sees every token of the clip instead (3D rotary
positions): full spatio-temporal attention beside the per-frame spatial attention.
The temporal attention's gate starts at zero and is skipped for T == 1, so at initialisation a clip is
processed exactly as its frames one by one, and an image model (temporal_attention=False) loads into
the video model with only temporal keys missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vidiff.errors import VidiffError
from vidiff.models.backbone import Backbone
from vidiff.models.cond import Cond
from vidiff.models.conditioning import (
    ConditioningConfig,
    ConditioningEmbedding,
    concat_conditioning,
    zero_conditioning_channels_,
)
from vidiff.models.layers import MLP, Attention, RotaryEmbedding, zero_

TEMPORAL_SPANS = ("position", "clip")


@dataclass
class DiTConfig(ConditioningConfig):
    """Shape of a VideoDiT. Defaults are a toy CPU size; see `gpu_dit_config()` for a real one.

    The conditioning fields (text_dim, lowres_channels, image_channels, timestep_scale,
    fps_conditioning, pooled_text, noise_aug_conditioning) are inherited from ConditioningConfig
    (vidiff.models.conditioning), as in UNetConfig; `.conditioning` gathers them.
    temporal_attention=False gives the image model: its weights load into a video model with
    `load_state_dict(sd, strict=False)` (only temporal keys missing), whose temporal layers then start
    as identity. A latent's T, H and W must be multiples of patch_size; so an image (T = 1) needs a
    temporal patch of 1, the default.
    """

    in_channels: int = 4  # latent channels of x_t
    out_channels: int | None = None  # None: in_channels
    patch_size: tuple[int, int, int] = (1, 2, 2)  # latent frames x rows x columns per token
    hidden_size: int = 96  # token width
    depth: int = 4  # transformer blocks
    num_heads: int = (
        4  # attention heads; must divide hidden_size, and hidden_size / num_heads be a multiple of 4
    )
    mlp_ratio: float = 4.0  # MLP hidden width / hidden_size
    qk_norm: bool = True  # RMSNorm on each head's q and k in every attention
    rope_base: float = 10000.0  # frequency base of the rotary positions (space and time)
    temporal_attention: bool = True  # attention across frames in every block; False: the image model
    # what the temporal attention sees: "position", the frames at the token's own spatial position (Latte,
    # STDiT); "clip", every token of the clip, with 3D rotary positions (full spatio-temporal attention, as
    # CogVideoX or Wan, here beside the per-frame spatial attention). Either starts as the identity.
    temporal_span: str = "position"
    gradient_checkpointing: bool = (
        False  # recompute activations in the backward pass: less memory, more compute
    )

    def __post_init__(self):
        patch = tuple(self.patch_size)
        if len(patch) != 3 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch):
            raise ValueError(f"patch_size must be three positive integers (t, h, w), got {list(patch)}")
        self.patch_size = patch
        for name in ("in_channels", "hidden_size", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.out_channels is not None and self.out_channels < 1:
            raise ValueError(
                f"out_channels must be a positive integer (or null for in_channels), got {self.out_channels}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads {self.num_heads} does not divide hidden_size {self.hidden_size}; "
                "use a hidden_size that is a multiple of num_heads"
            )
        if self.head_dim % 4:
            raise ValueError(
                f"head width hidden_size / num_heads = {self.hidden_size} / {self.num_heads} = {self.head_dim} "
                "is not a multiple of 4, which the 2D rotary positions need (a sin/cos pair per row and column)"
            )
        if self.temporal_span not in TEMPORAL_SPANS:
            raise ValueError(f"temporal_span must be one of {list(TEMPORAL_SPANS)}, got {self.temporal_span!r}")
        if self.temporal_span == "clip" and self.head_dim % 6:
            raise ValueError(
                f"head width {self.head_dim} is not a multiple of 6, which temporal_span 'clip' needs for its 3D "
                "rotary positions (a sin/cos pair per frame, row and column); change hidden_size or num_heads"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def conditioning(self) -> ConditioningConfig:
        return ConditioningConfig.from_config(self)


def gpu_dit_config(**overrides) -> DiTConfig:
    """A real-size VideoDiT (0.92B parameters) for 16-channel latents and OpenCLIP ViT-H-14 text (1024-d)."""
    base = dict(
        in_channels=16,
        patch_size=(1, 2, 2),
        hidden_size=1152,
        depth=24,
        num_heads=16,
        text_dim=1024,
        fps_conditioning=True,
    )
    base.update(overrides)
    return DiTConfig(**base)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, x, 1 + scale)


class TemporalBlock(nn.Module):
    """x + gate * attn_t(modulate(norm(x))): attention across frames, either at each spatial position with
    1D rotary positions (span "position") or over the whole clip with 3D rotary positions (span "clip");
    the adaLN modulation starts at zero, so the gate does and the block is the identity.

    `frame_mask` [B, T] (True = real frame) keeps padded frames out of the keys.
    """

    def __init__(self, dim: int, head_dim: int, qk_norm: bool, span: str = "position"):
        super().__init__()
        self.span = span
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, head_dim, qk_norm=qk_norm)
        self.modulation = zero_(nn.Linear(dim, 3 * dim))

    def forward(
        self, x: Tensor, emb: Tensor, rope: tuple[Tensor, Tensor], frame_mask: Tensor | None
    ) -> Tensor:
        b, t, s, d = x.shape
        shift, scale, gate = self.modulation(emb)[:, None, None].chunk(3, dim=-1)
        if self.span == "clip":
            mask = None if frame_mask is None else frame_mask.repeat_interleave(s, dim=1)
            h = modulate(self.norm(x), shift, scale).view(b, t * s, d)
            h = self.attn(h, key_mask=mask, rope=rope).view(b, t, s, d)
        else:
            # position-major: the norm gathers x [b, t, s, d] into [b, s, t, d] (its one copy), the attention runs
            # on the (b s) sequences of t frames, and the residual add writes back in x's layout
            mask = None if frame_mask is None else frame_mask.repeat_interleave(s, dim=0)
            h = modulate(self.norm(x.transpose(1, 2)), shift, scale).view(b * s, t, d)
            h = self.attn(h, key_mask=mask, rope=rope).view(b, s, t, d).transpose(1, 2)
        return torch.addcmul(x, gate, h)


class DiTBlock(nn.Module):
    """One block on tokens [B, T, S, D] (S = tokens per frame): spatial self-attention (2D rotary),
    temporal self-attention (1D rotary; skipped when T == 1), text cross-attention, MLP.

    `emb` is SiLU of the conditioning embedding [B, D]; it gives the adaLN-Zero shift, scale and gate
    of the spatial attention and the MLP (and of the temporal attention, in its own module).
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, hd, qk_norm=config.qk_norm)
        self.temporal = (
            TemporalBlock(d, hd, config.qk_norm, config.temporal_span) if config.temporal_attention else None
        )
        self.norm_cross = nn.LayerNorm(d, eps=1e-6)
        self.cross = Attention(d, hd, context_dim=config.text_dim, qk_norm=config.qk_norm)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(d, config.mlp_ratio)
        self.modulation = nn.Linear(d, 6 * d)

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        context: Tensor,
        context_mask: Tensor,
        rope_space: tuple[Tensor, Tensor],
        rope_time: tuple[Tensor, Tensor] | None,
        frame_mask: Tensor | None,
    ) -> Tensor:
        b, t, s, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(emb)[:, None, None].chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1).view(b * t, s, d)
        x = torch.addcmul(x, gate1, self.attn(h, rope=rope_space).view(b, t, s, d))
        if self.temporal is not None and t > 1:
            x = self.temporal(x, emb, rope_time, frame_mask)
        # every query attends to the text on its own: all T * S tokens of a clip in one call
        h = self.cross(self.norm_cross(x).view(b, t * s, d), context, context_mask)
        x = x + h.view(b, t, s, d)
        h = self.mlp(modulate(self.norm2(x), shift2, scale2))
        return torch.addcmul(x, gate2, h)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear map of each token to its patch of output channels;
    all zero-initialised, so the model's first prediction is 0 (as DiT's)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = zero_(nn.Linear(dim, 2 * dim))
        self.linear = zero_(nn.Linear(dim, out_dim))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        shift, scale = self.modulation(emb)[:, None, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class VideoDiT(Backbone):
    """denoiser(x_t [B, C, T, H, W], t [B], cond: Cond) -> prediction [B, C_out, T, H, W].

    T, H and W must be multiples of `patch_size`. Text enters by cross-attention to cond.text under
    cond.text_mask plus one learned null token (the whole context of a dropped caption); the timestep,
    pooled text, fps and noise-level embedding, the text context and the concatenated low-res / image
    channels come from the shared conditioning module (vidiff.models.conditioning), as in FactorizedUNet.
    """

    config_class = DiTConfig
    model_kind = "dit"
    written_by = "VideoDiT.save_pretrained"

    def __init__(self, config: DiTConfig | None = None):
        super().__init__()
        self.config = cfg = config or DiTConfig()
        self.gradient_checkpointing = cfg.gradient_checkpointing
        d = cfg.hidden_size
        self.conditioning = ConditioningEmbedding(cfg.conditioning, d)
        patch = math.prod(cfg.patch_size)
        # A linear map of each flattened patch (channels outermost), i.e. a Conv3d with kernel = stride = patch.
        self.patch_embed = nn.Linear((cfg.in_channels + cfg.conditioning.extra_channels) * patch, d)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final = FinalLayer(d, patch * (cfg.out_channels or cfg.in_channels))
        self.rope_space = RotaryEmbedding(cfg.head_dim, base=cfg.rope_base, axes=2)
        # the temporal attention's positions: frames (span "position") or frames, rows and columns ("clip")
        self.rope_time = RotaryEmbedding(cfg.head_dim, base=cfg.rope_base, axes=3 if cfg.temporal_span == "clip" else 1)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # DiT's initialisation: Xavier-uniform linear layers with zero biases in the patch embedding and
        # the blocks, then adaLN-Zero: every modulation (so every gate) and the output layer start at 0.
        for module in [self.patch_embed, *self.blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        patch = math.prod(self.config.patch_size)
        zero_conditioning_channels_(self.patch_embed.weight, self.config.in_channels * patch)
        for blk in self.blocks:
            zero_(blk.modulation)
            if blk.temporal is not None:
                zero_(blk.temporal.modulation)
        zero_(self.final)

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, t: Tensor, cond: Cond) -> Tensor:
        self._check(x, t, cond)
        cfg = self.config
        pt, ph, pw = cfg.patch_size
        _, _, frames, height, width = x.shape
        gt, gh, gw = frames // pt, height // ph, width // pw
        emb, context, context_mask = self.conditioning(t, cond, x.dtype)
        emb = F.silu(emb)  # what every modulation reads
        frame_mask = self._token_frame_mask(cond.frame_mask)

        h = concat_conditioning(x, cond, self.conditioning.config, "VideoDiT")
        tokens = rearrange(h, "b c (t pt) (h ph) (w pw) -> b t (h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)
        tokens = self.patch_embed(tokens)
        rope_space = self.rope_space((gh, gw), device=x.device, dtype=x.dtype)
        rope_time = None
        if gt > 1 and cfg.temporal_attention:
            size = (gt, gh, gw) if cfg.temporal_span == "clip" else gt
            rope_time = self.rope_time(size, device=x.device, dtype=x.dtype)
        for blk in self.blocks:
            tokens = self._block(blk, tokens, emb, context, context_mask, rope_space, rope_time, frame_mask)
        out = self.final(tokens, emb)
        return rearrange(out, "b t (h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", h=gh, pt=pt, ph=ph, pw=pw)

    def _token_frame_mask(self, frame_mask: Tensor | None) -> Tensor | None:
        """cond.frame_mask [B, T] as a mask of token frames [B, T / pt] (None when every frame is real)."""
        if frame_mask is None or frame_mask.all():
            return None  # the common case: no masking work at all
        pt = self.config.patch_size[0]
        if pt == 1:
            return frame_mask
        groups = rearrange(frame_mask, "b (t pt) -> b t pt", pt=pt)
        if (groups != groups[..., :1]).any():
            raise VidiffError(
                f"cond.frame_mask marks real and padded frames inside one temporal patch of {pt} frames "
                f"(patch_size {list(self.config.patch_size)}); pad clips by whole patches"
            )
        return groups[..., 0]

    def _check(self, x: Tensor, t: Tensor, cond: Cond) -> None:
        cfg = self.config
        if x.dim() != 5:
            raise VidiffError(f"VideoDiT input must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        b, c, frames, height, width = x.shape
        if c != cfg.in_channels:
            raise VidiffError(
                f"VideoDiT expects {cfg.in_channels} input channels, got {c} (shape {tuple(x.shape)})"
            )
        pt, ph, pw = cfg.patch_size
        if frames % pt or height % ph or width % pw:
            hint = " (an image, T = 1, needs a temporal patch of 1)" if frames == 1 else ""
            raise VidiffError(
                f"VideoDiT latent size T x H x W = {frames} x {height} x {width} is not a multiple of the "
                f"patch size t x h x w = {pt} x {ph} x {pw} (patch_size {list(cfg.patch_size)}){hint}; "
                "crop or pad the latents to a multiple, or change patch_size"
            )
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, b)):
            raise VidiffError(f"timesteps must be a scalar or [B] = [{b}], got shape {tuple(t.shape)}")
        self.conditioning.check(cond, b, frames, "VideoDiT")
