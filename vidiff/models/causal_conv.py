"""Time-causal building blocks that can run on temporal chunks: each keeps the past frames it still needs.

Inside `streaming(module)`, calling a module chunk after chunk gives the same frames as one call on
the whole video; outside it, every call is a fresh one-pass call.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)`, but CPU float32 always goes to oneDNN: PyTorch's heuristic sends batch-1 and small 3D inputs to
    its slow im2col kernel, which measured up to 10x slower here; results agree to float rounding. Under
    torch.compile it is `conv(x)`: dynamo cannot trace the direct oneDNN call, and inductor picks the kernel itself."""
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.compiler.is_compiling()
    ):
        return torch.mkldnn_convolution(
            x.contiguous(), conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups
        )
    return conv(x)


class Streamable(nn.Module):
    """A module with per-stream state; `streaming()` switches it on and clears it."""

    streaming: bool = False

    def reset_stream(self) -> None:
        raise NotImplementedError


@contextmanager
def streaming(module: nn.Module):
    """Run `module` on consecutive temporal chunks of one video (state is cleared on entry and exit)."""
    layers = [m for m in module.modules() if isinstance(m, Streamable)]
    for m in layers:
        m.reset_stream()
        m.streaming = True
    try:
        yield module
    finally:
        for m in layers:
            m.streaming = False
            m.reset_stream()


class CausalConv3d(Streamable):
    """Conv3d whose output frame t sees input frames <= t only (padded in time with the past only).

    `padding="replicate"` pads with copies of the first frame (an image and a still video then share
    latents); `"zeros"` pads with zeros. Space is zero-padded ("same" size at stride 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding: str = "replicate"):
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        st, sh, sw = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        if padding not in ("replicate", "zeros"):
            raise ValueError(f"padding must be 'replicate' or 'zeros', got {padding!r}")
        self.kt, self.st, self.padding = kt, st, padding
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=(st, sh, sw), padding=(0, kh // 2, kw // 2))
        self._pending: torch.Tensor | None = None

    def reset_stream(self) -> None:
        self._pending = None

    def _pad_past(self, x: torch.Tensor) -> torch.Tensor:
        n = self.kt - 1
        if n == 0:
            return x
        if self.padding == "replicate":
            return torch.cat([x[:, :, :1].expand(-1, -1, n, -1, -1), x], dim=2)
        return F.pad(x, (0, 0, 0, 0, n, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kt == 1 and self.st == 1:
            return conv3d(self.conv, x)
        if not self.streaming:
            return conv3d(self.conv, self._pad_past(x))
        x = self._pad_past(x) if self._pending is None else torch.cat([self._pending, x], dim=2)
        n_out = (x.shape[2] - self.kt) // self.st + 1 if x.shape[2] >= self.kt else 0
        # Keep the frames the next output window starts from: at most kt - 1 + st - 1 of them.
        self._pending = x[:, :, n_out * self.st :].clone()
        if n_out == 0:
            raise RuntimeError("causal stream chunk too short for a strided conv; align chunks to the compression")
        return conv3d(self.conv, x)


class CausalTimeUpsample(Streamable):
    """Doubles the frame count causally; the very first frame of a video stays one frame (1 + k -> 1 + 2k)."""

    def __init__(self, channels: int, out_channels: int | None = None, padding: str = "replicate"):
        super().__init__()
        out = out_channels or channels
        self.conv = CausalConv3d(channels, 2 * out, (3, 1, 1), padding=padding)
        with torch.no_grad():  # start as "repeat each frame twice" so early training sees a sane upsampler
            self.conv.conv.weight[out:] = self.conv.conv.weight[:out]
            self.conv.conv.bias[out:] = self.conv.conv.bias[:out]
        self._started = False

    def reset_stream(self) -> None:
        self._started = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange(self.conv(x), "b (r c) t h w -> b c (t r) h w", r=2)
        if not (self.streaming and self._started):
            y = y[:, :, 1:]
        self._started = self.streaming
        return y
