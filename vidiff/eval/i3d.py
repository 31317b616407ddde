"""Inception-3D (Kinetics-400) network that maps clips to 400-d logits for FVD.

Parameter names follow the widely used PyTorch I3D layout (piergiaj/pytorch-i3d `InceptionI3d`, also
used by VideoGPT/TATS for `i3d_pretrained_400.pt`), so those state dicts load unchanged. Padding is
TensorFlow 'SAME', as in the original TF model those weights were converted from. The module is
TorchScript-compatible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _same_pad(x: Tensor, kernel: list[int], stride: list[int], value: float) -> Tensor:
    """Pad [B, C, T, H, W] like TF 'SAME': output size ceil(size / stride), extra padding at the end."""
    pads: list[int] = []
    for d in [2, 1, 0]:  # F.pad wants the last axis (W) first
        size = x.shape[2 + d]
        k = kernel[d]
        s = stride[d]
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append(total // 2)
        pads.append(total - total // 2)
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d -> BatchNorm (eps 1e-3, as in TF) -> ReLU; the logits layer has a bias and neither of the rest."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm_act: bool = True):
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)
        self.norm_act = norm_act
        self.conv3d = nn.Conv3d(cin, cout, kernel_size=tuple(kernel), stride=tuple(stride), bias=not norm_act)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if norm_act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride, 0.0))
        if self.norm_act:
            x = F.relu(self.bn(x))
        return x


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)

    def forward(self, x: Tensor) -> Tensor:
        # -inf padding is TF's max-pool semantics (the pooled inputs are ReLU outputs, so zeros would match too).
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 max-pool -> 1x1, concatenated on channels."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(cin, w0)
        self.b1a = Unit3D(cin, w1a)
        self.b1b = Unit3D(w1a, w1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(cin, w2a)
        self.b2b = Unit3D(w2a, w2b, kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


class InceptionI3D(nn.Module):
    """I3D (Carreira & Zisserman 2017). forward: [B, 3, T, H, W] in [-1, 1] -> [B, num_classes] logits.

    The logits are averaged over the remaining time and space positions. At the FVD protocol size
    (16 x 224 x 224) Mixed_5c leaves 2 x 7 x 7 positions, so this equals the reference 2x7x7 average
    pool followed by the 1x1x1 logits conv; at other sizes it stays defined (used by the fast tests).
    """

    def __init__(self, num_classes: int = 400, width: float = 1.0):
        super().__init__()
        # `width` < 1 thins every layer: only for fast tests; real weights need width 1.
        c = lambda n: max(1, round(n * width))
        mix = lambda cin, widths: InceptionBlock(cin, tuple(c(n) for n in widths))
        self.Conv3d_1a_7x7 = Unit3D(3, c(64), kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(c(64), c(64))
        self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = mix(c(192), (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = mix(self.Mixed_3b.out_channels, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = mix(self.Mixed_3c.out_channels, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = mix(self.Mixed_4b.out_channels, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = mix(self.Mixed_4c.out_channels, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = mix(self.Mixed_4d.out_channels, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = mix(self.Mixed_4e.out_channels, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = mix(self.Mixed_4f.out_channels, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = mix(self.Mixed_5b.out_channels, (384, 192, 384, 48, 128, 128))
        self.logits = Unit3D(self.Mixed_5c.out_channels, num_classes, norm_act=False)
        self.num_classes = num_classes
        self._init_random()

    def _init_random(self) -> None:
        # Variance-preserving init so a randomly initialised network (tests, toy runs) gives features
        # of order one instead of activations that shrink layer by layer; real weights overwrite it.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.logits.conv3d.weight, std=self.logits.conv3d.in_channels**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        x = self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))
        x = x.mean(dim=(2, 3, 4), keepdim=True)
        return self.logits(x).flatten(1)
