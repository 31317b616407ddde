"""The denoiser registry: which backbone a stage config's `denoiser.kind` names, and how it is built."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vidiff.errors import VidiffError
from vidiff.models.dit import DiTConfig, VideoDiT
from vidiff.models.unet import FactorizedUNet, UNetConfig

DENOISERS: dict[str, type[nn.Module]] = {"unet": FactorizedUNet, "dit": VideoDiT}
CONFIGS = {"unet": UNetConfig, "dit": DiTConfig}


@dataclass
class DenoiserConfig:
    """`kind` picks the backbone; the section of that name holds its config (its defaults when absent; the
    other backbones' sections stay empty, so a saved config shows only the backbone in use)."""

    kind: str = "unet"  # the backbone: "unet" (FactorizedUNet) or "dit" (VideoDiT)
    unet: UNetConfig | None = None  # FactorizedUNet's config, when kind is "unet"
    dit: DiTConfig | None = None  # VideoDiT's config, when kind is "dit"

    def __post_init__(self):
        if self.kind not in DENOISERS:
            raise VidiffError(f"unknown denoiser kind {self.kind!r}; valid kinds: {', '.join(DENOISERS)}")
        if getattr(self, self.kind) is None:
            setattr(self, self.kind, CONFIGS[self.kind]())


def build_denoiser(config: DenoiserConfig) -> nn.Module:
    if config.kind not in DENOISERS:
        raise VidiffError(f"unknown denoiser kind {config.kind!r}; valid kinds: {', '.join(DENOISERS)}")
    return DENOISERS[config.kind](getattr(config, config.kind))


def denoiser_config(config: DenoiserConfig):
    """The config of the backbone `config.kind` names (e.g. its UNetConfig)."""
    return getattr(config, config.kind)
