"""One diffusion stage: a denoiser, its noise schedule, its text encoder and how it samples.

The same class serves the base stage and, later, the super-resolution stages: which backbone and
which conditioning it uses is configuration. A stage is saved as a folder: `stage.yaml` (the
config), `denoiser.safetensors` and, for randomly initialised toy text towers, `text_encoder.safetensors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vidiff.config import load_config, save_config
from vidiff.diffusion import diffusion_loss, get_sampler, guided_denoise_fn, make_schedule
from vidiff.diffusion.objectives import add_noise
from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig
from vidiff.models.unet import FactorizedUNet, UNetConfig

STAGE_FILE = "stage.yaml"
DENOISER_FILE = "denoiser.safetensors"
TEXT_FILE = "text_encoder.safetensors"


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    num_steps: int = 1000
    zero_terminal_snr: bool = False
    shift: float = 1.0


@dataclass
class SamplingConfig:
    sampler: str = "dpmpp_2m"
    steps: int = 25
    cfg: float = 5.0
    guidance_rescale: float = 0.0


@dataclass
class DenoiserConfig:
    kind: str = "unet"
    unet: UNetConfig = field(default_factory=UNetConfig)


@dataclass
class StageConfig:
    """Everything needed to rebuild a stage; latent_* give the shape it generates."""

    kind: str = "diffusion_stage"
    name: str = "base"
    prediction: str = "v"
    latent_channels: int = 4
    latent_frames: int = 3
    latent_height: int = 8
    latent_width: int = 8
    fps: int = 8
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


DENOISERS = {"unet": lambda cfg: FactorizedUNet(cfg.unet)}


def build_denoiser(config: DenoiserConfig) -> nn.Module:
    if config.kind not in DENOISERS:
        raise VidiffError(f"unknown denoiser kind {config.kind!r}; valid kinds: {', '.join(DENOISERS)}")
    return DENOISERS[config.kind](config)


class DiffusionStage(nn.Module):
    """Denoiser + schedule + text encoder. `forward(x_t, t, cond)` takes training timesteps in [0, N)."""

    def __init__(self, config: StageConfig):
        super().__init__()
        self.config = config
        self.denoiser = build_denoiser(config.denoiser)
        self.text_encoder = TextEncoder(config.text)
        sc = config.schedule
        self.schedule = make_schedule(sc.name, sc.num_steps, zero_terminal_snr=sc.zero_terminal_snr, shift=sc.shift)

    def forward(self, x_t: Tensor, t: Tensor, cond: Cond) -> Tensor:
        # Networks see t in [0, 1]: they know nothing of the schedule's step count.
        return self.denoiser(x_t, t.float() / self.schedule.num_steps, cond)

    def training_loss(
        self, latents: Tensor, cond: Cond, weighting: str = "min_snr", gamma: float = 5.0, generator=None
    ) -> Tensor:
        return self.per_sample_loss(latents, cond, weighting, gamma, generator)[0].mean()

    def per_sample_loss(
        self, latents: Tensor, cond: Cond, weighting: str = "min_snr", gamma: float = 5.0, generator=None
    ) -> tuple[Tensor, Tensor]:
        """The weighted loss of each sample [B] at a random timestep, and those timesteps [B]."""
        b = latents.shape[0]
        t = torch.randint(0, self.schedule.num_steps, (b,), device=latents.device, generator=generator)
        noise = torch.randn(latents.shape, device=latents.device, generator=generator, dtype=latents.dtype)
        x_t = add_noise(latents, noise, self.schedule.alpha(t), self.schedule.sigma(t))
        pred = self(x_t, t, cond)
        losses = diffusion_loss(
            pred, latents, noise, t, self.schedule, self.config.prediction, weighting, gamma, reduction="none"
        )
        return losses, t

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
        denoise = guided_denoise_fn(
            self, cond, cond.null_like(), sampling.cfg, sampling.guidance_rescale, concat=lambda a, b: Cond.cat([a, b])
        )
        sampler = get_sampler(sampling.sampler)
        return sampler(denoise, x_T, self.schedule, sampling.steps, prediction=c.prediction, generator=gen, progress=progress)

    def save_pretrained(self, out_dir: str | Path, denoiser_state: dict[str, Tensor] | None = None) -> Path:
        """Write config + denoiser weights (the given state, e.g. EMA weights, or the live ones)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(self.config, out / STAGE_FILE)
        state = denoiser_state if denoiser_state is not None else self.denoiser.state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out / DENOISER_FILE))
        if self.text_encoder.is_random:
            save_file({k: v.contiguous() for k, v in self.text_encoder.state_dict().items()}, str(out / TEXT_FILE))
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path) -> DiffusionStage:
        path = Path(path)
        config = load_stage_config(path)
        stage = cls(config)
        _load_into(stage.denoiser, path / DENOISER_FILE, "denoiser")
        if (path / TEXT_FILE).is_file():
            _load_into(stage.text_encoder, path / TEXT_FILE, "text encoder")
        return stage.eval()


def load_stage_config(path: Path) -> StageConfig:
    file = path / STAGE_FILE
    if not file.is_file():
        hint = " (it looks like a VAE checkpoint)" if (path / "vae.yaml").is_file() or (path / "config.yaml").is_file() else ""
        raise VidiffError(
            f"{path} is not a diffusion stage checkpoint{hint}: it has no {STAGE_FILE}; pass the folder written by "
            "`vidiff train` (its export/ folder)"
        )
    config = load_config(StageConfig, file)
    if config.kind != "diffusion_stage":
        raise VidiffError(f"{file} describes a {config.kind!r}, not a diffusion stage; pass a stage checkpoint")
    return config


def check_sampling(sampling: SamplingConfig) -> None:
    get_sampler(sampling.sampler)  # raises with the valid names
    if sampling.steps <= 0:
        raise VidiffError(f"sampling steps must be a positive integer, got {sampling.steps}")
    if not 0.0 <= sampling.cfg <= 50.0:
        raise VidiffError(f"cfg scale {sampling.cfg} is out of range; use a value in [0, 50] (1 = no guidance, 3-9 typical)")
    if not 0.0 <= sampling.guidance_rescale <= 1.0:
        raise VidiffError(f"guidance rescale {sampling.guidance_rescale} is out of range; use a value in [0, 1]")


def _load_into(module: nn.Module, file: Path, what: str) -> None:
    if not file.is_file():
        raise VidiffError(f"{what} weights {file} are missing; the checkpoint folder is incomplete")
    try:
        state = load_file(str(file))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise VidiffError(f"{what} weights {file} cannot be read ({exc}); re-export the checkpoint") from None
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise VidiffError(f"{what} weights {file} do not match its config: {str(exc).splitlines()[1:3]}") from None
    if missing or unexpected:
        raise VidiffError(
            f"{what} weights {file} do not match its config (missing {len(missing)}, unexpected {len(unexpected)} "
            f"keys, e.g. {(missing or unexpected)[:3]}); the config beside them was changed or the files are mixed up"
        )
