"""The denoiser registry: which backbone a stage config's `denoiser.kind` names, and how it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from vidiff.errors import VidiffError
from vidiff.models.dit import DiTConfig, VideoDiT
from vidiff.models.unet import FactorizedUNet, UNetConfig


@dataclass
class DenoiserConfig:
    """`kind` picks the backbone; the section of that name holds its config."""

    kind: str = "unet"  # the backbone: "unet" (FactorizedUNet) or "dit" (VideoDiT)
    unet: UNetConfig = field(default_factory=UNetConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)


DENOISERS: dict[str, type[nn.Module]] = {"unet": FactorizedUNet, "dit": VideoDiT}


def build_denoiser(config: DenoiserConfig) -> nn.Module:
    if config.kind not in DENOISERS:
        raise VidiffError(f"unknown denoiser kind {config.kind!r}; valid kinds: {', '.join(DENOISERS)}")
    return DENOISERS[config.kind](getattr(config, config.kind))


def denoiser_config(config: DenoiserConfig):
    """The config of the backbone `config.kind` names (e.g. its UNetConfig)."""
    return getattr(config, config.kind)
