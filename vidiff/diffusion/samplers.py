"""Samplers from pure noise to data: DDPM (ancestral), DDIM (eta), DPM-Solver++(2M) and Euler.

Every sampler is `sample(denoise_fn, x_T, schedule, steps, prediction, generator, progress, ...) -> x0`
with `denoise_fn(x_t, t) -> prediction` and `t` a float32 tensor [B] of training timesteps.
Each visits `steps` timesteps (one model call each) and ends with a step to clean data (sigma = 0),
which returns the denoised estimate of the last visited timestep.

Zero terminal SNR: at alpha = 0, x_T *is* the noise, so v- and x0-predictions work as usual, but an
eps-prediction carries no information about x0. There the samplers take eps = x_T exactly and get
x0 from the model at the next timestep t' evaluated on sigma' * x_T (x_t' minus its unknown
alpha' * x0 part). The call replaces the useless one at alpha = 0, so the call count is unchanged;
its error in x0 is of order alpha'^2 and vanishes as alpha' -> 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vidiff.diffusion.objectives import check_prediction, convert_prediction
from vidiff.diffusion.schedule import NoiseSchedule
from vidiff.errors import VidiffError

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
SPACINGS = ("leading", "linspace", "trailing", "karras", "logsnr")


@dataclass(frozen=True)
class _Point:
    """A noise level on the sampling path; t is None for clean data (alpha 1, sigma 0)."""

    t: float | None
    alpha: float
    sigma: float

    @property
    def lam(self) -> float:
        """Half-logSNR, log(alpha / sigma), with the infinite ends spelled out."""
        if self.alpha == 0:
            return -math.inf
        if self.sigma == 0:
            return math.inf
        return math.log(self.alpha / self.sigma)

    @property
    def scaled_sigma(self) -> float:
        """sigma / alpha: the noise level of x / alpha (the variance-exploding view of Karras et al.)."""
        return math.inf if self.alpha == 0 else self.sigma / self.alpha


def make_timesteps(
    schedule: NoiseSchedule, steps: int, spacing: str | Sequence[float] = "linspace", rho: float = 7.0
) -> Tensor:
    """The `steps` training timesteps a sampler visits, decreasing, as float64.

    `spacing` names a rule below, or is an explicit decreasing sequence of `steps` timesteps.

    leading: 0, N/S, 2N/S, ... (never reaches N-1: wrong start for zero-terminal-SNR schedules).
    linspace: round(linspace(N-1, 0, S)). trailing: round(N - i*N/S) - 1 (Lin et al. 2023; ends at N/S - 1).
    karras: continuous timesteps with s = sigma/alpha spaced as in Karras et al. 2022 (uniform in
    s^(1/rho), rho = 7) between the schedule's ends. logsnr: uniform in logSNR (the rho -> inf limit).
    With zero terminal SNR, karras/logsnr visit N-1 first and space the other S-1 points from
    linspace's second timestep down to 0 (measured on the analytic problem: about half the error of
    spacing them from N-2, whose s ~ 10^3 wastes steps where nothing changes).
    """
    n = schedule.num_steps
    _check_steps(steps)
    if not isinstance(spacing, str):
        ts = torch.as_tensor(spacing, dtype=torch.float64).flatten()
        if ts.numel() != steps or (ts[1:] >= ts[:-1]).any() or ts.min() < 0 or ts.max() > n - 1:
            raise VidiffError(
                f"explicit timesteps must be {steps} strictly decreasing values in [0, {n - 1}], got {ts.tolist()}"
            )
        return ts
    if spacing not in SPACINGS:
        raise VidiffError(f"unknown timestep spacing '{spacing}'; valid: {', '.join(SPACINGS)}")
    if spacing in ("leading", "linspace", "trailing") and steps > n:
        raise VidiffError(
            f"steps={steps} is more than the schedule's {n} training timesteps; use at most {n}"
        )
    i = torch.arange(steps, dtype=torch.float64)
    if spacing == "leading":
        return (i * (n // steps)).flip(0)
    if spacing == "linspace":
        return torch.linspace(n - 1, 0, steps, dtype=torch.float64).round()
    if spacing == "trailing":
        return (n - i * n / steps).round() - 1
    # A zero-SNR end has s = inf, which no s-spaced grid can start from: visit it first, then start
    # the grid where a linspace grid would take its second step.
    ztsnr = schedule.zero_terminal_snr
    if ztsnr and steps == 1:
        return torch.tensor([n - 1.0], dtype=torch.float64)
    top = torch.linspace(n - 1, 0, steps, dtype=torch.float64)[1].round() if ztsnr else n - 1
    count = steps - 1 if ztsnr else steps
    sig_max = (schedule.sigma(top) / schedule.alpha(top)).item()
    sig_min = (schedule.sigma(0) / schedule.alpha(0)).item()
    ramp = torch.linspace(0, 1, count, dtype=torch.float64)
    if spacing == "logsnr":
        sig = torch.exp(math.log(sig_max) + ramp * (math.log(sig_min) - math.log(sig_max)))
    else:
        sig = (sig_max ** (1 / rho) + ramp * (sig_min ** (1 / rho) - sig_max ** (1 / rho))) ** rho
    ts = schedule.timestep(-2 * sig.log())
    return torch.cat([torch.tensor([n - 1.0], dtype=torch.float64), ts]) if ztsnr else ts


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise VidiffError(f"sampling steps must be a positive integer, got {steps!r}")


def _point(schedule: NoiseSchedule, t: float) -> _Point:
    tt = torch.tensor(t, dtype=torch.float64)
    return _Point(t, schedule.alpha(tt).item(), schedule.sigma(tt).item())


_CLEAN = _Point(None, 1.0, 0.0)


def _path(
    schedule: NoiseSchedule, timesteps: Tensor, name: str, progress: bool | str
) -> Iterator[tuple[_Point, _Point]]:
    """(current, next) pairs over the visited timesteps, then the last one to clean data; with a progress bar
    when `progress` is true, labelled with it when it is a string (e.g. a cascade's stage name)."""
    points = [_point(schedule, t) for t in timesteps.tolist()] + [_CLEAN]
    pairs = zip(points[:-1], points[1:], strict=True)
    desc = progress if isinstance(progress, str) else f"{name} sampling"
    yield from tqdm(pairs, total=len(points) - 1, desc=desc, disable=not progress, leave=False)


def _check_inputs(x_T: Tensor, schedule: NoiseSchedule, prediction: str) -> None:
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 2:
        raise VidiffError("x_T must be a float tensor [B, ...] (e.g. [B,C,T,H,W] or [B,C,H,W])")
    if not isinstance(schedule, NoiseSchedule):
        raise VidiffError(
            f"schedule must be a NoiseSchedule (see make_schedule), got {type(schedule).__name__}"
        )
    check_prediction(prediction)


class _Predictor:
    """Calls the model at a path point and returns (x0, eps) estimates, handling the zero-SNR step."""

    def __init__(self, denoise_fn: DenoiseFn, prediction: str):
        self.denoise_fn = denoise_fn
        self.prediction = prediction

    def _call(self, x: Tensor, p: _Point) -> Tensor:
        t = torch.full((x.shape[0],), p.t, dtype=torch.float32, device=x.device)
        out = self.denoise_fn(x, t)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise VidiffError(f"denoise_fn must return a tensor shaped like x_t {tuple(x.shape)}, got {got}")
        return out.to(x.dtype)

    def __call__(self, x: Tensor, cur: _Point, nxt: _Point) -> tuple[Tensor, Tensor]:
        if self.prediction == "eps" and cur.alpha == 0:
            if nxt.sigma == 0:
                raise VidiffError(
                    "an eps-prediction model cannot sample a zero-terminal-SNR schedule in 1 step "
                    "(x0 is undefined at SNR 0); use steps >= 2 or a v/x0-prediction model"
                )
            probe = nxt.sigma * x
            x0 = convert_prediction(self._call(probe, nxt), "eps", "x0", probe, nxt.alpha, nxt.sigma)
            return x0, x
        pred = self._call(x, cur)
        return (
            convert_prediction(pred, self.prediction, "x0", x, cur.alpha, cur.sigma),
            convert_prediction(pred, self.prediction, "eps", x, cur.alpha, cur.sigma),
        )


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def ddpm_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int = 1000,
    prediction: str = "v",
    generator: torch.Generator | None = None,
    progress: bool | str = False,
    spacing: str | Sequence[float] = "linspace",
) -> Tensor:
    """Ancestral sampling from the posterior q(x_s | x_t, x0_hat) with its variance (Ho et al. 2020);
    with steps < N the posterior spans the skipped steps (abar_t / abar_s in place of 1 - beta_t)."""
    _check_inputs(x_T, schedule, prediction)
    predict = _Predictor(denoise_fn, prediction)
    x = x_T
    for cur, nxt in _path(schedule, make_timesteps(schedule, steps, spacing), "ddpm", progress):
        x0, _ = predict(x, cur, nxt)
        a = cur.alpha / nxt.alpha  # sqrt of the alpha spanning this step
        beta = 1 - a * a
        s2 = cur.sigma**2
        x = (nxt.alpha * beta / s2) * x0 + (a * nxt.sigma**2 / s2) * x
        var = nxt.sigma**2 * beta / s2
        if var > 0:
            x = x + math.sqrt(var) * _noise(x, generator)
    return x


