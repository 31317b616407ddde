"""Lightning module that trains one diffusion stage on cached VAE latents with v-prediction.

Randomness in a step (timesteps, noise, caption dropout) comes from a generator seeded by
(seed, global step), and batches depend only on (seed, epoch), so a run resumed from an epoch-end
checkpoint reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lightning as L
import torch

from vidiff.diffusion.learned_weighting import NoiseLevelLogVariance, uncertainty_weighted_loss
from vidiff.diffusion.objectives import WEIGHTINGS
from vidiff.errors import ConfigError, VidiffError
from vidiff.models.cond import Cond, caption_dropout
from vidiff.pipelines.stage import DiffusionStage, StageConfig
from vidiff.training.ema import EMA

# "learned": EDM2's learned per-noise-level weighting over the plain loss (vidiff.diffusion.learned_weighting)
TRAIN_WEIGHTINGS = (*WEIGHTINGS, "learned")


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    decay: str = "constant"  # after warm-up: "constant", or "cosine" down to lr * min_lr_ratio at train.max_steps
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if self.decay not in ("constant", "cosine"):
            raise ConfigError(f"train.optim.decay must be 'constant' or 'cosine', got {self.decay!r}")


def lr_factor(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Multiplier of optim.lr at a step: linear warm-up, then constant or cosine decay."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.decay == "constant":
        return 1.0
    frac = min(1.0, (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps))
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))


@dataclass
class DiffusionTrainConfig:
    max_steps: int = 2000
    steps_per_epoch: int = 100
    batch_size: int = 32
    image_batch_size: int = 64
    image_share: float = 0.0
    caption_dropout: float = 0.1
    loss_weighting: str = "min_snr"
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    precision: str = "auto"  # auto = bf16-mixed on a GPU with bf16, else 32-true
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    optim: OptimConfig = field(default_factory=OptimConfig)


class DiffusionModule(L.LightningModule):
    def __init__(self, stage_config: StageConfig, train_config: DiffusionTrainConfig):
        super().__init__()
        if train_config.loss_weighting not in TRAIN_WEIGHTINGS:
            raise VidiffError(
                f"train.loss_weighting must be one of {', '.join(TRAIN_WEIGHTINGS)}, "
                f"got {train_config.loss_weighting!r}"
            )
        self.train_config = train_config
        self.stage = DiffusionStage(stage_config)
        self.ema = EMA(self.stage.denoiser, train_config.ema_decay)
        learned = train_config.loss_weighting == "learned"
        self.loss_log_variance = NoiseLevelLogVariance(seed=train_config.seed) if learned else None

    def _step_generator(self) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        return gen.manual_seed(self.train_config.seed * 1_000_003 + int(self.global_step))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cfg = self.train_config
        gen = self._step_generator()
        latents = batch["latents"].float()
        cond = Cond(text=batch["text"].to(latents.dtype), text_mask=batch["text_mask"])
        cond = caption_dropout(cond, cfg.caption_dropout, generator=gen)
        weighting = "plain" if self.loss_log_variance is not None else cfg.loss_weighting
        losses, t = self.stage.per_sample_loss(latents, cond, weighting, cfg.min_snr_gamma, generator=gen)
        loss = losses.mean()
        frames = latents.shape[2]
        self.log("train/loss", loss, prog_bar=True, batch_size=latents.shape[0])
        self.log(f"train/loss_t{frames}", loss, batch_size=latents.shape[0])
        if self.loss_log_variance is None:
            return loss
        objective = uncertainty_weighted_loss(losses, self.loss_log_variance(t.float() / self.stage.schedule.num_steps))
        self.log("train/objective", objective, batch_size=latents.shape[0])
        return objective

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update(self.stage.denoiser)

    def configure_optimizers(self):
        o = self.train_config.optim
        groups = [{"params": [p for p in self.stage.denoiser.parameters() if p.requires_grad]}]
        if self.loss_log_variance is not None:
            groups.append({"params": list(self.loss_log_variance.parameters()), "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        max_steps = self.train_config.max_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, o, max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def ema_state(self) -> dict[str, torch.Tensor]:
        return self.ema.shadow.state_dict()
