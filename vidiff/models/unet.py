"""FactorizedUNet: a text-conditioned video U-Net of per-frame 2D layers plus identity-initialised
temporal layers (1D conv, RoPE attention), so image weights carry over and clip length is free."""

from __future__ import annotations

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
    rename_legacy_keys,
    zero_conditioning_channels_,
)
from vidiff.models.layers import (
    Downsample,
    ResBlock,
    SpatialTransformer,
    TemporalAttention,
    Upsample,
    group_norm,
    to_video_layout,
)


@dataclass
class UNetConfig(ConditioningConfig):
    """Shape of a FactorizedUNet. Defaults are a toy CPU size; see `gpu_unet_config()` for a real one.

    The conditioning fields (text_dim, lowres_channels, image_channels, timestep_scale,
    fps_conditioning, pooled_text, noise_aug_conditioning) are inherited from ConditioningConfig
    (vidiff.models.conditioning), which every backbone config extends; `.conditioning` gathers them.
    temporal_kernel=0 and temporal_attention=False give the pure image model: its weights load into
    a video model with `load_state_dict(sd, strict=False)`, whose temporal layers then start as identity.
    """

    in_channels: int = 4  # latent channels of x_t
    out_channels: int | None = None  # None: in_channels
    model_channels: int = 64  # width of the first level
    channel_mults: tuple[int, ...] = (1, 2)  # level widths / model_channels; each next level halves H and W
    num_res_blocks: int = 2  # ResBlocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (1,)  # levels (indices into channel_mults) with attention blocks
    mid_attention: bool = True  # attention in the middle block
    head_dim: int = 32  # channels per attention head; every attention width must be a multiple
    mlp_ratio: float = 4.0  # feed-forward width / channels in the transformer blocks
    temporal_kernel: int = 3  # kernel of the temporal conv in each ResBlock (odd); 0: none
    temporal_attention: bool = True  # attention across frames (with RoPE) at the attention levels
    norm_groups: int = 32  # GroupNorm groups (fewer in layers whose width they do not divide)
    dropout: float = 0.0  # in the ResBlocks
    rope_base: float = 10000.0  # RoPE frequency base of the temporal attention
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more time

    def __post_init__(self):
        if not self.channel_mults:
            raise ValueError("channel_mults must list at least one level")
        bad = [i for i in self.attention_levels if not 0 <= i < len(self.channel_mults)]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {len(self.channel_mults)} levels")
        last = len(self.channel_mults) - 1
        for level in sorted(set(self.attention_levels) | ({last} if self.mid_attention else set())):
            width = self.model_channels * self.channel_mults[level]
            if width % self.head_dim:
                raise ValueError(
                    f"attention width {width} (level {level}) is not a multiple of head_dim {self.head_dim}"
                )
        if self.temporal_kernel and self.temporal_kernel % 2 != 1:
            raise ValueError(
                f"temporal_kernel must be odd (or 0 for no temporal conv), got {self.temporal_kernel}"
            )

    @property
    def conditioning(self) -> ConditioningConfig:
        return ConditioningConfig.from_config(self)


def gpu_unet_config(**overrides) -> UNetConfig:
    """A ModelScope-like base model (0.88B parameters) for 4-channel latents and OpenCLIP-H text (1024-d)."""
    base = dict(
        model_channels=320,
        channel_mults=(1, 2, 4, 4),
        num_res_blocks=2,
        attention_levels=(0, 1, 2),
        head_dim=64,
        text_dim=1024,
        fps_conditioning=True,
    )
    base.update(overrides)
    return UNetConfig(**base)


def _contiguous_state(module, state_dict, prefix, local_metadata) -> None:
    for key, value in state_dict.items():
        if key.startswith(prefix) and isinstance(value, Tensor) and not value.is_contiguous():
            state_dict[key] = value.contiguous()


def _rename_legacy_keys(module, state_dict, prefix, *args) -> None:
    # Files and Lightning checkpoints from before ConditioningEmbedding have `time_embed.*`,
    # `null_text`, ... at the top level of the U-Net; they now live under `conditioning.`.
    rename_legacy_keys(state_dict, prefix)


class _Step(nn.Module):
    """One U-Net step: a ResBlock, then (at attention levels) spatial+cross attention and temporal
    attention, then an optional resample."""

    def __init__(self, res=None, spatial=None, temporal=None, resample=None):
        super().__init__()
        self.res, self.spatial, self.temporal, self.resample = res, spatial, temporal, resample

    def forward(
        self, x: Tensor, emb: Tensor, context: Tensor, context_mask: Tensor, frame_mask: Tensor | None
    ):
        if self.res is not None:
            x = self.res(x, emb, frame_mask)
        if self.spatial is not None:
            x = self.spatial(x, context, context_mask)
        if self.temporal is not None:
            x = self.temporal(x, frame_mask)
        if self.resample is not None:
            x = self.resample(x)
        return x


