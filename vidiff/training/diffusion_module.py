"""Lightning module that trains one diffusion stage on cached VAE latents with v-prediction.

Each step's global batch depends only on (seed, step) (vidiff.training.batching); each sample's
timestep, noise and conditioning dropout depend only on (seed, step, its index in the global batch)
(vidiff.training.sample_keys). So N ranks compute what one process computes, and a run resumed from a
checkpoint, even with another world size, reproduces the uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from vidiff.errors import ConfigError
from vidiff.models.cond import Cond
from vidiff.pipelines.stage import DiffusionStage, StageConfig
from vidiff.training.compile import maybe_compile, take_compile_seconds
from vidiff.training.ema import EMA
from vidiff.training.init_from import init_denoiser_from
from vidiff.training.lr_schedule import DECAYS, warmup_decay_factor
from vidiff.training.objective import DiffusionObjective
from vidiff.training.optimizer import adamw, check_adamw_implementation
from vidiff.training.sample_keys import SampleKeys
from vidiff.training.strategy import DistributedConfig


@dataclass
class OptimConfig:
    lr: float = 2e-4  # AdamW's peak learning rate, reached after warm-up
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW's moment decay rates
    warmup_steps: int = 100  # linear warm-up from lr / warmup_steps to lr
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    decay: str = "constant"  # after warm-up: "constant", or "cosine" down to lr * min_lr_ratio at train.max_steps
    min_lr_ratio: float = 0.1  # where the cosine decay ends, as a share of lr
    adamw: str = "fused"  # torch's AdamW implementation: "fused", "foreach" or "for-loop" (the same update)

    def __post_init__(self):
        if self.decay not in DECAYS:
            raise ConfigError(f"train.optim.decay must be 'constant' or 'cosine', got {self.decay!r}")
        check_adamw_implementation(self.adamw, "train.optim.adamw")


@dataclass
class DiffusionTrainConfig(DistributedConfig):  # train.strategy, devices, num_nodes (vidiff.training.strategy)
    max_steps: int = 2000  # optimizer steps in all; a rerun resumes until it reaches them
    steps_per_epoch: int = 100  # steps between epoch-end checkpoints (batches depend on the step, not the epoch)
    batch_size: int = 32  # global batch of video clips, split evenly across ranks
    image_batch_size: int = 64  # global batch when a step trains on images (T == 1)
    image_share: float = 0.0  # share of steps that train on images (joint image+video training)
    caption_dropout: float = 0.1  # per-sample probability of training without the text (for CFG)
    image_dropout: float = 0.0  # per-sample probability of training without Cond.image_latent (image-to-video)
    lowres_dropout: float = 0.0  # per-sample probability of training without Cond.lowres (super-resolution)
    loss_weighting: str = "min_snr"  # plain, min_snr, min_snr_plain (their mean) or learned (EDM2); docs/training.md
    min_snr_gamma: float = 5.0  # the cap of min-SNR weighting
    ema_decay: float = 0.999  # decay of the EMA weights that the export holds
    precision: str = "auto"  # auto = bf16-mixed on a GPU with bf16, else 32-true (fp32)
    seed: int = 0  # keys every random draw: batches, timesteps, noise, dropout
    num_workers: int = 0  # DataLoader worker processes (each item is one small read from the cache's shards)
    log_every: int = 10  # steps between logged metrics
    # run the training forward through torch.compile (inductor); where it cannot compile it warns once and trains
    # eagerly. The first step's compile time is logged as train/compile_seconds (vidiff.training.compile). Off:
    # at the toy sizes it does not pay (U-Net +5 % samples/s after 165 s of compiling per batch shape, DiT +0 %;
    # docs/benchmarks.md)
    compile: bool = False
    # a pipeline folder (e.g. a text-to-video run's export/) whose first stage starts this one: fine-tuning, e.g. an
    # image-to-video stage from a text-to-video one; its new input channels start at zero, so the fresh stage computes
    # what that stage does (vidiff.training.init_from). "": from scratch. A resumed run continues its checkpoint
    init_from: str = ""
    optim: OptimConfig = field(default_factory=OptimConfig)


class DiffusionModule(L.LightningModule):
    def __init__(self, stage_config: StageConfig, train_config: DiffusionTrainConfig):
        super().__init__()
        tc = train_config
        self.train_config = tc
        self.stage = DiffusionStage(stage_config)
        # The EMA copy never trains and stays in eval mode, so it is kept out of the module tree: Lightning warns
        # about submodules left in eval mode, and optimizers, DDP and summaries have no business with it. The
        # state-dict hooks below still checkpoint it under its old keys (`ema.shadow.*`, `ema.num_updates`) and
        # `_apply` moves it along with the module (`.to(device)`, dtype casts).
        object.__setattr__(self, "ema", EMA(self.stage.denoiser, tc.ema_decay))
        self.register_state_dict_post_hook(_save_ema)
        self.register_load_state_dict_pre_hook(_load_ema)
        # The training forward, compiled when train.compile is on. Kept out of the module tree like the EMA: the
        # stage stays registered as it is, so checkpoints, the EMA, sampling and the export see the eager stage
        # under its own keys. With train.compile off this is the stage itself.
        name = f"the {stage_config.name} stage's {stage_config.denoiser.kind} denoiser"
        compile_forward = tc.compile and tc.zero_stage != 3
        if tc.compile and not compile_forward:
            # ZeRO-3 gathers each layer's weights in hooks around its forward, which the compiled graph would skip
            rank_zero_warn("train.compile is off under ZeRO-3 (train.strategy=zero3*): it gathers each layer's "
                           "partitioned weights in hooks that a compiled forward bypasses; the step runs eagerly")
        object.__setattr__(self, "train_forward", maybe_compile(self.stage, compile_forward, name))
        self.objective = DiffusionObjective(
            tc.loss_weighting,
            tc.min_snr_gamma,
            dropout={"text": tc.caption_dropout, "image_latent": tc.image_dropout, "lowres": tc.lowres_dropout},
            seed=tc.seed,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        latents = batch["latents"].float()
        b = latents.shape[0]
        keys = SampleKeys.for_rank(self.train_config.seed, self.global_step, b, self.global_rank)
        out = self.objective(self.stage, latents, Cond.from_batch(batch, latents.dtype), keys, self.train_forward)
        self._log_compile_seconds()
        # every rank holds an equal slice of the global batch, so the mean over ranks is the global batch's loss
        sync = self.trainer.world_size > 1
        self.log("train/loss", out.loss, prog_bar=True, batch_size=b, sync_dist=sync)
        self.log(f"train/loss_t{latents.shape[2]}", out.loss, batch_size=b, sync_dist=sync)
        if out.objective is not out.loss:
            self.log("train/objective", out.objective, batch_size=b, sync_dist=sync)
        return out.objective

    def _log_compile_seconds(self) -> None:
        # Straight to the loggers, once: self.log would keep it only at a step that is a multiple of log_every.
        seconds = take_compile_seconds(self.train_forward)
        if seconds is not None:
            for logger in self.loggers:
                logger.log_metrics({"train/compile_seconds": seconds}, step=self.global_step)

    def init_weights_from(self, folder: str, vae_hash: str = "") -> list[str]:
        """Start the stage (and its EMA) from the first stage of pipeline folder `folder` (`train.init_from`);
        returns the tensors that did not come from it."""
        new = init_denoiser_from(self.stage, folder, vae_hash)
        object.__setattr__(self, "ema", EMA(self.stage.denoiser, self.train_config.ema_decay))
        return new

    def on_fit_start(self) -> None:
        # Under ZeRO-3 each rank now holds a partition of every parameter; the EMA keeps the same partition. A
        # checkpoint's (full) EMA has already been loaded by now, and is partitioned with the rest.
        if hasattr(next(self.stage.denoiser.parameters()), "ds_tensor") and not self.ema.sharded:
            self.ema.shard_like(self.stage.denoiser)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update(self.stage.denoiser)

    def configure_optimizers(self):
        o = self.train_config.optim
        opt = adamw(self._param_groups(), o.adamw, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        max_steps = self.train_config.max_steps
        factor = lambda step: warmup_decay_factor(step, o.warmup_steps, max_steps, o.decay, o.min_lr_ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _param_groups(self) -> list[dict]:
        groups = [{"params": [p for p in self.stage.denoiser.parameters() if p.requires_grad]}]
        if self.objective.log_variance is not None:
            groups.append({"params": list(self.objective.log_variance.parameters()), "weight_decay": 0.0})
        return groups

    def named_param_groups(self) -> list[list[tuple[str, torch.nn.Parameter]]]:
        """The optimizer's parameter groups as (name, parameter) pairs, in its order (for loading checkpoints of
        another layout, vidiff.training.checkpoint_layout)."""
        names = {id(p): n for n, p in self.named_parameters()}
        return [[(names[id(p)], p) for p in group["params"]] for group in self._param_groups()]

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The full EMA weights of the denoiser; under ZeRO-3 every rank must call it (it gathers partitions)."""
        p = "shadow."
        return {k[len(p):]: v for k, v in self.ema.state_dict().items() if k.startswith(p)}

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.ema._apply(fn, recurse)
        self.ema.float()  # a bf16 run casts the module; the average of small updates needs float32
        return self


def _save_ema(module: DiffusionModule, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for k, v in module.ema.state_dict().items():
        state_dict[f"{prefix}ema.{k}"] = v


def _load_ema(module: DiffusionModule, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    # `state_dict` is load_state_dict's own copy: taking the EMA's keys out keeps them from counting as unexpected
    p = f"{prefix}ema."
    ema = {k[len(p):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(p)]}
    result = module.ema.load_state_dict(ema, strict=False)
    missing_keys.extend(p + k for k in result.missing_keys)
    unexpected_keys.extend(p + k for k in result.unexpected_keys)
