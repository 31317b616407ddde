"""Random draws keyed by (seed, step, index of the sample in the global batch, stream).

Every sample's timestep, noise and conditioning dropout come from its own generator, so N ranks that
each take a slice of the global batch draw exactly what one process draws for the whole batch, and a
run resumed with another world size continues the same sequence. Each purpose has its own stream, so
adding a new draw (say, a new dropout) leaves the others unchanged. Draws are made on the CPU (the same
numbers on every device) and moved to the caller's device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor


def sample_seed(seed: int, step: int, index: int, stream: str) -> int:
    """A 63-bit generator seed for one sample's draws of one kind."""
    digest = hashlib.blake2b(f"{seed}/{step}/{index}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class SampleKeys:
    """The keys of the samples this process holds at one step: `indices` are their places in the global batch."""

    seed: int
    step: int
    indices: tuple[int, ...]

    @classmethod
    def for_rank(cls, seed: int, step: int, local_batch: int, rank: int = 0) -> SampleKeys:
        """Rank r of N holds slice r of the global batch: indices r * local_batch .. (r + 1) * local_batch - 1."""
        start = rank * local_batch
        return cls(seed, int(step), tuple(range(start, start + local_batch)))

    def __len__(self) -> int:
        return len(self.indices)

    def _generators(self, stream: str):
        for index in self.indices:
            yield torch.Generator().manual_seed(sample_seed(self.seed, self.step, index, stream))

    def rand(self, stream: str, device=None) -> Tensor:
        """One uniform number in [0, 1) per sample: [B]."""
        return torch.cat([torch.rand(1, generator=g) for g in self._generators(stream)]).to(device)

    def randint(self, stream: str, high: int, device=None) -> Tensor:
        """One integer in [0, high) per sample: [B]."""
        return torch.cat([torch.randint(high, (1,), generator=g) for g in self._generators(stream)]).to(device)

    def randn(self, stream: str, shape: tuple[int, ...], device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal noise of `shape` per sample: [B, *shape]."""
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in self._generators(stream)]).to(device)
