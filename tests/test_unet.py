"""FactorizedUNet: the backbone contract (tests/backbone_contract.py) at a tiny size, plus what is the
U-Net's own: pooled text without attention, shapes at toy and GPU sizes, its errors, plain state dicts,
and loading weights written before the conditioning moved into its own module."""

from pathlib import Path

import pytest
import torch
import yaml
from backbone_contract import BackboneContract, padded_cond
from safetensors.torch import load_file, save_file

from vidiff.config import from_dict, load_config, save_config
from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.conditioning import LEGACY_KEYS, ConditioningConfig
from vidiff.models.unet import FactorizedUNet, UNetConfig, gpu_unet_config

pytestmark = pytest.mark.usefixtures("one_thread")

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_export_v0"

TINY = dict(
    in_channels=4,
    model_channels=32,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_levels=(0, 1),
    head_dim=16,
    text_dim=16,
)


class TestFactorizedUNet(BackboneContract):
    model_class = FactorizedUNet
    image_overrides = dict(temporal_kernel=0, temporal_attention=False)
    overfit_overrides = dict(attention_levels=(1,))

    def tiny_config(self, **overrides):
        return UNetConfig(**{**TINY, **overrides})


def _model(**kw) -> FactorizedUNet:
    return FactorizedUNet(UNetConfig(**{**TINY, **kw}))


_perturb = BackboneContract.perturb


_cond = padded_cond


def test_pooled_text_conditions_every_block_without_attention():
    """With no attention layers the prompt reaches the output only through the pooled embedding."""
    no_attention = dict(attention_levels=(), mid_attention=False)
    model = _perturb(_model(**no_attention))
    x, t, cond = torch.randn(2, 4, 3, 8, 8), torch.rand(2), _cond(2)
    with torch.no_grad():
        y = model(x, t, cond)
        padded = cond.text.clone()
        padded[:, -2:] = torch.randn(2, 2, 16) * 10  # masked positions still have no effect
        torch.testing.assert_close(model(x, t, Cond(padded, cond.text_mask)), y)
        real = cond.text.clone()
        real[:, 1] += torch.randn(16)  # not a uniform shift: the pooled path's LayerNorm removes those
        assert (model(x, t, Cond(real, cond.text_mask)) - y).abs().max() > 1e-4
        blind = _model(**no_attention, pooled_text=False)
        blind.load_state_dict(model.state_dict(), strict=False)
        torch.testing.assert_close(blind(x, t, Cond(real, cond.text_mask)), blind(x, t, cond))


def test_config_from_overrides_and_gpu_size_on_meta():
    cfg = load_config(
        UNetConfig, None, ["model_channels=32", "channel_mults=[1,2,2]", "attention_levels=[2]"]
    )
    assert cfg.channel_mults == (1, 2, 2) and FactorizedUNet(cfg).num_parameters() > 0
    gpu = gpu_unet_config()
    with torch.device("meta"):
        model = FactorizedUNet(gpu)
        n = model.num_parameters()
        assert 0.8e9 < n < 1.0e9, n
        x = torch.empty(2, 4, 16, 32, 32)
        cond = Cond(torch.empty(2, 77, 1024), torch.ones(2, 77, dtype=torch.bool), fps=torch.empty(2))
        assert model(x, torch.empty(2), cond).shape == x.shape


def test_unet_specific_errors():
    """The contract checks the errors every backbone raises; these are the U-Net's own."""
    model = _model()
    with pytest.raises(VidiffError, match="divisible by 2"):
        model(torch.randn(1, 4, 2, 9, 8), torch.rand(1), _cond(1))
    with pytest.raises(VidiffError, match="timesteps"):
        model(torch.randn(1, 4, 2, 8, 8), torch.rand(3), _cond(1))
    with pytest.raises(VidiffError, match="head_dim"):
        load_config(UNetConfig, None, ["model_channels=48", "head_dim=40"])


