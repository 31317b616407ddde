"""VideoDiT: the backbone contract (tests/backbone_contract.py) at a tiny size, plus what is the DiT's
own: latent sizes the patch does not divide, config errors, the registry, a checkpoint of the other
backbone, an image DiT loading into the video DiT, temporal patches, and the toy and GPU sizes."""

from pathlib import Path

import pytest
import torch
import yaml
from backbone_contract import BackboneContract, padded_cond

from vidiff.config import load_config
from vidiff.errors import ConfigError, VidiffError
from vidiff.models.cond import Cond
from vidiff.models.conditioning import ConditioningConfig
from vidiff.models.denoisers import DENOISERS, DenoiserConfig, build_denoiser
from vidiff.models.dit import DiTConfig, VideoDiT, gpu_dit_config
from vidiff.pipelines.stage import DiffusionStage, StageConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(in_channels=4, hidden_size=32, depth=2, num_heads=2, text_dim=16)


class TestVideoDiT(BackboneContract):
    model_class = VideoDiT
    image_overrides = dict(temporal_attention=False)
    # 18.8x in 200 steps at 5e-3 (14.6x at 4e-3, 14.3x at 7e-3, 13.1x in 180 steps); 150 steps gave 7.9x
    overfit_overrides = dict(hidden_size=64, depth=2, num_heads=4)
    overfit_steps = 200
    overfit_lr = 5e-3

    def tiny_config(self, **overrides):
        return DiTConfig(**{**TINY, **overrides})


class TestVideoDiTClipSpan(TestVideoDiT):
    """The same contract with full spatio-temporal attention in the temporal layers (3D rotary positions)."""

    overfit_overrides = dict(hidden_size=72, depth=2, num_heads=3)

    def tiny_config(self, **overrides):
        return DiTConfig(**{**TINY, "hidden_size": 48, "temporal_span": "clip", **overrides})


def _model(**kw) -> VideoDiT:
    return VideoDiT(DiTConfig(**{**TINY, **kw}))


_perturb = BackboneContract.perturb


_cond = padded_cond


def test_latent_size_not_a_multiple_of_the_patch_names_both():
    model = _model()
    with pytest.raises(
        VidiffError, match=r"3 x 9 x 8 is not a multiple of the patch size t x h x w = 1 x 2 x 2"
    ):
        model(torch.randn(1, 4, 3, 9, 8), torch.rand(1), _cond(1))
    with pytest.raises(VidiffError, match=r"2 x 8 x 6 .* 1 x 4 x 4"):
        _model(patch_size=(1, 4, 4))(torch.randn(1, 4, 2, 8, 6), torch.rand(1), _cond(1))
    with pytest.raises(VidiffError, match="timesteps"):
        model(torch.randn(1, 4, 2, 8, 8), torch.rand(3), _cond(1))


def test_temporal_patch_needs_whole_patches_and_keeps_the_clip_shape():
    model = _perturb(_model(patch_size=(2, 2, 2)))
    with torch.no_grad():
        x = torch.randn(2, 4, 4, 8, 8)
        assert model(x, torch.rand(2), _cond(2)).shape == x.shape
        with pytest.raises(VidiffError, match=r"3 x 8 x 8 .* 2 x 2 x 2"):
            model(torch.randn(1, 4, 3, 8, 8), torch.rand(1), _cond(1))
        with pytest.raises(VidiffError, match=r"an image, T = 1, needs a temporal patch of 1"):
            model(torch.randn(1, 4, 1, 8, 8), torch.rand(1), _cond(1))
        # padding by whole patches: the real frames do not see the padded ones
        x = torch.randn(1, 4, 6, 8, 8)
        t, cond = torch.rand(1), _cond(1)
        mask = torch.tensor([[True] * 4 + [False] * 2])
        padded = model(x, t, Cond(cond.text, cond.text_mask, frame_mask=mask))
        torch.testing.assert_close(padded[:, :, :4], model(x[:, :, :4], t, cond), atol=1e-5, rtol=1e-4)
        with pytest.raises(VidiffError, match="inside one temporal patch of 2 frames"):
            model(x, t, Cond(cond.text, cond.text_mask, frame_mask=torch.tensor([[True] * 3 + [False] * 3])))


