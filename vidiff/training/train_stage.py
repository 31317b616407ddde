"""`vidiff train`: fit a diffusion stage on a latent cache with Lightning, then export EMA weights.

The run folder holds Lightning checkpoints (`checkpoints/last.ckpt`, resumed automatically),
CSV and TensorBoard logs, and `export/`: a pipeline folder (vidiff.pipelines.pipeline_folder) with the
VAE, the text encoder and the stage's EMA weights, which `vidiff generate --checkpoint RUN/export` reads.
Only rank 0 writes.

Image batches (`train.image_share`) come from an image set where the data has one, else from the clips' first frames.
An image set is a second cache, `data.image_latents` (`vidiff encode` of a `vidiff curate-images` manifest with the
same VAE and size), rather than images added to the video cache: the video cache is used as it is (no re-encode to add
or swap an image set), one image cache serves video caches of other frame counts or strides, and the clip settings of
an encode (frames, stride, windows, image share) mean nothing for images. A cache encoded from a manifest holding both
works too: its image-set items are marked (media_type "image") and the same rule applies. Captions are encoded here by
the run's text encoder, so both caches share it by construction; their VAE is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import Dataset

from vidiff.config import save_config
from vidiff.errors import VidiffError
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig, encode_captions
from vidiff.pipelines.pipeline_folder import save_pipeline, vae_hash
from vidiff.pipelines.stage import DiffusionStage, StageConfig
from vidiff.runtime import keep_freed_memory
from vidiff.training.batching import JointBatchSampler, StepKeyedLoader, SyncSamplerWithTrainer, joint_indices
from vidiff.training.diffusion_module import DiffusionModule, DiffusionTrainConfig
from vidiff.training.last_checkpoint import SaveLastCheckpoint
from vidiff.training.latent_cache import ChainedTensors, LatentCache, load_latent_cache, tensor_shapes
from vidiff.training.quiet import quiet_lightning
from vidiff.training.strategy import trainer_layout
from vidiff.training.zero_checkpoint import parameter_shapes, shape_mismatch

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    latents: str = ""  # a latent cache folder written by `vidiff encode`
    # a cache of an image set (`vidiff encode` of a `vidiff curate-images` manifest; the same VAE and size): image
    # batches (train.image_share) then come from its stills, not from the clips' first frames. "": none
    image_latents: str = ""


@dataclass
class TrainRunConfig:
    out_dir: str = "runs/base"  # run folder: checkpoints/, logs/, tb/ and export/
    stage: StageConfig = field(default_factory=StageConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)


class LatentTextDataset(Dataset):
    """Cached latents [C, t, h, w] with their encoded captions and, for a super-resolution stage, the low-res
    latents [C', t', h', w'] each is conditioned on (`lowres`, in the same order); items are dicts of tensors.
    Latents are read from the cache's shards when an item is taken, so each rank reads only its slices' items.
    `media_types` says which items are an image set's stills ("image"; the rest "video")."""

    def __init__(
        self,
        latents: Sequence[torch.Tensor],
        text: torch.Tensor,
        text_mask: torch.Tensor,
        lowres: Sequence[torch.Tensor] | None = None,
        media_types: Sequence[str] | None = None,
    ):
        if lowres is not None and len(lowres) != len(latents):
            raise VidiffError(f"{len(lowres)} low-res latents for {len(latents)} latents; re-encode the latent cache")
        self.latents, self.text, self.text_mask, self.lowres = latents, text, text_mask, lowres
        self.media_types = list(media_types) if media_types is not None else ["video"] * len(latents)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"latents": self.latents[i], "text": self.text[i], "text_mask": self.text_mask[i]}
        if self.lowres is not None:
            item["lowres"] = self.lowres[i]
        return item


