"""A pipeline folder loaded for generation: its cascade (the leading stages with their sampling settings), VAE and
text encoder on one device, and the writing of its videos. TextToVideo (vidiff.pipelines.text_to_video) and
ImageToVideo (vidiff.pipelines.image_to_video) are its two tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from vidiff.config import to_dict
from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.pipelines.cascade import Cascade, StageSampling
from vidiff.pipelines.pipeline_folder import load_pipeline
from vidiff.pipelines.stage import DiffusionStage
from vidiff.video import write_video


class GenerationPipeline:
    """A pipeline's leading `stages` (all by default) and its VAE and text encoder. `sampling` sets keys of every
    stage's settings (e.g. steps), `overrides` one stage's (`STAGE.KEY=VALUE`), over pipeline.yaml's. A subclass
    names the pipeline task it runs and how to get the other task's pipeline (`other_task`)."""

    task: ClassVar[str]
    other_task: ClassVar[str]

    def __init__(
        self,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        stages: Sequence[str] | None = None,
        sampling: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
    ):
        pipe = load_pipeline(checkpoint)
        if pipe.index.task != self.task:
            raise VidiffError(f"checkpoint {checkpoint} is a {pipe.index.task} pipeline, not {self.task}; {self.other_task}")
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

    def text_cond(self, prompts: Sequence[str], **fields) -> Cond:
        """The Cond of `prompts`; an empty prompt is unconditional (only the learned null token)."""
        blank = [not p.strip() for p in prompts]
        # a blank prompt is encoded as any text, then dropped: its row keeps only the null token
        cond = self.text_encoder.cond(["none" if b else p for p, b in zip(prompts, blank, strict=True)], **fields)
        return cond.drop_text(torch.tensor(blank))

    @torch.no_grad()
    def stage_videos_for(self, cond: Cond, seed: int = 0, progress: bool = False) -> list[torch.Tensor]:
        """Every stage's videos [B, C, T, H, W] in [-1, 1] for `cond` from one run of the cascade, in stage order."""
        return [self.vae.decode_latents(z) for z in self.cascade.sample_stages(cond, seed=seed, progress=progress)]

    def settings_record(self) -> dict:
        """The base stage's sampler, steps and cfg (and image_cfg), and with more than one stage every stage's
        settings."""
        base = self.settings[0]
        record = {"sampler": base.sampler, "steps": base.steps, "cfg": base.cfg}
        if self.stage.config.image_channels:
            record["image_cfg"] = base.image_cfg
        if len(self.settings) > 1:
            record["stages"] = {s.config.name: to_dict(x)
                                for s, x in zip(self.cascade.stages, self.settings, strict=True)}
        return record


def write_videos(out_dir: str | Path, videos: Iterable[tuple[torch.Tensor, dict]], fps: int) -> list[Path]:
    """Write each (video [C, T, H, W] in [-1, 1], record) as `NNNN.mp4` in `out_dir`, and the records, each with its
    `file`, as `prompts.jsonl`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, records = [], []
    for i, (video, record) in enumerate(videos):
        path = out / f"{i:04d}.mp4"
        write_video(path, video.cpu(), fps=fps)
        paths.append(path)
        records.append({"file": path.name, **record})
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths
