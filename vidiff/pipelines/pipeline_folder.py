"""A pipeline on disk: one folder holding the VAE and the text encoder once and every stage beside them,
each in the one model format, with `pipeline.yaml` naming the parts:

    export/
      pipeline.yaml          task, format version, the folder of each part, each stage's sampling settings
      vae/                   config.yaml + model.safetensors
      text_encoder/          config.yaml + model.safetensors
      base/                  config.yaml + model.safetensors   (one folder per stage, in cascade order:
      tsr/ ...                                                  vidiff.pipelines.cascade)

Every stage records the hash of the VAE it was trained on (StageConfig.vae_hash); saving and loading check it
against the folder's VAE, and that the stages chain (vidiff.pipelines.cascade.check_chain).

Exports written before this layout (`stage.yaml`, `denoiser.safetensors`, `text_encoder.safetensors`
and a `vae/` copy in one folder) still load; `vidiff upgrade-export OLD NEW` rewrites one in this layout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidiff.config import from_dict, load_config, save_config, to_dict
from vidiff.errors import VidiffError
from vidiff.models.pretrained import CONFIG_FILE, WEIGHTS_FILE, load_weights
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig
from vidiff.models.vae import CausalVAE3D
from vidiff.pipelines.cascade import check_chain, stage_settings
from vidiff.pipelines.stage import DiffusionStage, StageConfig

PIPELINE_FILE = "pipeline.yaml"
FORMAT_VERSION = 1
TASKS = ("text_to_video", "image_to_video")
LEGACY_STAGE_FILE = "stage.yaml"


@dataclass
class PipelineIndex:
    """The contents of pipeline.yaml: folder names of the shared parts and of the stages, in order."""

    task: str = "text_to_video"  # "text_to_video" or "image_to_video"
    format_version: int = FORMAT_VERSION  # layout version; a folder newer than this vidiff reads is refused
    vae: str = "vae"  # folder of the VAE, beside pipeline.yaml
    text_encoder: str = "text_encoder"  # folder of the text encoder, beside pipeline.yaml
    stages: list[str] = field(default_factory=lambda: ["base"])  # stage folders in cascade order, base first
    # per stage name: its sampling settings here (sampler, steps, cfg, image_cfg, guidance_rescale; noise_aug_level
    # for a super-resolution or image-to-video stage: vidiff.pipelines.cascade.StageSampling); a stage without an entry
    # uses its config's
    sampling: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise VidiffError(f"pipeline task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.format_version > FORMAT_VERSION:
            raise VidiffError(
                f"pipeline format {self.format_version} is newer than this vidiff reads ({FORMAT_VERSION}); upgrade vidiff"
            )
        if not self.stages:
            raise VidiffError("a pipeline needs at least one stage")
        stray = sorted(set(self.sampling) - set(self.stages))
        if stray:
            raise VidiffError(
                f"pipeline sampling settings name {', '.join(stray)}, not among its stages ({', '.join(self.stages)}); "
                "remove them or add the stages"
            )


@dataclass
class Pipeline:
    """The loaded parts of a pipeline folder; `stages` in cascade order (the base stage first)."""

    vae: CausalVAE3D
    text_encoder: TextEncoder
    stages: list[DiffusionStage]
    index: PipelineIndex

    def to(self, device) -> Pipeline:
        self.vae.to(device)
        self.text_encoder.to(device)
        for stage in self.stages:
            stage.to(device)
        return self


def check_parts(vae_config, text_dim: int, stages: list[StageConfig], where: str, vae_hash: str = "") -> None:
    """The stages fit the shared parts: latent channels of the VAE (and, where recorded, its hash), text width of
    the encoder."""
    for s in stages:
        if vae_hash and s.vae_hash and s.vae_hash != vae_hash:
            raise VidiffError(
                f"{where}: stage {s.name!r} was trained on another VAE (hash {s.vae_hash}) than this pipeline's "
                f"(hash {vae_hash}): its latents mean something else to this VAE; use the stage with the VAE it was "
                "trained on, or retrain it on latents of this one (`vidiff encode --checkpoint` this VAE)"
            )
        if s.latent_channels != vae_config.latent_channels:
            raise VidiffError(
                f"{where}: stage {s.name!r} works on {s.latent_channels} latent channels but the VAE makes "
                f"{vae_config.latent_channels}; train the stage on this VAE's latents"
            )
        if s.text_dim != text_dim:
            raise VidiffError(
                f"{where}: stage {s.name!r} attends to text features of width {s.text_dim} but the text encoder "
                f"gives {text_dim}; use the text encoder the stage was trained with"
            )


def save_pipeline(
    folder: str | Path,
    vae: CausalVAE3D | str | Path,
    text_encoder: TextEncoder,
    stages: list[tuple[DiffusionStage, dict | None]],
    task: str | None = None,
    sampling: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write a pipeline folder. `task`: "image_to_video" when the first stage takes an image, else "text_to_video"
    by default. `vae` is a model or a VAE folder (its files are copied as they are);
    `stages` are (stage, weights to save or None for its live weights), in cascade order, each stored under
    its config's name and stamped with the VAE's hash. pipeline.yaml records each stage's sampling settings:
    its config's, or those `sampling` gives for it. The folder is written beside the target and then swapped
    in, so a failed export leaves an earlier one intact."""
    folder = Path(folder)
    names = [s.config.name for s, _ in stages]
    if len(set(names)) != len(names):
        raise VidiffError(f"pipeline stages need distinct names (stage.name), got {names}")
    configs = [s.config for s, _ in stages]
    settings = {c.name: to_dict(stage_settings(c, (sampling or {}).get(c.name), where=str(folder))) for c in configs}
    task = task or ("image_to_video" if configs[0].image_channels else "text_to_video")
    index = PipelineIndex(task=task, stages=names, sampling=settings)
    vae_model = vae if isinstance(vae, CausalVAE3D) else _vae_folder_model(Path(vae))
    vae_hash = vae_model.fingerprint()
    check_chain(configs, str(folder))
    check_parts(vae_model.config, text_encoder.dim, configs, str(folder), vae_hash)
    for c in configs:
        c.vae_hash = vae_hash  # from now on the stage belongs to this VAE
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        if isinstance(vae, CausalVAE3D):
            vae.save_pretrained(tmp / index.vae)
        else:
            (tmp / index.vae).mkdir()
            for name in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copy2(Path(vae) / name, tmp / index.vae / name)
        text_encoder.save_pretrained(tmp / index.text_encoder)
        for stage, state in stages:
            stage.save_pretrained(tmp / stage.config.name, state_dict=state)
        save_config(index, tmp / PIPELINE_FILE)
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def vae_hash(folder: str | Path) -> str:
    """The hash (CausalVAE3D.fingerprint) of the VAE in `folder`, which stages trained on its latents record."""
    return _vae_folder_model(Path(folder)).fingerprint()


