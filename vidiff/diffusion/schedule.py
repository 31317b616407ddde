"""Variance-preserving noise schedules: x_t = alpha_t x0 + sigma_t eps with alpha^2 + sigma^2 = 1.

A `NoiseSchedule` is a table of alphas_cumprod over N training timesteps; builders give linear,
scaled-linear, cosine, zero-terminal-SNR rescaling and the resolution / frame-count shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vidiff.errors import VidiffError


class NoiseSchedule:
    """alphas_cumprod (abar_t) for training timesteps t = 0 .. N-1, with alpha/sigma/logSNR lookups.

    Timesteps may be integer (exact table lookup) or float in [0, N-1]: between table entries abar
    is interpolated linearly, which keeps it monotone and defined at a zero-SNR end (abar = 0).
    Lookups compute in float64 (float32 on devices without it) and return on the device of `t`.
    """

    def __init__(self, alphas_cumprod: Tensor | Sequence[float], name: str = "custom"):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().flatten().cpu().clone()
        if abar.numel() < 2:
            raise VidiffError(f"noise schedule '{name}' needs at least 2 timesteps, got {abar.numel()}")
        if not torch.isfinite(abar).all() or abar.min() < 0 or abar.max() >= 1 or abar[0] <= 0:
            raise VidiffError(
                f"noise schedule '{name}': alphas_cumprod must lie in [0, 1) with a positive first entry "
                f"(got min {abar.min().item():.3g}, max {abar.max().item():.3g}); check the betas"
            )
        if not (abar[1:] < abar[:-1]).all():
            raise VidiffError(f"noise schedule '{name}': alphas_cumprod must strictly decrease over t")
        self.alphas_cumprod = abar
        self.name = name
        self._tables: dict[torch.device, Tensor] = {}

    @classmethod
    def from_betas(cls, betas: Tensor | Sequence[float], name: str = "custom") -> NoiseSchedule:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, dim=0), name=name)

    @property
    def num_steps(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def betas(self) -> Tensor:
        """Per-step betas, beta_t = 1 - abar_t / abar_{t-1} (beta_0 = 1 - abar_0)."""
        prev = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        return 1.0 - self.alphas_cumprod / prev

    @property
    def zero_terminal_snr(self) -> bool:
        return bool(self.alphas_cumprod[-1] == 0)

    def __repr__(self) -> str:
        a = self.alphas_cumprod
        return (
            f"NoiseSchedule({self.name!r}, num_steps={self.num_steps}, "
            f"abar[0]={a[0].item():.6g}, abar[-1]={a[-1].item():.6g})"
        )

    def _table(self, device: torch.device) -> Tensor:
        if device not in self._tables:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._tables[device] = self.alphas_cumprod.to(device=device, dtype=dtype)
        return self._tables[device]

    def alpha_cumprod(self, t: Tensor | float | int) -> Tensor:
        """abar at timesteps `t` (any shape); integer t indexes the table, float t interpolates."""
        t = torch.as_tensor(t)
        n = self.num_steps
        if t.numel() and (t.min() < 0 or t.max() > n - 1):
            raise VidiffError(
                f"timestep out of range: got values in [{t.min().item()}, {t.max().item()}], "
                f"this schedule has timesteps 0 .. {n - 1}"
            )
        table = self._table(t.device)
        if not t.is_floating_point():
            return table[t.long()]
        t = t.to(table.dtype)
        lo = t.floor().clamp(0, n - 2)
        frac = t - lo
        lo = lo.long()
        return table[lo] * (1 - frac) + table[lo + 1] * frac

    def alpha(self, t: Tensor | float | int) -> Tensor:
        """Signal scale alpha_t = sqrt(abar_t)."""
        return self.alpha_cumprod(t).sqrt()

    def sigma(self, t: Tensor | float | int) -> Tensor:
        """Noise scale sigma_t = sqrt(1 - abar_t)."""
        return (1 - self.alpha_cumprod(t)).sqrt()

    def snr(self, t: Tensor | float | int) -> Tensor:
        """alpha^2 / sigma^2; exactly 0 at a zero-terminal-SNR end."""
        abar = self.alpha_cumprod(t)
        return abar / (1 - abar)

    def log_snr(self, t: Tensor | float | int) -> Tensor:
        """log(alpha^2 / sigma^2); -inf (never NaN) where abar = 0."""
        abar = self.alpha_cumprod(t)
        return torch.log(abar) - torch.log1p(-abar)

    def timestep(self, log_snr: Tensor | float) -> Tensor:
        """Continuous timestep whose logSNR is `log_snr` (inverse of `log_snr`, clamped to [0, N-1])."""
        target = torch.sigmoid(torch.as_tensor(log_snr, dtype=torch.float64))
        abar = self.alphas_cumprod.to(target.device)
        # abar decreases in t; search the ascending reversed table.
        rev = abar.flip(0)
        pos = torch.searchsorted(rev, target.clamp(rev[0], rev[-1]), right=False).clamp(1, self.num_steps - 1)
        hi_t = self.num_steps - 1 - (pos - 1)  # index in abar of the smaller abar
        lo_t = hi_t - 1
        a_lo, a_hi = abar[lo_t], abar[hi_t]
        frac = ((a_lo - target) / (a_lo - a_hi)).clamp(0, 1)
        return (lo_t.to(torch.float64) + frac).clamp(0, self.num_steps - 1)


def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM's linear betas (Ho et al. 2020), defaults for 1000 steps."""
    _check_steps(num_steps)
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return NoiseSchedule.from_betas(betas, name="linear")


