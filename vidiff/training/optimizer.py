"""AdamW as training builds it: one place that picks torch's implementation (`optim.adamw` in the configs)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from vidiff.errors import ConfigError

# torch's three AdamW implementations, the same update within float rounding: a Python loop over the tensors
# (torch's default on the CPU), one multi-tensor kernel per operation (foreach), or one fused kernel per step.
# Fused took the optimizer from about 5 % of a toy training step to 2 % (scripts/bench/train_step.py).
ADAMW_IMPLEMENTATIONS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def check_adamw_implementation(name: str, key: str) -> None:
    """Raise a ConfigError naming `key` when `name` is not an AdamW implementation."""
    if name not in ADAMW_IMPLEMENTATIONS:
        raise ConfigError(f"{key} must be one of {list(ADAMW_IMPLEMENTATIONS)}, got {name!r}")


def adamw(params: Iterable, implementation: str = "fused", **kwargs) -> torch.optim.AdamW:
    """torch.optim.AdamW over `params` (tensors or parameter groups) with the named implementation."""
    check_adamw_implementation(implementation, "the AdamW implementation")
    return torch.optim.AdamW(params, **kwargs, **ADAMW_IMPLEMENTATIONS[implementation])
