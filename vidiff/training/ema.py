"""Exponential moving average of a model's weights; its state_dict holds the averaged copy and the update count."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """EMA weights with the usual warm-up of the decay: min(decay, (1 + n) / (10 + n))."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        shadow = [p for p in self.shadow.parameters()]
        current = [p.detach().to(s.dtype) for p, s in zip(model.parameters(), shadow, strict=True)]
        torch._foreach_lerp_(shadow, current, 1.0 - decay)
        for s_buf, buf in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s_buf.copy_(buf)
        self.num_updates += 1
