"""Super-resolution stages against the classical baselines, on held-out toy clips whose ground truth is known:
TSR's in-between frames against linear frame blending, SSR's frames against bicubic upsampling (issue 21).

Each clip is rendered at the SR stage's output grid (the truth), degraded as training degrades it
(`latent_cache.degrade`) and encoded by the export's VAE: that is the stage's low-res input. Every row is then
scored by PSNR against the true clip, all through the same VAE:

- baseline: the low-res latents decoded, then blended in time (TSR) or bicubic-upsampled (SSR);
- baseline, output round trip: that baseline encoded and decoded by the VAE at the output grid, the round trip
  the stage's output goes through (its latents at that grid, decoded): the fair comparison, which the margin
  is taken against (the VAE may reconstruct the output grid worse than the low-res one, e.g. the toy VAE's
  17 frames at 12 fps against 9 at 6 fps, which would otherwise count against the stage);
- stage: the stage's latents sampled from the low-res latents (the clip's caption as prompt), decoded;
- VAE round trip: the true clip encoded and decoded, the ceiling any latent stage can reach.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vidiff.errors import VidiffError
from vidiff.eval.psnr import psnr
from vidiff.pipelines.cascade import stage_settings
from vidiff.pipelines.lowres import bicubic_upsample, blend_frames, prepare_lowres
from vidiff.pipelines.pipeline_folder import load_pipeline
from vidiff.pipelines.stage import DiffusionStage, StageConfig
from vidiff.pipelines.temporal_windows import sample_long
from vidiff.toyworld import ToyWorldDataset
from vidiff.training.latent_cache import LOWRES_FACTOR, degrade

KINDS = ("tsr", "ssr")
DEGRADATION = {"tsr": "frames", "ssr": "space"}  # latent_cache.degrade's kinds
BASELINES = {"tsr": "linear frame blending", "ssr": "bicubic upsampling"}
TARGET_DB = {"tsr": 2.0, "ssr": 1.0}  # issue 21: the stage's PSNR margin over the baseline
HELDOUT_SEED = 2121  # ToyWorldDataset seed of the clips: `vidiff encode --toyworld` trains on seed 0


def classical_baseline(kind: str, video: Tensor) -> Tensor:
    """The classical answer to an SR stage of `kind` from the low-res clip `video` in pixels."""
    factor = LOWRES_FACTOR
    return blend_frames(video, factor) if _check_kind(kind) == "tsr" else bicubic_upsample(video, factor)


def stage_kind(config: StageConfig) -> str:
    """"tsr", "ssr", "base" (no low-res input) or "sr" (a low-res input this evaluation has no baseline for)."""
    if not config.lowres_channels:
        return "base"
    f, s = config.lowres.temporal_factor, config.lowres.spatial_factor
    return "tsr" if (f, s) == (LOWRES_FACTOR, 1) else "ssr" if (f, s) == (1, LOWRES_FACTOR) else "sr"


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise VidiffError(f"unknown SR stage kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def _describe(config: StageConfig) -> str:
    kind = stage_kind(config)
    if kind == "base":
        return f"{config.name!r} (no low-res input: lowres_channels=0)"
    f, s = config.lowres.temporal_factor, config.lowres.spatial_factor
    return f"{config.name!r} ({kind.upper()}: stage.lowres.temporal_factor={f}, spatial_factor={s})"


_EXPECT = {"tsr": f"temporal_factor={LOWRES_FACTOR}, spatial_factor=1",
           "ssr": f"temporal_factor=1, spatial_factor={LOWRES_FACTOR}"}


def find_stages(
    stages: list[DiffusionStage], kinds: list[str] | None, name: str | None, where: str
) -> list[tuple[str, DiffusionStage]]:
    """(kind, stage) pairs to evaluate: the stage called `name`, else every stage of `kinds` (default: each TSR
    and SSR stage); raises VidiffError naming the stages there are when none fits."""
    asked = bool(kinds)  # kinds asked for must each be there; by default any TSR or SSR stage will do
    kinds = [_check_kind(k) for k in kinds] if kinds else list(KINDS)
    have = ", ".join(_describe(s.config) for s in stages)
    if name is not None:
        match = [s for s in stages if s.config.name == name]
        if not match:
            raise VidiffError(f"{where} has no stage {name!r}; its stages: {have}")
        kind = stage_kind(match[0].config)
        if kind not in kinds:
            want = " or ".join(k.upper() for k in kinds)
            raise VidiffError(
                f"stage {_describe(match[0].config)} of {where} is not a {want} stage, which takes a low-res input "
                f"at stage.lowres.{' or '.join(_EXPECT[k] for k in kinds)}"
            )
        return [(kind, match[0])]
    found = [(stage_kind(s.config), s) for s in stages if stage_kind(s.config) in kinds]
    missing = [k for k in kinds if k not in {kind for kind, _ in found}] if asked else []
    if missing or not found:
        k = (missing or kinds)[0]
        raise VidiffError(
            f"{where} holds no {' or '.join(k.upper() for k in missing or kinds)} stage to evaluate (its stages: "
            f"{have}); pass a pipeline folder with one, e.g. the export of `vidiff train --config "
            f"configs/toy/{k}.yaml`, whose stage takes a low-res input at stage.lowres.{_EXPECT[k]}"
        )
    return found


@torch.no_grad()
def evaluate_sr(
    export: str | Path,
    kinds: list[str] | None = None,
    stage: str | None = None,
    clips: int = 16,
    num_frames: int | None = None,
    seed: int = HELDOUT_SEED,
    sampling: dict[str, Any] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score the SR stages of the pipeline folder `export` against their classical baselines (module docstring):
    one result per stage (`find_stages`). Clip i is `ToyWorldDataset(clips, seed=seed)[i]` rendered at the stage's
    output size with `num_frames` frames (default: the stage's own clip; a longer clip is sampled over temporal
    windows), sampled with seed `seed + i`; `sampling` overrides fields of each stage's sampling settings."""
    if clips < 1:
        raise VidiffError(f"clips must be at least 1, got {clips}")
    pipe = load_pipeline(export).to(device)
    picked = find_stages(pipe.stages, kinds, stage, f"export {export}")
    return [{"export": str(export)} | _evaluate_stage(pipe, kind, s, clips, num_frames, seed, sampling or {}, progress)
            for kind, s in picked]