def ddim_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int = 50,
    prediction: str = "v",
    generator: torch.Generator | None = None,
    progress: bool | str = False,
    eta: float = 0.0,
    spacing: str | Sequence[float] = "linspace",
) -> Tensor:
    """DDIM (Song et al. 2021): x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, with
    c = eta * sqrt(posterior variance); eta = 0 is deterministic, eta = 1 equals DDPM."""
    _check_inputs(x_T, schedule, prediction)
    if not eta >= 0:
        raise VidiffError(f"ddim eta must be >= 0, got {eta}")
    predict = _Predictor(denoise_fn, prediction)
    x = x_T
    for cur, nxt in _path(schedule, make_timesteps(schedule, steps, spacing), "ddim", progress):
        x0, eps = predict(x, cur, nxt)
        c = eta * nxt.sigma / cur.sigma * math.sqrt(max(0.0, 1 - (cur.alpha / nxt.alpha) ** 2))
        x = nxt.alpha * x0 + math.sqrt(max(0.0, nxt.sigma**2 - c * c)) * eps
        if c > 0:
            x = x + c * _noise(x, generator)
    return x


def dpmpp_2m_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int = 20,
    prediction: str = "v",
    generator: torch.Generator | None = None,
    progress: bool | str = False,
    spacing: str | Sequence[float] = "logsnr",
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in lambda = log(alpha/sigma) on x0:
    x_s = (sigma_s/sigma_t) x_t + alpha_s (1 - e^-h) D, D = x0 + (x0 - x0_prev) / (2r), r = h_prev / h.

    First order (D = x0, a DDIM step) where there is no usable previous step: the first step, the
    step after one from infinite h (zero terminal SNR), and the final step to sigma = 0 (h = inf).
    The generator is unused (deterministic); it is accepted for a uniform signature.
    """
    _check_inputs(x_T, schedule, prediction)
    predict = _Predictor(denoise_fn, prediction)
    x = x_T
    prev: tuple[Tensor, float] | None = None
    for cur, nxt in _path(schedule, make_timesteps(schedule, steps, spacing), "dpmpp_2m", progress):
        x0, _ = predict(x, cur, nxt)
        h = nxt.lam - cur.lam
        d = x0
        if prev is not None and math.isfinite(h) and math.isfinite(prev[1]):
            r = prev[1] / h
            d = x0 + (x0 - prev[0]) / (2 * r)
        # alpha_s (1 - e^-h) = alpha_s - sigma_s alpha_t / sigma_t, finite at both infinite ends.
        x = (nxt.sigma / cur.sigma) * x + (nxt.alpha - nxt.sigma * cur.alpha / cur.sigma) * d
        prev = (x0, h)
    return x


def euler_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int = 50,
    prediction: str = "v",
    generator: torch.Generator | None = None,
    progress: bool | str = False,
    spacing: str | Sequence[float] = "linspace",
    s_churn: float = 0.0,
) -> Tensor:
    """Euler on the probability-flow ODE in Karras et al.'s variables x~ = x / alpha, s = sigma / alpha:
    dx~/ds = (x~ - x0) / s.

    Without churn this step is algebraically the DDIM (eta = 0) step, so on the same grid the two
    agree (tested); Euler's own uses are s-spaced grids (spacing="karras") and churn: with
    s_churn > 0 each step first raises s to s(1 + gamma), gamma = min(s_churn / steps, sqrt(2) - 1),
    by adding fresh noise (Karras et al. 2022, Algorithm 2) and calls the model at that continuous
    timestep. Churn costs accuracy at few steps and converges as steps grow.
    """
    _check_inputs(x_T, schedule, prediction)
    if not s_churn >= 0:
        raise VidiffError(f"euler s_churn must be >= 0, got {s_churn}")
    predict = _Predictor(denoise_fn, prediction)
    gamma = min(s_churn / steps, math.sqrt(2) - 1)
    s_top = _point(schedule, schedule.num_steps - 1).scaled_sigma  # churn may not go above the schedule
    x = x_T
    for cur, nxt in _path(schedule, make_timesteps(schedule, steps, spacing), "euler", progress):
        s = cur.scaled_sigma
        if gamma > 0 and math.isfinite(s) and s * (1 + gamma) < s_top:
            raised = _point(schedule, schedule.timestep(-2 * math.log(s * (1 + gamma))).item())
            xt = x / cur.alpha + math.sqrt(raised.scaled_sigma**2 - s * s) * _noise(x, generator)
            cur, s, x = raised, raised.scaled_sigma, raised.alpha * xt
        x0, eps = predict(x, cur, nxt)
        if math.isinf(s):
            # alpha = 0: x~ is infinite; the step's limit is x~_next = x0 + s_next * eps.
            xt_next = x0 + nxt.scaled_sigma * eps
        else:
            xt = x / cur.alpha
            xt_next = xt + (nxt.scaled_sigma - s) * (xt - x0) / s
        x = nxt.alpha * xt_next
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "dpmpp_2m": dpmpp_2m_sample,
    "euler": euler_sample,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called `name` (see `SAMPLERS`)."""
    if name not in SAMPLERS:
        raise VidiffError(f"unknown sampler '{name}'; valid names: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
