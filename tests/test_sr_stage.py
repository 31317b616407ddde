"""Super-resolution stages: the low-res input's noise-conditioning augmentation (one law at training and at
sampling, its level an input of the network), the checks of the low-res input's shape in the stage and in the
training data, the SR configs, and a short training run of the toy TSR stage on a tiny cache."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from vidiff.config import load_config
from vidiff.diffusion import add_noise, noise_augment
from vidiff.errors import ConfigError, VidiffError
from vidiff.models.cond import Cond
from vidiff.models.denoisers import DenoiserConfig, build_denoiser
from vidiff.models.unet import UNetConfig
from vidiff.pipelines.stage import DiffusionStage, LowresConfig, SamplingConfig, ScheduleConfig, StageConfig
from vidiff.training.latent_cache import LatentCache
from vidiff.training.objective import DiffusionObjective
from vidiff.training.sample_keys import SampleKeys
from vidiff.training.train_stage import TrainRunConfig, build_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = dict(in_channels=4, model_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
                 head_dim=16, norm_groups=8, text_dim=16, lowres_channels=4, noise_aug_conditioning=True)

pytestmark = pytest.mark.usefixtures("one_thread")


def tsr_config(**lowres) -> StageConfig:
    """A tiny TSR stage: latents 4 x 5 x 8 x 8 from low-res latents 4 x 3 x 8 x 8."""
    return StageConfig(
        name="tsr", latent_frames=5, latent_height=8, latent_width=8,
        denoiser=DenoiserConfig(kind="unet", unet=UNetConfig(**TINY_UNET)),
        schedule=ScheduleConfig(zero_terminal_snr=True),
        sampling=SamplingConfig(steps=2, cfg=2.0),
        lowres=LowresConfig(**{"temporal_factor": 2, **lowres}),
    )


def text(b: int, d: int = 16) -> Cond:
    return Cond(torch.randn(b, 4, d), torch.ones(b, 4, dtype=torch.bool))


def trained(stage: DiffusionStage) -> DiffusionStage:
    """Give the zero-initialised layers (noise-level embedding, low-res input channels) weights, as training would."""
    with torch.no_grad():
        for p in stage.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return stage.eval()


class Recorder(nn.Module):
    """A denoiser that records the conds it is called with and predicts zeros."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))  # the stage finds its device from a parameter
        self.conds: list[Cond] = []

    def forward(self, x, t, cond):
        self.conds.append(cond)
        return x * self.weight


# ------------------------------------------------------------------------------------------ noise augmentation


def test_noise_aug_level_reaches_the_network_and_changes_its_output():
    stage = trained(DiffusionStage(tsr_config()))
    x, t = torch.randn(2, 4, 5, 8, 8), torch.tensor([300, 700])
    cond = dataclasses.replace(text(2), lowres=torch.randn(2, 4, 3, 8, 8))
    noise = torch.randn_like(cond.lowres)

    def predict(level: float, network=stage) -> torch.Tensor:
        # the same x_t, t and corrupted low-res input; only the level the network is told differs
        augmented = stage.augment_input(cond, torch.full((2,), 0.2), noise)
        with torch.no_grad():
            return network(x, t, dataclasses.replace(augmented, noise_aug_level=torch.full((2,), level)))

    assert (predict(0.1) - predict(0.5)).abs().max() > 1e-3
    # The test has teeth: the same network with its noise-level embedding removed (it ignores the level) fails it.
    deaf = trained(DiffusionStage(tsr_config()))
    deaf.load_state_dict(stage.state_dict())
    deaf.denoiser.conditioning.noise_aug_embed = None
    assert torch.equal(predict(0.1, deaf), predict(0.5, deaf))


def test_the_level_is_a_share_of_the_schedule_from_exactly_clean_to_pure_noise():
    stage = DiffusionStage(tsr_config())
    lowres, noise = torch.randn(3, 4, 3, 8, 8), torch.randn(3, 4, 3, 8, 8)
    out = noise_augment(lowres, noise, torch.tensor([0.0, 1.0, 0.5]), stage.schedule)
    assert torch.equal(out[0], lowres[0])  # level 0: the input itself
    assert torch.equal(out[1], noise[1])  # level 1 on a zero-terminal-SNR schedule: pure noise
    s, t = stage.schedule, torch.tensor(499)  # level 0.5 of 1000 steps: the forward diffusion's 500th step
    torch.testing.assert_close(out[2], add_noise(lowres[2], noise[2], s.alpha(t), s.sigma(t)))
    with pytest.raises(VidiffError, match=r"levels must be in \[0, 1\]"):
        noise_augment(lowres, noise, torch.tensor([0.1, 1.2, 0.0]), stage.schedule)


