"""One diffusion stage: a denoiser over latents, its noise schedule and how it samples.

The same class serves the base stage and the super-resolution stages: which backbone and which
conditioning it uses is configuration. The stage is a thin composition: the backbone comes from the
registry (vidiff.models.denoisers), the training objective lives in vidiff.training.objective, and the
VAE and text encoder belong to the pipeline that holds the stage (vidiff.pipelines.pipeline_folder).
Saved in the one model format: `config.yaml` + `model.safetensors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vidiff.diffusion import get_sampler, guided_denoise_fn, make_schedule
from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.denoisers import DenoiserConfig, build_denoiser, denoiser_config
from vidiff.models.pretrained import PretrainedMixin


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # noise schedule: "linear", "scaled_linear" or "cosine" (vidiff.diffusion.schedule)
    num_steps: int = 1000  # training timesteps N; samplers pick their steps among these
    zero_terminal_snr: bool = False  # rescale so the last timestep is pure noise, where sampling starts
    shift: float = 1.0  # > 1: every step noisier (logSNR - 2 log shift), for data with more frames or pixels


@dataclass
class SamplingConfig:
    sampler: str = "dpmpp_2m"  # "ddpm", "ddim", "dpmpp_2m" or "euler"
    steps: int = 25  # denoising steps per video
    cfg: float = 5.0  # classifier-free guidance scale (1: off, the conditional prediction alone)
    guidance_rescale: float = 0.0  # in [0, 1]: pull the guided prediction's std back to the conditional one's


@dataclass
class StageConfig:
    """Everything needed to rebuild a stage; latent_* give the shape it generates."""

    name: str = "base"  # the stage's folder in a pipeline folder
    prediction: str = "v"  # what the denoiser predicts: "eps", "x0" or "v"
    latent_channels: int = 4  # must match the VAE's latent channels
    latent_frames: int = 3  # latent frames generated (the VAE decodes them to more video frames)
    latent_height: int = 8  # latent grid height (video height / the VAE's spatial compression)
    latent_width: int = 8  # latent grid width
    fps: int = 8  # frame rate of the videos it writes
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @property
    def text_dim(self) -> int:
        """Width of the text features the denoiser attends to."""
        return denoiser_config(self.denoiser).text_dim


class DiffusionStage(PretrainedMixin, nn.Module):
    """Denoiser + schedule. `forward(x_t, t, cond)` takes training timesteps in [0, N)."""

    config_class = StageConfig
    model_kind = "diffusion_stage"
    written_by = "`vidiff train` (a stage folder of its export)"

    def __init__(self, config: StageConfig):
        super().__init__()
        self.config = config
        self.denoiser = build_denoiser(config.denoiser)
        sc = config.schedule
        self.schedule = make_schedule(sc.name, sc.num_steps, zero_terminal_snr=sc.zero_terminal_snr, shift=sc.shift)

    def forward(self, x_t: Tensor, t: Tensor, cond: Cond) -> Tensor:
        # Networks see t in [0, 1]: they know nothing of the schedule's step count.
        return self.denoiser(x_t, t.float() / self.schedule.num_steps, cond)

    @torch.no_grad()
    def sample(
        self,
        cond: Cond,
        num_frames: int | None = None,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> Tensor:
        """Latents [B, C, T, h, w] for the prompts in `cond`, deterministic for `seed`."""
        sampling = sampling or self.config.sampling
        check_sampling(sampling)
        c = self.config
        device = next(self.denoiser.parameters()).device
        shape = (cond.batch_size, c.latent_channels, num_frames or c.latent_frames, c.latent_height, c.latent_width)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x_T = torch.randn(shape, generator=gen).to(device)
        cond = cond.to(device)
        denoise = guided_denoise_fn(self, cond, cond.null_like(), sampling.cfg, sampling.guidance_rescale)
        sampler = get_sampler(sampling.sampler)
        return sampler(denoise, x_T, self.schedule, sampling.steps, prediction=c.prediction, generator=gen, progress=progress)


def check_sampling(sampling: SamplingConfig) -> None:
    get_sampler(sampling.sampler)  # raises with the valid names
    if sampling.steps <= 0:
        raise VidiffError(f"sampling steps must be a positive integer, got {sampling.steps}")
    if not 0.0 <= sampling.cfg <= 50.0:
        raise VidiffError(f"cfg scale {sampling.cfg} is out of range; use a value in [0, 50] (1 = no guidance, 3-9 typical)")
    if not 0.0 <= sampling.guidance_rescale <= 1.0:
        raise VidiffError(f"guidance rescale {sampling.guidance_rescale} is out of range; use a value in [0, 1]")
