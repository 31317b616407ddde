"""A cascade: diffusion stages run in order, a base stage first, each super-resolution stage on the previous one's
output latents (Cond.lowres). Here: the check that stages chain, each stage's sampling settings in a pipeline
(pipeline.yaml's `sampling`, then `STAGE.KEY=VALUE` overrides), and sampling through the chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from vidiff.config import from_dict, parse_override, to_dict
from vidiff.errors import ConfigError, VidiffError
from vidiff.models.cond import Cond
from vidiff.pipelines.lowres import prepare_lowres
from vidiff.pipelines.stage import DiffusionStage, SamplingConfig, StageConfig, check_sampling
from vidiff.pipelines.temporal_windows import sample_long


@dataclass
class StageSampling(SamplingConfig):
    """How a stage samples in a pipeline: SamplingConfig's keys and, for a stage with a conditioning input (the low-res
    video of a super-resolution stage, the image of an image-to-video stage), the fixed level that input is corrupted
    at (its stage.lowres or stage.image noise_aug_level by default)."""

    noise_aug_level: float | None = None  # None for a text-to-video base stage


def latent_shape(config: StageConfig) -> tuple[int, int, int, int]:
    """[C, T, h, w] of the latents a stage makes."""
    return config.latent_channels, config.latent_frames, config.latent_height, config.latent_width


def check_chain(configs: Sequence[StageConfig], where: str, sources: Sequence[str] = (), base_first: bool = False) -> None:
    """Raise VidiffError unless every stage after the first is a super-resolution stage fed by the one before it: its
    low-res input for its own latent size is made from the previous stage's latents [C, T, h, w]
    (`StageConfig.source_shape`),
    and its frame rate is temporal_factor x the previous one's. `base_first`: the first stage must be a base stage
    (to run the chain from text; a super-resolution stage's own export starts with it). `sources` name where each
    stage comes from, for the messages."""
    names = ", ".join(c.name for c in configs)

    def label(i: int) -> str:
        return f"stage {configs[i].name!r}" + (f" (from {sources[i]})" if i < len(sources) else "")

    fix = f"list the stages in cascade order, a base stage first, then super-resolution stages (given: {names})"
    if base_first and configs and configs[0].lowres_channels:
        raise VidiffError(
            f"{where}: the first stage, {label(0)}, is a super-resolution stage: it needs the output of a stage "
            f"before it; start with a base stage (`vidiff cascade --stage BASE_EXPORT --stage ...`; given: {names})"
        )
    makes = latent_shape(configs[0]) if configs else None  # what the chain has made so far, [C, T, h, w]
    for i in range(1, len(configs)):
        prev, cur = configs[i - 1], configs[i]
        if not cur.lowres_channels:
            raise VidiffError(f"{where}: {label(i)} is a base stage (no low-res input) after {prev.name!r}; {fix}")
        # a stage runs over overlapping windows of its own latent_frames when its input is longer than its clip
        # (vidiff.pipelines.temporal_windows), so its output has 1 + temporal_factor x (T_in - 1) frames
        out = (cur.latent_channels, 1 + cur.lowres.temporal_factor * (makes[1] - 1), cur.latent_height, cur.latent_width)
        takes = cur.source_shape(*out[1:])
        if takes != makes or out[1] < cur.latent_frames:
            raise VidiffError(
                f"{where}: {label(i)} takes a low-res input of latents {list(cur.source_shape(*latent_shape(cur)[1:]))}"
                f" (for its latents {list(latent_shape(cur))}; longer in time runs over windows), but {label(i - 1)} "
                f"before it makes {list(makes)}; {fix}, each taking the size the one before makes (or retrain the "
                "stage at that size)"
            )
        fps = prev.fps * cur.lowres.temporal_factor
        if cur.fps != fps:
            raise VidiffError(
                f"{where}: {label(i)} writes {cur.fps} fps from {cur.lowres.temporal_factor}x the frames of "
                f"{label(i - 1)} at {prev.fps} fps, which makes {fps} fps; set stage.fps: {fps} in its config.yaml "
                "(or the frame rates of the stages before it to match)"
            )
        makes = out


def default_settings(config: StageConfig) -> StageSampling:
    """A stage's settings from its own config."""
    section = config.noise_augmentation
    return StageSampling(**to_dict(config.sampling), noise_aug_level=section.noise_aug_level if section else None)


def stage_settings(
    config: StageConfig, recorded: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
    where: str = "pipeline.yaml",
    overrides_from: str = "--set {name}.KEY",
) -> StageSampling:
    """A stage's settings: its config's, replaced by the pipeline's `recorded` ones (pipeline.yaml), then by
    `overrides`; checked (unknown keys, ranges, noise_aug_level of a stage without a conditioning input or above the
    stage's training levels, image_cfg of a stage without an image) with errors naming `where` or `overrides_from`
    (where the overrides came from; {name}: the stage's)."""
    settings = from_dict(StageSampling, to_dict(default_settings(config)) | dict(recorded or {}),
                         where=f"{where}: sampling.{config.name}")
    if overrides:
        settings = from_dict(StageSampling, to_dict(settings) | dict(overrides),
                             where=overrides_from.format(name=config.name))
    check_sampling(settings)
    section = config.noise_augmentation
    if settings.image_cfg != 1 and not config.image_channels:
        raise VidiffError(
            f"{where}: image_cfg={settings.image_cfg} is set for stage {config.name!r}, which takes no image; "
            "remove the setting (it applies to image-to-video stages)"
        )
    if settings.noise_aug_level is None and section is not None:
        settings.noise_aug_level = section.noise_aug_level
    elif settings.noise_aug_level is not None and section is None:
        raise VidiffError(
            f"{where}: noise_aug_level is set for stage {config.name!r}, a base stage: it takes no low-res input or "
            "image; remove the setting (it applies to super-resolution and image-to-video stages)"
        )
    elif settings.noise_aug_level is not None:
        try:
            dataclasses.replace(section, noise_aug_level=settings.noise_aug_level)  # its range checks
        except ConfigError as exc:
            raise VidiffError(f"sampling.{config.name}.noise_aug_level: {exc}") from None
    return settings


def split_overrides(items: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`STAGE.KEY=VALUE` items (--set) as {stage: {key: value}}; a stage the pipeline does not have is an error."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        stage, dot, rest = item.partition(".")
        if not dot or "=" not in rest or "=" in stage:
            raise VidiffError(f"--set {item!r} must look like STAGE.KEY=VALUE, e.g. tsr.steps=10")
        if stage not in names:
            raise VidiffError(
                f"--set {item!r} names stage {stage!r}, but the pipeline's stages are {', '.join(names)}; use one of them"
            )
        key, value = parse_override(rest)
        out.setdefault(stage, {})[key] = value
    return out


def leading_stages(names: Sequence[str], wanted: Sequence[str] | None) -> int:
    """How many of the pipeline's stages `wanted` (--stages) runs: it must name its first stages, in order."""
    if not wanted:
        return len(names)
    listed = ", ".join(names)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise VidiffError(
            f"--stages names {', '.join(map(repr, unknown))}, not a stage of this pipeline; its stages are {listed}, in "
            f"order: pass its first ones, e.g. --stages {names[0]}"
        )
    if list(wanted) != list(names[: len(wanted)]):
        raise VidiffError(
            f"--stages {','.join(wanted)} does not run the pipeline from its first stage in order: each stage takes the "
            f"output of the one before it; its stages are {listed}: pass its first ones, e.g. --stages "
            f"{','.join(names[:2])}"
        )
    return len(wanted)


def stage_seed(seed: int, index: int) -> int:
    """The seed of a cascade's stage `index` for a video of seed `seed`: the base stage's is `seed` itself (a one-stage
    pipeline samples as it always did), each later stage draws its own noise."""
    if index == 0:
        return seed
    return int.from_bytes(hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest(), "little")


class Cascade:
    """Stages that chain from a base stage, each with its settings; `sample` runs them in order."""

    def __init__(self, stages: Sequence[DiffusionStage], settings: Sequence[StageSampling], where: str = "cascade",
                 vae=None):
        """`vae`: the pipeline's, for stages that take their low-res input resampled in pixels
        (stage.lowres.resample: pixel)."""
        check_chain([s.config for s in stages], where, base_first=True)
        pixel = [s.config.name for s in stages[1:] if s.config.lowres.resample == "pixel"]
        if pixel and vae is None:
            raise VidiffError(f"{where}: stage(s) {', '.join(pixel)} resample their low-res input in pixels "
                              "(stage.lowres.resample: pixel) and need the pipeline's VAE; pass vae=")
        self.vae = vae
        self.stages, self.settings = list(stages), list(settings)

    @classmethod
    def from_pipeline(
        cls,
        stages: Sequence[DiffusionStage],
        recorded: Mapping[str, Mapping[str, Any]],
        where: str,
        run: Sequence[str] | None = None,
        sampling: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
        vae=None,
    ) -> Cascade:
        """A pipeline's leading stages `run` (all by default) with their `recorded` settings (pipeline.yaml), then
        `sampling` (keys for every stage, e.g. from --steps; None values are left out), then `overrides`
        (`STAGE.KEY=VALUE`)."""
        names = [s.config.name for s in stages]
        n = leading_stages(names, run)
        per_stage = split_overrides(overrides, names)
        every = {k: v for k, v in (sampling or {}).items() if v is not None}
        settings = [
            stage_settings(s.config, recorded.get(s.config.name), every | per_stage.get(s.config.name, {}), where)
            for s in stages
        ]
        return cls(stages[:n], settings[:n], where, vae)

    @property
    def fps(self) -> int:
        """The frame rate of the last stage: the videos' frame rate."""
        return self.stages[-1].config.fps

    def sample(self, cond: Cond, seed: int = 0, progress: bool = False) -> Tensor:
        """The last stage's latents [B, C, T, h, w] for the prompts in `cond` (`sample_stages`' last)."""
        return self.sample_stages(cond, seed, progress)[-1]

    def sample_stages(self, cond: Cond, seed: int = 0, progress: bool = False) -> list[Tensor]:
        """Every stage's latents [B, C, T, h, w] for the prompts in `cond`, in order; each super-resolution stage's
        Cond.lowres is made from the previous stage's latents (`prepare_lowres`), with the same text. One progress
        bar per stage, labelled with it."""
        outputs: list[Tensor] = []
        for i, (stage, s) in enumerate(zip(self.stages, self.settings, strict=True)):
            latents = outputs[-1] if outputs else None
            # a super-resolution stage takes the text and the previous stage's video, not the image of an
            # image-to-video base stage
            stage_cond = cond if latents is None else dataclasses.replace(
                cond, lowres=prepare_lowres(self.vae, latents, stage.config.lowres), image_latent=None)
            label = f"{stage.config.name} ({s.sampler}, {s.steps} steps)" if progress else False
            # a super-resolution stage makes temporal_factor x its input's frames, over windows where that is
            # longer than its own clip
            frames = None if latents is None else 1 + stage.config.lowres.temporal_factor * (latents.shape[2] - 1)
            outputs.append(sample_long(stage, stage_cond, frames, seed=stage_seed(seed, i), sampling=s, progress=label))
        return outputs

    def factors(self) -> tuple[int, int]:
        """(frames, height and width): how many times the last stage's grid is finer than the base stage's."""
        lowres = [s.config.lowres for s in self.stages[1:]]
        return math.prod(r.temporal_factor for r in lowres), math.prod(r.spatial_factor for r in lowres)
