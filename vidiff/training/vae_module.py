"""Training the CausalVAE3D: losses, the Lightning module, and `train_vae` (used by `vidiff train-vae`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from vidiff.config import save_config
from vidiff.errors import VidiffError
from vidiff.eval.psnr import psnr
from vidiff.models.vae import CausalVAE3D
from vidiff.runtime import keep_freed_memory
from vidiff.training.batching import JointBatchSampler, StepKeyedLoader, SyncSamplerWithTrainer
from vidiff.training.compile import maybe_compile, take_compile_seconds
from vidiff.training.lr_schedule import warmup_decay_factor
from vidiff.training.optimizer import adamw
from vidiff.training.quiet import quiet_lightning
from vidiff.training.strategy import average_gradients, trainer_layout
from vidiff.training.vae_config import VAETrainConfig
from vidiff.training.vae_eval import clip_psnr, latent_stats, toy_videos

NOISY_LATENT_STD = 0.2  # summary.json also reports held-out PSNR with this much noise on the normalised latents

__all__ = ["PatchDiscriminator3D", "VAEModule", "VAETrainConfig", "read_train_summary", "train_vae"]


class PatchDiscriminator3D(nn.Module):
    """Small 3D patch GAN discriminator: one real/fake logit per space-time patch."""

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = []
        c = in_channels
        for i in range(layers):
            out = channels * 2**i
            stride = (1, 2, 2) if i == 0 else 2
            mods += [nn.Conv3d(c, out, 3, stride=stride, padding=1), nn.GroupNorm(min(8, out), out), nn.LeakyReLU(0.2)]
            c = out
        mods.append(nn.Conv3d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _spatial_grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = lambda v: v[..., :, 1:] - v[..., :, :-1]
    dy = lambda v: v[..., 1:, :] - v[..., :-1, :]
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


class Reconstruction(nn.Module):
    """The VAE's training forward in one call, the part train.compile compiles: encode, take a posterior sample
    (or its mode), add latent noise, decode. Returns the reconstruction and the KL per batch item."""

    def __init__(self, vae: CausalVAE3D, sample_posterior: bool, latent_noise: float):
        super().__init__()
        self.vae = vae
        self.sample_posterior, self.latent_noise = sample_posterior, latent_noise

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(x)
        z = dist.sample() if self.sample_posterior else dist.mode()
        return self.vae.decode(add_latent_noise(z, self.latent_noise)), dist.kl()


class VAEModule(pl.LightningModule):
    """Reconstruction (L1/MSE/gradient) + KL, and an optional hinge-GAN term from `adv_start_step` on."""

    def __init__(self, cfg: VAETrainConfig):
        super().__init__()
        self.cfg = cfg
        self.vae = CausalVAE3D(cfg.model)
        self.disc = PatchDiscriminator3D(cfg.model.in_channels, cfg.loss.disc_channels) if cfg.loss.adv_weight > 0 else None
        self.automatic_optimization = False  # two optimizers when the discriminator is on
        # Kept out of the module tree (it holds self.vae, which stays registered as `vae.*` in checkpoints);
        # compiled when train.compile is on (vidiff.training.compile). Evaluation and saving use self.vae eagerly.
        forward = Reconstruction(self.vae, cfg.train.sample_posterior, cfg.train.latent_noise)
        object.__setattr__(self, "reconstruct", maybe_compile(forward, cfg.train.compile, "the VAE"))

    def configure_optimizers(self):
        t = self.cfg.train
        opts = [adamw(self.vae.parameters(), t.adamw, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)]
        if self.disc is not None:
            opts.append(adamw(self.disc.parameters(), t.adamw, lr=t.disc_lr, betas=(0.5, 0.9), weight_decay=0.0))
        return opts

    def lr_at(self, step: int) -> float:
        t = self.cfg.train
        return t.lr * warmup_decay_factor(step, t.warmup_steps, t.steps, "cosine", t.min_lr_ratio)

    def losses(self, x: torch.Tensor, adv: bool) -> tuple[torch.Tensor, dict, torch.Tensor]:
        lc = self.cfg.loss
        recon, kl = self.reconstruct(x)
        parts = {"l1": (recon - x).abs().mean()}
        loss = lc.l1_weight * parts["l1"]
        if lc.mse_weight:
            parts["mse"] = (recon - x).pow(2).mean()
            loss = loss + lc.mse_weight * parts["mse"]
        if lc.grad_weight:
            parts["grad"] = _spatial_grad_l1(recon, x)
            loss = loss + lc.grad_weight * parts["grad"]
        parts["kl"] = kl.mean() / x[0].numel()
        loss = loss + lc.kl_weight * parts["kl"]
        if adv:
            parts["g_adv"] = -self.disc(recon).mean()
            loss = loss + lc.adv_weight * parts["g_adv"]
        return loss, parts, recon

    def training_step(self, batch, batch_idx):
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        x = batch["video"]
        step = self.global_step
        adv = self.disc is not None and step >= self.cfg.loss.adv_start_step
        for g in opts[0].param_groups:
            g["lr"] = self.lr_at(step)
        loss, parts, recon = self.losses(x, adv)
        seconds = take_compile_seconds(self.reconstruct)
        if seconds is not None:  # once, straight to the loggers (self.log keeps only every log_every_n_steps-th step)
            for logger in self.loggers:
                logger.log_metrics({"train/compile_seconds": seconds}, step=step)
        opts[0].zero_grad(set_to_none=True)
        self.manual_backward(loss)
        average_gradients(self.vae.parameters())  # over the ranks, each holding a slice of the global batch
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), self.cfg.train.grad_clip)
        opts[0].step()
        if adv:
            # Hinge loss on detached reconstructions; the generator step above used the old discriminator.
            d_loss = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(recon.detach())).mean()
            opts[1].zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            average_gradients(self.disc.parameters())
            opts[1].step()
            parts["d"] = d_loss
        with torch.no_grad():
            parts["psnr"] = psnr(recon.detach(), x).mean()
        sync = self.trainer.world_size > 1  # the mean over the ranks' equal slices: the global batch's
        self.log("loss", loss.detach(), prog_bar=True, sync_dist=sync)
        self.log("psnr", parts["psnr"], prog_bar=True, sync_dist=sync)
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()}, sync_dist=sync)
        return loss.detach()


def add_latent_noise(z: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """z + sigma * std_c(z) * eps, sigma = scale * |N(0, 1)| per sample, std_c the per-channel std over the batch."""
    if scale == 0:
        return z
    std = z.detach().std(dim=(0, *range(2, z.ndim)), keepdim=True)
    sigma = scale * torch.randn((z.shape[0],) + (1,) * (z.ndim - 1), generator=generator, device=z.device).abs()
    return z + sigma * std * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)


class _VideoTensorDataset(torch.utils.data.Dataset):
    def __init__(self, videos: list[torch.Tensor]):
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.videos[i]}


def _train_loader(cfg: VAETrainConfig):
    d = cfg.data
    videos = toy_videos(d.num_samples, d.num_frames, d.height, d.width, d.seed, d.image_share)
    vids = [i for i, v in enumerate(videos) if v.shape[1] > 1]
    imgs = [i for i, v in enumerate(videos) if v.shape[1] == 1]
    sampler = JointBatchSampler(
        vids, imgs, cfg.train.batch_size, image_share=d.image_share, steps_per_epoch=_steps_per_epoch(cfg),
        seed=cfg.train.seed,
    )
    return StepKeyedLoader(_VideoTensorDataset(videos), batch_sampler=sampler, num_workers=0), sampler


def _steps_per_epoch(cfg: VAETrainConfig) -> int:
    """train_vae checkpoints at epoch ends, so checkpoint_every is a whole number of epochs: of 100 steps as always
    when it is a multiple of 100 (each epoch's DataLoader iterator draws from torch's RNG, so the epoch length is
    part of a run's random stream), else of checkpoint_every steps. Batches depend only on the step."""
    every = cfg.train.checkpoint_every
    return 100 if every <= 0 or every % 100 == 0 else every


@quiet_lightning()  # hides Lightning's console lines a user cannot act on (vidiff.training.quiet)
def train_vae(cfg: VAETrainConfig) -> Path:
    """Train on the toy world, then write `config.yaml` + `model.safetensors` (+ `summary.json`) to cfg.out_dir.

    Resumes from `out_dir/checkpoints/last.ckpt` when it exists. Returns the output folder.
    """
    out = Path(cfg.out_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    keep_freed_memory()  # reuse a step's freed activations instead of page-faulting them in again (vidiff.runtime)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "train_config.yaml")
    module = VAEModule(cfg)
    cpu0, wall0 = time.process_time(), time.perf_counter()  # the data's rendering counts, as before
    loader, sampler = _train_loader(cfg)
    ckpt_dir = out / "checkpoints"
    resume = ckpt_dir / "last.ckpt"
    # Every checkpoint_every steps, at epoch ends (_steps_per_epoch). Not with
    # every_n_train_steps: VAEModule steps its optimizers itself (manual optimization), and ModelCheckpoint then warns
    # at each such save, with a code example, that it holds the weights after the step, which is what resuming needs.
    every_n_epochs = max(cfg.train.checkpoint_every, 0) // _steps_per_epoch(cfg)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_epochs=every_n_epochs)
    layout = trainer_layout(cfg.train, "32-true", explicit_gradients=True)
    sampler.set_rank(0, layout["devices"] * layout["num_nodes"])  # a batch that does not split: an error before any step
    trainer = pl.Trainer(
        **layout,
        max_steps=cfg.train.steps,
        logger=pl.loggers.CSVLogger(out, name="logs"),
        callbacks=[ckpt_cb, SyncSamplerWithTrainer(sampler)],
        enable_model_summary=False,
        use_distributed_sampler=False,  # the batch sampler slices each global batch by rank itself
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader, ckpt_path=str(resume) if resume.exists() else None)
    train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if trainer.global_step < cfg.train.steps:
        raise VidiffError(f"training stopped at step {trainer.global_step} of {cfg.train.steps}; rerun to resume")
    if not trainer.is_global_zero:  # only rank 0 writes the model and evaluates it
        return out

    vae = module.vae.eval()
    d = cfg.data
    train_clips = torch.stack(toy_videos(min(256, d.num_samples), d.num_frames, d.height, d.width, d.seed))
    vae.config.latent_mean, vae.config.latent_std = latent_stats(vae, train_clips)
    vae.save_pretrained(out)
    held_out = torch.stack(toy_videos(cfg.eval.num_samples, d.num_frames, d.height, d.width, cfg.eval.seed))
    toy_psnr = clip_psnr(vae, held_out)
    noisy_psnr = clip_psnr(vae, held_out, latent_noise=NOISY_LATENT_STD)
    summary = {
        "out_dir": str(out),
        "steps": trainer.global_step,
        "train_wall_s": train_wall,  # of this run only, when it resumed
        "train_cpu_s": train_cpu,
        "threads": torch.get_num_threads(),
        "heldout_psnr_db": toy_psnr,
        # decoding latents with Gaussian noise of std NOISY_LATENT_STD added (normalised units): a diffusion model's errors
        f"heldout_psnr_db_latent_noise_{NOISY_LATENT_STD}": noisy_psnr,
        "latent_mean": vae.config.latent_mean,
        "latent_std": vae.config.latent_std,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out


def read_train_summary(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / "summary.json").read_text())
