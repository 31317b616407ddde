"""One diffusion stage: a denoiser over latents, its noise schedule and how it samples.

The same class serves the base stage and the super-resolution stages: which backbone and which
conditioning it uses is configuration. The stage is a thin composition: the backbone comes from the
registry (vidiff.models.denoisers), the training objective lives in vidiff.training.objective, and the
VAE and text encoder belong to the pipeline that holds the stage (vidiff.pipelines.pipeline_folder).
Saved in the one model format: `config.yaml` + `model.safetensors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vidiff.diffusion import get_sampler, guided_denoise_fn, make_schedule, noise_augment
from vidiff.diffusion.guidance import image_text_guided_denoise_fn
from vidiff.diffusion.samplers import DenoiseFn
from vidiff.errors import ConfigError, VidiffError
from vidiff.models.cond import Cond
from vidiff.models.denoisers import DenoiserConfig, build_denoiser, denoiser_config
from vidiff.models.pretrained import PretrainedMixin
from vidiff.pipelines.lowres import RESAMPLE_MODES


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
    # an image-to-video stage's image guidance scale (1: off): the prediction moves from the image- and text-free one
    # by image_cfg x (image only - neither) + cfg x (image and text - image only), as InstructPix2Pix and SVD guide
    image_cfg: float = 1.0
    guidance_rescale: float = 0.0  # in [0, 1]: pull the guided prediction's std back to the conditional one's


@dataclass
class LowresConfig:
    """The low-res input of a super-resolution stage (Cond.lowres: latents of the previous stage's video, of the
    same VAE); read only when the denoiser has lowres_channels > 0. The factors say how the stage's latents
    relate to that input's, so the check holds for training crops and for any clip length."""

    # latent frames T = 1 + temporal_factor * (T' - 1) for an input of T': the stage makes temporal_factor times
    # the input's frame rate (TSR: 2, e.g. 9 frames -> 17, latents 3 -> 5); the causal VAE's first latent frame
    # stays the first frame
    temporal_factor: int = 1
    spatial_factor: int = 1  # latent height and width = spatial_factor x the input's (SSR: 2)
    # training corrupts the input by the forward diffusion at a level drawn per sample in [0, noise_aug_max],
    # a share of the stage's schedule (noise-conditioning augmentation; docs/training.md)
    noise_aug_max: float = 0.5
    # the fixed level sampling corrupts the input at, by the same law: hides the previous stage's artefacts
    noise_aug_level: float = 0.1
    # how the previous stage's latents reach the network (vidiff.pipelines.lowres): "latent": as they are, resized
    # onto the stage's grid by the network; "pixel": decoded, resampled onto the stage's grid in pixels (frame
    # blending, bicubic) and encoded again, so Cond.lowres is already the classical answer on the stage's grid
    resample: str = "latent"
    # > 0 (with resample: pixel): a residual stage, whose diffusion runs on (latents - Cond.lowres) / residual_scale
    # and whose samples are added back to the low-res input; set it to the residuals' std, which `vidiff encode
    # --resample pixel` measures and records (meta.json: lowres_residual_std). 0: the stage makes the latents itself
    residual_scale: float = 0.0

    def __post_init__(self):
        for name in ("temporal_factor", "spatial_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"stage.lowres.{name} must be a positive integer (1: the same size), got {value!r}")
        check_noise_aug(self, "stage.lowres")
        if self.resample not in RESAMPLE_MODES:
            raise ConfigError(f"stage.lowres.resample must be one of {', '.join(RESAMPLE_MODES)}, got {self.resample!r}")
        if not self.residual_scale >= 0.0:
            raise ConfigError(f"stage.lowres.residual_scale must be >= 0 (0: not residual), got {self.residual_scale}")
        if self.residual_scale and self.resample != "pixel":
            raise ConfigError(
                "stage.lowres.residual_scale is set but stage.lowres.resample is 'latent': a residual stage needs its "
                "low-res input on its own grid; set resample: pixel (or residual_scale: 0)"
            )


@dataclass
class ImageConfig:
    """The conditioning image of an image-to-video stage (Cond.image_latent: the first frame, encoded by the stage's
    VAE as a one-frame latent); read only when the denoiser has image_channels > 0. In training the image is the
    clip's own first frame: the causal VAE's latent frame 0 is that frame encoded alone."""

    # training corrupts the image latent by the forward diffusion at a level drawn per sample in [0, noise_aug_max],
    # a share of the stage's schedule, and gives the network the level (SVD's cond_aug)
    noise_aug_max: float = 0.2
    noise_aug_level: float = 0.02  # the fixed level sampling corrupts the given image at

    def __post_init__(self):
        check_noise_aug(self, "stage.image")


def check_noise_aug(section, where: str) -> None:
    """Raise ConfigError unless `section`'s noise_aug_max and noise_aug_level are shares of the schedule, the level
    within the training levels."""
    for name in ("noise_aug_max", "noise_aug_level"):
        value = getattr(section, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}.{name} must be in [0, 1] (a share of the stage's schedule), got {value}")
    if section.noise_aug_level > section.noise_aug_max:
        raise ConfigError(
            f"{where}.noise_aug_level={section.noise_aug_level} is above {where}.noise_aug_max="
            f"{section.noise_aug_max}, a level training never showed the network; set noise_aug_level <= noise_aug_max"
        )


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
    lowres: LowresConfig = field(default_factory=LowresConfig)  # the low-res input of a super-resolution stage
    image: ImageConfig = field(default_factory=ImageConfig)  # the conditioning image of an image-to-video stage
    # the hash of the VAE whose latents the stage was trained on (CausalVAE3D.fingerprint), recorded when a pipeline
    # folder is saved; a pipeline whose VAE has another hash is refused. "": not recorded (older exports)
    vae_hash: str = ""

    def __post_init__(self):
        if self.lowres_channels and self.image_channels:
            raise ConfigError(
                f"stage {self.name}: the denoiser has lowres_channels and image_channels; a stage takes either a low-res "
                "input (super-resolution) or an image (image-to-video): set one of them to 0"
            )
        if self.lowres_channels:
            f, s = self.lowres.temporal_factor, self.lowres.spatial_factor
            if (self.latent_frames - 1) % f or self.latent_height % s or self.latent_width % s:
                raise ConfigError(
                    f"stage {self.name}: latents {self.latent_frames}x{self.latent_height}x{self.latent_width} do not "
                    f"come from a low-res input at stage.lowres.temporal_factor={f}, spatial_factor={s}; use "
                    f"latent_frames = 1 + {f}k and latent_height, latent_width multiples of {s}"
                )
            if self.lowres.residual_scale and self.lowres_channels != self.latent_channels:
                raise ConfigError(
                    f"stage {self.name}: a residual stage (stage.lowres.residual_scale) adds its samples to its low-res "
                    f"input, but that has lowres_channels={self.lowres_channels} and the latents {self.latent_channels}; "
                    "give the denoiser lowres_channels equal to stage.latent_channels"
                )

    @property
    def text_dim(self) -> int:
        """Width of the text features the denoiser attends to."""
        return denoiser_config(self.denoiser).text_dim

    @property
    def lowres_channels(self) -> int:
        """Channels of the low-res input (Cond.lowres) the denoiser takes; 0: not a super-resolution stage."""
        return denoiser_config(self.denoiser).lowres_channels

    @property
    def image_channels(self) -> int:
        """Channels of the image latent (Cond.image_latent) the denoiser takes; 0: not an image-to-video stage."""
        return denoiser_config(self.denoiser).image_channels

    @property
    def conditioning_input(self) -> str | None:
        """The Cond field of the input that noise augmentation corrupts: "lowres" for a super-resolution stage,
        "image_latent" for an image-to-video stage, None for a text-to-video base stage."""
        return "lowres" if self.lowres_channels else "image_latent" if self.image_channels else None

    @property
    def noise_augmentation(self) -> LowresConfig | ImageConfig | None:
        """The section (stage.lowres or stage.image) with the noise-augmentation levels of that input."""
        return {"lowres": self.lowres, "image_latent": self.image}.get(self.conditioning_input)

    def source_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(C, T', h', w') of the previous stage's latents that latents of frames x height x width (the stage's own
        size, a training crop, or a longer clip) are made from; None when the sizes do not divide by the factors."""
        f, s = self.lowres.temporal_factor, self.lowres.spatial_factor
        if (frames - 1) % f or height % s or width % s:
            return None
        return self.lowres_channels, 1 + (frames - 1) // f, height // s, width // s

    def lowres_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(C, T', h', w') of the low-res input (Cond.lowres) for latents of frames x height x width: the source's
        (`source_shape`), or with resample: pixel the latents' own grid; None when the sizes do not divide."""
        source = self.source_shape(frames, height, width)
        if source is None or self.lowres.resample == "latent":
            return source
        return self.lowres_channels, frames, height, width

    @property
    def residual_scale(self) -> float:
        """stage.lowres.residual_scale of a super-resolution stage (a residual one when > 0); 0 for a base stage."""
        return self.lowres.residual_scale if self.lowres_channels else 0.0

    @property
    def lowres_frame_step(self) -> int:
        """Latent frames of the stage per latent frame of its low-res input (temporal windows slice it by this)."""
        return self.lowres.temporal_factor if self.lowres.resample == "latent" else 1


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

    def check_lowres(self, cond: Cond, shape: tuple[int, ...]) -> None:
        """Raise VidiffError unless `cond.lowres` is the low-res input this stage takes for latents of `shape`
        [B, C, T, h, w]."""
        c = self.config
        factors = f"stage.lowres.temporal_factor={c.lowres.temporal_factor}, spatial_factor={c.lowres.spatial_factor}"
        expected = c.lowres_shape(*shape[2:])
        if expected is None:
            raise VidiffError(
                f"the {c.name} stage cannot make latents {list(shape)} from a low-res input ({factors}): their "
                "frames - 1 must be a multiple of temporal_factor and their height and width of spatial_factor"
            )
        given = None if cond.lowres is None else list(cond.lowres.shape)
        if given is None or given[1:] != list(expected):
            raise VidiffError(
                f"the {c.name} stage makes latents {list(shape)} from a low-res input "
                f"[B, {', '.join(map(str, expected))}] (lowres_channels={c.lowres_channels}, {factors}), but "
                f"Cond.lowres is {'missing' if given is None else given}; pass the previous stage's latents (of the "
                "same VAE) at that size"
            )

    def check_image(self, cond: Cond, shape: tuple[int, ...]) -> None:
        """Raise VidiffError unless `cond.image_latent` is the conditioning image this image-to-video stage takes for
        latents of `shape` [B, C, T, h, w]: one latent frame on their grid."""
        c = self.config
        expected = [c.image_channels, 1, *shape[3:]]
        given = None if cond.image_latent is None else list(cond.image_latent.shape)
        if given is None or given[1:] != expected:
            raise VidiffError(
                f"the {c.name} stage is an image-to-video stage: it makes latents {list(shape)} from an image latent "
                f"[B, {', '.join(map(str, expected))}], but Cond.image_latent is {'missing' if given is None else given}; "
                "encode the image with the pipeline's VAE at the stage's size (vidiff.pipelines.image_to_video)"
            )

    def augment_input(self, cond: Cond, level: Tensor, noise: Tensor) -> Cond:
        """`cond` with its conditioning input (`StageConfig.conditioning_input`: the low-res video or the image latent)
        corrupted at `level` [B] by `noise` (vidiff.diffusion.noise_augment on this stage's schedule) and the level as
        Cond.noise_aug_level: training (levels drawn per sample) and sampling (a fixed level) corrupt it by this law."""
        name = self.config.conditioning_input
        value = getattr(cond, name)
        corrupted = noise_augment(value, noise.to(value), level, self.schedule)
        return dataclasses.replace(cond, **{name: corrupted}, noise_aug_level=level.to(value))

    def to_diffusion_space(self, latents: Tensor, lowres: Tensor | None) -> Tensor:
        """What the stage's diffusion runs on for target `latents` and their clean low-res input: a residual
        stage's (latents - lowres) / residual_scale, else the latents themselves."""
        scale = self.config.residual_scale
        return (latents - lowres) / scale if scale else latents

    def from_diffusion_space(self, x: Tensor, lowres: Tensor | None) -> Tensor:
        """The latents of a sample `x` of the stage's diffusion (`to_diffusion_space` undone)."""
        scale = self.config.residual_scale
        return lowres + scale * x if scale else x

    def guided(self, cond: Cond, sampling: SamplingConfig) -> DenoiseFn:
        """The samplers' `denoise(x_t, t)`: this stage on `cond` under classifier-free guidance; an image-to-video
        stage with sampling.image_cfg != 1 under separate image and text guidance."""
        if self.config.image_channels and sampling.image_cfg != 1:
            neither = cond.null_like().drop("image_latent", torch.ones(cond.batch_size, dtype=torch.bool))
            return image_text_guided_denoise_fn(
                self, cond, cond.null_like(), neither, sampling.cfg, sampling.image_cfg, sampling.guidance_rescale
            )
        return guided_denoise_fn(self, cond, cond.null_like(), sampling.cfg, sampling.guidance_rescale)

    @torch.no_grad()
    def sample(
        self,
        cond: Cond,
        num_frames: int | None = None,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        progress: bool | str = False,  # a string: the progress bar's label
        denoise: Callable[[Cond, SamplingConfig], DenoiseFn] | None = None,
    ) -> Tensor:
        """Latents [B, C, T, h, w] for the prompts in `cond`, deterministic for `seed`. `denoise(cond, sampling)`
        makes the samplers' denoise function from the prepared cond (its low-res input checked and corrupted);
        default `guided`, the whole clip in one call (vidiff.pipelines.temporal_windows passes one that runs
        overlapping windows of a longer clip)."""
        sampling = sampling or self.config.sampling
        check_sampling(sampling)
        c = self.config
        device = next(self.denoiser.parameters()).device
        shape = (cond.batch_size, c.latent_channels, num_frames or c.latent_frames, c.latent_height, c.latent_width)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x_T = torch.randn(shape, generator=gen).to(device)
        cond = cond.to(device)
        clean_lowres = cond.lowres  # the input before its augmentation: a residual stage's samples are added to it
        if c.conditioning_input:
            (self.check_lowres if c.lowres_channels else self.check_image)(cond, shape)
            # a pipeline's per-stage settings (vidiff.pipelines.cascade.StageSampling) may fix another level
            level = getattr(sampling, "noise_aug_level", None)
            level = torch.full((cond.batch_size,), c.noise_augmentation.noise_aug_level if level is None else level)
            noise = torch.randn(getattr(cond, c.conditioning_input).shape, generator=gen)
            cond = self.augment_input(cond, level, noise)
        fn = (denoise or self.guided)(cond, sampling)
        sampler = get_sampler(sampling.sampler)
        x = sampler(fn, x_T, self.schedule, sampling.steps, prediction=c.prediction, generator=gen, progress=progress)
        return self.from_diffusion_space(x, clean_lowres)


def check_sampling(sampling: SamplingConfig) -> None:
    get_sampler(sampling.sampler)  # raises with the valid names
    if sampling.steps <= 0:
        raise VidiffError(f"sampling steps must be a positive integer, got {sampling.steps}")
    if not 0.0 <= sampling.cfg <= 50.0:
        raise VidiffError(f"cfg scale {sampling.cfg} is out of range; use a value in [0, 50] (1 = no guidance, 3-9 typical)")
    if not 0.0 <= sampling.image_cfg <= 50.0:
        raise VidiffError(f"image cfg scale {sampling.image_cfg} is out of range; use a value in [0, 50] (1 = no image guidance)")
    if not 0.0 <= sampling.guidance_rescale <= 1.0:
        raise VidiffError(f"guidance rescale {sampling.guidance_rescale} is out of range; use a value in [0, 1]")