def test_training_draws_a_keyed_level_per_sample_and_corrupts_before_dropout():
    stage = DiffusionStage(tsr_config(noise_aug_max=0.4))
    stage.denoiser = Recorder()
    latents, lowres = torch.randn(4, 4, 5, 8, 8), torch.randn(4, 4, 3, 8, 8)
    cond = dataclasses.replace(text(4), lowres=lowres)
    keys = SampleKeys.for_rank(seed=1, step=7, local_batch=4)
    DiffusionObjective(dropout={"lowres": 0.5})(stage, latents, cond, keys)
    seen = stage.denoiser.conds[-1]
    level = seen.noise_aug_level
    assert level.shape == (4,) and len(set(level.tolist())) == 4 and bool(((level >= 0) & (level < 0.4)).all())
    dropped = (seen.lowres.flatten(1) == 0).all(1)
    assert 0 < int(dropped.sum()) < 4  # keys 1/7/0..3 drop some rows: those are exactly zeros, not noise
    kept = ~dropped
    assert not torch.equal(seen.lowres[kept], lowres[kept])  # the others are corrupted
    # rank 1 of 2 holding samples 2 and 3 draws what one process drew for them
    DiffusionObjective(dropout={"lowres": 0.5})(stage, latents[2:], cond[2:], SampleKeys.for_rank(1, 7, 2, rank=1))
    assert torch.equal(stage.denoiser.conds[-1].noise_aug_level, level[2:])
    assert torch.equal(stage.denoiser.conds[-1].lowres, seen.lowres[2:])

    # noise_aug_max = 0: the level is 0 and the low-res input reaches the network unchanged
    stage.config.lowres.noise_aug_max = 0.0
    DiffusionObjective()(stage, latents, cond, keys)
    assert torch.equal(stage.denoiser.conds[-1].lowres, lowres) and not stage.denoiser.conds[-1].noise_aug_level.any()


def test_sampling_corrupts_the_low_res_input_at_the_configured_level_by_the_same_law():
    for level in (0.0, 0.3):
        stage = DiffusionStage(tsr_config(noise_aug_level=level))
        stage.denoiser = Recorder()
        lowres = torch.randn(2, 4, 3, 8, 8)
        stage.sample(dataclasses.replace(text(2), lowres=lowres), seed=3)
        seen = stage.denoiser.conds[0]  # CFG batches cond and its null twin: both carry the same low-res input
        assert torch.equal(seen.noise_aug_level, torch.full((4,), level))
        got = seen.lowres[:2]
        if level == 0:
            assert torch.equal(got, lowres)
        else:
            t = torch.tensor(level * stage.schedule.num_steps - 1)
            alpha, sigma = stage.schedule.alpha(t).float(), stage.schedule.sigma(t).float()
            implied = (got - alpha * lowres) / sigma  # the noise it was corrupted with: standard normal
            assert abs(implied.mean()) < 0.1 and abs(implied.std() - 1) < 0.1
            again = DiffusionStage(tsr_config(noise_aug_level=level))
            again.denoiser = Recorder()
            again.sample(dataclasses.replace(text(2), lowres=lowres), seed=3)
            assert torch.equal(again.denoiser.conds[0].lowres, seen.lowres)  # keyed by the sampling seed


# --------------------------------------------------------------------------------------------------- refusals


def test_a_stage_refuses_a_low_res_input_of_the_wrong_channel_count_or_size():
    stage = DiffusionStage(tsr_config())
    expected = r"a low-res input \[B, 4, 3, 8, 8\]"
    for shape, given in [((1, 3, 3, 8, 8), r"\[1, 3, 3, 8, 8\]"), ((1, 4, 2, 8, 8), r"\[1, 4, 2, 8, 8\]"),
                         ((1, 4, 3, 4, 4), r"\[1, 4, 3, 4, 4\]")]:
        with pytest.raises(VidiffError, match=rf"tsr stage makes latents \[1, 4, 5, 8, 8\] from {expected}.*{given}"):
            stage.sample(dataclasses.replace(text(1), lowres=torch.randn(shape)))
    with pytest.raises(VidiffError, match=rf"{expected}.*Cond.lowres is missing"):
        stage.sample(text(1))
    with pytest.raises(VidiffError, match=r"cannot make latents \[1, 4, 4, 8, 8\] from a low-res input"):
        stage.sample(dataclasses.replace(text(1), lowres=torch.randn(1, 4, 3, 8, 8)), num_frames=4)
    # training checks the same, against the (possibly cropped) latents it is given
    crop = dataclasses.replace(text(2), lowres=torch.randn(2, 4, 3, 8, 8))
    with pytest.raises(VidiffError, match=r"makes latents \[2, 4, 5, 4, 4\] from a low-res input \[B, 4, 3, 4, 4\]"):
        DiffusionObjective()(stage, torch.randn(2, 4, 5, 4, 4), crop, SampleKeys.for_rank(0, 0, 2))


