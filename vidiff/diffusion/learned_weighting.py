"""Learned loss weighting over noise levels (EDM2: Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models", sec. 5 / appendix B.2).

A tiny network u(t) predicts the log of the expected loss at noise level t, and training minimises
L(t) / exp(u(t)) + u(t) per sample. Its optimum is exp(u(t)) = E[L | t], so every noise level
contributes about equally to the denoiser's gradient, whatever the raw loss scale there: the
zero-SNR steps, whose v target is -x0 and whose loss stays large, neither dominate (as under the
plain v loss) nor vanish (as under min-SNR weighting).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class NoiseLevelLogVariance(nn.Module):
    """u(t) for t in [0, 1]: fixed random Fourier features of t, then a zero-initialised linear layer
    (so training starts as the plain loss: u = 0, weight 1)."""

    def __init__(self, features: int = 64, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        # Frequencies of up to a few cycles over [0, 1]: u(t) can follow the loss across noise levels
        # but cannot memorise single timesteps.
        self.register_buffer("freqs", torch.randn(features, generator=gen) * 2.0)
        self.register_buffer("phases", torch.rand(features, generator=gen))
        self.linear = nn.Linear(features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t: Tensor) -> Tensor:
        """t: [B] in [0, 1] -> u(t): [B]."""
        angles = 2 * math.pi * (t.float()[:, None] * self.freqs + self.phases)
        return self.linear(math.sqrt(2) * torch.cos(angles)).squeeze(1)


def uncertainty_weighted_loss(per_sample: Tensor, log_variance: Tensor) -> Tensor:
    """mean(L / exp(u) + u) over the batch; per_sample and log_variance are [B]."""
    return (per_sample / log_variance.exp() + log_variance).mean()
