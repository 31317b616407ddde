"""Text-to-video generation: prompts -> base stage latents -> VAE decode -> mp4 files.

A generation checkpoint is the folder `vidiff train` exports: the base stage (stage.yaml and its
weights) with the VAE it was trained on in `vae/`. Temporal and spatial super-resolution stages
will join as further stages of the same kind.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.models.vae import CausalVAE3D
from vidiff.pipelines.stage import DiffusionStage, SamplingConfig, check_sampling, load_stage_config
from vidiff.video import write_video

VAE_DIR = "vae"


class TextToVideo:
    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu"):
        path = Path(checkpoint)
        if not path.is_dir():
            raise VidiffError(f"checkpoint {path} is not a folder; pass the export/ folder written by `vidiff train`")
        load_stage_config(path)  # a clear error before anything heavy loads
        if not (path / VAE_DIR).is_dir():
            raise VidiffError(f"checkpoint {path} has no {VAE_DIR}/ folder; export it again with `vidiff train`")
        self.device = torch.device(device)
        self.stage = DiffusionStage.from_pretrained(path).to(self.device)
        self.vae = CausalVAE3D.from_pretrained(path / VAE_DIR).to(self.device).eval()

    @torch.no_grad()
    def __call__(
        self, prompts: list[str], sampling: SamplingConfig | None = None, seed: int = 0, progress: bool = False
    ) -> torch.Tensor:
        """Videos [B, C, T, H, W] in [-1, 1] for `prompts`; the same seed gives the same videos."""
        cond = self.stage.text_encoder.cond(prompts)
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
