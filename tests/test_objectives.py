"""eps/x0/v conversions, training targets, min-SNR weights and diffusion_loss on video and image shapes."""

import itertools

import pytest
import torch

from vidiff.diffusion import (
    add_noise,
    convert_prediction,
    diffusion_loss,
    expand_like,
    loss_weight,
    make_schedule,
    training_target,
    x0_from_eps,
)
from vidiff.errors import VidiffError

SHAPES = [(3, 4, 5, 6, 7), (3, 4, 1, 6, 7), (3, 4, 6, 7)]


def _setup(shape, schedule, t=(0, 400, 998)):
    x0, noise = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    t = torch.tensor(t)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    return x0, noise, alpha, sigma, add_noise(x0, noise, alpha, sigma)


@pytest.mark.parametrize("shape", SHAPES)
def test_targets_convert_exactly_into_each_other(shape):
    schedule = make_schedule("cosine")
    x0, noise, alpha, sigma, x_t = _setup(shape, schedule)
    truth = {k: training_target(k, x0, noise, alpha, sigma) for k in ("eps", "x0", "v")}
    assert torch.equal(truth["eps"], noise) and torch.equal(truth["x0"], x0)
    for src, dst in itertools.product(truth, truth):
        got = convert_prediction(truth[src], src, dst, x_t, alpha, sigma)
        assert torch.allclose(got, truth[dst], atol=1e-9), (src, dst)
        back = convert_prediction(got, dst, src, x_t, alpha, sigma)
        assert torch.allclose(back, truth[src], atol=1e-9), (src, dst)


def test_round_trips_are_exact_in_float32_for_any_alpha_sigma():
    # The inverse divides by alpha^2 + sigma^2, so rounded (alpha, sigma) still invert each other.
    x = torch.randn(4, 3, 2, 5, 5)
    x_t = torch.randn_like(x)
    alpha = torch.tensor([0.3, 0.7, 0.99, 0.05])
    sigma = torch.tensor([0.9, 0.8, 0.2, 1.0])  # not VP on purpose
    for kind in ("eps", "x0"):
        v = convert_prediction(x, kind, "v", x_t, alpha, sigma)
        assert torch.allclose(convert_prediction(v, "v", kind, x_t, alpha, sigma), x, atol=2e-5)


def test_zero_snr_conversions_stay_finite():
    schedule = make_schedule("scaled_linear", zero_terminal_snr=True)
    shape = (3, 4, 2, 5, 5)
    x0, noise, alpha, sigma, x_t = _setup(shape, schedule, t=(999, 999, 500))
    assert alpha[0] == 0 and torch.equal(x_t[0], noise[0])
    v = training_target("v", x0, noise, alpha, sigma)
    assert torch.allclose(v[0], -x0[0])  # v = -x0 at alpha = 0: still informative
    assert torch.allclose(convert_prediction(v, "v", "x0", x_t, alpha, sigma), x0, atol=1e-9)
    assert torch.allclose(convert_prediction(v, "v", "eps", x_t, alpha, sigma), noise, atol=1e-9)
    # eps -> x0 is undefined at alpha = 0: documented as 0 there, exact elsewhere, never NaN
    x0_hat = x0_from_eps(noise, x_t, alpha, sigma)
    assert torch.isfinite(x0_hat).all() and (x0_hat[:2] == 0).all()
    assert torch.allclose(x0_hat[2], x0[2], atol=1e-9)
    v_hat = convert_prediction(noise, "eps", "v", x_t, alpha, sigma)
    assert torch.isfinite(v_hat).all()


def test_expand_like():
    x = torch.zeros(2, 3, 4, 5)
    assert expand_like(torch.tensor([1.0, 2.0]), x).shape == (2, 1, 1, 1)
    assert expand_like(0.5, x).shape == (1, 1, 1, 1)
    assert expand_like(torch.ones(2, 1, 1, 1, dtype=torch.float64), x).dtype == torch.float32
    with pytest.raises(VidiffError, match="per-sample"):
        expand_like(torch.ones(2, 3), x)


