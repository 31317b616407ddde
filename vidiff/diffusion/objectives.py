"""Prediction parameterizations (eps, x0, v), their exact conversions, training targets and losses, and the
noise-conditioning augmentation of a conditioning input (a super-resolution stage's low-res video).

With x_t = alpha x0 + sigma eps and v = alpha eps - sigma x0. Every function works on tensors of
any shape [B, ...] ([B,C,T,H,W] video, [B,C,1,H,W] or [B,C,H,W] images); per-sample alpha/sigma
of shape [B] (or scalars) broadcast over the trailing dims.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidiff.diffusion.schedule import NoiseSchedule
from vidiff.errors import VidiffError

PREDICTIONS = ("eps", "x0", "v")
WEIGHTINGS = ("plain", "min_snr", "min_snr_plain")


def expand_like(value: Tensor | float, x: Tensor) -> Tensor:
    """A per-sample value ([B] or scalar, or already x.ndim dims) that broadcasts over x's trailing
    dims, in x's dtype and on its device."""
    value = torch.as_tensor(value, device=x.device)
    if value.ndim > 1 and value.ndim != x.ndim:
        raise VidiffError(
            f"expected a per-sample value of shape [B], a scalar, or {x.ndim} dims; got shape {tuple(value.shape)}"
        )
    value = value.to(x.dtype if x.is_floating_point() else torch.float32)
    return value.reshape(value.shape + (1,) * (x.ndim - value.ndim))


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise VidiffError(f"unknown prediction type '{prediction}'; valid: {', '.join(PREDICTIONS)}")
    return prediction


def _ab(alpha, sigma, x: Tensor) -> tuple[Tensor, Tensor]:
    return expand_like(alpha, x), expand_like(sigma, x)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, and 0 where den == 0 (no inf/NaN, gradients stay finite).

    den is per-sample (broadcast shape), so the zero test and reciprocal run on the small tensor."""
    ok = den != 0
    inv = torch.where(ok, 1 / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
    return num * inv


# The 2x2 system [x_t; v] = [[alpha, sigma], [-sigma, alpha]] [x0; eps] has determinant
# alpha² + sigma² (= 1 for VP schedules). Dividing by it keeps round trips exact even when the
# caller's alpha, sigma are rounded.


def x0_from_v(v: Tensor, x_t: Tensor, alpha, sigma) -> Tensor:
    a, s = _ab(alpha, sigma, x_t)
    return (a * x_t - s * v) / (a * a + s * s)


def eps_from_v(v: Tensor, x_t: Tensor, alpha, sigma) -> Tensor:
    a, s = _ab(alpha, sigma, x_t)
    return (s * x_t + a * v) / (a * a + s * s)


def v_from_x0(x0: Tensor, x_t: Tensor, alpha, sigma) -> Tensor:
    """v from x0; where sigma == 0 (clean data, never a schedule timestep) eps is taken as 0."""
    a, s = _ab(alpha, sigma, x_t)
    return a * eps_from_x0(x0, x_t, alpha, sigma) - s * x0


def eps_from_x0(x0: Tensor, x_t: Tensor, alpha, sigma) -> Tensor:
    """eps = (x_t - alpha x0) / sigma; 0 where sigma == 0."""
    a, s = _ab(alpha, sigma, x_t)
    return _safe_div(x_t - a * x0, s)


def x0_from_eps(eps: Tensor, x_t: Tensor, alpha, sigma) -> Tensor:
    """x0 = (x_t - sigma eps) / alpha. Where alpha == 0 (zero terminal SNR) eps says nothing about x0;
    the result there is 0, the mean of normalised data, never inf/NaN. Samplers avoid relying on it."""
    a, s = _ab(alpha, sigma, x_t)
    return _safe_div(x_t - s * eps, a)


def v_from_eps(eps: Tensor, x_t: Tensor, alpha, sigma) -> Tensor:
    """v from eps via x0; inherits x0_from_eps's convention (x0 = 0) where alpha == 0."""
    return v_from_x0(x0_from_eps(eps, x_t, alpha, sigma), x_t, alpha, sigma)


_CONVERT = {
    ("eps", "x0"): x0_from_eps,
    ("eps", "v"): v_from_eps,
    ("x0", "eps"): eps_from_x0,
    ("x0", "v"): v_from_x0,
    ("v", "x0"): x0_from_v,
    ("v", "eps"): eps_from_v,
}


def convert_prediction(pred: Tensor, src: str, dst: str, x_t: Tensor, alpha, sigma) -> Tensor:
    """Convert a model prediction of kind `src` into kind `dst` ("eps", "x0" or "v") at x_t."""
    check_prediction(src)
    check_prediction(dst)
    if src == dst:
        return pred
    return _CONVERT[src, dst](pred, x_t, alpha, sigma)


def add_noise(x0: Tensor, noise: Tensor, alpha, sigma) -> Tensor:
    """x_t = alpha x0 + sigma noise."""
    a, s = _ab(alpha, sigma, x0)
    return a * x0 + s * noise


