"""Rank-safe training randomness, with 2 simulated ranks: the ranks' slices together are the one-process
global batch, with the same per-sample timesteps, noise and dropout; no batch position is taken twice;
a resume with another world size continues the same sequence."""

import pytest
import torch

from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.unet import UNetConfig
from vidiff.pipelines.stage import DiffusionStage, StageConfig
from vidiff.training.batching import JointBatchSampler
from vidiff.training.objective import DiffusionObjective
from vidiff.training.sample_keys import SampleKeys

VIDEOS, IMAGES = list(range(40)), list(range(40, 60))


def _sampler(rank=0, world_size=1, start=0):
    s = JointBatchSampler(VIDEOS, IMAGES, batch_size=8, image_batch_size=12, image_share=0.3, steps_per_epoch=30,
                          seed=3, rank=rank, world_size=world_size)
    s.start_step = start
    return s


def test_rank_slices_together_are_the_one_process_global_batch():
    one = list(_sampler())
    r0, r1 = list(_sampler(0, 2)), list(_sampler(1, 2))
    assert any(len(b) == 12 for b in one) and any(len(b) == 8 for b in one)  # both kinds of batch occur
    for step, (whole, a, b) in enumerate(zip(one, r0, r1, strict=True)):
        assert a + b == whole, f"step {step}: the two slices are not the global batch"
        assert len(a) == len(b) == len(whole) // 2  # each position of the global batch goes to exactly one rank


def test_a_resume_with_another_world_size_continues_the_same_batches():
    one = list(_sampler())
    resumed = [a + b for a, b in zip(_sampler(0, 2, start=10), _sampler(1, 2, start=10), strict=False)]
    assert resumed[:20] == one[10:30]


def test_a_global_batch_that_does_not_split_evenly_is_a_clear_error():
    with pytest.raises(VidiffError, match="set train.batch_size to a multiple of 3"):
        JointBatchSampler(VIDEOS, IMAGES, batch_size=8, image_batch_size=12, world_size=3, rank=0)
    with pytest.raises(VidiffError, match="rank 2 is outside"):
        JointBatchSampler(VIDEOS, IMAGES, batch_size=8, world_size=2, rank=2)


def test_per_sample_draws_depend_on_the_sample_not_on_the_rank():
    whole = SampleKeys.for_rank(seed=5, step=17, local_batch=6)
    halves = [SampleKeys.for_rank(seed=5, step=17, local_batch=3, rank=r) for r in (0, 1)]
    assert halves[0].indices + halves[1].indices == whole.indices
    for draw in (lambda k: k.rand("drop/text"), lambda k: k.randint("timestep", 1000),
                 lambda k: k.randn("noise", (2, 3, 4))):
        assert torch.equal(torch.cat([draw(h) for h in halves]), draw(whole))
    assert not torch.equal(whole.randn("noise", (4,)), SampleKeys.for_rank(5, 18, 6).randn("noise", (4,)))  # step
    assert not torch.equal(whole.rand("a"), whole.rand("b"))  # streams are independent
    t = whole.randint("timestep", 1000)
    assert len(set(t.tolist())) > 1  # samples of one step do not share a timestep


def _stage():
    torch.manual_seed(0)
    config = StageConfig(latent_channels=4, latent_frames=2, latent_height=4, latent_width=4)
    config.denoiser.unet = UNetConfig(in_channels=4, model_channels=16, channel_mults=(1,), num_res_blocks=1,
                                      attention_levels=(0,), head_dim=16, text_dim=8, norm_groups=8,
                                      image_channels=4)
    stage = DiffusionStage(config)
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return stage


def test_two_ranks_compute_the_one_process_losses_timesteps_and_dropout():
    stage = _stage()
    objective = DiffusionObjective("min_snr", dropout={"text": 0.5, "image_latent": 0.5}, seed=1)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(8, 4, 2, 4, 4, generator=gen)
    cond = Cond(text=torch.randn(8, 3, 8, generator=gen), text_mask=torch.ones(8, 3, dtype=torch.bool),
                image_latent=torch.randn(8, 4, 1, 4, 4, generator=gen))

    whole = objective(stage, latents, cond, SampleKeys.for_rank(1, 40, 8))
    parts = [objective(stage, latents[r * 4:(r + 1) * 4], cond[r * 4:(r + 1) * 4], SampleKeys.for_rank(1, 40, 4, r))
             for r in (0, 1)]
    assert torch.equal(torch.cat([p.t for p in parts]), whole.t)
    torch.testing.assert_close(torch.cat([p.per_sample for p in parts]), whole.per_sample, rtol=1e-5, atol=1e-6)
    # the mean of the ranks' means is the global mean: what the gradient all-reduce averages
    torch.testing.assert_close((parts[0].loss + parts[1].loss) / 2, whole.loss, rtol=1e-5, atol=1e-6)

    dropped = objective.drop_inputs(cond, SampleKeys.for_rank(1, 40, 8))
    halves = [objective.drop_inputs(cond[r * 4:(r + 1) * 4], SampleKeys.for_rank(1, 40, 4, r)) for r in (0, 1)]
    assert torch.equal(torch.cat([h.text_mask for h in halves]), dropped.text_mask)
    assert torch.equal(torch.cat([h.image_latent for h in halves]), dropped.image_latent)
    text_dropped = ~dropped.text_mask.any(1)
    image_dropped = dropped.image_latent.flatten(1).abs().sum(1) == 0
    assert text_dropped.any() and image_dropped.any() and not torch.equal(text_dropped, image_dropped)


def test_objective_settings_are_checked():
    with pytest.raises(VidiffError, match="one of plain, min_snr, min_snr_plain, learned"):
        DiffusionObjective("p2")
    with pytest.raises(VidiffError, match="not a conditioning input"):
        DiffusionObjective(dropout={"fps": 0.1})
    with pytest.raises(VidiffError, match=r"\[0, 1\]"):
        DiffusionObjective(dropout={"text": 1.5})


def test_the_trainer_sets_the_samplers_rank_and_step_even_on_a_mid_epoch_resume():
    from types import SimpleNamespace

    from vidiff.training.batching import SyncSamplerWithTrainer

    sampler = _sampler()
    sync = SyncSamplerWithTrainer(sampler)
    trainer = SimpleNamespace(global_rank=1, world_size=2, global_step=0)
    sync.setup(trainer, None, "fit")  # Lightning calls setup on every rank before any batch
    sync.on_load_checkpoint(trainer, None, {"global_step": 10})  # a mid-epoch resume skips on_train_epoch_start
    assert (sampler.rank, sampler.world_size, sampler.start_step) == (1, 2, 10)
    assert list(sampler)[:5] == list(_sampler(1, 2, start=10))[:5]
