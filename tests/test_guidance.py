"""Classifier-free guidance, guidance rescale, dynamic thresholding and the denoise_fn wrappers."""

from dataclasses import dataclass

import pytest
import torch

from vidiff.diffusion import (
    batch_together,
    classifier_free_guidance,
    convert_prediction,
    dynamic_threshold,
    guided_denoise_fn,
    make_schedule,
    rescale_guidance,
    thresholded_denoise_fn,
)
from vidiff.errors import VidiffError

SHAPES = [(2, 3, 4, 6, 6), (2, 3, 1, 6, 6), (2, 3, 6, 6)]


@dataclass
class Cond:
    text: torch.Tensor
    mask: torch.Tensor
    fps: int = 8
    image: torch.Tensor | None = None

    @staticmethod
    def cat(conds):
        return Cond(torch.cat([c.text for c in conds]), torch.cat([c.mask for c in conds]))


def toy_model(calls):
    """A conditional 'model' whose output depends on x, t and the conditioning, recording batch sizes."""

    def model(x, t, cond):
        calls.append(x.shape[0])
        shift = (cond.text * cond.mask).sum(dim=1)
        return 0.5 * x + (shift + 1e-3 * t).reshape((-1,) + (1,) * (x.ndim - 1))

    return model


@pytest.mark.parametrize("shape", SHAPES)
def test_cfg_endpoints_and_rescale(shape):
    cond, uncond = torch.randn(shape), torch.randn(shape)
    assert torch.allclose(classifier_free_guidance(cond, uncond, 1.0), cond)
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0), uncond)
    guided = classifier_free_guidance(cond, uncond, 7.5)
    assert torch.allclose(guided, uncond + 7.5 * (cond - uncond))
    assert torch.equal(rescale_guidance(guided, cond, 0.0), guided)
    full = rescale_guidance(guided, cond, 1.0)
    dims = tuple(range(1, len(shape)))
    assert torch.allclose(full.std(dim=dims), cond.std(dim=dims), rtol=1e-5)
    assert torch.allclose(rescale_guidance(guided, cond, 0.7), 0.7 * full + 0.3 * guided, atol=1e-6)
    with pytest.raises(VidiffError, match=r"\[0, 1\]"):
        rescale_guidance(guided, cond, 1.5)


@pytest.mark.parametrize("shape", SHAPES)
def test_guided_denoise_fn_batches_both_branches_in_one_call(shape):
    calls = []
    model = toy_model(calls)
    cond = Cond(text=torch.randn(2, 5), mask=torch.ones(2, 5))
    uncond = Cond(text=torch.zeros(2, 5), mask=torch.ones(2, 5))
    x, t = torch.randn(shape), torch.tensor([10.0, 500.0])
    fn = guided_denoise_fn(model, cond, uncond, scale=4.0, rescale=0.5)
    out = fn(x, t)
    assert calls == [4]
    c, u = model(x, t, cond), model(x, t, uncond)
    assert torch.allclose(out, rescale_guidance(classifier_free_guidance(c, u, 4.0), c, 0.5), atol=1e-6)
    calls.clear()
    assert torch.equal(guided_denoise_fn(model, cond, uncond, scale=1.0)(x, t), model(x, t, cond))
    assert calls == [2, 2]  # scale 1: the conditional branch only (then our reference call)


def test_batch_together_uses_the_conditionings_own_cat():
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.equal(batch_together(a, b), torch.cat([a, b]))
    both = batch_together(Cond(a, a), Cond(b, b))
    assert torch.equal(both.text, torch.cat([a, b])) and both.mask.shape == (4, 3)
    with pytest.raises(VidiffError, match="concat="):
        batch_together({"fps": 8}, {"fps": 24})
    with pytest.raises(VidiffError, match="concat="):
        batch_together(torch.ones(1), None)


def test_dynamic_threshold():
    x0 = torch.linspace(-3, 3, 2 * 3 * 100).reshape(2, 3, 100)
    x0[1] = x0[1] / 10  # sample 1 lies within [-1, 1]: left as it is
    out = dynamic_threshold(x0, percentile=0.9)
    assert out.abs().max() <= 1 + 1e-6
    assert torch.equal(out[1], x0[1])
    s = torch.quantile(x0[0].abs().flatten(), 0.9)
    assert torch.allclose(out[0], x0[0].clamp(-s, s) / s)
    with pytest.raises(VidiffError, match="percentile"):
        dynamic_threshold(x0, percentile=0.0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_thresholded_denoise_fn(prediction):
    schedule = make_schedule("scaled_linear", zero_terminal_snr=True)
    t = torch.tensor([999.0, 600.0, 20.0])
    x_t = torch.randn(3, 3, 2, 6, 6, dtype=torch.float64)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)

    def model_with_x0(x0):
        return lambda x, tt: convert_prediction(
            x0, "x0", prediction, x, schedule.alpha(tt), schedule.sigma(tt)
        )

    inside = 0.5 * torch.rand(3, 3, 2, 6, 6, dtype=torch.float64)
    fn = thresholded_denoise_fn(model_with_x0(inside), schedule, prediction)
    assert torch.allclose(fn(x_t, t), model_with_x0(inside)(x_t, t), atol=1e-9)  # nothing to clip
    outside = 4 * torch.randn(3, 3, 2, 6, 6, dtype=torch.float64)
    out = thresholded_denoise_fn(model_with_x0(outside), schedule, prediction)(x_t, t)
    implied = convert_prediction(out, prediction, "x0", x_t, alpha, sigma)
    known = slice(1, None) if prediction == "eps" else slice(None)  # eps at alpha = 0 implies no x0
    assert implied[known].abs().max() <= 1 + 1e-9
    assert torch.isfinite(out).all()
    if prediction == "eps":  # returned unchanged at the zero-SNR step
        assert torch.equal(out[0], model_with_x0(outside)(x_t, t)[0])