def build_dataset(config: TrainRunConfig, text_encoder: TextEncoder) -> tuple[LatentTextDataset, Path]:
    """The latent cache (and the image set of data.image_latents, after it) as a dataset for `config.stage`, checked
    against it; with the low-res latents when the stage is a super-resolution stage (a base stage ignores them).
    Returns it with the cache's VAE folder."""
    cache = load_latent_cache(config.data.latents)
    stage = config.stage
    # shapes from the shards' headers: no tensor is read here
    check_latent_shapes(f"latent cache {config.data.latents}", tensor_shapes(cache.latents), stage)
    lowres = check_lowres_latents(config, cache.latents, cache.lowres) if stage.lowres_channels else None
    scale = stage.residual_scale
    if scale and cache.residual_std and not 0.5 <= cache.residual_std / scale <= 2.0:
        # the diffusion then runs on residuals of std far from 1, which its schedule and loss weighting assume
        log.warning("the residual stage's stage.lowres.residual_scale=%s is far from the std of the residuals in %s "
                    "(%s, meta.json lowres_residual_std); set stage.lowres.residual_scale=%s",
                    scale, config.data.latents, cache.residual_std, cache.residual_std)
    if text_encoder.dim != stage.text_dim:
        raise VidiffError(
            f"the text encoder gives features of width {text_encoder.dim} but the denoiser attends to "
            f"{stage.text_dim}; set the denoiser's text_dim={text_encoder.dim} or use another text encoder"
        )
    latents, captions, media = cache.latents, list(cache.captions), list(cache.media_types)
    if config.data.image_latents:
        images = load_image_set(config, cache)
        latents = ChainedTensors(latents, images.latents)
        captions += images.captions
        media += ["image"] * len(images.latents)
    text, mask = encode_with_blanks(text_encoder, captions)
    return LatentTextDataset(latents, text, mask, lowres, media), cache.vae_dir


def check_latent_shapes(where: str, latent_shapes: list[tuple[int, ...]], stage: StageConfig) -> None:
    """A VidiffError naming `where` and the fix when latents of `latent_shapes` do not fit `stage`."""
    shapes = {z[-3:] for z in latent_shapes}
    c0 = latent_shapes[0][0]
    if c0 != stage.latent_channels:
        raise VidiffError(
            f"{where} has {c0} latent channels but stage.latent_channels is "
            f"{stage.latent_channels}; set stage.latent_channels={c0} or re-encode with the matching VAE"
        )
    spatial = {s[1:] for s in shapes}
    full = (stage.latent_height, stage.latent_width)
    # A super-resolution stage may train on crops (as Imagen Video does, to keep it cheap) and still sample at its
    # full size: its convolutions and relative positions do not depend on the size of the grid.
    crops = bool(stage.lowres_channels)
    if (not crops and spatial != {full}) or (crops and any(h > full[0] or w > full[1] for h, w in spatial)):
        raise VidiffError(
            f"{where} holds latents of size {sorted(spatial)} but the stage generates "
            f"{full[0]}x{full[1]}{' (or trains on crops of it)' if crops else ''}; set "
            "stage.latent_height/latent_width to match"
        )


def load_image_set(config: TrainRunConfig, videos: LatentCache) -> LatentCache:
    """The cache of data.image_latents, once it is checked to hold only images (T == 1) of the VAE and the size that
    the video cache and the stage have."""
    path, stage = config.data.image_latents, config.stage
    if stage.lowres_channels:
        raise VidiffError(f"data.image_latents={path}: the {stage.name} stage is a super-resolution stage, which "
                          "trains on videos only; leave data.image_latents unset")
    images = load_latent_cache(path)
    shapes = tensor_shapes(images.latents)
    clips = [n for n, z in enumerate(shapes) if z[1] != 1]
    if clips:
        raise VidiffError(
            f"data.image_latents={path} holds {len(clips)} video items (the first: item {clips[0]}); it takes a "
            "cache of images: `vidiff curate-images` then `vidiff encode --manifest IMAGES/manifest.parquet`"
        )
    if images.vae_dir.resolve() != videos.vae_dir.resolve() and vae_hash(images.vae_dir) != vae_hash(videos.vae_dir):
        raise VidiffError(
            f"data.image_latents={path} was encoded by the VAE in {images.vae_dir}, but data.latents="
            f"{config.data.latents} by another, in {videos.vae_dir}: their latents do not mix; encode the images "
            f"again with `vidiff encode --checkpoint {videos.vae_dir}`"
        )
    check_latent_shapes(f"image latent cache {path} (data.image_latents)", shapes, stage)
    return images