@pytest.mark.parametrize("key, value, fragment", [
    ("noise_aug_max", 1.5, r"stage.lowres.noise_aug_max must be in \[0, 1\]"),
    ("noise_aug_level", -0.1, r"stage.lowres.noise_aug_level must be in \[0, 1\]"),
    ("noise_aug_level", 0.6, r"noise_aug_level=0.6 is above stage.lowres.noise_aug_max=0.5.*set noise_aug_level <="),
    ("temporal_factor", 0, r"stage.lowres.temporal_factor must be a positive integer"),
])
def test_lowres_config_values_are_checked(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(TrainRunConfig, ROOT / "configs/toy/tsr.yaml", [f"stage.lowres.{key}={value}"])


def test_stage_latents_must_come_from_the_low_res_input_by_the_factors():
    with pytest.raises(ConfigError, match=r"latents 4x8x8 do not come from a low-res input.*latent_frames = 1 \+ 2k"):
        load_config(TrainRunConfig, ROOT / "configs/toy/tsr.yaml", ["stage.latent_frames=4"])
    base = load_config(TrainRunConfig, ROOT / "configs/toy/base_unet.yaml", ["stage.latent_frames=4"])
    assert base.stage.lowres_channels == 0  # a base stage ignores its lowres section


# ----------------------------------------------------------------------------------------------- training data


def _dataset(monkeypatch, tmp_path, config_overrides, latents, lowres):
    import vidiff.training.train_stage as ts
    from vidiff.models.text_encoder import TextEncoder

    cache = LatentCache(latents=latents, captions=["a red circle"] * len(latents), vae_dir=tmp_path, lowres=lowres)
    monkeypatch.setattr(ts, "load_latent_cache", lambda path: cache)
    cfg = load_config(TrainRunConfig, ROOT / "configs/toy/tsr.yaml", ["data.latents=cache", *config_overrides])
    return build_dataset(cfg, TextEncoder(cfg.text))[0]


LATENT = ["stage.lowres.resample=latent", "stage.lowres.residual_scale=0"]  # the toy config's input at its own size


def test_the_dataset_passes_low_res_latents_to_an_sr_stage_and_refuses_ones_that_do_not_fit(monkeypatch, tmp_path):
    z = [torch.randn(4, 5, 8, 8) for _ in range(3)]
    low = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    ds = _dataset(monkeypatch, tmp_path, LATENT, z, low)
    assert torch.equal(ds[1]["lowres"], low[1]) and torch.equal(ds[1]["latents"], z[1])
    with pytest.raises(VidiffError, match=r"holds none; re-encode it with `vidiff encode --lowres frames`"):
        _dataset(monkeypatch, tmp_path, LATENT, z, None)
    with pytest.raises(VidiffError, match=r"low-res latents of 3 channels but the tsr stage's denoiser takes "
                                          r"lowres_channels=4"):
        _dataset(monkeypatch, tmp_path, LATENT, z, [torch.randn(3, 3, 8, 8)] * 3)
    with pytest.raises(VidiffError, match=r"pairs latents \[4, 5, 8, 8\] with low-res latents \[4, 5, 4, 4\], but "
                                          r"the tsr stage takes \[4, 3, 8, 8\]"):
        _dataset(monkeypatch, tmp_path, LATENT, z, [torch.randn(4, 5, 4, 4)] * 3)
    # crops: an SR stage trains on latents no larger than it generates, a base stage only on its own size
    crops = _dataset(monkeypatch, tmp_path, LATENT, [torch.randn(4, 5, 4, 4)] * 3, [torch.randn(4, 3, 4, 4)] * 3)
    assert crops[0]["lowres"].shape == (4, 3, 4, 4)
    with pytest.raises(VidiffError, match=r"size \[\(16, 16\)\] but the stage generates 8x8 \(or trains on crops"):
        _dataset(monkeypatch, tmp_path, LATENT, [torch.randn(4, 5, 16, 16)] * 3, [torch.randn(4, 3, 16, 16)] * 3)
    base = [*LATENT, "stage.denoiser.unet.lowres_channels=0", "stage.denoiser.unet.noise_aug_conditioning=false"]
    assert "lowres" not in _dataset(monkeypatch, tmp_path, base, z, low)[0]  # a base stage ignores them
    with pytest.raises(VidiffError, match=r"size \[\(4, 4\)\] but the stage generates 8x8;"):
        _dataset(monkeypatch, tmp_path, base, [torch.randn(4, 5, 4, 4)] * 3, None)
    # the toy config resamples in pixels: its input is on the latents' own grid
    assert torch.equal(_dataset(monkeypatch, tmp_path, [], z, z)[0]["lowres"], z[0])
    with pytest.raises(VidiffError, match=r"takes \[4, 5, 8, 8\] .*resample=pixel.*`vidiff encode --lowres frames "
                                          r"--resample pixel`"):
        _dataset(monkeypatch, tmp_path, [], z, low)


# ------------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name, lowres, crop", [  # both take their input resampled onto their own grid
    ("tsr", (4, 5, 8, 8), None),
    ("ssr", (4, 3, 16, 16), ((3, 8, 8), (4, 3, 8, 8))),  # an SR stage may train on crops: 3 x 8 x 8 latents
])
def test_toy_sr_configs_build_and_take_a_low_res_input_of_the_expected_shape(name, lowres, crop):
    run = load_config(TrainRunConfig, ROOT / f"configs/toy/{name}.yaml")
    s = run.stage
    assert s.name == name and s.lowres_channels == s.latent_channels == 4 and s.denoiser.unet.noise_aug_conditioning
    assert s.lowres_shape(s.latent_frames, s.latent_height, s.latent_width) == lowres
    stage = DiffusionStage(s).eval()
    x = torch.randn(1, 4, s.latent_frames, s.latent_height, s.latent_width)
    cond = Cond(torch.randn(1, 4, s.text_dim), torch.ones(1, 4, dtype=torch.bool), lowres=torch.randn(1, *lowres))
    t = torch.tensor([500])
    with torch.no_grad():
        stage.check_lowres(cond, tuple(x.shape))
        assert stage(x, t, stage.augment_input(cond, torch.tensor([0.1]), torch.randn(1, *lowres))).shape == x.shape
        if crop is not None:
            assert s.lowres_shape(*crop[0]) == crop[1]
            xc = torch.randn(1, 4, *crop[0])
            assert stage(xc, t, dataclasses.replace(cond, lowres=torch.randn(1, *crop[1]))).shape == xc.shape


