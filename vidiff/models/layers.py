"""Building blocks shared by the video denoisers: SDPA attention (spatial, temporal, cross), rotary
positions in time or space, scalar (timestep / fps / noise level) embeddings, factorized residual blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vidiff.models.norms import RMSNorm, group_norm

# Activations live as [B, C, T, H, W] in channels_last_3d memory (physically b t h w c), so the
# per-frame image view "(b t) c h w", the token views "(b t) (h w) c" / "b (t h w) c" and the
# temporal-conv view "b c t (h w)" are all free views: no copies between the layers that use them.
VIDEO_FORMAT = torch.channels_last_3d


def to_video_layout(x: Tensor) -> Tensor:
    """Return `x` [B, C, T, H, W] in the memory layout every block here expects (a no-op if it is)."""
    return x.contiguous(memory_format=VIDEO_FORMAT)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a module's parameters so the residual branch it ends starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# ---------------------------------------------------------------------------- embeddings


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[B] float -> [B, dim] sin/cos features at geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ScalarEmbedding(nn.Module):
    """Embed a per-sample scalar (diffusion time, fps, noise-augmentation level): sinusoid -> MLP.

    `scale` maps the scalar's natural range onto the sinusoid's (e.g. t in [0, 1] -> [0, 1000]).
    """

    def __init__(self, out_dim: int, freq_dim: int = 256, scale: float = 1.0, zero_init: bool = False):
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        if zero_init:
            zero_(self.mlp[-1])

    def forward(self, x: Tensor) -> Tensor:
        emb = sinusoidal_embedding(x * self.scale, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding: relative offsets only, so no length or size is baked in.

    `axes=1` (time): `forward(length)` gives tables for positions 0..length-1.
    `axes=2` (space): `forward((h, w))` gives tables for the h*w tokens of a frame in row-major
    order; half of each head's rotary frequency pairs rotate by the row, the other half by the
    column (each half with its own geometric frequencies over head_dim / 2), so q.k depends only on
    the offset in rows and columns.
    `axes=3` (a clip): `forward((t, h, w))`, the t*h*w tokens frame by frame, a third of the pairs per axis.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, axes: int = 1):
        super().__init__()
        if axes not in (1, 2, 3):
            raise ValueError(f"rotary embedding covers 1 (time), 2 (rows, columns) or 3 axes, got {axes}")
        if head_dim % (2 * axes):
            raise ValueError(
                f"rotary embedding over {axes} axes needs a head dim divisible by {2 * axes}, got {head_dim}"
            )
        self.axes = axes
        dim = head_dim // axes  # rotary dims per axis
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, size: int | tuple[int, ...], device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """Tables [L, head_dim] (L = the product of the sizes): cos, and sin with the rotation's sign folded in."""
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,)
        if len(sizes) != self.axes:
            raise ValueError(f"this rotary embedding covers {self.axes} axes; got size {size}")
        device = device or self.inv_freq.device
        inv_freq = self.inv_freq.to(device)
        grids = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float32) for n in sizes), indexing="ij")
        angles = torch.cat([g.reshape(-1, 1) * inv_freq[None] for g in grids], -1)
        cos, sin = angles.cos(), angles.sin()
        return torch.cat([cos, cos], -1).to(dtype), torch.cat([-sin, sin], -1).to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """Rotate `x` [..., L, d] by RotaryEmbedding tables (rotate-half convention: pairs (i, i + d/2))."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([x[..., half:], x[..., :half]], dim=-1) * signed_sin


# ---------------------------------------------------------------------------- attention


class Attention(nn.Module):
    """Multi-head attention on token sequences [N, L, C] with PyTorch SDPA.

    Self-attention when `context_dim` is None (one fused qkv projection), else cross-attention to a
    context [N, S, context_dim] with an optional boolean key mask [N, S] (True = attend).
    `rope` (cos, sin tables from RotaryEmbedding) rotates q and k of self-attention by position.
    `zero_init` zeroes the output projection so a residual branch starts as the identity.
    `qk_norm` adds an RMSNorm over each head's q and over its k (learned scales, applied before the
    rotation), which keeps the attention logits bounded; off by default (no extra parameters).
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 64,
        context_dim: int | None = None,
        zero_init: bool = False,
        qk_norm: bool = False,
    ):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"attention width {dim} is not a multiple of head_dim {head_dim}")
        self.heads = dim // head_dim
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.to_q = nn.Linear(dim, dim)
            self.to_kv = nn.Linear(context_dim, 2 * dim)
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)
        if zero_init:
            zero_(self.to_out)
        self.q_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else None

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        key_mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x [N, L, C] -> [N, L, C].

        q, k and v stay token-major ([N, L, heads, d] views of the projections, handed to SDPA
        transposed), so SDPA writes its output token-major too and neither the head split nor the
        head merge copies.
        """
        if self.is_cross:
            if rope is not None:
                raise ValueError("rotary positions apply to self-attention only")
            q = self.to_q(x).unflatten(-1, (self.heads, -1))
            k, v = self.to_kv(context).unflatten(-1, (2, self.heads, -1)).unbind(-3)
        else:
            q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(-3)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = (r[:, None] for r in rope)  # tables [L, d] onto [N, L, heads, d]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.to_out(out.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    """fc1 -> GELU (tanh) -> fc2."""

    def __init__(self, dim: int, mult: float = 4.0):
        super().__init__()
        inner = int(dim * mult)
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SpatialTransformer(nn.Module):
    """Per-frame transformer block on [B, C, T, H, W]: spatial self-attention, text cross-attention, MLP.

    Cross-attention runs on all T*H*W queries of a clip at once (each query attends independently,
    so this equals per-frame attention without repeating the text T times).
    """

    def __init__(self, dim: int, head_dim: int, context_dim: int | None, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, head_dim)
        self.cross = None
        if context_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.cross = Attention(dim, head_dim, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        b, _, t, h, w = x.shape
        tok = rearrange(x, "b c t h w -> (b t) (h w) c")
        tok = tok + self.attn(self.norm1(tok))
        if self.cross is not None and context is not None:
            clip = rearrange(tok, "(b t) s c -> b (t s) c", b=b)
            clip = clip + self.cross(self.norm2(clip), context, context_mask)
            tok = rearrange(clip, "b (t s) c -> (b t) s c", t=t)
        tok = tok + self.mlp(self.norm3(tok))
        return rearrange(tok, "(b t) (h w) c -> b c t h w", b=b, h=h)


class TemporalAttention(nn.Module):
    """Self-attention along time at every spatial position, RoPE positions, zero-init residual.

    `frame_mask` [B, T] (True = real frame) keeps padded frames out of the keys.
    """

    def __init__(self, dim: int, head_dim: int, rope_base: float = 10000.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, head_dim, zero_init=True)
        self.rope = RotaryEmbedding(head_dim, base=rope_base)

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        b, _, t, h, w = x.shape
        if t == 1:
            return x
        # position-major: the norm gathers the channels-last video into [b, (h w), t, c] (its one copy), the
        # attention runs on the (b h w) sequences of t frames, and the residual add writes back in x's layout
        tok = self.norm(rearrange(x, "b c t h w -> b (h w) t c"))
        rope = self.rope(t, device=x.device, dtype=x.dtype)
        mask = None
        if frame_mask is not None:
            mask = frame_mask.bool().repeat_interleave(h * w, dim=0)
        out = self.attn(tok.flatten(0, 1), key_mask=mask, rope=rope)
        return x + rearrange(out, "(b h w) t c -> b c t h w", b=b, h=h)


# ---------------------------------------------------------------------------- convolutions


class _TemporalConvFn(torch.autograd.Function):
    """1D convolution along t of x [b, t, s, c] as one GEMM per kernel tap on shifted frame ranges.

    Frames of one sample are contiguous in x, so every shifted range is a plain [b, n*s, c] view:
    no im2col copy and no layout reorder, unlike a (k, 1) Conv2d through oneDNN, whose backward
    costs about twice as much here. Zero padding in time is implied by the shortened ranges.
    """

    @staticmethod
    def _ranges(tap: int, k: int, t: int) -> tuple[slice, slice] | None:
        off = tap - k // 2
        n = t - abs(off)
        if n <= 0:
            return None
        return slice(max(0, -off), max(0, -off) + n), slice(max(0, off), max(0, off) + n)

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        b, t, s, c = x.shape
        k = weight.shape[0]
        y = F.linear(x, weight[k // 2], bias)
        for tap in range(k):
            rng = _TemporalConvFn._ranges(tap, k, t)
            if tap == k // 2 or rng is None:
                continue
            out, inp = rng
            y[:, out].reshape(b, -1, y.shape[-1]).baddbmm_(
                x[:, inp].reshape(b, -1, c), weight[tap].t().expand(b, -1, -1)
            )
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, weight = ctx.saved_tensors
        gy = gy.contiguous()
        b, t, s, c = x.shape
        k = weight.shape[0]
        gx = F.linear(gy, weight[k // 2].t())
        gw = torch.zeros_like(weight)
        gw[k // 2] = gy.reshape(-1, gy.shape[-1]).t() @ x.reshape(-1, c)
        for tap in range(k):
            rng = _TemporalConvFn._ranges(tap, k, t)
            if tap == k // 2 or rng is None:
                continue
            out, inp = rng
            gys, xs = gy[:, out].reshape(b, -1, gy.shape[-1]), x[:, inp].reshape(b, -1, c)
            gx[:, inp].reshape(b, -1, c).baddbmm_(gys, weight[tap].expand(b, -1, -1))
            gw[tap] = torch.bmm(gys.transpose(1, 2), xs).sum(0)
        return gx, gw, gy.sum((0, 1, 2))


def temporal_conv1d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Convolve x [b, t, s, c] along t with weight [k, c_out, c_in] (k odd, zero padding) and bias [c_out]."""
    return _TemporalConvFn.apply(x.contiguous(), weight, bias)