def check_lowres_latents(config: TrainRunConfig, latents: Sequence[torch.Tensor], lowres: Sequence[torch.Tensor] | None
                         ) -> Sequence[torch.Tensor]:
    """The cache's low-res latents, if each has the shape the super-resolution stage `config.stage` takes for its
    latent; else a VidiffError naming both shapes and the fix."""
    stage, where = config.stage, f"latent cache {config.data.latents}"
    kind = "frames" if stage.lowres.temporal_factor > 1 else "space"
    if stage.lowres.resample != "latent":
        kind += f" --resample {stage.lowres.resample}"
    if lowres is None:
        raise VidiffError(
            f"the {stage.name} stage is conditioned on low-res latents (lowres_channels={stage.lowres_channels}) but "
            f"the {where} holds none; re-encode it with `vidiff encode --lowres {kind}`"
        )
    for z, lr in sorted(set(zip(tensor_shapes(latents), tensor_shapes(lowres), strict=True))):
        if lr[0] != stage.lowres_channels:
            raise VidiffError(
                f"the {where} holds low-res latents of {lr[0]} channels but the {stage.name} stage's denoiser takes "
                f"lowres_channels={stage.lowres_channels}; set the denoiser's lowres_channels={lr[0]} or re-encode "
                "with the stage's VAE"
            )
        expected = stage.lowres_shape(*z[1:])
        if lr != expected:
            raise VidiffError(
                f"the {where} pairs latents {list(z)} with low-res latents {list(lr)}, but the {stage.name} stage "
                f"takes {'none for them' if expected is None else list(expected)} (stage.lowres.temporal_factor="
                f"{stage.lowres.temporal_factor}, spatial_factor={stage.lowres.spatial_factor}, resample="
                f"{stage.lowres.resample}); set them to "
                f"match the cache or re-encode it with `vidiff encode --lowres {kind}`"
            )
    return lowres