def test_min_snr_weights():
    snr = torch.tensor([0.0, 0.5, 5.0, 50.0], dtype=torch.float64)
    g = 5.0
    assert torch.equal(loss_weight(snr, "v", "plain"), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(loss_weight(snr, "x0", "min_snr", g), torch.minimum(snr, torch.tensor(g)).double())
    assert torch.allclose(loss_weight(snr, "eps", "min_snr", g), torch.tensor([1.0, 1.0, 1.0, 0.1]).double())
    assert torch.allclose(
        loss_weight(snr, "v", "min_snr", g), torch.tensor([0, 0.5 / 1.5, 5 / 6, 5 / 51]).double()
    )
    # all three weight the same x0-space error the same way: w_kind * mse_kind == min(snr, g) * mse_x0
    schedule = make_schedule("linear")
    x0, noise, alpha, sigma, x_t = _setup((3, 2, 4), schedule, t=(5, 300, 900))
    x0_pred = x0 + 0.1 * torch.randn_like(x0)
    snr = schedule.snr(torch.tensor([5, 300, 900]))
    ref = loss_weight(snr, "x0", "min_snr") * ((x0_pred - x0) ** 2).mean(dim=(1, 2))
    for kind in ("eps", "v"):
        pred = convert_prediction(x0_pred, "x0", kind, x_t, alpha, sigma)
        err = ((pred - training_target(kind, x0, noise, alpha, sigma)) ** 2).mean(dim=(1, 2))
        assert torch.allclose(loss_weight(snr, kind, "min_snr") * err, ref, rtol=1e-9)
    with pytest.raises(VidiffError, match="plain, min_snr, min_snr_plain"):
        loss_weight(snr, "v", "p2")


def test_min_snr_plain_keeps_the_noisiest_steps_trained():
    schedule = make_schedule("cosine", zero_terminal_snr=True)
    snr = schedule.snr(torch.arange(schedule.num_steps))
    for kind in ("eps", "x0", "v"):
        mixed = loss_weight(snr, kind, "min_snr_plain")
        assert torch.allclose(mixed, 0.5 * (1 + loss_weight(snr, kind, "min_snr")))
    v_min, v_mixed = loss_weight(snr, "v", "min_snr"), loss_weight(snr, "v", "min_snr_plain")
    # min_snr gives a v-model's zero-SNR terminal step no weight at all, and the last tenth of the steps
    # almost none; the mean with plain gives them half the plain weight
    assert v_min[-1] == 0 and v_min[900:].max() < 0.03
    assert v_mixed[-1].item() == pytest.approx(0.5) and v_mixed[900:].min() >= 0.5
    # and still peaks where min_snr does, at mid noise
    assert v_mixed.argmax() == v_min.argmax()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_diffusion_loss(shape, prediction):
    schedule = make_schedule("scaled_linear", zero_terminal_snr=True)
    t = torch.tensor([999, 500, 3])
    x0, noise, alpha, sigma, _ = _setup(shape, schedule, t=t.tolist())
    target = training_target(prediction, x0, noise, alpha, sigma)
    assert diffusion_loss(target, x0, noise, t, schedule, prediction).item() == 0
    pred = target + 0.5
    loss = diffusion_loss(pred, x0, noise, t, schedule, prediction)
    assert torch.isclose(loss, torch.tensor(0.25, dtype=loss.dtype))
    weighted = diffusion_loss(pred, x0, noise, t, schedule, prediction, weighting="min_snr", reduction="none")
    assert torch.isfinite(weighted).all() and weighted.shape == (3,)
    assert torch.allclose(weighted, 0.25 * loss_weight(schedule.snr(t), prediction, "min_snr").to(weighted))


def test_diffusion_loss_masks_and_gradients():
    schedule = make_schedule("linear")
    x0, noise = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 4, 5, 5)
    t = torch.tensor([10, 900])
    pred = torch.zeros_like(x0, requires_grad=True)
    target = training_target("v", x0, noise, schedule.alpha(t), schedule.sigma(t))
    # frame mask: only frames 1..3 count (frame 0 is a given condition frame)
    frames = torch.tensor([0.0, 1, 1, 1]).reshape(1, 1, 4, 1, 1).expand(2, 1, 4, 1, 1)
    loss = diffusion_loss(pred, x0, noise, t, schedule, "v", mask=frames)
    ref = (target[:, :, 1:] ** 2).mean(dim=(1, 2, 3, 4)).mean()
    assert torch.allclose(loss, ref)
    loss.backward()
    assert (pred.grad[:, :, 0] == 0).all() and (pred.grad[:, :, 1:] != 0).any()
    # per-sample mask: sample 1 does not count at all
    per = diffusion_loss(pred.detach(), x0, noise, t, schedule, "v", mask=torch.tensor([1.0, 0.0]))
    assert torch.allclose(per, (target[0] ** 2).mean())
    with pytest.raises(VidiffError, match="broadcast"):
        diffusion_loss(pred, x0, noise, t, schedule, "v", mask=torch.ones(2, 3, 5, 1, 1))
    with pytest.raises(VidiffError, match="same shape"):
        diffusion_loss(pred[:, :2], x0, noise, t, schedule)
    with pytest.raises(VidiffError, match=r"shape \[B\]"):
        diffusion_loss(pred, x0, noise, torch.tensor([1]), schedule)
    with pytest.raises(VidiffError, match="eps, x0, v"):
        diffusion_loss(pred, x0, noise, t, schedule, "score")
