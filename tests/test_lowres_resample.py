"""Super-resolution stages that take their low-res input resampled in pixels onto their own grid
(stage.lowres.resample: pixel) and residual stages (stage.lowres.residual_scale): one preparation shared by the
latent cache, the cascade and the SR evaluation; a residual stage samples and trains on latents - low-res input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_sr_stage import Recorder, text, trained, tsr_config

from vidiff.errors import ConfigError, VidiffError
from vidiff.models.vae import CausalVAE3D
from vidiff.pipelines.cascade import Cascade, StageSampling, check_chain
from vidiff.pipelines.lowres import bicubic_upsample, blend_frames, prepare_lowres, resample_pixels
from vidiff.pipelines.stage import DiffusionStage, LowresConfig
from vidiff.pipelines.temporal_windows import sample_long
from vidiff.training.latent_cache import encode_toyworld, load_latent_cache
from vidiff.training.objective import DiffusionObjective
from vidiff.training.sample_keys import SampleKeys

pytestmark = pytest.mark.usefixtures("one_thread")


def pixel_tsr(**lowres) -> DiffusionStage:
    """A tiny TSR stage (latents 4 x 5 x 8 x 8) whose low-res input is on its own grid."""
    return trained(DiffusionStage(tsr_config(resample="pixel", **lowres)))


def test_resample_pixels_blends_frames_then_upsamples_and_keeps_the_given_frames():
    video = torch.rand(1, 3, 3, 8, 8) * 2 - 1
    out = resample_pixels(video, 2, 2)
    assert out.shape == (1, 3, 5, 16, 16)
    torch.testing.assert_close(out, bicubic_upsample(blend_frames(video, 2), 2))
    torch.testing.assert_close(blend_frames(video, 2)[:, :, ::2], video)  # the given frames stay as they are
    assert resample_pixels(video, 1, 1) is video


def test_prepare_lowres_passes_latents_through_or_resamples_them_in_pixels(tiny_vae_dir):
    vae = CausalVAE3D.from_pretrained(tiny_vae_dir).eval()
    z = torch.randn(2, 4, 3, 8, 8)
    assert prepare_lowres(vae, z, LowresConfig(temporal_factor=2)) is z
    how = LowresConfig(temporal_factor=2, spatial_factor=2, resample="pixel")
    with torch.no_grad():
        out = prepare_lowres(vae, z, how)
        expected = vae.encode_latents(resample_pixels(vae.decode_latents(z), 2, 2))
    assert out.shape == (2, 4, 5, 16, 16)
    torch.testing.assert_close(out, expected)
    with pytest.raises(VidiffError, match="needs the VAE"):
        prepare_lowres(None, z, how)


def test_a_pixel_stage_takes_its_input_on_its_own_grid_and_chains_from_the_previous_stages_latents():
    config = tsr_config(resample="pixel")
    assert config.source_shape(5, 8, 8) == (4, 3, 8, 8) and config.lowres_shape(5, 8, 8) == (4, 5, 8, 8)
    assert config.lowres_frame_step == 1 and tsr_config().lowres_frame_step == 2
    stage = DiffusionStage(config)
    stage.check_lowres(dataclasses.replace(text(1), lowres=torch.randn(1, 4, 5, 8, 8)), (1, 4, 5, 8, 8))
    with pytest.raises(VidiffError, match=r"from a low-res input \[B, 4, 5, 8, 8\]"):
        stage.check_lowres(dataclasses.replace(text(1), lowres=torch.randn(1, 4, 3, 8, 8)), (1, 4, 5, 8, 8))
    base = dataclasses.replace(tsr_config(), name="base", latent_frames=3)
    base = dataclasses.replace(base, denoiser=dataclasses.replace(base.denoiser, unet=dataclasses.replace(
        base.denoiser.unet, lowres_channels=0, noise_aug_conditioning=False)), fps=4)
    config.fps = 8
    check_chain([base, config], "test")  # the TSR's input is made from the base stage's 3 latent frames
    with pytest.raises(VidiffError, match="need the pipeline's VAE"):
        Cascade([DiffusionStage(base), stage], [StageSampling(), StageSampling(noise_aug_level=0.1)])


@pytest.mark.parametrize("key, value, fragment", [
    ("resample", "nearest", "stage.lowres.resample must be one of latent, pixel"),
    ("residual_scale", -1.0, "residual_scale must be >= 0"),
])
def test_resample_and_residual_settings_are_checked(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        LowresConfig(**{key: value})
    with pytest.raises(ConfigError, match="set resample: pixel"):
        LowresConfig(residual_scale=0.1)


def test_a_residual_stage_samples_the_correction_and_adds_it_to_its_clean_input():
    plain = pixel_tsr()
    residual = DiffusionStage(tsr_config(resample="pixel", residual_scale=0.25)).eval()
    residual.load_state_dict(plain.state_dict())
    cond = dataclasses.replace(text(2), lowres=torch.randn(2, 4, 5, 8, 8))
    out_plain, out_res = plain.sample(cond, seed=3), residual.sample(cond, seed=3)
    # the network sees the same inputs (its augmented low-res input included), so the two sample the same x;
    # the residual stage's latents are its input plus 0.25 x that
    torch.testing.assert_close(out_res, cond.lowres + 0.25 * out_plain)
    # over temporal windows too (sample_long on a longer input): the correction is added to the whole input
    long = dataclasses.replace(text(1), lowres=torch.randn(1, 4, 9, 8, 8))
    torch.testing.assert_close(sample_long(residual, long, 9, seed=1), long.lowres + 0.25 * sample_long(plain, long, 9, seed=1))


def test_a_residual_stage_trains_on_the_correction_to_its_clean_input():
    stage = DiffusionStage(tsr_config(resample="pixel", residual_scale=0.5, noise_aug_max=0.3))
    stage.denoiser = Recorder()
    plain = DiffusionStage(tsr_config(resample="pixel", noise_aug_max=0.3))
    plain.denoiser = stage.denoiser
    latents, lowres = torch.randn(3, 4, 5, 8, 8), torch.randn(3, 4, 5, 8, 8)
    cond = dataclasses.replace(text(3), lowres=lowres)
    keys = SampleKeys.for_rank(seed=2, step=5, local_batch=3)
    loss = DiffusionObjective()(stage, latents, cond, keys).loss
    seen = stage.denoiser.conds[-1]
    expected = DiffusionObjective()(plain, (latents - lowres) / 0.5, cond, keys).loss
    torch.testing.assert_close(loss, expected)
    # the network's low-res input is the augmented clean input, not the residual
    torch.testing.assert_close(stage.denoiser.conds[-1].lowres, seen.lowres)
    assert not torch.equal(seen.lowres, lowres) and seen.lowres.shape == lowres.shape


def test_a_residual_stage_needs_its_input_in_the_latents_channels():
    with pytest.raises(ConfigError, match="lowres_channels equal to stage.latent_channels"):
        cfg = tsr_config(resample="pixel", residual_scale=0.5)
        unet = dataclasses.replace(cfg.denoiser.unet, lowres_channels=2)
        dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, unet=unet))


def test_encode_resample_pixel_stores_the_input_on_the_targets_grid_and_its_residual_std(tiny_vae_dir, tmp_path):
    out = encode_toyworld(tiny_vae_dir, 3, tmp_path / "c", num_frames=17, lowres="frames", resample="pixel",
                          progress=False)
    cache = load_latent_cache(out)
    assert all(lr.shape == z.shape == (4, 5, 8, 8) for z, lr in zip(cache.latents, cache.lowres, strict=True))
    meta = json.loads((out / "meta.json").read_text())
    rms = torch.cat([(z - lr).flatten() for z, lr in zip(cache.latents, cache.lowres, strict=True)]).pow(2).mean().sqrt()
    assert meta["resample"] == "pixel" and meta["lowres_residual_std"] == pytest.approx(float(rms), abs=1e-4)
    vae = CausalVAE3D.from_pretrained(tiny_vae_dir).eval()
    with torch.no_grad():  # the input is what the cascade would make from the degraded clip's latents
        from vidiff.toyworld import ToyWorldDataset
        from vidiff.training.latent_cache import degrade

        clip = ToyWorldDataset(3, 17, 32, 32, seed=0)[0]["video"][None]
        z_low = vae.encode_latents(degrade(clip, "frames"))
        expected = prepare_lowres(vae, z_low, LowresConfig(temporal_factor=2, resample="pixel"))
    torch.testing.assert_close(cache.lowres[0], expected[0], atol=1e-4, rtol=1e-4)
    stamp = (out / "meta.json").stat().st_mtime_ns
    assert encode_toyworld(tiny_vae_dir, 3, out, num_frames=17, lowres="frames", resample="pixel", progress=False) == out
    assert (out / "meta.json").stat().st_mtime_ns == stamp  # up to date: the measured std is not a setting
    with pytest.raises(VidiffError, match="--resample pixel resamples the low-res copy of an SR cache; add --lowres"):
        encode_toyworld(tiny_vae_dir, 3, tmp_path / "bad", num_frames=17, resample="pixel", progress=False)


def test_the_cascade_hands_a_pixel_stage_the_previous_stages_latents_resampled_through_the_vae(tiny_vae_dir):
    from vidiff.pipelines.cascade import stage_seed

    vae = CausalVAE3D.from_pretrained(tiny_vae_dir).eval()
    base_config = dataclasses.replace(tsr_config(), name="base", latent_frames=3, fps=4)
    base_config.denoiser.unet = dataclasses.replace(base_config.denoiser.unet, lowres_channels=0,
                                                    noise_aug_conditioning=False)
    base = trained(DiffusionStage(base_config))
    tsr = pixel_tsr(residual_scale=0.3)
    tsr.config.fps = 8
    cascade = Cascade([base, tsr], [StageSampling(steps=2), StageSampling(steps=2, noise_aug_level=0.1)], vae=vae)
    cond = text(1)
    base_out, tsr_out = cascade.sample_stages(cond, seed=4)
    with torch.no_grad():
        lowres = prepare_lowres(vae, base_out, tsr.config.lowres)
    expected = tsr.sample(dataclasses.replace(cond, lowres=lowres), seed=stage_seed(4, 1),
                          sampling=StageSampling(steps=2, noise_aug_level=0.1))
    assert tsr_out.shape == (1, 4, 5, 8, 8)
    torch.testing.assert_close(tsr_out, expected)


def test_training_warns_when_residual_scale_is_far_from_the_caches_residual_std(monkeypatch, tmp_path, caplog):
    from pathlib import Path

    import vidiff.training.train_stage as ts
    from vidiff.config import load_config
    from vidiff.models.text_encoder import TextEncoder
    from vidiff.training.latent_cache import LatentCache

    root = Path(__file__).resolve().parents[1]
    z = [torch.randn(4, 5, 8, 8) for _ in range(2)]
    for std, warned in ((0.09, False), (0.3, True)):  # the toy TSR config's residual_scale is 0.09
        cache = LatentCache(latents=z, captions=["a red circle"] * 2, vae_dir=tmp_path, lowres=z, residual_std=std)
        monkeypatch.setattr(ts, "load_latent_cache", lambda path, c=cache: c)
        cfg = load_config(ts.TrainRunConfig, root / "configs/toy/tsr.yaml", ["data.latents=cache"])
        caplog.clear()
        with caplog.at_level("WARNING", logger="vidiff.training.train_stage"):
            ts.build_dataset(cfg, TextEncoder(cfg.text))
        assert ("set stage.lowres.residual_scale=0.3" in caplog.text) == warned