def encode_with_blanks(encoder, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode captions once; items without a caption get an all-masked (unconditional) text."""
    unique = sorted({c for c in captions if c.strip()})
    if not unique:  # no captions at all: an unconditional model
        return torch.zeros(len(captions), 1, encoder.dim, dtype=torch.float16), torch.zeros(len(captions), 1, dtype=torch.bool)
    encoded = encode_captions(encoder, unique)
    index = {c: i for i, c in enumerate(unique)}
    n, length = len(captions), encoded["text"].shape[1]
    text = torch.zeros(n, length, encoded["text"].shape[2], dtype=encoded["text"].dtype)
    mask = torch.zeros(n, length, dtype=torch.bool)
    for i, c in enumerate(captions):
        if c in index:
            text[i], mask[i] = encoded["text"][index[c]], encoded["text_mask"][index[c]]
    return text, mask


@quiet_lightning()  # hides Lightning's console lines a user cannot act on (vidiff.training.quiet)
def train_stage(config: TrainRunConfig, progress: bool = True) -> Path:
    """Train (or resume) the stage described by `config`; returns the export folder."""
    if not config.data.latents:
        raise VidiffError("data.latents is not set; pass data.latents=DIR with a cache written by `vidiff encode`")
    tc = config.train
    keep_freed_memory()  # reuse a step's freed activations instead of page-faulting them in again (vidiff.runtime)
    L.seed_everything(tc.seed, verbose=False)
    out = Path(config.out_dir)
    module = DiffusionModule(config.stage, tc)
    last = out / "checkpoints" / "last.ckpt"  # a file, or a folder of ZeRO shards
    if last.exists():
        check_resumable(last, module, out)
    if rank_zero_only.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "train.yaml")

    text_encoder = TextEncoder(config.text)
    dataset, vae_dir = build_dataset(config, text_encoder)
    frames = [z[1] for z in tensor_shapes(dataset.latents)]
    video_indices, image_indices, image_set = joint_indices(frames, dataset.media_types)
    if tc.image_share > 0 and not image_indices:
        raise VidiffError(
            f"train.image_share={tc.image_share} asks for image batches, but the latent cache {config.data.latents} "
            "holds no images (T == 1 items); encode it with images (`vidiff encode ... --image-share 0.2`), add an "
            "image set (data.image_latents=DIR, docs/training.md), or set train.image_share=0"
        )
    if tc.image_share > 0 and image_set and rank_zero_only.rank == 0:  # else the clips' first frames, as always
        print(f"image batches (train.image_share={tc.image_share}) from the image set's {len(image_indices)} stills",
              flush=True)
    sampler = JointBatchSampler(
        video_indices=video_indices,
        image_indices=image_indices,
        batch_size=tc.batch_size,
        image_batch_size=tc.image_batch_size,
        image_share=tc.image_share,
        steps_per_epoch=tc.steps_per_epoch,
        seed=tc.seed,
    )
    loader = StepKeyedLoader(dataset, batch_sampler=sampler, num_workers=tc.num_workers)  # each rank takes its slice
    layout = trainer_layout(tc, tc.precision)
    sampler.set_rank(0, layout["devices"] * layout["num_nodes"])  # a batch that does not split: an error before any step

    if tc.init_from and not last.exists():
        new = module.init_weights_from(tc.init_from, vae_hash(vae_dir))
        if rank_zero_only.rank == 0:
            print(f"stage initialised from {tc.init_from} (train.init_from); tensors not from it, at their zero or fresh "
                  f"initialisation: {', '.join(new) or 'none'}", flush=True)
    trainer = L.Trainer(
        **layout,
        max_steps=tc.max_steps,
        max_epochs=-1,
        gradient_clip_val=tc.optim.grad_clip or None,
        logger=[L.pytorch.loggers.CSVLogger(out, name="logs"), _tensorboard(out)],
        callbacks=[
            SaveLastCheckpoint(last, tc.steps_per_epoch),
            SyncSamplerWithTrainer(sampler),
        ],
        use_distributed_sampler=False,  # the batch sampler slices each global batch by rank itself
        log_every_n_steps=tc.log_every,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
        enable_checkpointing=False,  # SaveLastCheckpoint writes the one checkpoint there is
    )
    trainer.fit(module, loader, ckpt_path=str(last) if last.exists() else None)
    export = out / "export"
    ema = module.ema_state()  # on every rank: under ZeRO-3 it gathers the partitions
    if trainer.is_global_zero:
        export_stage(module.stage, ema, text_encoder, export, vae_dir)
    trainer.strategy.barrier("export")
    return export


def check_resumable(last: Path, module: DiffusionModule, out: Path) -> None:
    """A VidiffError before any step when the checkpoint `last` holds other parameters than `module`'s."""
    try:
        stored = parameter_shapes(last)
    except (OSError, RuntimeError, KeyError, IndexError) as exc:
        raise VidiffError(f"cannot read the checkpoint {last} to resume from ({exc}); move it away to start afresh, "
                          "or resume from a complete checkpoint") from None
    differs = shape_mismatch(stored, [(n, p) for group in module.named_param_groups() for n, p in group])
    if differs:
        raise VidiffError(
            f"{out} holds a checkpoint of another model ({last}: {differs}); train this config in another out_dir, "
            f"or resume with the config that run used ({out / 'train.yaml'})"
        )


def export_stage(stage: DiffusionStage, ema: dict[str, torch.Tensor], text_encoder: TextEncoder, export_dir: Path,
                 vae_dir: Path) -> Path:
    """A stage's EMA weights `ema` with the VAE it was trained on and its text encoder, as one pipeline folder."""
    return save_pipeline(export_dir, vae_dir, text_encoder, [(stage, {f"denoiser.{k}": v for k, v in ema.items()})])


def _tensorboard(out: Path):
    try:
        return L.pytorch.loggers.TensorBoardLogger(out, name="tb")
    except ModuleNotFoundError:  # tensorboard is optional; CSV logs always exist
        return L.pytorch.loggers.CSVLogger(out, name="tb_unavailable")
