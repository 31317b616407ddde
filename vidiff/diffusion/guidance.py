"""Classifier-free guidance (with Lin et al.'s guidance rescale) and Imagen's dynamic thresholding,
as plain functions and as wrappers that turn a conditional model into a sampler's denoise_fn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vidiff.diffusion.objectives import check_prediction, convert_prediction
from vidiff.diffusion.schedule import NoiseSchedule
from vidiff.errors import VidiffError


def classifier_free_guidance(cond_pred: Tensor, uncond_pred: Tensor, scale: float) -> Tensor:
    """uncond + scale * (cond - uncond): scale 1 is the conditional prediction, 0 the unconditional."""
    return uncond_pred + scale * (cond_pred - uncond_pred)


def rescale_guidance(guided: Tensor, cond_pred: Tensor, phi: float) -> Tensor:
    """Lin et al. 2023 (Sec. 3.4): scale the guided prediction to the per-sample std of the conditional
    one and mix: phi * guided * std(cond) / std(guided) + (1 - phi) * guided. phi = 0 is plain CFG."""
    if not 0 <= phi <= 1:
        raise VidiffError(f"guidance rescale phi must be in [0, 1], got {phi}")
    if phi == 0:
        return guided
    dims = tuple(range(1, guided.ndim))
    std_cond = cond_pred.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True).clamp(min=1e-12)
    return phi * guided * (std_cond / std_guided) + (1 - phi) * guided


def dynamic_threshold(x0: Tensor, percentile: float = 0.995, max_value: float = 1.0) -> Tensor:
    """Imagen's dynamic thresholding: per sample, s = max(quantile(|x0|, percentile), max_value);
    clamp x0 to [-s, s] and scale by max_value / s, so the result lies in [-max_value, max_value]."""
    if not 0 < percentile <= 1:
        raise VidiffError(f"dynamic threshold percentile must be in (0, 1], got {percentile}")
    flat = x0.detach().abs().reshape(x0.shape[0], -1).float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=max_value).to(x0.dtype)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
    return x0.clamp(-s, s) / s * max_value


def batch_together(cond: Any, uncond: Any) -> Any:
    """One batch of [cond; uncond]: tensors by torch.cat, anything else by its type's own `cat([a, b])`
    (vidiff.models.cond.Cond has one)."""
    if isinstance(cond, Tensor) and isinstance(uncond, Tensor):
        return torch.cat([cond, uncond], dim=0)
    cat = getattr(type(cond), "cat", None)
    if type(cond) is type(uncond) and callable(cat):
        return cat([cond, uncond])
    raise VidiffError(
        f"cannot batch conditional and unconditional inputs together: {type(cond).__name__} vs "
        f"{type(uncond).__name__} has no cat([a, b]); give it one or pass concat=... to guided_denoise_fn"
    )


def guided_denoise_fn(
    model: Callable[[Tensor, Tensor, Any], Tensor],
    cond: Any,
    uncond: Any,
    scale: float,
    rescale: float = 0.0,
    concat: Callable[[Any, Any], Any] = batch_together,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap `model(x_t, t, cond)` into a guided `denoise_fn(x_t, t)` for the samplers.

    Conditional and unconditional predictions come from one batched call on [x_t; x_t]; guidance
    and the rescale act on the model's own prediction (eps, x0 or v). At scale 1 only the
    conditional branch runs.
    """
    if scale == 1:
        return lambda x, t: model(x, t, cond)
    both = concat(cond, uncond)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), both)
        cond_pred, uncond_pred = out.chunk(2)
        return rescale_guidance(classifier_free_guidance(cond_pred, uncond_pred, scale), cond_pred, rescale)

    return denoise


def image_text_guidance(full: Tensor, image_only: Tensor, neither: Tensor, text_scale: float, image_scale: float) -> Tensor:
    """Guidance by an image and a text (InstructPix2Pix, eq. 3; SVD): neither + image_scale * (image_only - neither)
    + text_scale * (full - image_only). Both scales 1 give the fully conditional prediction."""
    return neither + image_scale * (image_only - neither) + text_scale * (full - image_only)


def image_text_guided_denoise_fn(
    model: Callable[[Tensor, Tensor, Any], Tensor],
    cond: Any,
    image_only: Any,
    neither: Any,
    text_scale: float,
    image_scale: float,
    rescale: float = 0.0,
) -> Callable[[Tensor, Tensor], Tensor]:
    """`guided_denoise_fn` with two scales: the conditional, image-only and unconditional inputs in one batched
    call on [x_t; x_t; x_t], combined by `image_text_guidance`; the rescale acts as there."""
    both = batch_together(batch_together(cond, image_only), neither)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        full, image, none = model(torch.cat([x, x, x]), torch.cat([t, t, t]), both).chunk(3)
        return rescale_guidance(image_text_guidance(full, image, none, text_scale, image_scale), full, rescale)

    return denoise


def thresholded_denoise_fn(
    denoise_fn: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    prediction: str,
    percentile: float = 0.995,
    max_value: float = 1.0,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap a denoise_fn so its implied x0 is dynamically thresholded, returned in the same kind.
    At a zero-SNR step an eps-prediction implies no x0; it then comes back unchanged."""
    check_prediction(prediction)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        pred = denoise_fn(x, t)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        x0 = dynamic_threshold(
            convert_prediction(pred, prediction, "x0", x, alpha, sigma), percentile, max_value
        )
        out = convert_prediction(x0, "x0", prediction, x, alpha, sigma)
        if prediction == "eps":
            zero_snr = (alpha == 0).reshape((-1,) + (1,) * (x.ndim - 1))
            out = torch.where(zero_snr, pred, out)
        return out

    return denoise
