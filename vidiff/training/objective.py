"""The training objective of a diffusion stage, in one place: the noise-conditioning augmentation of a
super-resolution stage's low-res input or an image-to-video stage's image, per-sample conditioning dropout,
timestep and noise (keyed by each sample's place in the global batch), the noised input, and the weighted loss
(a fixed weighting, or EDM2's learned per-noise-level weighting)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from vidiff.diffusion import diffusion_loss
from vidiff.diffusion.learned_weighting import NoiseLevelLogVariance, uncertainty_weighted_loss
from vidiff.diffusion.objectives import WEIGHTINGS, add_noise
from vidiff.errors import VidiffError
from vidiff.models.cond import DROPPABLE, Cond
from vidiff.training.sample_keys import SampleKeys

# "learned": EDM2's learned per-noise-level weighting over the plain loss (vidiff.diffusion.learned_weighting)
TRAIN_WEIGHTINGS = (*WEIGHTINGS, "learned")


@dataclass
class StepLoss:
    """What one step computed: `objective` is what to minimise, `loss` the weighted diffusion loss to report."""

    objective: Tensor
    loss: Tensor
    per_sample: Tensor  # [B]
    t: Tensor  # [B] timesteps


class DiffusionObjective(nn.Module):
    """`dropout` maps a conditioning input ("text", or one of Cond's DROPPABLE fields) to the probability that a
    sample trains without it (classifier-free guidance needs the unconditional model too)."""

    def __init__(self, weighting: str = "min_snr", gamma: float = 5.0, dropout: dict[str, float] | None = None, seed: int = 0):
        super().__init__()
        if weighting not in TRAIN_WEIGHTINGS:
            raise VidiffError(f"train.loss_weighting must be one of {', '.join(TRAIN_WEIGHTINGS)}, got {weighting!r}")
        self.dropout = dict(dropout or {})
        for name, p in self.dropout.items():
            if name != "text" and name not in DROPPABLE:
                raise VidiffError(f"dropout of {name!r}: not a conditioning input; use text or {', '.join(DROPPABLE)}")
            if not 0.0 <= p <= 1.0:
                raise VidiffError(f"dropout probability of {name} must be in [0, 1], got {p}")
        self.weighting, self.gamma = weighting, gamma
        self.log_variance = NoiseLevelLogVariance(seed=seed) if weighting == "learned" else None

    def drop_inputs(self, cond: Cond, keys: SampleKeys) -> Cond:
        """Each sample loses each input with its own probability, drawn from its own key."""
        for name, p in self.dropout.items():
            if p > 0:
                cond = cond.drop(name, keys.rand(f"drop/{name}") < p)
        return cond

    @staticmethod
    def augment_input(stage, cond: Cond, keys: SampleKeys) -> Cond:
        """The stage's conditioning input (a super-resolution stage's low-res video, an image-to-video stage's image
        latent) corrupted at a level drawn per sample, uniform in [0, noise_aug_max] of its section (stage.lowres,
        stage.image), by noise from the sample's key (DiffusionStage.augment_input)."""
        value = getattr(cond, stage.config.conditioning_input)
        level = keys.rand("noise_aug/level", device=value.device) * stage.config.noise_augmentation.noise_aug_max
        noise = keys.randn("noise_aug/noise", tuple(value.shape[1:]), device=value.device, dtype=value.dtype)
        return stage.augment_input(cond, level, noise)

    def forward(
        self, stage, latents: Tensor, cond: Cond, keys: SampleKeys, predict: Callable[..., Tensor] | None = None
    ) -> StepLoss:
        """The loss of `stage` (a DiffusionStage) on clean `latents` [B, C, T, h, w] under `cond`.

        `predict(x_t, t, cond)` computes the prediction, `stage` itself by default; training passes the stage's
        compiled forward when train.compile is on (vidiff.training.compile)."""
        if len(keys) != latents.shape[0]:
            raise VidiffError(f"{len(keys)} sample keys for a batch of {latents.shape[0]}")
        schedule = stage.schedule
        if stage.config.lowres_channels:
            stage.check_lowres(cond, tuple(latents.shape))
            # a residual stage learns the correction to its clean low-res input (before the augmentation below)
            latents = stage.to_diffusion_space(latents, cond.lowres)
        if stage.config.image_channels and cond.image_latent is None:
            # the clip's own first frame: the causal VAE's latent frame 0 is that frame encoded alone
            cond = dataclasses.replace(cond, image_latent=latents[:, :, :1])
        if stage.config.conditioning_input:
            # Augment, then drop: a dropped row's input is then exactly zeros, what the backbone sees with no such
            # input at all, not noise at some level. (Each draw has its own stream: the order changes no draw.)
            cond = self.augment_input(stage, cond, keys)
        cond = self.drop_inputs(cond, keys)
        t = keys.randint("timestep", schedule.num_steps, device=latents.device)
        noise = keys.randn("noise", tuple(latents.shape[1:]), device=latents.device, dtype=latents.dtype)
        x_t = add_noise(latents, noise, schedule.alpha(t), schedule.sigma(t))
        pred = (stage if predict is None else predict)(x_t, t, cond)
        mask = None if cond.frame_mask is None else cond.frame_mask[:, None, :, None, None]
        weighting = "plain" if self.log_variance is not None else self.weighting
        per_sample = diffusion_loss(
            pred, latents, noise, t, schedule, stage.config.prediction, weighting, self.gamma, mask=mask, reduction="none"
        )
        loss = per_sample.mean()
        if self.log_variance is None:
            return StepLoss(loss, loss, per_sample, t)
        objective = uncertainty_weighted_loss(per_sample, self.log_variance(t.float() / schedule.num_steps))
        return StepLoss(objective, loss, per_sample, t)
