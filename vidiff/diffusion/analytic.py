"""Gaussian data with its exact denoiser: the ground truth that samplers are checked against.

For x0 ~ N(m, s²) per channel, E[x0 | x_t] = m + alpha s² / (alpha² s² + sigma²) · (x_t - alpha m).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vidiff.diffusion.objectives import check_prediction, convert_prediction
from vidiff.diffusion.schedule import NoiseSchedule


@dataclass(frozen=True)
class GaussianData:
    """Independent Gaussian values with per-channel mean and std (channels on dim 1 of [B, C, ...])."""

    mean: Sequence[float]
    std: Sequence[float]

    def _per_channel(self, values: Sequence[float], x: Tensor) -> Tensor:
        v = torch.as_tensor(values, dtype=torch.float64, device=x.device)
        return v.reshape((1, -1) + (1,) * (x.ndim - 2))

    def posterior_mean(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x_t] in float64; alpha/sigma of shape [B]."""
        m, s = self._per_channel(self.mean, x_t), self._per_channel(self.std, x_t)
        a = alpha.to(torch.float64).reshape((-1,) + (1,) * (x_t.ndim - 1))
        sg = sigma.to(torch.float64).reshape(a.shape)
        return m + a * s * s / (a * a * s * s + sg * sg) * (x_t.to(torch.float64) - a * m)

    def denoise_fn(
        self, schedule: NoiseSchedule, prediction: str = "v"
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """The ideal model for this data under `schedule`, answering in `prediction` form."""
        check_prediction(prediction)

        def denoise(x_t: Tensor, t: Tensor) -> Tensor:
            alpha, sigma = schedule.alpha(t), schedule.sigma(t)
            x0 = self.posterior_mean(x_t, alpha, sigma)
            return convert_prediction(x0, "x0", prediction, x_t.to(torch.float64), alpha, sigma).to(x_t.dtype)

        return denoise

    def errors(self, samples: Tensor) -> dict[str, float]:
        """How far samples [B, C, ...] are from this distribution, worst channel:
        mean_err (|mean - m|), std_err (|std / s - 1|), w2 (Wasserstein-2 between the fitted and the
        true 1D Gaussian, relative to s) and kl (KL(fit || truth))."""
        x = samples.detach().to(torch.float64).transpose(0, 1).reshape(samples.shape[1], -1)
        m = torch.as_tensor(self.mean, dtype=torch.float64)
        s = torch.as_tensor(self.std, dtype=torch.float64)
        mu, sd = x.mean(1), x.std(1)
        w2 = ((mu - m) ** 2 + (sd - s) ** 2).sqrt() / s
        kl = torch.log(s / sd) + (sd**2 + (mu - m) ** 2) / (2 * s**2) - 0.5
        return {
            "mean_err": (mu - m).abs().max().item(),
            "std_err": (sd / s - 1).abs().max().item(),
            "w2": w2.max().item(),
            "kl": kl.max().item(),
        }


def standard_noise(shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """N(0, 1) noise [B, C, ...] shifted and scaled so each channel has exactly mean 0 and std 1.

    The ideal denoiser of Gaussian data is affine in x_t, so a deterministic sampler maps x_T
    affinely; with standardized x_T the output's moments are that map's, free of sampling noise.
    """
    z = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    dims = (0,) + tuple(range(2, z.ndim))
    z = (z - z.mean(dims, keepdim=True)) / z.std(dims, keepdim=True)
    return z.float()