def scaled_linear_schedule(
    num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> NoiseSchedule:
    """Stable Diffusion's betas: linear in sqrt(beta)."""
    _check_steps(num_steps)
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    return NoiseSchedule.from_betas(betas, name="scaled_linear")


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal (2021): abar(t) = f(t)/f(0), f(t) = cos²((t/N + s)/(1 + s) · π/2), betas ≤ max_beta."""
    _check_steps(num_steps)
    grid = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return NoiseSchedule.from_betas(betas, name="cosine")


def rescale_zero_terminal_snr(schedule: NoiseSchedule) -> NoiseSchedule:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(abar) so the last step has alpha = 0
    (pure noise, SNR 0) while the first step keeps its alpha."""
    a = schedule.alphas_cumprod.sqrt()
    a0, a_last = a[0], a[-1]
    a = (a - a_last) / (a0 - a_last) * a0
    return NoiseSchedule(a**2, name=f"{schedule.name}+zero_terminal_snr")


def shift_schedule(schedule: NoiseSchedule, shift: float) -> NoiseSchedule:
    """Shift every logSNR by -2·log(shift): logSNR'(t) = logSNR(t) - 2 log(shift).

    shift > 1 makes every step noisier, as needed when the data has more elements (more pixels or
    frames carry more redundant signal at a given SNR). Equals SD3's timestep shift
    t' = shift·t / (1 + (shift - 1)·t) for rectified flow, and simple diffusion's 2·log(64/d) shift.
    A zero-SNR end stays at zero SNR.
    """
    if not shift > 0 or not math.isfinite(shift):
        raise VidiffError(f"schedule shift must be a positive number, got {shift}")
    if shift == 1:
        return schedule
    log_snr = schedule.log_snr(torch.arange(schedule.num_steps)) - 2 * math.log(shift)
    return NoiseSchedule(torch.sigmoid(log_snr), name=f"{schedule.name}+shift{shift:g}")


def resolution_shift(base_shape: Sequence[int], new_shape: Sequence[int]) -> float:
    """Shift factor for data of `new_shape` when the schedule was tuned for `base_shape`.

    Shapes are the sizes that carry redundant signal, e.g. (T, H, W) of the latent:
    shift = sqrt(prod(new_shape) / prod(base_shape)), so logSNR' = logSNR + log(prod(base) / prod(new)).
    (256² → 512² images: shift 2, logSNR lowered by log 4.)
    """
    base, new = math.prod(base_shape), math.prod(new_shape)
    if base <= 0 or new <= 0:
        raise VidiffError(
            f"resolution_shift needs positive sizes, got base {tuple(base_shape)}, new {tuple(new_shape)}"
        )
    return math.sqrt(new / base)


SCHEDULES = {
    "linear": linear_schedule,
    "scaled_linear": scaled_linear_schedule,
    "cosine": cosine_schedule,
}


def make_schedule(
    name: str, num_steps: int = 1000, *, zero_terminal_snr: bool = False, shift: float = 1.0, **kwargs
) -> NoiseSchedule:
    """Build a schedule by name (see `SCHEDULES`), then apply `shift` and, last, zero-terminal-SNR rescaling."""
    if name not in SCHEDULES:
        raise VidiffError(f"unknown noise schedule '{name}'; valid names: {', '.join(SCHEDULES)}")
    try:
        schedule = SCHEDULES[name](num_steps, **kwargs)
    except TypeError as exc:
        raise VidiffError(f"bad option for noise schedule '{name}': {exc}") from None
    schedule = shift_schedule(schedule, shift)
    if zero_terminal_snr:
        schedule = rescale_zero_terminal_snr(schedule)
    return schedule


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 2:
        raise VidiffError(f"a noise schedule needs an integer num_steps >= 2, got {num_steps!r}")
