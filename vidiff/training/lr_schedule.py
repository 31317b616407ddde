"""The learning-rate multiplier every trainer uses: linear warm-up, then constant or cosine decay to a floor."""

from __future__ import annotations

import math

from vidiff.errors import ConfigError

DECAYS = ("constant", "cosine")


def warmup_decay_factor(step: int, warmup_steps: int, total_steps: int, decay: str = "cosine", min_ratio: float = 0.1) -> float:
    """Multiplier of the base lr at `step`: (step + 1) / warmup_steps during warm-up, then 1 ("constant") or a
    cosine from 1 down to `min_ratio` at `total_steps` ("cosine"), staying there after."""
    if decay not in DECAYS:
        raise ConfigError(f"lr decay must be one of {', '.join(DECAYS)}, got {decay!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
