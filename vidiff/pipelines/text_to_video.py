"""Text-to-video generation: prompts -> a pipeline folder's stages -> VAE decode -> mp4 files.

A checkpoint is a pipeline folder (vidiff.pipelines.pipeline_folder): the export of `vidiff train` (one base
stage) or a cascade assembled by `vidiff cascade` (base, then super-resolution stages; vidiff.pipelines.cascade),
of which the first stages can run alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.pipelines.generation import GenerationPipeline, write_videos


class TextToVideo(GenerationPipeline):
    """Prompts -> videos through a pipeline's leading stages and its VAE (GenerationPipeline)."""

    task = "text_to_video"
    other_task = "animate an image with it (`vidiff animate --image`, vidiff.pipelines.image_to_video.ImageToVideo)"

    @torch.no_grad()
    def __call__(self, prompts: list[str], seed: int = 0, progress: bool = False) -> torch.Tensor:
        """Videos [B, C, T, H, W] in [-1, 1] for `prompts`; the same seed gives the same videos."""
        return self.vae.decode_latents(self.cascade.sample(self.text_encoder.cond(prompts), seed=seed, progress=progress))

    def stage_videos(self, prompts: list[str], seed: int = 0, progress: bool = False) -> list[torch.Tensor]:
        """Every stage's videos [B, C, T, H, W] in [-1, 1] for `prompts` from one run of the cascade, in stage order;
        the last is what `__call__` returns for the same seed."""
        return self.stage_videos_for(self.text_encoder.cond(prompts), seed=seed, progress=progress)


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

    def videos():
        for i, prompt in enumerate(tqdm(prompts, desc="generate", unit="video", disable=len(prompts) < 2)):
            video = pipe([prompt], seed=seed + i, progress=progress)[0]
            yield video, {"prompt": prompt, "seed": seed + i, **pipe.settings_record()}

    return write_videos(out_dir, videos(), pipe.cascade.fps)