class TemporalConv(nn.Module):
    """Residual 1D convolution along time at every pixel; zero-init, so it starts as the identity.

    Works on the free view "b t (h w) c" of the channels-last video (see temporal_conv1d).
    """

    def __init__(self, channels: int, kernel: int = 3, groups: int = 32):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"temporal kernel must be odd, got {kernel}")
        self.norm = group_norm(channels, groups)
        self.weight = nn.Parameter(torch.zeros(kernel, channels, channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        b, _, t, h, w = x.shape
        if t == 1:
            return x
        y = F.silu(self.norm(rearrange(x, "b c t h w -> (b t) c h w")))
        y = rearrange(y, "(b t) c h w -> b t (h w) c", b=b)
        if frame_mask is not None:
            # padded frames must not leak into real ones through the kernel
            y = y * frame_mask[:, :, None, None].to(y.dtype)
        y = temporal_conv1d(y, self.weight, self.bias)
        return x + rearrange(y, "b t (h w) c -> b c t h w", h=h)


class ResBlock(nn.Module):
    """Factorized residual block: per-frame 2D convs with the conditioning embedding added, then a
    residual temporal 1D conv (identity at init, skipped for T == 1)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        groups: int = 32,
        dropout: float = 0.0,
        temporal_kernel: int | None = 3,
    ):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.temporal = TemporalConv(out_ch, temporal_kernel, groups) if temporal_kernel else None

    def forward(self, x: Tensor, emb: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        b, _, t, _, _ = x.shape
        xf = rearrange(x, "b c t h w -> (b t) c h w")
        h = self.conv1(F.silu(self.norm1(xf)))
        e = self.emb(F.silu(emb)).repeat_interleave(t, dim=0)
        h = h + e[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        y = rearrange(self.skip(xf) + h, "(b t) c h w -> b c t h w", b=b)
        if self.temporal is not None:
            y = self.temporal(y, frame_mask)
        return y


class Downsample(nn.Module):
    """Halve H and W (never T) with a strided per-frame conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        y = self.conv(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class Upsample(nn.Module):
    """Double H and W (never T): nearest neighbour then a per-frame conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        y = F.interpolate(rearrange(x, "b c t h w -> (b t) c h w"), scale_factor=2.0, mode="nearest")
        return rearrange(self.conv(y), "(b t) c h w -> b c t h w", b=b)