def noise_augment(x: Tensor, noise: Tensor, level: Tensor | float, schedule: NoiseSchedule) -> Tensor:
    """Noise-conditioning augmentation (Imagen, Cascaded Diffusion Models): a conditioning input x [B, ...]
    (a low-res video) corrupted as the forward diffusion would after the share `level` ([B] or a scalar, in
    [0, 1]) of the schedule's N steps: alpha x + sigma noise at step level * N, linear in abar between steps.
    Level 0 returns x itself (no step taken yet); level 1 is the last timestep, pure noise on a
    zero-terminal-SNR schedule."""
    level = torch.as_tensor(level, device=x.device)
    if level.numel() and (level.min() < 0 or level.max() > 1):
        lo, hi = level.min().item(), level.max().item()
        raise VidiffError(f"noise-augmentation levels must be in [0, 1], got values in [{lo}, {hi}]")
    t = level.float() * schedule.num_steps - 1  # the timestep reached; -1: before the first step, abar = 1
    after_first = schedule.alpha_cumprod(t.clamp(min=0))
    abar = torch.where(t >= 0, after_first, 1 - (t + 1) * (1 - schedule.alpha_cumprod(torch.zeros_like(t))))
    return add_noise(x, noise, abar.sqrt(), (1 - abar).sqrt())


def training_target(kind: str, x0: Tensor, noise: Tensor, alpha, sigma) -> Tensor:
    """What a `kind`-prediction model should output for x_t = alpha x0 + sigma noise."""
    check_prediction(kind)
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    a, s = _ab(alpha, sigma, x0)
    return a * noise - s * x0


def loss_weight(snr: Tensor, prediction: str = "v", weighting: str = "plain", gamma: float = 5.0) -> Tensor:
    """Per-sample weight on the MSE of a `prediction`-kind output.

    "plain": 1. "min_snr" (Hang et al. 2023) caps the x0-space weight at gamma: w_x0 = min(snr, gamma),
    which for the eps loss (x0-MSE = eps-MSE / snr) is min(snr, gamma) / snr, and for the v loss
    (x0-MSE = v-MSE / (snr + 1)) is min(snr, gamma) / (snr + 1). All finite at snr = 0.
    "min_snr_plain": the mean of the two. For v, min_snr alone gives the noisiest steps (where layout
    and motion are decided) almost no weight (snr / (snr + 1) -> 0, and 0 at a zero-SNR terminal step);
    the plain half keeps them trained while the min_snr half still favours the mid-noise steps that
    settle shape. On the toy world it learned both; either alone learned one (docs/experiments/toy-demo.md).
    """
    check_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise VidiffError(f"unknown loss weighting '{weighting}'; valid: {', '.join(WEIGHTINGS)}")
    snr = torch.as_tensor(snr)
    if weighting == "plain":
        return torch.ones_like(snr)
    if not gamma > 0:
        raise VidiffError(f"min_snr gamma must be > 0, got {gamma}")
    if weighting == "min_snr_plain":
        return 0.5 * (1 + loss_weight(snr, prediction, "min_snr", gamma))
    capped = snr.clamp(max=gamma)
    if prediction == "x0":
        return capped
    if prediction == "v":
        return capped / (snr + 1)
    # min(snr, gamma) / snr, written so snr = 0 gives its limit 1 instead of 0/0.
    return (gamma / snr).clamp(max=1)


def diffusion_loss(
    pred: Tensor,
    x0: Tensor,
    noise: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    prediction: str = "v",
    weighting: str = "plain",
    gamma: float = 5.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Weighted MSE between `pred` and the `prediction` target for x_t built from (x0, noise, t).

    pred/x0/noise: [B, ...] of one shape (video [B,C,T,H,W] or image [B,C,H,W]). t: [B] timesteps.
    mask: optional 0/1 (or bool) tensor saying which elements count: [B] per sample, or any shape
    broadcastable to pred (e.g. a [B,1,T,1,1] frame mask). A sample's loss is the mean over its
    counted elements; "mean" then averages over samples with at least one counted element (0 if
    none), "none" returns the per-sample losses [B] (0 for fully masked samples).
    """
    if pred.shape != x0.shape or noise.shape != x0.shape:
        raise VidiffError(
            f"diffusion_loss: pred {tuple(pred.shape)}, x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} "
            "must have the same shape"
        )
    if reduction not in ("mean", "none"):
        raise VidiffError(f"diffusion_loss: reduction must be 'mean' or 'none', got '{reduction}'")
    t = torch.as_tensor(t, device=x0.device)
    if t.shape != (x0.shape[0],):
        raise VidiffError(f"diffusion_loss: t must have shape [B] = [{x0.shape[0]}], got {tuple(t.shape)}")
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    target = training_target(prediction, x0, noise, alpha, sigma)
    err = (pred.float() - target.float()) ** 2
    dims = tuple(range(1, err.ndim))
    if mask is None:
        per_sample = err.mean(dim=dims)
    else:
        mask = torch.as_tensor(mask, device=err.device, dtype=err.dtype)
        if mask.ndim == 1:
            mask = expand_like(mask, err)
        try:
            mask = mask.expand_as(err)
        except RuntimeError:
            raise VidiffError(
                f"diffusion_loss: mask of shape {tuple(mask.shape)} does not broadcast to {tuple(err.shape)}"
            ) from None
        per_sample = (err * mask).sum(dim=dims) / mask.sum(dim=dims).clamp(min=1e-12)
    weight = loss_weight(schedule.snr(t), prediction, weighting, gamma).to(per_sample)
    per_sample = per_sample * weight
    if reduction == "none":
        return per_sample
    if mask is None:
        return per_sample.mean()
    counted = (mask.sum(dim=dims) > 0).to(per_sample)
    return (per_sample * counted).sum() / counted.sum().clamp(min=1)
