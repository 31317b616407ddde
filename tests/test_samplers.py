"""Samplers against the closed-form answer: Gaussian data has an exact denoiser (vidiff.diffusion.analytic)."""

import math

import pytest
import torch

from vidiff.diffusion import get_sampler, make_schedule, make_timesteps
from vidiff.diffusion.analytic import GaussianData, standard_noise
from vidiff.errors import VidiffError

# Channels with mean != 0 and std both below and above 1, so returning x_T (or any wrong scaling)
# fails by tens of percent.
DATA = GaussianData(mean=(0.6, 0.0, -0.4), std=(0.5, 1.0, 1.3))
VIDEO = (4, 3, 4, 32, 32)  # [B, C, T, H, W]: 16384 values per channel

SCHEDULES = {
    "linear": dict(name="linear"),
    "scaled_linear_ztsnr": dict(name="scaled_linear", zero_terminal_snr=True),
    "cosine_ztsnr": dict(name="cosine", zero_terminal_snr=True),
}

# (steps, std tolerance, mean tolerance). Measured worst cases over the schedules and predictions
# below (std / mean): DDPM@1000 1.9% / 0.010 (stochastic, run on half of x_T for time: 8192 values
# a channel, std SE 0.8%, plus DDPM's own ~1% under-dispersion from using the posterior variance);
# DDIM@50 and Euler@50 5.6% / 0.0032; DPM-Solver++(2M)@20 1.45% / 0.0034. DDIM and Euler are first
# order: each step shrinks a unit-variance sample by cos(dtheta), theta = atan(sigma/alpha), a
# floor of 2.4% at 50 steps (see test_ddim_shrink_matches_first_order_theory), hence their bound.
CASES = {
    "ddpm": (1000, 0.03, 0.025),
    "ddim": (50, 0.065, 0.006),
    "dpmpp_2m": (20, 0.02, 0.006),
    "euler": (50, 0.065, 0.006),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Thousands of small elementwise ops: a second intra-op thread only adds barriers, and on a
    # shared CPU those cost 10-100x. Restored after this module.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def x_T():
    return standard_noise(VIDEO, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("schedule_key", list(SCHEDULES))
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler", list(CASES))
def test_sampler_reproduces_gaussian_data(sampler, prediction, schedule_key, x_T):
    schedule = make_schedule(**SCHEDULES[schedule_key])
    steps, std_tol, mean_tol = CASES[sampler]
    if sampler == "ddpm":
        x_T = x_T[:2]
    out = get_sampler(sampler)(
        DATA.denoise_fn(schedule, prediction),
        x_T,
        schedule,
        steps,
        prediction=prediction,
        generator=torch.Generator().manual_seed(1),
    )
    assert out.shape == x_T.shape and out.dtype == x_T.dtype
    assert torch.isfinite(out).all()
    err = DATA.errors(out)
    assert err["std_err"] < std_tol, err
    assert err["mean_err"] < mean_tol, err


def test_dpmpp_2m_at_20_beats_ddim_at_50(x_T):
    for key in SCHEDULES:
        schedule = make_schedule(**SCHEDULES[key])
        fn = DATA.denoise_fn(schedule, "v")
        dpm = DATA.errors(get_sampler("dpmpp_2m")(fn, x_T, schedule, 20))
        ddim = DATA.errors(get_sampler("ddim")(fn, x_T, schedule, 50))
        assert dpm["w2"] <= ddim["w2"], (key, dpm, ddim)


def _std_err(sampler, steps, schedule, x_T, **kw):
    return DATA.errors(get_sampler(sampler)(DATA.denoise_fn(schedule, "v"), x_T, schedule, steps, **kw))[
        "std_err"
    ]


def test_convergence_orders(x_T):
    """DDIM is first order (error ~ 1/steps), DPM-Solver++(2M) second order (~ 1/steps²)."""
    schedule = make_schedule("scaled_linear", zero_terminal_snr=True)
    ddim = _std_err("ddim", 25, schedule, x_T) / _std_err("ddim", 100, schedule, x_T)
    dpm = _std_err("dpmpp_2m", 20, schedule, x_T) / _std_err("dpmpp_2m", 80, schedule, x_T)
    assert 3 < ddim < 5.5, ddim
    assert dpm > 8, dpm


def test_ddim_shrink_matches_first_order_theory():
    """For N(0, 1) data the exact flow is the identity and a DDIM step multiplies x by
    alpha' alpha + sigma' sigma = cos(theta - theta'). On a grid uniform in theta the output std is
    exactly cos(theta_T / S)^S: an independent derivation of the DDIM update."""
    schedule = make_schedule("cosine", zero_terminal_snr=True)
    steps = 16
    n = schedule.num_steps
    theta_T = math.pi / 2  # alpha = 0 at the last step
    grid = torch.tensor([theta_T * (1 - i / steps) for i in range(steps)], dtype=torch.float64)
    # timesteps with theta = atan(sigma/alpha) on the grid: logSNR = -2 log tan(theta)
    ts = schedule.timestep(-2 * torch.log(torch.tan(grid)))
    ts[0] = n - 1
    thetas = torch.atan2(schedule.sigma(ts), schedule.alpha(ts))
    expected = torch.prod(torch.cos(thetas - torch.cat([thetas[1:], thetas.new_zeros(1)]))).item()
    assert abs(expected - math.cos(theta_T / steps) ** steps) < 1e-6  # the grid is theta-uniform
    unit = GaussianData(mean=(0.0,), std=(1.0,))
    x = standard_noise((2, 1, 5000), torch.Generator().manual_seed(0)).double()
    out = get_sampler("ddim")(unit.denoise_fn(schedule, "v"), x, schedule, steps, spacing=ts)
    assert torch.allclose(out, x * expected, atol=1e-9)


def test_missing_zero_terminal_snr_biases_the_mean(x_T):
    """Without zero terminal SNR, x_T ~ N(0, 1) ignores the alpha_T m left in the true x_T (Lin et al.):
    the sample mean is off by -alpha_T s m / sqrt(alpha_T² s² + sigma_T²). With ZTSNR it is not."""
    plain = make_schedule("scaled_linear")
    out = get_sampler("dpmpp_2m")(DATA.denoise_fn(plain, "v"), x_T, plain, 20)
    m = torch.tensor(DATA.mean, dtype=torch.float64)
    s = torch.tensor(DATA.std, dtype=torch.float64)
    a, sg = plain.alpha(999), plain.sigma(999)
    predicted = -a * s * m / (a * a * s * s + sg * sg).sqrt()
    measured = out.double().mean(dim=(0, 2, 3, 4)) - m
    assert predicted.abs().max() > 0.02  # a visible effect
    assert torch.allclose(measured, predicted, atol=0.003), (measured, predicted)
    ztsnr = make_schedule("scaled_linear", zero_terminal_snr=True)
    fixed = get_sampler("dpmpp_2m")(DATA.denoise_fn(ztsnr, "v"), x_T, ztsnr, 20)
    assert DATA.errors(fixed)["mean_err"] < 0.003


@pytest.mark.parametrize("sampler", list(CASES))
def test_eps_at_zero_snr_never_asks_the_model_for_x0_at_alpha_zero(sampler):
    """An eps model says nothing about x0 at alpha = 0; samplers must not divide by alpha there."""
    schedule = make_schedule("scaled_linear", zero_terminal_snr=True)
    seen = []

    def recording(prediction):
        ideal = DATA.denoise_fn(schedule, prediction)

        def fn(x, t):
            seen.append(t[0].item())
            return ideal(x, t)

        return fn

    steps = 10
    out = get_sampler(sampler)(
        recording("eps"), standard_noise((2, 3, 500)), schedule, steps, prediction="eps"
    )
    assert torch.isfinite(out).all()
    assert len(seen) == steps and max(seen) < schedule.num_steps - 1
    # With v-prediction the pure-noise step is used as usual.
    seen.clear()
    get_sampler(sampler)(recording("v"), standard_noise((2, 3, 500)), schedule, steps)
    assert len(seen) == steps and max(seen) == schedule.num_steps - 1


def test_eps_at_zero_snr_in_one_step_is_an_error():
    schedule = make_schedule("linear", zero_terminal_snr=True)
    with pytest.raises(VidiffError, match="eps"):
        get_sampler("ddim")(
            DATA.denoise_fn(schedule, "eps"), torch.randn(1, 3, 8), schedule, 1, prediction="eps"
        )


def test_ddpm_equals_ddim_eta_one():
    schedule = make_schedule("cosine", zero_terminal_snr=True)
    fn = DATA.denoise_fn(schedule, "v")
    x = torch.randn(2, 3, 2, 8, 8, dtype=torch.float64)
    a = get_sampler("ddpm")(fn, x, schedule, 30, generator=torch.Generator().manual_seed(3))
    b = get_sampler("ddim")(fn, x, schedule, 30, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("spacing", ["linspace", "karras", "logsnr"])
def test_euler_equals_ddim_eta_zero_on_the_same_grid(spacing):
    """Karras et al. 2022: the Euler step in (x/alpha, sigma/alpha) is the DDIM step."""
    schedule = make_schedule("scaled_linear", zero_terminal_snr=True)
    fn = DATA.denoise_fn(schedule, "eps")
    x = torch.randn(2, 3, 64, dtype=torch.float64)
    a = get_sampler("euler")(fn, x, schedule, 12, prediction="eps", spacing=spacing)
    b = get_sampler("ddim")(fn, x, schedule, 12, prediction="eps", spacing=spacing)
    assert torch.allclose(a, b, atol=1e-9)


def test_euler_with_churn_converges_to_the_data():
    """Churn adds noise and lets the first-order step remove it, so it costs accuracy at few steps
    (measured std error 11.6% at 50 steps, 3.7% at 200 with s_churn = 10) but converges."""
    schedule = make_schedule("linear")
    x = standard_noise((2, 3, 4, 32, 32), torch.Generator().manual_seed(0))

    def err(steps):
        gen = torch.Generator().manual_seed(0)
        out = get_sampler("euler")(
            DATA.denoise_fn(schedule, "v"), x, schedule, steps, s_churn=10.0, generator=gen
        )
        return DATA.errors(out)

    coarse, fine = err(50), err(200)
    assert fine["std_err"] < 0.05 and fine["mean_err"] < 0.03, fine
    assert fine["w2"] < coarse["w2"] / 2, (coarse, fine)


@pytest.mark.parametrize("shape", [(8, 3, 16, 16), (8, 3, 1, 16, 16)])
@pytest.mark.parametrize("sampler", list(CASES))
def test_image_shapes(sampler, shape):
    schedule = make_schedule("scaled_linear", zero_terminal_snr=True)
    steps, std_tol, mean_tol = CASES[sampler]
    if sampler == "ddpm":  # 2048 values a channel: std SE 1.6%, mean SE up to 0.03
        steps, std_tol, mean_tol = 250, 0.07, 0.1
    x = standard_noise(shape, torch.Generator().manual_seed(0))
    out = get_sampler(sampler)(
        DATA.denoise_fn(schedule, "v"), x, schedule, steps, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == shape
    err = DATA.errors(out)
    assert err["std_err"] < std_tol and err["mean_err"] < mean_tol, err


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler"])
def test_deterministic_given_a_generator(sampler):
    schedule = make_schedule("linear")
    fn = DATA.denoise_fn(schedule, "v")
    kw = {"eta": 0.7} if sampler == "ddim" else {"s_churn": 5.0} if sampler == "euler" else {}
    x = torch.randn(2, 3, 2, 4, 4)

    def run(seed):
        return get_sampler(sampler)(fn, x, schedule, 10, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_timestep_spacings():
    schedule = make_schedule("linear")
    assert make_timesteps(schedule, 5, "leading").tolist() == [800, 600, 400, 200, 0]
    assert make_timesteps(schedule, 5, "linspace").tolist() == [999, 749, 500, 250, 0]
    assert make_timesteps(schedule, 5, "trailing").tolist() == [999, 799, 599, 399, 199]
    assert make_timesteps(schedule, 1000, "linspace").tolist() == list(range(999, -1, -1))
    for spacing in ("karras", "logsnr"):
        ts = make_timesteps(schedule, 7, spacing)
        assert (ts[1:] < ts[:-1]).all() and abs(ts[0].item() - 999) < 1e-6 and abs(ts[-1].item()) < 1e-6
    ls = schedule.log_snr(make_timesteps(schedule, 6, "logsnr"))
    assert torch.allclose(ls.diff(), ls.diff()[0].expand(5), rtol=1e-6)
    ztsnr = make_schedule("linear", zero_terminal_snr=True)
    for spacing in ("karras", "logsnr"):
        ts = make_timesteps(ztsnr, 6, spacing)
        assert ts[0] == 999 and abs(ts[1].item() - 799) < 1e-6 and (ts.diff() < 0).all()
    assert make_timesteps(ztsnr, 1, "logsnr").tolist() == [999]
    assert make_timesteps(ztsnr, 2, "logsnr").tolist() == [999, 0]


def test_bad_inputs_raise_vidiff_errors():
    schedule = make_schedule("linear")
    fn = DATA.denoise_fn(schedule, "v")
    x = torch.randn(1, 3, 8)
    with pytest.raises(VidiffError, match="ddim.*dpmpp_2m.*euler"):
        get_sampler("heun")
    for steps in (0, -3, 2.5):
        with pytest.raises(VidiffError, match="positive integer"):
            get_sampler("ddim")(fn, x, schedule, steps)
    with pytest.raises(VidiffError, match="at most 1000"):
        get_sampler("ddim")(fn, x, schedule, 1001)
    with pytest.raises(VidiffError, match="trailing"):
        get_sampler("ddim")(fn, x, schedule, 10, spacing="uniform")
    with pytest.raises(VidiffError, match="eps, x0, v"):
        get_sampler("ddim")(fn, x, schedule, 10, prediction="score")
    with pytest.raises(VidiffError, match="shaped like x_t"):
        get_sampler("ddim")(lambda x, t: x[:, :1], x, schedule, 10)
    with pytest.raises(VidiffError, match="strictly decreasing"):
        get_sampler("ddim")(fn, x, schedule, 3, spacing=[10, 20, 5])
    with pytest.raises(VidiffError, match="NoiseSchedule"):
        get_sampler("ddim")(fn, x, "linear", 10)


@pytest.mark.slow
def test_matches_diffusers_step_for_step():
    """Same grid, same ideal model: vidiff's DDIM, DDPM and DPM-Solver++(2M) equal diffusers' schedulers."""
    diffusers = pytest.importorskip("diffusers")
    cfg = dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction"
    )

    def run_diffusers(scheduler, fn, x, generator=None):
        for t in scheduler.timesteps:
            out = fn(x, torch.full((x.shape[0],), float(t)))
            x = scheduler.step(out, t, x, generator=generator).prev_sample
        return x

    x = torch.randn(2, 3, 2, 8, 8, dtype=torch.float64)
    ztsnr = make_schedule("scaled_linear", zero_terminal_snr=True)
    fn = DATA.denoise_fn(ztsnr, "v")
    ddim = diffusers.DDIMScheduler(
        **cfg, rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False
    )
    ddim.set_timesteps(25)
    ours = get_sampler("ddim")(fn, x, ztsnr, 25, spacing="trailing")
    assert torch.allclose(ours, run_diffusers(ddim, fn, x), atol=1e-5)

    ddpm = diffusers.DDPMScheduler(**cfg, rescale_betas_zero_snr=True, clip_sample=False)
    ddpm.set_timesteps(1000)
    theirs = run_diffusers(ddpm, fn, x, torch.Generator().manual_seed(7))
    ours = get_sampler("ddpm")(fn, x, ztsnr, 1000, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(ours, theirs, atol=1e-4)

    plain = make_schedule("scaled_linear")  # diffusers' DPM-Solver moves a zero-SNR end to abar = 2^-24
    fn = DATA.denoise_fn(plain, "v")
    dpm = diffusers.DPMSolverMultistepScheduler(
        **cfg,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="linspace",
        final_sigmas_type="zero",
    )
    dpm.set_timesteps(20)
    ours = get_sampler("dpmpp_2m")(fn, x, plain, 20, spacing=dpm.timesteps.double())
    assert torch.allclose(ours, run_diffusers(dpm, fn, x), atol=1e-4)
