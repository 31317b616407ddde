"""EMA weights follow the model with the warm-up decay and are carried in the state dict."""

import torch

from vidiff.training.ema import EMA


def test_ema_tracks_and_warms_up():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = ema.shadow.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first decay = min(0.9, 1/10) = 0.1: moves 90% of the way
    assert torch.allclose(ema.shadow.weight, start + 0.9, atol=1e-6)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.shadow.weight, model.weight, atol=1e-5)
    assert int(ema.num_updates) == 201
    assert "shadow.weight" in ema.state_dict()
    assert not any(p.requires_grad for p in ema.shadow.parameters())
