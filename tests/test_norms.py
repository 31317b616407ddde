"""vidiff.models.norms: the CPU RMSNorm kernel gives PyTorch's values and gradients; group_norm's group count."""

import torch
import torch.nn.functional as F

from vidiff.models.norms import RMSNorm, group_norm


def _with_grads(fn, x, params, grad):
    y = fn(x)
    return (y, *torch.autograd.grad(y, (x, *params), grad))


def test_group_norm_keeps_nn_group_norm_parameters_and_narrow_layers():
    norm = group_norm(48, 32)  # 32 does not divide 48: 16 groups
    assert isinstance(norm, torch.nn.GroupNorm)
    assert norm.num_groups == 16
    assert set(norm.state_dict()) == {"weight", "bias"}


def test_rms_norm_matches_pytorch():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 7, 16, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(4, 7, 16, dtype=torch.float64)
    ours = _with_grads(norm, x, (norm.weight,), grad)
    ref = _with_grads(lambda t: F.rms_norm(t, (16,), norm.weight, 1e-6), x, (norm.weight,), grad)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
