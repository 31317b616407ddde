"""Joint image+video batches: each batch is all clips or all images (T == 1), drawn by a seeded rule.

Batches cannot mix frame counts without padding, so images get whole batches of their own (usually
larger ones, as in Open-Sora's buckets), chosen with probability `image_share`. Batch k of a run depends
only on (seed, k): the trainer sets `start_step` to its global step when an epoch starts, so a
resumed run sees exactly the batches the uninterrupted run saw, whatever the epoch bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from vidiff.errors import VidiffError


class JointBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        video_indices: Sequence[int],
        image_indices: Sequence[int],
        batch_size: int,
        image_batch_size: int | None = None,
        image_share: float = 0.0,
        steps_per_epoch: int = 100,
        seed: int = 0,
    ):
        if not 0.0 <= image_share <= 1.0:
            raise VidiffError(f"image_share must be between 0 and 1, got {image_share}")
        if image_share < 1.0 and not video_indices:
            raise VidiffError("the training data has no video clips; add clips or set image_share=1")
        if image_share > 0.0 and not image_indices:
            raise VidiffError("image_share > 0 but the training data has no images; add images or set image_share=0")
        if batch_size <= 0 or steps_per_epoch <= 0:
            raise VidiffError("batch_size and steps_per_epoch must be positive")
        self.video_indices = torch.as_tensor(list(video_indices), dtype=torch.long)
        self.image_indices = torch.as_tensor(list(image_indices), dtype=torch.long)
        self.batch_size = batch_size
        self.image_batch_size = image_batch_size or batch_size
        self.image_share = image_share
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.start_step = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.start_step + self.steps_per_epoch):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            use_images = bool(torch.rand((), generator=gen) < self.image_share)
            pool, size = (
                (self.image_indices, self.image_batch_size) if use_images else (self.video_indices, self.batch_size)
            )
            pick = torch.randint(len(pool), (size,), generator=gen)
            yield pool[pick].tolist()
