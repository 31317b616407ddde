"""Fine-tuning: start a stage's denoiser from a trained stage of another pipeline folder (`train.init_from`).

The usual case is an image-to-video stage fine-tuned from a text-to-video base stage: the same backbone with more
input channels (the image latent and its mask) and a noise-level embedding. Every tensor of the source is copied;
an input projection that grew copies the source's weights into its first input channels (the backbones order x's
channels first) and leaves the new ones at zero, and a module the source lacks keeps its zero initialisation
(vidiff.models.conditioning), so the fresh stage computes exactly what the source computes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vidiff.config import to_dict
from vidiff.errors import VidiffError
from vidiff.pipelines.pipeline_folder import read_index, stage_configs
from vidiff.pipelines.stage import DiffusionStage, StageConfig

# denoiser config keys a fine-tuned stage may add to or change from its source: the conditioning it gains
CONDITIONING_KEYS = {"lowres_channels", "image_channels", "noise_aug_conditioning", "fps_conditioning"}


def source_stage(folder: str | Path) -> DiffusionStage:
    """The first stage of pipeline folder `folder` (e.g. the export/ of a text-to-video run), with its weights."""
    folder = Path(folder)
    index = read_index(folder)
    stage_configs(folder, index)  # every stage folder is there
    return DiffusionStage.from_pretrained(folder / index.stages[0])


def check_compatible(target: StageConfig, source: StageConfig, where: str) -> None:
    """Raise VidiffError unless `target`'s denoiser is `source`'s with at most more conditioning (CONDITIONING_KEYS),
    and both work on the same VAE's latents."""
    if target.denoiser.kind != source.denoiser.kind:
        raise VidiffError(
            f"train.init_from={where}: its stage is a {source.denoiser.kind}, this one a {target.denoiser.kind}; "
            f"set stage.denoiser.kind: {source.denoiser.kind} (and its settings) to fine-tune it"
        )
    kind = target.denoiser.kind
    mine, theirs = to_dict(getattr(target.denoiser, kind)), to_dict(getattr(source.denoiser, kind))
    differ = sorted(k for k in mine if k not in CONDITIONING_KEYS and mine[k] != theirs.get(k))
    if differ:
        listed = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine[k]!r} here" for k in differ)
        raise VidiffError(
            f"train.init_from={where}: the {kind} differs from its stage in {listed}; fine-tuning adds conditioning "
            f"({', '.join(sorted(CONDITIONING_KEYS))}) to the same network: copy the other settings from its config.yaml"
        )
    if target.latent_channels != source.latent_channels or target.prediction != source.prediction:
        raise VidiffError(
            f"train.init_from={where}: its stage predicts {source.prediction} on {source.latent_channels} latent "
            f"channels, this one {target.prediction} on {target.latent_channels}; match stage.prediction and "
            "stage.latent_channels"
        )


@torch.no_grad()
def init_denoiser_from(stage: DiffusionStage, folder: str | Path, vae_hash: str = "") -> list[str]:
    """Copy the first stage of pipeline folder `folder` into `stage`'s denoiser (module docstring). `vae_hash`: the
    hash of the VAE whose latents `stage` trains on, checked against the one the source was trained on. Returns the
    names of the tensors that did not come from the source (grown inputs, new modules)."""
    source = source_stage(folder)
    check_compatible(stage.config, source.config, str(folder))
    if vae_hash and source.config.vae_hash and vae_hash != source.config.vae_hash:
        raise VidiffError(
            f"train.init_from={folder}: its stage was trained on another VAE (hash {source.config.vae_hash}) than the "
            f"latent cache's (hash {vae_hash}); encode the cache with the VAE of {folder} (`vidiff encode --checkpoint "
            f"{Path(folder) / read_index(folder).vae}`)"
        )
    theirs = source.denoiser.state_dict()
    state, new = {}, []
    for name, mine in stage.denoiser.state_dict().items():
        given = theirs.pop(name, None)
        if given is None or given.shape != mine.shape:
            new.append(name)
        state[name] = mine if given is None else grown(mine, given, name, folder)
    if theirs:
        raise VidiffError(
            f"train.init_from={folder}: its stage has tensors this one lacks ({', '.join(sorted(theirs)[:3])}...); "
            "fine-tune a stage built with the same settings"
        )
    # through load_state_dict, not in place: a backbone's state-dict hooks may store a tensor in another layout
    stage.denoiser.load_state_dict(state)
    return new


def grown(mine: Tensor, theirs: Tensor, name: str, folder: str | Path) -> Tensor:
    """`theirs` as the value of `mine`: itself, or, for an input projection with more input channels (dim 1), in its
    first channels with the rest zero."""
    if mine.shape == theirs.shape:
        return theirs
    if mine.dim() < 2 or mine.shape[0] != theirs.shape[0] or mine.shape[2:] != theirs.shape[2:] or mine.shape[1] < theirs.shape[1]:
        raise VidiffError(
            f"train.init_from={folder}: tensor {name} is {list(theirs.shape)} there and {list(mine.shape)} here; "
            "only the input projection may grow (new conditioning channels)"
        )
    out = torch.zeros_like(mine)
    out[:, : theirs.shape[1]] = theirs
    return out