def _grid(vae, kind: str, config: StageConfig, num_frames: int | None) -> tuple[int, int, int]:
    """(frames, height, width) of the true clips: the stage's output size, `num_frames` frames."""
    tc, sc = vae.config.temporal_compression, vae.config.spatial_compression
    frames = num_frames or vae.sample_frames(config.latent_frames)
    step = tc * (LOWRES_FACTOR if kind == "tsr" else 1)  # TSR: the kept frames must fit the VAE too
    if frames < 1 + step or (frames - 1) % step:
        raise VidiffError(
            f"the {kind} evaluation cannot use {frames} frames: use 1 + {step}k (e.g. {1 + step} or {1 + 2 * step}), "
            f"so that the {'kept frames and the ' if kind == 'tsr' else ''}clip fit the VAE's {tc}x time compression"
        )
    return frames, config.latent_height * sc, config.latent_width * sc


def _evaluate_stage(pipe, kind: str, stage: DiffusionStage, clips: int, num_frames: int | None, seed: int,
                    overrides: dict[str, Any], progress: bool) -> dict[str, Any]:
    vae, config = pipe.vae.eval(), stage.config
    # as `vidiff generate` samples the stage: its pipeline.yaml settings, then the overrides (noise_aug_level too)
    sampling = stage_settings(config, pipe.index.sampling.get(config.name), overrides, "sr_eval",
                              overrides_from="the sampling settings given for stage {name}")
    frames, height, width = _grid(vae, kind, config, num_frames)
    data = ToyWorldDataset(clips, frames, height, width, seed=seed)
    device = next(stage.parameters()).device
    rows: dict[str, list[dict[str, float]]] = {"baseline": [], "baseline_roundtrip": [], "stage": [], "vae_roundtrip": []}
    low_shape: tuple[int, ...] = ()

    for i in tqdm(range(clips), desc=f"{config.name} vs {BASELINES[kind]}", unit="clip", disable=not progress):
        item = data[i]
        true = item["video"][None].to(device)
        low = degrade(true, DEGRADATION[kind])
        low_shape = tuple(low.shape[2:])
        z_low = vae.encode_latents(low)
        # as the cascade gives it the previous stage's latents (vidiff.pipelines.lowres)
        cond = pipe.text_encoder.cond([item["caption"]], lowres=prepare_lowres(vae, z_low, config.lowres))
        z = sample_long(stage, cond, vae.latent_frames(frames), seed=seed + i, sampling=sampling)
        baseline = classical_baseline(kind, vae.decode_latents(z_low))
        for row, video in (("baseline", baseline), ("baseline_roundtrip", vae.decode_latents(vae.encode_latents(baseline))),
                           ("stage", vae.decode_latents(z)), ("vae_roundtrip", vae.decode_latents(vae.encode_latents(true)))):
            rows[row].append(_scores(kind, video, true))

    names = {"baseline": f"{BASELINES[kind]} (VAE round trip of the low-res clip)",
             "baseline_roundtrip": "  the same, then the output grid's VAE round trip (fair)",
             "stage": f"{config.name} stage",
             "vae_roundtrip": "VAE round trip of the true clip (ceiling)"}
    table = [{"row": row, "name": names[row], **{k: sum(s[k] for s in scores) / clips for k in scores[0]}}
             for row, scores in rows.items()]
    metric = "psnr_inbetween" if kind == "tsr" else "psnr_all"
    by_row = {row["row"]: row[metric] for row in table}
    margin = by_row["stage"] - by_row["baseline_roundtrip"]
    return {
        "kind": kind, "stage": config.name, "clips": clips, "seed": seed,
        "frames": frames, "height": height, "width": width,
        "lowres": dict(zip(("frames", "height", "width"), low_shape, strict=True)),
        "sampling": dataclasses.asdict(sampling), "rows": table, "metric": metric,
        "margin_db": margin, "margin_over_lowres_roundtrip_db": by_row["stage"] - by_row["baseline"],
        "target_db": TARGET_DB[kind], "meets_target": margin >= TARGET_DB[kind],
    }


