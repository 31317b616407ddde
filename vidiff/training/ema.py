"""Exponential moving average of a model's weights; its state_dict holds the averaged copy and the update count.

Under DeepSpeed ZeRO-3 each rank holds only a partition of every parameter (`p.ds_tensor`), so the EMA keeps the
same partition of each averaged tensor (`shard_like`): it costs each rank 1/N of the full copy and needs no gather
per step. Its state_dict gathers the partitions (a collective: every rank calls it), so checkpoints and exports hold
the full averaged tensors whatever the world size, and a sharded EMA loads them by taking its own partition.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
from torch import nn


class EMA(nn.Module):
    """EMA weights with the usual warm-up of the decay: min(decay, (1 + n) / (10 + n)). Always float32."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False).float()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.shapes: list[torch.Size] | None = None  # the full shapes, while the shadow holds ZeRO-3 partitions

    @property
    def sharded(self) -> bool:
        return self.shapes is not None

    @torch.no_grad()
    def shard_like(self, model: nn.Module) -> None:
        """Keep only this rank's ZeRO-3 partition of each averaged tensor, the one `model`'s parameters hold in
        `p.ds_tensor` (DeepSpeed splits each flattened parameter into equal zero-padded ranges, one per rank)."""
        params, shadow = list(model.parameters()), list(self.shadow.parameters())
        self.shapes = [s.shape for s in shadow]
        for s, p in zip(shadow, params, strict=True):
            s.data = _partition(s.data, p.ds_tensor.numel(), dist.get_rank())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        shadow = list(self.shadow.parameters())
        live = [p.ds_tensor if self.sharded else p for p in model.parameters()]
        current = [p.detach().to(s.dtype).view(s.shape) for p, s in zip(live, shadow, strict=True)]
        torch._foreach_lerp_(shadow, current, 1.0 - decay)
        for s_buf, buf in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s_buf.copy_(buf)
        self.num_updates += 1

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self.sharded:  # gather the partitions: checkpoints and exports hold full tensors, whatever the world size
            prefix = kwargs.get("prefix", "")
            for name, shard, shape in zip([n for n, _ in self.shadow.named_parameters()], self.shadow.parameters(),
                                          self.shapes, strict=True):
                state[f"{prefix}shadow.{name}"] = _gather(shard, shape)
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.sharded:  # full tensors in: keep this rank's partition
            for name, shard in self.shadow.named_parameters():
                key = f"{prefix}shadow.{name}"
                if key in state_dict:
                    state_dict[key] = _partition(state_dict[key], shard.numel(), dist.get_rank())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _partition(full: torch.Tensor, size: int, rank: int) -> torch.Tensor:
    """Rank `rank`'s range of `size` elements of the flattened tensor, zero-padded to `size` x the world size."""
    flat = full.detach().reshape(-1)
    padded = torch.zeros(size * dist.get_world_size(), dtype=flat.dtype, device=flat.device)
    padded[: flat.numel()] = flat
    return padded[rank * size : (rank + 1) * size].clone()


def _gather(shard: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    parts = [torch.empty_like(shard) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, shard.detach().contiguous())
    return torch.cat(parts)[: math.prod(shape)].view(shape).clone()
