"""SR stages against the classical baselines (vidiff.eval.sr_baselines, scripts/sr_eval.py): the baselines on
inputs with known answers, and the command end to end on a tiny untrained export, with its refusals."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from test_sr_stage import TINY_UNET, tsr_config

from vidiff.errors import VidiffError
from vidiff.eval.psnr import psnr
from vidiff.eval.sr_baselines import HELDOUT_SEED, evaluate_sr, stage_kind
from vidiff.models.denoisers import DenoiserConfig
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig
from vidiff.models.unet import UNetConfig
from vidiff.models.vae import CausalVAE3D
from vidiff.pipelines.lowres import bicubic_upsample, blend_frames
from vidiff.pipelines.pipeline_folder import save_pipeline
from vidiff.pipelines.stage import DiffusionStage, LowresConfig, SamplingConfig, StageConfig
from vidiff.toyworld import ToyWorldDataset
from vidiff.training.latent_cache import degrade

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------------------------------- baselines


def test_linear_frame_blending_is_exact_on_a_linear_ramp_and_keeps_the_given_frames():
    # frame j of the full-rate clip is a + b j; the low-res clip keeps the even frames
    a, b = torch.rand(1, 3, 1, 4, 4) - 0.5, (torch.rand(1, 3, 1, 4, 4) - 0.5) / 10
    full = a + b * torch.arange(9.0).view(1, 1, -1, 1, 1)
    low = degrade(full, "frames")
    out = blend_frames(low, 2)
    assert out.shape == full.shape and torch.equal(out[:, :, ::2], low)
    torch.testing.assert_close(out, full)
    bumpy = full.clone()
    bumpy[:, :, 1::2] += 0.1  # what blending cannot know: the in-between frames off the line
    assert psnr(blend_frames(degrade(bumpy, "frames"), 2), bumpy).item() < psnr(out, full).item()


def test_bicubic_upsampling_is_exact_on_a_constant_clip():
    video = torch.full((2, 3, 3, 8, 8), 0.3)
    video[1] = -0.7
    out = bicubic_upsample(video, 2)
    assert out.shape == (2, 3, 3, 16, 16)
    torch.testing.assert_close(out[0], torch.full_like(out[0], 0.3))
    torch.testing.assert_close(out[1], torch.full_like(out[1], -0.7))
    # the block-mean degradation of a smooth clip comes back closely (pixel centres line up)
    x = torch.linspace(-1, 1, 32)
    smooth = (0.8 * torch.sin(2 * x[:, None] + 3 * x[None])).expand(1, 3, 2, 32, 32)
    assert psnr(bicubic_upsample(degrade(smooth, "space"), 2), smooth).item() > 35


def test_stage_kinds_come_from_the_low_res_factors():
    ssr = dataclasses.replace(tsr_config(), lowres=LowresConfig(temporal_factor=1, spatial_factor=2))
    both = dataclasses.replace(tsr_config(), lowres=LowresConfig(temporal_factor=2, spatial_factor=2))
    assert [stage_kind(c) for c in (tsr_config(), ssr, both, _base_config())] == ["tsr", "ssr", "sr", "base"]


# ---------------------------------------------------------------------------------------------------- end to end


def _base_config() -> StageConfig:
    unet = UNetConfig(**{**TINY_UNET, "lowres_channels": 0, "noise_aug_conditioning": False})
    return StageConfig(name="base", fps=8, denoiser=DenoiserConfig(kind="unet", unet=unet))


def _export(folder: Path, vae_dir: Path, kinds: tuple[str, ...]) -> Path:
    """A pipeline folder of the tiny VAE, a toy text tower and untrained stages that chain: 'base' (latents
    4 x 3 x 8 x 8 at 8 fps), 'tsr' (5 x 8 x 8 from 3 x 8 x 8: 17 frames of 32 px at 16 fps) and 'ssr' (5 x 16 x 16
    from 5 x 8 x 8: 17 frames of 64 px)."""
    fast = SamplingConfig(steps=2, cfg=2.0)
    configs = {
        "base": _base_config(),
        "tsr": dataclasses.replace(tsr_config(), sampling=fast, fps=16),
        "ssr": dataclasses.replace(tsr_config(), name="ssr", latent_height=16, latent_width=16, fps=16,
                                   sampling=fast, lowres=LowresConfig(temporal_factor=1, spatial_factor=2)),
    }
    text = TextEncoder(TextEncoderConfig(width=16, layers=1, heads=2, context_length=8))
    return save_pipeline(folder, vae_dir, text, [(DiffusionStage(configs[k]), None) for k in kinds])


def _script():
    spec = importlib.util.spec_from_file_location("sr_eval", ROOT / "scripts/sr_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_reports_every_row_for_each_sr_stage(tmp_path, tiny_vae_dir, capsys):
    export = _export(tmp_path / "export", tiny_vae_dir, ("base", "tsr", "ssr"))
    out = tmp_path / "sr.json"
    assert _script().main(["--checkpoint", str(export), "--clips", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert [(r["kind"], r["stage"]) for r in results] == [("tsr", "tsr"), ("ssr", "ssr")]  # the base is skipped
    tsr, ssr = results
    assert (tsr["frames"], tsr["height"], tsr["lowres"]) == (17, 32, {"frames": 9, "height": 32, "width": 32})
    assert (ssr["frames"], ssr["height"], ssr["lowres"]) == (17, 64, {"frames": 17, "height": 32, "width": 32})
    for r, columns in ((tsr, {"psnr_all", "psnr_inbetween"}), (ssr, {"psnr_all"})):
        assert [row["row"] for row in r["rows"]] == ["baseline", "baseline_roundtrip", "stage", "vae_roundtrip"]
        for row in r["rows"]:
            assert set(row) - {"row", "name"} == columns and all(0 < row[c] < 100 for c in columns)
            assert row["name"] in printed
        # the margin is taken against the baseline through the output grid's round trip, as the stage's output
        assert r["margin_db"] == pytest.approx(r["rows"][2][r["metric"]] - r["rows"][1][r["metric"]])
        assert r["margin_over_lowres_roundtrip_db"] == pytest.approx(r["rows"][2][r["metric"]] - r["rows"][0][r["metric"]])
        assert r["meets_target"] == (r["margin_db"] >= r["target_db"])
    assert "linear frame blending" in printed and "bicubic upsampling" in printed and "in-between" in printed

    # the rows that need no sampling, recomputed here: the same clips through the same VAE
    vae = CausalVAE3D.from_pretrained(export / "vae")
    clips = torch.stack([ToyWorldDataset(2, 17, 32, 32, seed=HELDOUT_SEED)[i]["video"] for i in range(2)])
    with torch.no_grad():
        def decode(z):
            return vae.decode(vae.denormalize_latents(z)).clamp(-1, 1)

        ceiling = psnr(decode(vae.encode_latents(clips)), clips).mean().item()
        blended = blend_frames(decode(vae.encode_latents(degrade(clips, "frames"))), 2)
        blended_roundtrip = decode(vae.encode_latents(blended))
    inbetween = psnr(blended[:, :, 1::2], clips[:, :, 1::2]).mean().item()
    inbetween_roundtrip = psnr(blended_roundtrip[:, :, 1::2], clips[:, :, 1::2]).mean().item()
    assert tsr["rows"][3]["psnr_all"] == pytest.approx(ceiling, abs=1e-4)
    assert tsr["rows"][0]["psnr_inbetween"] == pytest.approx(inbetween, abs=1e-4)
    assert tsr["rows"][1]["psnr_inbetween"] == pytest.approx(inbetween_roundtrip, abs=1e-4)


def test_a_longer_clip_is_sampled_over_windows(tmp_path, tiny_vae_dir):
    export = _export(tmp_path / "export", tiny_vae_dir, ("tsr",))
    (r,) = evaluate_sr(export, ["tsr"], clips=1, num_frames=25, progress=False)  # 7 latent frames: two windows
    assert r["frames"] == 25 and r["lowres"]["frames"] == 13 and all(row["psnr_all"] > 0 for row in r["rows"])


def test_bad_inputs_fail_with_a_clear_message(tmp_path, tiny_vae_dir, capsys):
    base_only = _export(tmp_path / "base", tiny_vae_dir, ("base",))
    assert _script().main(["--checkpoint", str(base_only), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "holds no TSR or SSR stage to evaluate (its stages: 'base' (no low-res input" in err
    assert not (tmp_path / "x.json").exists()

    both = _export(tmp_path / "both", tiny_vae_dir, ("base", "tsr"))
    cases = [
        (dict(kinds=["tsr"], stage="base"), r"stage 'base' \(no low-res input: lowres_channels=0\) of .* is not a TSR "
                                            r"stage, which takes a low-res input at stage.lowres.temporal_factor=2"),
        (dict(kinds=["ssr"]), r"holds no SSR stage .*'tsr' \(TSR: stage.lowres.temporal_factor=2, spatial_factor=1\)"
                              r".*configs/toy/ssr.yaml"),
        (dict(stage="nope"), r"has no stage 'nope'; its stages: 'base'"),
        (dict(kinds=["3x"]), r"unknown SR stage kind '3x'"),
        (dict(kinds=["tsr"], num_frames=12), r"cannot use 12 frames: use 1 \+ 8k \(e.g. 9 or 17\)"),
        (dict(kinds=["tsr"], sampling={"steps": 0}), r"sampling steps must be a positive integer"),
        (dict(kinds=["tsr"], sampling={"stpes": 4}), r"settings given for stage tsr: unknown key\(s\) stpes for StageSampling; valid keys: cfg,"),
    ]
    for kwargs, message in cases:
        with pytest.raises(VidiffError, match=message):
            evaluate_sr(both, clips=1, progress=False, **kwargs)
