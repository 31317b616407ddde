"""`optim.adamw`: torch's AdamW implementations give the same update, and a wrong name is a config error."""

import pytest
import torch

from vidiff.config import load_config
from vidiff.errors import ConfigError
from vidiff.training.diffusion_module import OptimConfig
from vidiff.training.optimizer import ADAMW_IMPLEMENTATIONS, adamw
from vidiff.training.vae_config import VAETrainConfig


def _train(implementation: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    opt = adamw(model.parameters(), implementation, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        opt.zero_grad()
        model(torch.randn(32, 8, generator=gen)).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("implementation", [n for n in ADAMW_IMPLEMENTATIONS if n != "for-loop"])
def test_implementations_give_the_same_weights(implementation):
    for got, want in zip(_train(implementation), _train("for-loop"), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_an_unknown_implementation_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"train.optim.adamw must be one of \['for-loop', 'foreach', 'fused'\], got 'fast'"):
        load_config(OptimConfig, None, ["adamw=fast"])
    with pytest.raises(ConfigError, match=r"train.adamw must be one of .*got 'adam'"):
        load_config(VAETrainConfig, None, ["train.adamw=adam"])
