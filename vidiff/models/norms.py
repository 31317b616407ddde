"""Normalization layers of the denoisers: RMSNorm with a CPU training kernel, and GroupNorm.

On the CPU, `F.rms_norm` runs as six ops recorded by autograd; `_RMSNormFn` is one, with a hand-written
backward, used on the CPU while autograd records. Under torch.compile, on a GPU and in inference PyTorch's
own op runs (inductor fuses its decomposition, CUDA has a fused kernel). It matches PyTorch's op to float
rounding (tests/test_norms.py). GroupNorm is PyTorch's: on channels-last input a hand-written kernel here
was slower than its own (1.8 ms against 1.2 ms forward + backward on the toy U-Net's [96, 32, 8, 8],
measured 2026-12-01), so there is none.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _use_cpu_kernel(x: Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_grad_enabled() and not torch.compiler.is_compiling()


class _RMSNormFn(torch.autograd.Function):
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim, with a hand-written backward that keeps only x.

    On the CPU, F.rms_norm runs as pow, mean, add, rsqrt, mul, mul, each recorded by autograd: three
    large intermediates, two of them kept, and about eight passes over x in the backward. Here the
    forward takes the row norms in one reduction and scales once; the backward recomputes x * r.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        d = x.shape[-1]
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(d).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, r)
        return (x * r).mul_(weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, r = ctx.saved_tensors
        n = x * r
        grad_weight = (grad * n).flatten(0, -2).sum(0) if ctx.needs_input_grad[1] else None
        gn = grad * weight
        dot = (gn * n).mean(-1, keepdim=True)
        return gn.sub_(n.mul_(dot)).mul_(r), grad_weight, None


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm whose weight follows the input's dtype, so under autocast (bf16 activations, fp32
    weights) it still runs the fused kernel; on the CPU, _RMSNormFn (fewer passes and less memory)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.to(x.dtype)
        if _use_cpu_kernel(x):
            return _RMSNormFn.apply(x, weight, self.eps or torch.finfo(x.dtype).eps)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


def group_norm(channels: int, groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm whose group count divides `channels` (falls back to fewer groups for narrow layers)."""
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=eps)
