"""The causal 3D blocks CausalVAE3D is built from: residual blocks, down/upsampling with folded shortcuts.

Not the U-Net's blocks (vidiff.models.layers has its factorized 2D ResBlock/Downsample/Upsample): these
convolve causally in time, so chunked encoding and decoding give the same result as one pass.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vidiff.models.causal_conv import CausalConv3d, CausalTimeUpsample, Streamable, conv3d


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels at each (t, h, w): causal, chunk- and tile-invariant, unlike GroupNorm."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.scale = channels**0.5
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))
        self.beta = nn.Parameter(torch.zeros(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=1, eps=self.eps) * (self.scale * self.gamma) + self.beta


class CausalResBlock(nn.Module):
    """norm -> SiLU -> conv, twice, plus the input. `kt=1` makes it spatial-only (cheap at full resolution)."""

    def __init__(self, channels: int, padding: str, kt: int = 3):
        super().__init__()
        self.norm1 = ChannelRMSNorm(channels)
        self.conv1 = CausalConv3d(channels, channels, (kt, 3, 3), padding=padding)
        self.norm2 = ChannelRMSNorm(channels)
        self.conv2 = CausalConv3d(channels, channels, (kt, 3, 3), padding=padding)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        return x + self.conv2(self.act(self.norm2(h)))


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor | None:
    """Average groups of neighbouring channels, or repeat each channel, to get `channels`; None if neither fits."""
    c = x.shape[1]
    if c == channels:
        return x
    if c % channels == 0:
        return x.unflatten(1, (channels, c // channels)).mean(2)
    if channels % c == 0:
        return x.repeat_interleave(channels // c, dim=1)
    return None


class FoldShortcut(Streamable):
    """The residual path of a CausalDownsample: 2x2 space and/or causal frame pairs folded into channels, then
    averaged down to `cout`. Frame 0 pairs with itself, so 1 + 2k frames give 1 + k (chunk after chunk too)."""

    def __init__(self, cout: int, spatial: bool, temporal: bool):
        super().__init__()
        self.cout, self.spatial, self.temporal = cout, spatial, temporal
        self._pending: torch.Tensor | None = None

    def reset_stream(self) -> None:
        self._pending = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.spatial:
            x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=2, q=2)
        if self.temporal:
            past = x[:, :, :1] if not self.streaming or self._pending is None else self._pending
            x = torch.cat([past, x], dim=2)
            # an odd frame left over waits for the next chunk (or is dropped at the end, as the conv does)
            n = x.shape[2] // 2 * 2
            if self.streaming:
                self._pending = x[:, :, n:]
            x = rearrange(x[:, :, :n], "b c (t r) h w -> b (c r) t h w", r=2)
        return match_channels(x, self.cout)


class UnfoldShortcut(Streamable):
    """The residual path of a CausalUpsample (the inverse of FoldShortcut): channels repeated up to what `cout`
    channels at 2x2 space and/or 2x time need, then unfolded; the first frame of a video stays one frame."""

    def __init__(self, cout: int, spatial: bool, temporal: bool):
        super().__init__()
        self.cout, self.spatial, self.temporal = cout, spatial, temporal
        self._started = False

    def reset_stream(self) -> None:
        self._started = False

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        x = match_channels(x, self.cout * (4 if self.spatial else 1) * (2 if self.temporal else 1))
        if x is None:
            return None
        if self.temporal:
            x = rearrange(x, "b (c r) t h w -> b c (t r) h w", r=2)
            if not (self.streaming and self._started):
                x = x[:, :, 1:]
            self._started = self.streaming
        if self.spatial:
            x = rearrange(x, "b (c p q) t h w -> b c t (h p) (w q)", p=2, q=2)
        return x


def _plus_shortcut(y: torch.Tensor, shortcut: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    s = None if shortcut is None else shortcut(x)
    return y if s is None else y + s


class CausalDownsample(nn.Module):
    """cin -> cout channels while halving H, W (strided 3x3 conv per frame) and/or T (causal strided conv:
    1 + 2k -> 1 + k frames); a 1x1x1 conv when it only changes channels."""

    def __init__(
        self, cin: int, cout: int, spatial: bool, temporal: bool, padding: str, shortcut: bool = False
    ):
        super().__init__()
        self.spatial = self.temporal = self.proj = None
        self.shortcut = FoldShortcut(cout, spatial, temporal) if shortcut else None
        if spatial:
            self.spatial = nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        if temporal:
            c = cout if spatial else cin
            self.temporal = CausalConv3d(c, cout, (3, 1, 1), stride=(2, 1, 1), padding=padding)
        if not (spatial or temporal) and cin != cout:
            self.proj = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for conv in (self.spatial, self.proj):
            if conv is not None:
                y = conv3d(conv, y)
        y = y if self.temporal is None else self.temporal(y)
        return _plus_shortcut(y, self.shortcut, x)


class CausalUpsample(nn.Module):
    """Inverse of CausalDownsample: cin -> cout channels, causal time doubling (1 + k -> 1 + 2k frames) and/or
    sub-pixel 2x spatial upsampling."""

    def __init__(
        self, cin: int, cout: int, spatial: bool, temporal: bool, padding: str, shortcut: bool = False
    ):
        super().__init__()
        self.spatial = self.temporal = self.proj = None
        self.shortcut = UnfoldShortcut(cout, spatial, temporal) if shortcut else None
        c = cin
        if temporal:
            self.temporal = CausalTimeUpsample(cin, cout, padding)
            c = cout
        if spatial:
            # Conv at low resolution to 4x channels + pixel shuffle: the FLOPs of nearest-upsample + conv without
            # materialising the upsampled input. The 4 sub-pixels start identical (ICNR init).
            self.spatial = nn.Conv3d(c, 4 * cout, (1, 3, 3), padding=(0, 1, 1))
            with torch.no_grad():
                self.spatial.weight.copy_(self.spatial.weight[:cout].clone().repeat_interleave(4, dim=0))
                self.spatial.bias.copy_(self.spatial.bias[:cout].clone().repeat_interleave(4))
        if not (spatial or temporal) and cin != cout:
            self.proj = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.temporal is not None:
            y = self.temporal(y)
        if self.spatial is not None:
            y = rearrange(conv3d(self.spatial, y), "b (c p q) t h w -> b c t (h p) (w q)", p=2, q=2)
        if self.proj is not None:
            y = conv3d(self.proj, y)
        return _plus_shortcut(y, self.shortcut, x)