def _vae_folder_model(folder: Path) -> CausalVAE3D:
    """The VAE of a folder whose files are copied as they are (loaded for its hash and config)."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise VidiffError(f"VAE folder {folder} has no {name}; pass a folder written by `vidiff train-vae`")
    return CausalVAE3D.from_pretrained(folder)


def _swap_in(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_index(folder: str | Path) -> PipelineIndex:
    folder = Path(folder)
    if not folder.is_dir():
        raise VidiffError(f"checkpoint {folder} is not a folder; pass the export/ folder written by `vidiff train`")
    if not (folder / PIPELINE_FILE).is_file():
        hint = ""
        if (folder / CONFIG_FILE).is_file():
            hint = " (it looks like a single model's folder, e.g. a VAE, not a pipeline)"
        raise VidiffError(
            f"{folder} is not a pipeline folder: it has no {PIPELINE_FILE}{hint}; pass the export/ folder "
            "written by `vidiff train` or a cascade folder written by `vidiff cascade`"
        )
    return load_config(PipelineIndex, folder / PIPELINE_FILE)


def stage_configs(folder: Path, index: PipelineIndex) -> list[StageConfig]:
    """The configs of the stages pipeline.yaml names, read without their weights; each folder must exist."""
    for name in index.stages:
        if not (folder / name / CONFIG_FILE).is_file():
            raise VidiffError(
                f"{folder / PIPELINE_FILE} names stage {name!r}, but {folder / name} has no {CONFIG_FILE}; restore "
                f"the stage's folder (written by `vidiff train` or `vidiff cascade`) or remove {name!r} from its stages"
            )
    return [load_config(StageConfig, folder / name / CONFIG_FILE) for name in index.stages]


def load_pipeline(folder: str | Path) -> Pipeline:
    """Load a pipeline folder, or an export in the layout before pipeline.yaml (converted in memory). The stages'
    configs are checked (they chain; vidiff.pipelines.cascade) before any weights load."""
    folder = Path(folder)
    if is_legacy_export(folder):
        return load_legacy_export(folder)
    index = read_index(folder)
    configs = stage_configs(folder, index)
    check_chain(configs, str(folder))
    if (index.task == "image_to_video") != bool(configs[0].image_channels):
        raise VidiffError(
            f"{folder / PIPELINE_FILE} says task {index.task}, but its first stage {configs[0].name!r} "
            f"{'takes no image' if configs[0].image_channels == 0 else 'takes an image'}; set task: "
            f"{'text_to_video' if configs[0].image_channels == 0 else 'image_to_video'} there"
        )
    vae = CausalVAE3D.from_pretrained(folder / index.vae)
    text_encoder = TextEncoder.from_pretrained(folder / index.text_encoder)
    stages = [DiffusionStage.from_pretrained(folder / name) for name in index.stages]
    check_parts(vae.config, text_encoder.dim, [s.config for s in stages], str(folder), vae.fingerprint())
    return Pipeline(vae, text_encoder, stages, index)


# ---------------------------------------------------------------------------- exports before pipeline.yaml


def is_legacy_export(folder: Path) -> bool:
    return (folder / LEGACY_STAGE_FILE).is_file() and not (folder / PIPELINE_FILE).is_file()


def load_legacy_export(folder: Path) -> Pipeline:
    """An export of the earlier layout: stage.yaml (stage config with its text encoder's config inside),
    denoiser.safetensors, text_encoder.safetensors (random toy towers only) and a copy of the VAE in vae/."""
    stage_config, text_config = _legacy_configs(folder)
    stage = DiffusionStage(stage_config)
    load_weights(stage.denoiser, folder / "denoiser.safetensors", "denoiser weights", folder / LEGACY_STAGE_FILE)
    text_weights = folder / "text_encoder.safetensors"
    if text_weights.is_file():
        text_encoder = TextEncoder.from_config(text_config)
        load_weights(text_encoder, text_weights, "text encoder weights", folder / LEGACY_STAGE_FILE)
    else:  # a pretrained open_clip tower: the old export named its weights file and stored none
        text_encoder = TextEncoder(text_config)
    vae = CausalVAE3D.from_pretrained(folder / "vae")
    check_parts(vae.config, text_encoder.dim, [stage.config], str(folder))
    return Pipeline(vae, text_encoder.eval(), [stage.eval()], PipelineIndex(stages=[stage.config.name]))


def _legacy_configs(folder: Path) -> tuple[StageConfig, TextEncoderConfig]:
    """stage.yaml held the stage's config with its text encoder's config (and a kind) inside."""
    file = folder / LEGACY_STAGE_FILE
    raw = yaml.safe_load(file.read_text()) or {}
    if raw.pop("kind", "diffusion_stage") != "diffusion_stage":
        raise VidiffError(f"{file} does not describe a diffusion stage; pass a stage export")
    text_config = from_dict(TextEncoderConfig, raw.pop("text", {}), where=f"{file}:text")
    return from_dict(StageConfig, raw, where=str(file)), text_config


def upgrade_export(old: str | Path, new: str | Path) -> Path:
    """Rewrite an export of the earlier layout as a pipeline folder (the old folder is left as it is)."""
    old, new = Path(old), Path(new)
    if not is_legacy_export(old):
        raise VidiffError(
            f"{old} is not an export of the earlier layout (it has no {LEGACY_STAGE_FILE}, or already a "
            f"{PIPELINE_FILE}); nothing to upgrade"
        )
    if new.resolve() == old.resolve():
        raise VidiffError(f"write the upgraded export to a new folder, not over {old}")
    pipe = load_legacy_export(old)
    return save_pipeline(new, old / "vae", pipe.text_encoder, [(s, None) for s in pipe.stages], pipe.index.task)


__all__ = [
    "PIPELINE_FILE",
    "Pipeline",
    "PipelineIndex",
    "load_pipeline",
    "read_index",
    "save_pipeline",
    "upgrade_export",
]
