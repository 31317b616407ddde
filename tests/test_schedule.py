"""Noise schedules: builders against their formulas, monotone logSNR, zero terminal SNR, shift, lookups."""

import math

import pytest
import torch

from vidiff.diffusion import (
    NoiseSchedule,
    make_schedule,
    rescale_zero_terminal_snr,
    resolution_shift,
    shift_schedule,
)
from vidiff.errors import VidiffError

ALL = [
    dict(name=n, zero_terminal_snr=z, shift=s)
    for n in ("linear", "scaled_linear", "cosine")
    for z in (False, True)
    for s in (1.0, 2.0)
]


def test_builders_match_their_formulas():
    lin = make_schedule("linear")
    assert lin.num_steps == 1000
    assert torch.allclose(lin.betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64))
    assert torch.allclose(lin.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    sl = make_schedule("scaled_linear")
    assert torch.allclose(sl.betas.sqrt().diff(), sl.betas.sqrt().diff()[0].expand(999))
    assert math.isclose(sl.betas[-1].item(), 0.012, rel_tol=1e-9)
    cos = make_schedule("cosine")
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    unclipped = cos.betas < 0.999
    assert unclipped[:990].all()
    assert torch.allclose(cos.alphas_cumprod[:990], f[:990], rtol=1e-10)


@pytest.mark.parametrize("kw", ALL, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_log_snr_strictly_decreases_and_stays_defined(kw):
    s = make_schedule(**kw)
    ls = s.log_snr(torch.arange(s.num_steps))
    assert not torch.isnan(ls).any()
    assert (ls.diff() < 0).all()
    assert torch.isfinite(ls[:-1]).all()
    assert torch.allclose(
        s.alpha(torch.arange(1000)) ** 2 + s.sigma(torch.arange(1000)) ** 2, torch.ones(1000).double()
    )
    # continuous timesteps between the table entries keep the order
    tf = torch.linspace(0, 999, 4001, dtype=torch.float64)
    assert (s.alpha_cumprod(tf).diff() < 0).all()


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_zero_terminal_snr(name):
    base = make_schedule(name)
    z = rescale_zero_terminal_snr(base)
    assert z.alphas_cumprod[-1].item() == 0.0 and z.zero_terminal_snr and not base.zero_terminal_snr
    assert math.isclose(z.alphas_cumprod[0].item(), base.alphas_cumprod[0].item(), rel_tol=1e-12)
    assert z.log_snr(999).item() == -math.inf and z.snr(999).item() == 0.0
    assert z.alpha(999).item() == 0.0 and z.sigma(999).item() == 1.0
    # Lin et al.: sqrt(abar) is shifted and scaled, an affine map of the original
    a, b = base.alphas_cumprod.sqrt(), z.alphas_cumprod.sqrt()
    slope = (b[0] - b[-1]) / (a[0] - a[-1])
    assert torch.allclose(b, slope * (a - a[-1]), atol=1e-12)
    assert torch.equal(make_schedule(name, zero_terminal_snr=True).alphas_cumprod, z.alphas_cumprod)


def test_shift_moves_log_snr_by_exactly_2_log_shift():
    base = make_schedule("scaled_linear", zero_terminal_snr=True)
    t = torch.arange(999)
    for shift in (0.5, 2.0, 3.0):
        shifted = shift_schedule(base, shift)
        assert torch.allclose(
            shifted.log_snr(t) - base.log_snr(t), torch.full((999,), -2 * math.log(shift)).double()
        )
        assert shifted.alphas_cumprod[-1] == 0  # zero SNR stays zero
    assert shift_schedule(base, 1.0) is base
    # SD3's rectified-flow form: SNR = ((1 - t)/t)^2 and t' = shift t / (1 + (shift - 1) t)
    tr, shift = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), 2.0
    tr2 = shift * tr / (1 + (shift - 1) * tr)
    assert torch.allclose(2 * torch.log((1 - tr2) / tr2), 2 * torch.log((1 - tr) / tr) - 2 * math.log(shift))


def test_resolution_shift():
    assert resolution_shift((16, 32, 32), (16, 64, 64)) == 2.0
    assert resolution_shift((1, 32, 32), (16, 32, 32)) == 4.0  # 16 frames: 16x the elements
    assert resolution_shift((256, 256), (256, 256)) == 1.0
    with pytest.raises(VidiffError):
        resolution_shift((0, 32), (32, 32))
    with pytest.raises(VidiffError, match="positive"):
        shift_schedule(make_schedule("linear"), -1.0)


def test_integer_and_continuous_timesteps():
    s = make_schedule("cosine", zero_terminal_snr=True)
    ti = torch.tensor([0, 10, 500, 999])
    assert torch.equal(s.alpha(ti), s.alpha(ti.double()))
    assert torch.equal(s.alpha(ti), s.alpha(ti.float()))
    assert s.alpha(3).item() == s.alpha(3.0).item() == s.alphas_cumprod[3].sqrt().item()
    mid = s.alpha_cumprod(torch.tensor(10.25))
    assert math.isclose(mid.item(), 0.75 * s.alphas_cumprod[10].item() + 0.25 * s.alphas_cumprod[11].item())
    assert s.alpha(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2)
    assert s.alpha(998.5).item() > 0 and s.alpha(999.0).item() == 0
    # timestep() inverts log_snr, also between table entries
    tf = torch.tensor([0.0, 3.3, 250.7, 998.2, 999.0], dtype=torch.float64)
    assert torch.allclose(s.timestep(s.log_snr(tf)), tf, atol=1e-6)
    for bad in (-1, 1000, 999.5, torch.tensor([5, 1200])):
        with pytest.raises(VidiffError, match="0 .. 999"):
            s.alpha(bad)


def test_unknown_names_and_bad_tables_raise():
    with pytest.raises(VidiffError, match="linear, scaled_linear, cosine"):
        make_schedule("sigmoid")
    with pytest.raises(VidiffError, match="bad option"):
        make_schedule("linear", beta_max=0.02)
    with pytest.raises(VidiffError, match="num_steps"):
        make_schedule("cosine", num_steps=1)
    with pytest.raises(VidiffError, match="decrease"):
        NoiseSchedule([0.9, 0.95, 0.5])
    with pytest.raises(VidiffError, match=r"\[0, 1\)"):
        NoiseSchedule([1.0, 0.5])
    with pytest.raises(VidiffError, match=r"\[0, 1\)"):
        NoiseSchedule.from_betas([0.1, 1.5])


def test_other_step_counts_and_repr():
    s = make_schedule("linear", num_steps=50, zero_terminal_snr=True)
    assert s.num_steps == 50 and s.alphas_cumprod[-1] == 0
    assert "num_steps=50" in repr(s)


@pytest.mark.slow
def test_tables_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    pairs = [("linear", "linear", 1e-4, 0.02), ("scaled_linear", "scaled_linear", 0.00085, 0.012)]
    pairs.append(("squaredcos_cap_v2", "cosine", 1e-4, 0.02))
    for theirs, ours, b0, b1 in pairs:
        for z in (False, True):
            ref = diffusers.DDPMScheduler(
                beta_schedule=theirs, beta_start=b0, beta_end=b1, rescale_betas_zero_snr=z
            )
            # diffusers keeps float32 tables
            assert torch.allclose(
                ref.alphas_cumprod.double(),
                make_schedule(ours, zero_terminal_snr=z).alphas_cumprod,
                atol=1e-6,
            )