def test_config_errors_name_the_numbers():
    with pytest.raises(ValueError, match="num_heads 3 does not divide hidden_size 32"):
        DiTConfig(hidden_size=32, num_heads=3)
    with pytest.raises(ConfigError, match="num_heads 5 does not divide hidden_size 64"):
        load_config(DiTConfig, None, ["hidden_size=64", "num_heads=5"])
    with pytest.raises(ConfigError, match=r"hidden_size / num_heads = 36 / 6 = 6 is not a multiple of 4"):
        load_config(DiTConfig, None, ["hidden_size=36", "num_heads=6"])
    for bad in ("[1, 0, 2]", "[1, 2]", "[1, -2, 2]"):
        with pytest.raises(ConfigError, match="patch_size"):
            load_config(DiTConfig, None, [f"patch_size={bad}"])
    with pytest.raises(ConfigError, match="depth must be a positive integer, got 0"):
        load_config(DiTConfig, None, ["depth=0"])
    with pytest.raises(ConfigError, match="temporal_span must be one of \\['position', 'clip'\\], got 'frames'"):
        load_config(DiTConfig, None, ["temporal_span=frames"])
    with pytest.raises(ConfigError, match="head width 16 is not a multiple of 6, which temporal_span 'clip' needs"):
        load_config(DiTConfig, None, ["hidden_size=32", "num_heads=2", "temporal_span=clip"])
    cfg = load_config(DiTConfig, None, ["patch_size=[1, 4, 4]", "hidden_size=48", "num_heads=3"])
    assert cfg.patch_size == (1, 4, 4) and cfg.head_dim == 16


def test_registry_builds_dit_and_lists_the_valid_kinds():
    assert DENOISERS["dit"] is VideoDiT
    model = build_denoiser(DenoiserConfig(kind="dit", dit=DiTConfig(**TINY)))
    assert isinstance(model, VideoDiT) and model.config == DiTConfig(**TINY)
    with pytest.raises(VidiffError, match=r"unknown denoiser kind 'vit'; valid kinds: unet, dit"):
        build_denoiser(DenoiserConfig(kind="vit"))
    stage = load_config(StageConfig, None, ["denoiser.kind=dit", "denoiser.dit.text_dim=32"])
    assert stage.text_dim == 32


def test_checkpoint_of_the_other_backbone_names_the_first_mismatching_tensor(tmp_path):
    """A stage folder saved with a U-Net whose config.yaml is rewritten to kind dit (and back)."""
    unet_stage = DiffusionStage(load_config(StageConfig, None, ["denoiser.unet.text_dim=16"]))
    folder = unet_stage.save_pretrained(tmp_path / "unet_stage")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["denoiser"]["kind"] = "dit"
    config["denoiser"]["dit"] = {"text_dim": 16}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(VidiffError) as err:
        DiffusionStage.from_pretrained(folder)
    msg = str(err.value)
    saved = unet_stage.state_dict()
    wanted = DiffusionStage(load_config(StageConfig, folder / "config.yaml")).state_dict()
    first = next(k for k, v in wanted.items() if k not in saved or saved[k].shape != v.shape)
    # the shared conditioning module comes first; its width differs (the U-Net's 4 x model_channels)
    assert first == "denoiser.conditioning.time_embed.mlp.0.weight"
    shapes = f"shape {list(saved[first].shape)} in the weights, {list(wanted[first].shape)} in the model"
    assert f"do not match config.yaml: the first mismatching tensor is {first} ({shapes})" in msg
    missing = [k for k in wanted if k not in saved]
    unexpected = [k for k in saved if k not in wanted]
    assert f"missing {len(missing)} tensors (e.g. {missing[0]})" in msg
    assert f"{len(unexpected)} unexpected tensors (e.g. " in msg and "shape mismatches" in msg

    dit_stage = DiffusionStage(
        load_config(
            StageConfig,
            None,
            ["denoiser.kind=dit", "denoiser.dit.text_dim=16", "denoiser.dit.hidden_size=128"],
        )
    )
    folder = dit_stage.save_pretrained(tmp_path / "dit_stage")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["denoiser"]["kind"] = "unet"
    config["denoiser"]["unet"] = {"text_dim": 16}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(VidiffError, match=r"first mismatching tensor is denoiser\.conditioning\.time_embed"):
        DiffusionStage.from_pretrained(folder)
    # the same embedding width (4 x 32 = 128): only the keys differ, and the first missing one is named
    config["denoiser"]["unet"]["model_channels"] = 32
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        VidiffError,
        match=r"first mismatching tensor is denoiser\.conv_in\.weight \(missing from the weights\)",
    ):
        DiffusionStage.from_pretrained(folder)