def test_state_dict_is_plain_and_round_trips_through_safetensors(tmp_path):
    model = _perturb(_model())
    state = model.state_dict()
    assert all(v.is_contiguous() for v in state.values())
    save_file(state, str(tmp_path / "unet.safetensors"))
    again = _model()
    again.load_state_dict(load_file(str(tmp_path / "unet.safetensors")))
    x, t, cond = torch.randn(1, 4, 3, 8, 8), torch.rand(1), _cond(1)
    with torch.no_grad():
        assert torch.equal(again(x, t, cond), model(x, t, cond))


def test_config_shares_the_conditioning_fields():
    cfg = UNetConfig(**TINY, lowres_channels=4, fps_conditioning=True, pooled_text=False)
    cond = cfg.conditioning
    assert cond == ConditioningConfig(
        text_dim=16, lowres_channels=4, fps_conditioning=True, pooled_text=False
    )
    assert cond.extra_channels == 4
    model = FactorizedUNet(cfg)
    assert model.conditioning.config == cond and model.conv_in.in_channels == 8


def _legacy_keys(state: dict) -> dict:
    """The state dict as the U-Net wrote it before the conditioning moved into `conditioning.`."""
    out = {}
    for key, value in state.items():
        rest = key.removeprefix("conditioning.")
        out[rest if rest.split(".")[0] in LEGACY_KEYS else key] = value
    return out


def test_weights_written_before_the_conditioning_module_load_exactly():
    """tests/fixtures/legacy_export_v0: a U-Net export and its outputs, written by the code before the move."""
    config = yaml.safe_load((LEGACY / "export" / "stage.yaml").read_text())
    model = FactorizedUNet(from_dict(UNetConfig, config["denoiser"]["unet"])).eval()
    old = load_file(str(LEGACY / "export" / "denoiser.safetensors"))
    assert "time_embed.mlp.0.weight" in old and "null_text" in old  # the old names
    model.load_state_dict(old, strict=True)
    assert "conditioning.time_embed.mlp.0.weight" in model.state_dict()
    expected = load_file(str(LEGACY / "expected.safetensors"))
    cond = Cond(text=expected["text"], text_mask=expected["text_mask"], fps=torch.tensor([6.0, 6.0]))
    with torch.no_grad():
        out = model(expected["x_t"], expected["t"].float() / 1000, cond)
    assert torch.equal(out, expected["denoiser_out"])


def test_old_keys_load_inside_a_parent_module_and_through_from_pretrained(tmp_path):
    """As in a Lightning checkpoint (`stage.denoiser.*`, `ema.shadow.*`) and a saved model folder."""
    model = _perturb(_model(fps_conditioning=True, noise_aug_conditioning=True)).eval()
    old = _legacy_keys(model.state_dict())
    assert old.keys() != model.state_dict().keys()
    parent = torch.nn.ModuleDict({"denoiser": _model(fps_conditioning=True, noise_aug_conditioning=True)})
    parent.load_state_dict({f"denoiser.{k}": v for k, v in old.items()}, strict=True)
    folder = model.save_pretrained(tmp_path / "unet")
    save_file(old, str(folder / "model.safetensors"))  # a folder whose weights carry the old names
    again = FactorizedUNet.from_pretrained(folder)
    x, t = torch.randn(1, 4, 3, 8, 8), torch.rand(1)
    cond = _cond(1, fps=torch.tensor([8.0]), noise_aug_level=torch.tensor([0.2]))
    with torch.no_grad():
        y = model(x, t, cond)
        assert torch.equal(parent["denoiser"].eval()(x, t, cond), y)
        assert torch.equal(again(x, t, cond), y)


def test_from_pretrained_refuses_another_kind_of_model(tmp_path):
    folder = _model().save_pretrained(tmp_path / "unet")
    save_config(TINY, folder / "config.yaml")
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"), metadata={"vidiff_kind": "vae"})
    with pytest.raises(VidiffError, match="holds a vae, not a unet"):
        FactorizedUNet.from_pretrained(folder)
