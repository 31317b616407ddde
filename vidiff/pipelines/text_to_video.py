"""Text-to-video generation: prompts -> a pipeline folder's stages -> VAE decode -> mp4 files.

A checkpoint is a pipeline folder (vidiff.pipelines.pipeline_folder): the export of `vidiff train` (one base
stage) or a cascade assembled by `vidiff cascade` (base, then super-resolution stages; vidiff.pipelines.cascade),
of which the first stages can run alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vidiff.config import to_dict
from vidiff.errors import VidiffError
from vidiff.pipelines.cascade import Cascade, StageSampling
from vidiff.pipelines.pipeline_folder import load_pipeline
from vidiff.pipelines.stage import DiffusionStage
from vidiff.video import write_video


class TextToVideo:
    """Prompts -> videos through a pipeline's leading `stages` (all by default) and its VAE. `sampling` sets keys
    of every stage's settings (e.g. steps), `overrides` one stage's (`STAGE.KEY=VALUE`), over pipeline.yaml's."""

    def __init__(
        self,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        stages: Sequence[str] | None = None,
        sampling: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
    ):
        pipe = load_pipeline(checkpoint)
        if pipe.index.task != "text_to_video":
            raise VidiffError(
                f"checkpoint {checkpoint} is a {pipe.index.task} pipeline; text-to-video needs a text_to_video one: "
                "the export/ folder of `vidiff train` or a cascade of `vidiff cascade`"
            )
        self.cascade = Cascade.from_pipeline(pipe.stages, pipe.index.sampling, str(checkpoint), stages, sampling,
                                             overrides, vae=pipe.vae)
        self.device = torch.device(device)
        pipe.to(self.device)
        self.vae, self.text_encoder = pipe.vae, pipe.text_encoder

    @property
    def stage(self) -> DiffusionStage:
        """The base stage."""
        return self.cascade.stages[0]

    @property
    def settings(self) -> list[StageSampling]:
        return self.cascade.settings

    @torch.no_grad()
    def __call__(self, prompts: list[str], seed: int = 0, progress: bool = False) -> torch.Tensor:
        """Videos [B, C, T, H, W] in [-1, 1] for `prompts`; the same seed gives the same videos."""
        return self.vae.decode_latents(self.cascade.sample(self.text_encoder.cond(prompts), seed=seed, progress=progress))

    @torch.no_grad()
    def stage_videos(self, prompts: list[str], seed: int = 0, progress: bool = False) -> list[torch.Tensor]:
        """Every stage's videos [B, C, T, H, W] in [-1, 1] for `prompts` from one run of the cascade, in stage order;
        the last is what `__call__` returns for the same seed."""
        stage_latents = self.cascade.sample_stages(self.text_encoder.cond(prompts), seed=seed, progress=progress)
        return [self.vae.decode_latents(z) for z in stage_latents]


def generate_videos(
    checkpoint: str | Path,
    prompts: list[str],
    out_dir: str | Path,
    seed: int = 0,
    device: str = "cpu",
    stages: Sequence[str] | None = None,
    sampling: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
) -> list[Path]:
    """Write one mp4 per prompt into `out_dir`, at the last stage's frame rate, plus `prompts.jsonl` ({file, prompt,
    seed, sampler, steps, cfg} of the base stage; with more than one stage also `stages`: every stage's settings).
    `stages`, `sampling`, `overrides`: as TextToVideo takes them; `progress`: a bar per stage.

    Prompt i uses seed `seed + i`, so a prompt's video does not depend on the batch it lands in.
    """
    if not prompts:
        raise VidiffError("no prompts given; pass --prompt TEXT or --prompts-file FILE with one prompt per line")
    pipe = TextToVideo(checkpoint, device=device, stages=stages, sampling=sampling, overrides=overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, records = [], []
    for i, prompt in enumerate(tqdm(prompts, desc="generate", unit="video", disable=len(prompts) < 2)):
        video = pipe([prompt], seed=seed + i, progress=progress)[0]
        path = out / f"{i:04d}.mp4"
        write_video(path, video.cpu(), fps=pipe.cascade.fps)
        paths.append(path)
        records.append({"file": path.name, "prompt": prompt, "seed": seed + i, **_settings_record(pipe)})
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def _settings_record(pipe: TextToVideo) -> dict:
    base = pipe.settings[0]
    record = {"sampler": base.sampler, "steps": base.steps, "cfg": base.cfg}
    if len(pipe.settings) > 1:
        record["stages"] = {s.config.name: to_dict(x) for s, x in zip(pipe.cascade.stages, pipe.settings, strict=True)}
    return record