def test_image_dit_loads_into_the_video_dit(tmp_path):
    """Weights of an image-trained DiT (no temporal layers): only temporal keys are missing, images give
    the same output, and a clip's output is its frames' image outputs until the temporal layers train."""
    image = _perturb(_model(temporal_attention=False)).eval()
    folder = image.save_pretrained(tmp_path / "image_dit")
    video = VideoDiT(DiTConfig(**{**TINY, "temporal_attention": True}))
    missing, unexpected = video.load_state_dict(VideoDiT.from_pretrained(folder).state_dict(), strict=False)
    assert missing and not unexpected
    assert all(".temporal." in k for k in missing)
    assert {k for k in video.state_dict() if ".temporal." in k} == set(missing)
    x, t, cond = torch.randn(2, 4, 4, 8, 8), torch.rand(2), _cond(2)
    with torch.no_grad():
        torch.testing.assert_close(video(x[:, :, :1], t, cond), image(x[:, :, :1], t, cond), atol=0, rtol=0)
        per_frame = torch.cat([image(x[:, :, i : i + 1], t, cond) for i in range(4)], dim=2)
        torch.testing.assert_close(video(x, t, cond), per_frame, atol=1e-5, rtol=1e-4)
        # the image model itself runs on clips, frame by frame
        torch.testing.assert_close(image(x, t, cond), per_frame, atol=1e-5, rtol=1e-4)


def test_config_shares_the_conditioning_fields():
    cfg = DiTConfig(**TINY, lowres_channels=4, fps_conditioning=True, pooled_text=False)
    assert cfg.conditioning == ConditioningConfig(
        text_dim=16, lowres_channels=4, fps_conditioning=True, pooled_text=False
    )
    model = VideoDiT(cfg)
    assert model.conditioning.config == cfg.conditioning
    assert model.patch_embed.in_features == (4 + 4) * 4  # x and lowres channels, 1 x 2 x 2 patches


def test_toy_config_builds_a_cpu_sized_dit():
    from vidiff.training.train_stage import TrainRunConfig

    run = load_config(TrainRunConfig, ROOT / "configs/toy/base_dit.yaml")
    assert run.stage.denoiser.kind == "dit"
    stage = DiffusionStage(run.stage)
    assert isinstance(stage.denoiser, VideoDiT)
    n = stage.denoiser.num_parameters()
    assert 0.8e6 < n < 1.6e6, n
    s = run.stage
    x = torch.randn(2, s.latent_channels, s.latent_frames, s.latent_height, s.latent_width)
    cond = Cond(torch.randn(2, 5, s.text_dim), torch.ones(2, 5, dtype=torch.bool))
    with torch.no_grad():
        assert stage(x, torch.tensor([10, 900]), cond).shape == x.shape


def test_gpu_config_size_on_meta():
    from vidiff.training.train_stage import TrainRunConfig

    run = load_config(TrainRunConfig, ROOT / "configs/gpu/base_dit.yaml")
    assert run.stage.denoiser.dit == gpu_dit_config(gradient_checkpointing=True)
    with torch.device("meta"):
        model = VideoDiT(run.stage.denoiser.dit)
        n = model.num_parameters()
        assert 0.7e9 < n < 1.0e9, n
        s = run.stage
        x = torch.empty(2, s.latent_channels, s.latent_frames, s.latent_height, s.latent_width)
        cond = Cond(torch.empty(2, 77, 1024), torch.ones(2, 77, dtype=torch.bool), fps=torch.empty(2))
        assert model(x, torch.empty(2), cond).shape == x.shape
