"""EDM2-style learned loss weighting: it starts as the plain loss and learns the expected loss per noise level."""

import torch

from vidiff.diffusion.learned_weighting import NoiseLevelLogVariance, uncertainty_weighted_loss


def test_starts_as_the_plain_loss():
    u_net = NoiseLevelLogVariance(seed=3)
    t = torch.rand(16)
    losses = torch.rand(16) * 5
    u = u_net(t)
    assert torch.equal(u, torch.zeros(16))
    torch.testing.assert_close(uncertainty_weighted_loss(losses, u), losses.mean())


def test_learns_the_expected_loss_at_each_noise_level():
    """Losses whose mean grows 20x across t, with heavy per-sample noise: exp(u(t)) must find the mean."""
    torch.manual_seed(0)
    u_net = NoiseLevelLogVariance(seed=0)
    opt = torch.optim.Adam(u_net.parameters(), lr=0.02)

    def expected(t):
        return 0.05 * torch.exp(3.0 * t)

    for _ in range(1500):
        t = torch.rand(256)
        losses = expected(t) * torch.distributions.Exponential(1.0).sample((256,))  # mean 1 multiplicative noise
        opt.zero_grad()
        uncertainty_weighted_loss(losses, u_net(t)).backward()
        opt.step()
    grid = torch.linspace(0.05, 0.95, 10)
    with torch.no_grad():
        ratio = u_net(grid).exp() / expected(grid)
    assert ((ratio - 1).abs() < 0.2).all(), ratio