def _scores(kind: str, video: Tensor, true: Tensor) -> dict[str, float]:
    """PSNR of one clip over all frames and, for TSR, over the in-between frames `degrade` dropped."""
    out = {"psnr_all": psnr(video, true).item()}
    if kind == "tsr":
        inbetween = [j for j in range(true.shape[2]) if j % LOWRES_FACTOR]
        out["psnr_inbetween"] = psnr(video[:, :, inbetween], true[:, :, inbetween]).item()
    return out


def format_sr_table(results: list[dict[str, Any]]) -> str:
    """The results of `evaluate_sr` as a small text table per stage."""
    lines = []
    for r in results:
        s, low = r["sampling"], r["lowres"]
        tsr = r["kind"] == "tsr"
        lines += [
            f"{r['kind'].upper()} stage {r['stage']!r} of {r['export']}: {r['clips']} held-out toy clips (seed "
            f"{r['seed']}), {r['frames']} frames {r['height']}x{r['width']} from {low['frames']} frames "
            f"{low['height']}x{low['width']}; {s['sampler']}, {s['steps']} steps, cfg {s['cfg']}",
            f"  {'PSNR (dB) against the true clip':58s}" + (f"{'in-between':>11s}" if tsr else "") + f"{'all':>8s}",
        ]
        for row in r["rows"]:
            lines.append(f"  {row['name']:58s}" + (f"{row['psnr_inbetween']:11.2f}" if tsr else "")
                         + f"{row['psnr_all']:8.2f}")
        lines.append(
            f"  margin over {BASELINES[r['kind']]} through the same round trip: {r['margin_db']:+.2f} dB"
            f"{' on the in-between frames' if tsr else ''} (target >= {r['target_db']:.0f} dB): "
            f"{'met' if r['meets_target'] else 'NOT met'}; over the low-res round trip "
            f"{r['margin_over_lowres_roundtrip_db']:+.2f} dB"
        )
    return "\n".join(lines)
