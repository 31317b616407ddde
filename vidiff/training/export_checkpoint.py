"""`vidiff export`: a training checkpoint (one Lightning file, or a folder of ZeRO shards from any number of ranks)
consolidated into the pipeline folder that `vidiff generate` reads: the stage's EMA weights, its VAE and text encoder.

The run's own config (`RUN/train.yaml`, beside `RUN/checkpoints/`) says what the stage is and which latent cache
(hence which VAE) it trained on; `--config` names another when the checkpoint was moved away from its run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.models.text_encoder import TextEncoder
from vidiff.pipelines.stage import DiffusionStage
from vidiff.training.train_stage import TrainRunConfig, export_stage
from vidiff.training.zero_checkpoint import is_zero_checkpoint, read_zero_checkpoint

EMA_PREFIX = "ema.shadow."


def export_checkpoint(checkpoint: str | Path, out: str | Path, config: str | Path | None = None) -> Path:
    """Write the pipeline folder `out` from training checkpoint `checkpoint`; returns `out`."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise VidiffError(f"checkpoint {checkpoint} does not exist; pass RUN/checkpoints/last.ckpt of a `vidiff train` "
                          "run (a file, or a folder of ZeRO shards)")
    config_path = Path(config) if config else checkpoint.resolve().parent.parent / "train.yaml"
    if not config_path.is_file():
        raise VidiffError(f"no training config for {checkpoint}: {config_path} does not exist; pass the run's "
                          "train.yaml with --config")
    run = load_config(TrainRunConfig, config_path)
    state = _state_dict(checkpoint)
    ema = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    if not ema:
        raise VidiffError(f"checkpoint {checkpoint} holds no EMA weights (ema.shadow.*); it was not written by "
                          "`vidiff train`")
    stage = DiffusionStage(run.stage)
    expected = stage.denoiser.state_dict()
    for key, value in expected.items():
        if key not in ema or tuple(ema[key].shape) != tuple(value.shape):
            found = list(ema[key].shape) if key in ema else "nothing"
            raise VidiffError(f"checkpoint {checkpoint} does not fit the stage in {config_path}: {key} is "
                              f"{list(value.shape)} there, {found} in the checkpoint; pass the config it was trained "
                              "with (--config)")
    meta = Path(run.data.latents) / "meta.json"
    if not meta.is_file():
        raise VidiffError(f"the run's latent cache {run.data.latents} (data.latents in {config_path}) has no "
                          "meta.json, which names the VAE to export with; pass a config whose data.latents exists")
    vae_dir = Path(json.loads(meta.read_text())["vae_dir"])
    return export_stage(stage, {k: ema[k] for k in expected}, TextEncoder(run.text), Path(out), vae_dir)


def _state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    if is_zero_checkpoint(checkpoint):
        return read_zero_checkpoint(checkpoint)["state_dict"]
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    except (RuntimeError, KeyError, OSError) as exc:
        raise VidiffError(f"checkpoint {checkpoint} is not a Lightning checkpoint ({exc}); pass "
                          "RUN/checkpoints/last.ckpt of a `vidiff train` run") from None
