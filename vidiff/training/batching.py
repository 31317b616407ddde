"""Joint image+video batches: each batch is all clips or all images (T == 1), drawn by a seeded rule.

Batches cannot mix frame counts without padding, so images get whole batches of their own (usually
larger ones, as in Open-Sora's buckets), chosen with probability `image_share`; `joint_indices` says which items are
the images (an image set's stills where there is one, else the clips' first frames). The global batch of
step k depends only on (seed, k); rank r of N takes slice r of it. `SyncSamplerWithTrainer` sets the
sampler's start step, rank and world size from the trainer when an epoch starts (and the start step from a
checkpoint when one is loaded, mid-epoch included), so a resumed run (even with another world size) sees
exactly the batches the uninterrupted run saw. `StepKeyedLoader` is the DataLoader to put around the sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from vidiff.errors import VidiffError


def joint_indices(frames: Sequence[int], media_types: Sequence[str]) -> tuple[list[int], list[int], bool]:
    """(video items, image items, whether the images are an image set's) of a dataset whose item i has `frames[i]`
    latent frames and `media_types[i]`: the images are an image set's stills ("image") where there are any, else the
    one-frame items (the clips' first frames); video items have more than one frame."""
    videos = [i for i, t in enumerate(frames) if t > 1]
    stills = [i for i, (t, m) in enumerate(zip(frames, media_types, strict=True)) if t == 1 and m == "image"]
    if stills:
        return videos, stills, True
    return videos, [i for i, t in enumerate(frames) if t == 1], False


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
        rank: int = 0,
        world_size: int = 1,
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
        self.set_rank(rank, world_size)

    def set_rank(self, rank: int, world_size: int) -> None:
        """This process takes slice `rank` of `world_size` equal slices of every global batch."""
        if not 0 <= rank < world_size:
            raise VidiffError(f"rank {rank} is outside the world of {world_size} processes")
        for name, size in (("batch_size", self.batch_size), ("image_batch_size", self.image_batch_size)):
            if size % world_size:
                raise VidiffError(
                    f"the global {name} {size} does not split into {world_size} equal per-rank slices; "
                    f"set train.{name} to a multiple of {world_size}"
                )
        self.rank, self.world_size = rank, world_size

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
            share = size // self.world_size
            yield pool[pick[self.rank * share : (self.rank + 1) * share]].tolist()


class SyncSamplerWithTrainer(L.Callback):
    """At each epoch start, the sampler continues from the trainer's global step on the trainer's rank, so a
    resumed run replays the same global batches whatever the epoch bookkeeping or the world size."""

    def __init__(self, sampler: JointBatchSampler):
        self.sampler = sampler

    def setup(self, trainer, pl_module, stage: str) -> None:
        # every rank knows its place once the strategy is up, before any batch (and before a checkpoint loads)
        self.sampler.set_rank(trainer.global_rank, trainer.world_size)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.sampler.start_step = trainer.global_step
        self.sampler.set_rank(trainer.global_rank, trainer.world_size)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Lightning does not call on_train_epoch_start when it resumes from a checkpoint taken mid-epoch, and it
        # loads checkpoints before it builds the data iterator: start where the checkpointed run stopped.
        self.sampler.start_step = int(checkpoint["global_step"])


class StepKeyedLoader(DataLoader):
    """A DataLoader over a JointBatchSampler that SyncSamplerWithTrainer drives.

    Its position is the trainer's global step, which checkpoints hold and SyncSamplerWithTrainer restores, so it
    resumes exactly from any checkpoint, mid-epoch included, with no state of its own. state_dict and
    load_state_dict tell Lightning so; without them Lightning warns, on every resume from a checkpoint that is
    not at an epoch boundary (a run's last one usually), that the loader cannot resume.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass
