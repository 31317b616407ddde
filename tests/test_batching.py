"""Joint image+video batch sampling: pure batches, the asked-for image share, reproducible per epoch."""

import pytest

from vidiff.errors import VidiffError
from vidiff.training.batching import JointBatchSampler


def test_batches_are_pure_and_share_matches():
    videos, images = list(range(0, 50)), list(range(50, 80))
    sampler = JointBatchSampler(videos, images, batch_size=4, image_batch_size=8, image_share=0.3, steps_per_epoch=2000)
    n_image = 0
    for batch in sampler:
        if batch[0] >= 50:
            n_image += 1
            assert len(batch) == 8 and all(i >= 50 for i in batch)
        else:
            assert len(batch) == 4 and all(i < 50 for i in batch)
    assert abs(n_image / 2000 - 0.3) < 0.04


def test_batch_depends_only_on_its_step():
    a = JointBatchSampler(range(20), range(20, 30), 3, image_share=0.5, steps_per_epoch=10, seed=1)
    b = JointBatchSampler(range(20), range(20, 30), 3, image_share=0.5, steps_per_epoch=10, seed=1)
    first = list(a)
    b.start_step = 4  # a run resumed at step 4 continues where the first one was
    assert list(b)[:6] == first[4:]
    b.seed = 2
    assert list(b)[:6] != first[4:]


def test_bad_settings():
    with pytest.raises(VidiffError, match="image_share"):
        JointBatchSampler(range(3), [], 2, image_share=1.5)
    with pytest.raises(VidiffError, match="no images"):
        JointBatchSampler(range(3), [], 2, image_share=0.2)
    with pytest.raises(VidiffError, match="no video clips"):
        JointBatchSampler([], range(3), 2, image_share=0.2)
