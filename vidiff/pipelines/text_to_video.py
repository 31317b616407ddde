"""Text-to-video generation: prompts -> base stage latents -> VAE decode -> mp4 files.

A generation checkpoint is the pipeline folder `vidiff train` exports (vidiff.pipelines.pipeline_folder):
the VAE, the text encoder and the base stage. Temporal and spatial super-resolution stages will join
as further stages of the same folder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.pipelines.pipeline_folder import load_pipeline
from vidiff.pipelines.stage import SamplingConfig, check_sampling
from vidiff.video import write_video


class TextToVideo:
    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu"):
        pipe = load_pipeline(checkpoint)
        if pipe.index.task != "text_to_video" or len(pipe.stages) != 1:
            raise VidiffError(
                f"checkpoint {checkpoint} is a {pipe.index.task} pipeline of {len(pipe.stages)} stages; text-to-video "
                "runs a single base stage: pass the export/ folder of `vidiff train`"
            )
        self.device = torch.device(device)
        pipe.to(self.device)
        self.vae, self.text_encoder, self.stage = pipe.vae, pipe.text_encoder, pipe.stages[0]

    @torch.no_grad()
    def __call__(
        self, prompts: list[str], sampling: SamplingConfig | None = None, seed: int = 0, progress: bool = False
    ) -> torch.Tensor:
        """Videos [B, C, T, H, W] in [-1, 1] for `prompts`; the same seed gives the same videos."""
        cond = self.text_encoder.cond(prompts)
        latents = self.stage.sample(cond, sampling=sampling, seed=seed, progress=progress)
        return self.vae.decode(self.vae.denormalize_latents(latents)).clamp(-1, 1)


def generate_videos(
    checkpoint: str | Path,
    prompts: list[str],
    out_dir: str | Path,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> list[Path]:
    """Write one mp4 per prompt into `out_dir`, plus `prompts.jsonl` ({file, prompt, seed}).

    Prompt i uses seed `seed + i`, so a prompt's video does not depend on the batch it lands in.
    """
    if not prompts:
        raise VidiffError("no prompts given; pass --prompt TEXT or --prompts-file FILE with one prompt per line")
    pipe = TextToVideo(checkpoint, device=device)
    sampling = sampling or pipe.stage.config.sampling
    check_sampling(sampling)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fps = pipe.stage.config.fps
    paths, records = [], []
    for i, prompt in enumerate(tqdm(prompts, desc="generate", unit="video", disable=len(prompts) < 2)):
        video = pipe([prompt], sampling=sampling, seed=seed + i)[0]
        path = out / f"{i:04d}.mp4"
        write_video(path, video.cpu(), fps=fps)
        paths.append(path)
        records.append({"file": path.name, "prompt": prompt, "seed": seed + i, **_sampling_record(sampling)})
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def _sampling_record(s: SamplingConfig) -> dict:
    return {"sampler": s.sampler, "steps": s.steps, "cfg": s.cfg}


def sampling_with(base: SamplingConfig, **overrides) -> SamplingConfig:
    """`base` with the given non-None fields replaced (CLI flags over the checkpoint's defaults)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