@pytest.mark.parametrize("name, lowres, params", [
    ("tsr", (16, 9, 32, 32), 559_461_136),  # pixel-resampled inputs, on the stage's own grid
    ("ssr", (16, 5, 64, 64), 300_834_256),
])
def test_gpu_sr_configs_take_a_low_res_input_of_the_expected_shape_on_meta(name, lowres, params):
    run = load_config(TrainRunConfig, ROOT / f"configs/gpu/{name}.yaml")
    s = run.stage
    assert s.lowres_shape(s.latent_frames, s.latent_height, s.latent_width) == lowres
    assert f"{params:,}" in (ROOT / f"configs/gpu/{name}.yaml").read_text()  # the count its comment states
    with torch.device("meta"):
        model = build_denoiser(s.denoiser)
        assert model.num_parameters() == params
        x = torch.empty(1, s.latent_channels, s.latent_frames, s.latent_height, s.latent_width)
        cond = Cond(torch.empty(1, 77, s.text_dim), torch.ones(1, 77, dtype=torch.bool),
                    lowres=torch.empty(1, *lowres), noise_aug_level=torch.empty(1), fps=torch.empty(1))
        assert model(x, torch.empty(1), cond).shape == x.shape


# ------------------------------------------------------------------------------------------------- end to end


def test_toy_tsr_config_trains_three_steps_on_a_tiny_cache_and_its_export_samples(tmp_path, tiny_vae_dir):
    from vidiff.pipelines.pipeline_folder import load_pipeline
    from vidiff.training.latent_cache import encode_toyworld
    from vidiff.training.train_stage import train_stage

    cache = encode_toyworld(tiny_vae_dir, 4, tmp_path / "cache", num_frames=17, size=(32, 32), lowres="frames",
                            resample="pixel", progress=False)
    cfg = load_config(TrainRunConfig, ROOT / "configs/toy/tsr.yaml", [
        f"data.latents={cache}", f"out_dir={tmp_path / 'run'}", "train.max_steps=3", "train.batch_size=2",
        "train.steps_per_epoch=3", "train.optim.warmup_steps=1", "train.log_every=1", "stage.sampling.steps=2",
    ])
    export = train_stage(cfg, progress=False)
    (metrics,) = (tmp_path / "run" / "logs").glob("version_*/metrics.csv")
    with open(metrics) as f:
        assert len([r for r in csv.DictReader(f) if r.get("train/loss_t5")]) == 3  # three steps on 5-frame latents
    pipe = load_pipeline(export)
    (stage,) = pipe.stages
    assert stage.config.name == "tsr" and stage.config.lowres == cfg.stage.lowres
    prompt = pipe.text_encoder.cond(["a red circle moving left"])
    cond = dataclasses.replace(prompt, lowres=torch.randn(1, 4, 5, 8, 8))
    z = stage.sample(cond, seed=0)
    assert z.shape == (1, 4, 5, 8, 8) and torch.isfinite(z).all()