class FactorizedUNet(Backbone):
    """denoiser(x_t [B, C, T, H, W], t [B], cond: Cond) -> prediction [B, C_out, T, H, W].

    Temporal layers are zero-initialised residuals and are skipped when T == 1, so at initialisation
    a clip is processed exactly as its frames would be one by one. Text enters by cross-attention to
    cond.text under cond.text_mask plus one learned null token (the whole context of a dropped caption).
    Embeddings, text context and the concatenated low-res / image channels come from the shared
    conditioning module (vidiff.models.conditioning).
    """

    config_class = UNetConfig
    model_kind = "unet"
    written_by = "FactorizedUNet.save_pretrained"

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        self.gradient_checkpointing = cfg.gradient_checkpointing
        ch = cfg.model_channels
        emb_dim = 4 * ch
        self.conditioning = ConditioningEmbedding(cfg.conditioning, emb_dim)

        def step(cin, cout, level, resample=None):
            attn = level in cfg.attention_levels
            return _Step(
                ResBlock(cin, cout, emb_dim, cfg.norm_groups, cfg.dropout, cfg.temporal_kernel),
                SpatialTransformer(cout, cfg.head_dim, cfg.text_dim, cfg.mlp_ratio) if attn else None,
                TemporalAttention(cout, cfg.head_dim, cfg.rope_base)
                if attn and cfg.temporal_attention
                else None,
                resample,
            )

        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.conditioning.extra_channels, ch, 3, padding=1)
        zero_conditioning_channels_(self.conv_in.weight, cfg.in_channels)
        widths = [ch * m for m in cfg.channel_mults]
        skip_widths = [ch]
        self.down = nn.ModuleList()
        cur = ch
        for level, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                self.down.append(step(cur, w, level))
                cur = w
                skip_widths.append(cur)
            if level < len(widths) - 1:
                self.down.append(_Step(resample=Downsample(cur)))
                skip_widths.append(cur)

        mid_level = len(widths) - 1 if cfg.mid_attention else -1
        self.mid = nn.ModuleList(
            [
                step(cur, cur, mid_level),
                _Step(ResBlock(cur, cur, emb_dim, cfg.norm_groups, cfg.dropout, cfg.temporal_kernel)),
            ]
        )

        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            for i in range(cfg.num_res_blocks + 1):
                last = i == cfg.num_res_blocks
                up = Upsample(w) if last and level > 0 else None
                self.up.append(step(cur + skip_widths.pop(), w, level, up))
                cur = w

        self.norm_out = group_norm(cur, cfg.norm_groups)
        self.conv_out = nn.Conv2d(cur, cfg.out_channels or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.downsample_factor = 2 ** (len(widths) - 1)
        # Conv weights in the activations' channels-last layout spare oneDNN a weight reorder per
        # call (about 5% of a CPU training step); state_dict() hands out contiguous copies, so
        # safetensors export and other consumers see ordinary tensors.
        self.to(memory_format=torch.channels_last)
        self.register_state_dict_post_hook(_contiguous_state)
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, t: Tensor, cond: Cond) -> Tensor:
        self._check(x, t, cond)
        emb, context, context_mask = self.conditioning(t, cond, x.dtype)
        frame_mask = cond.frame_mask
        if frame_mask is not None and frame_mask.all():
            frame_mask = None  # the common case: no masking work at all

        h = to_video_layout(concat_conditioning(x, cond, self.conditioning.config, "FactorizedUNet"))
        h = self._frames(self.conv_in, h)
        skips = [h]
        for blk in self.down:
            h = self._block(blk, h, emb, context, context_mask, frame_mask)
            skips.append(h)
        for blk in self.mid:
            h = self._block(blk, h, emb, context, context_mask, frame_mask)
        for blk in self.up:
            h = self._block(blk, torch.cat([h, skips.pop()], dim=1), emb, context, context_mask, frame_mask)
        h = self._frames(self.conv_out, F.silu(self._frames(self.norm_out, h)))
        return h

    @staticmethod
    def _frames(layer: nn.Module, x: Tensor) -> Tensor:
        b = x.shape[0]
        y = layer(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)

    def _check(self, x: Tensor, t: Tensor, cond: Cond) -> None:
        cfg = self.config
        if x.dim() != 5:
            raise VidiffError(f"FactorizedUNet input must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        b, c, frames, height, width = x.shape
        if c != cfg.in_channels:
            raise VidiffError(
                f"FactorizedUNet expects {cfg.in_channels} input channels, got {c} (shape {tuple(x.shape)})"
            )
        f = self.downsample_factor
        if height % f or width % f:
            raise VidiffError(
                f"FactorizedUNet input {height}x{width} must be divisible by {f} (one halving per level); "
                "resize or crop to a multiple"
            )
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, b)):
            raise VidiffError(f"timesteps must be a scalar or [B] = [{b}], got shape {tuple(t.shape)}")
        self.conditioning.check(cond, b, frames, "U-Net")
