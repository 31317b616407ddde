"""FactorizedUNet: image-exact at init, T=1 equals the image model, text masking, CFG batching, frame
masks, conditioning channels, shapes (toy and GPU sizes), checkpointing, and real learning."""

import math

import pytest
import torch

from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.unet import FactorizedUNet, UNetConfig, gpu_unet_config

TINY = dict(
    in_channels=4,
    model_channels=32,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_levels=(0, 1),
    head_dim=16,
    text_dim=16,
)


def _model(**kw) -> FactorizedUNet:
    return FactorizedUNet(UNetConfig(**{**TINY, **kw}))


def _perturb(model, which=lambda name: True, std=0.05):
    """Give zero-initialised layers non-zero weights, as training would."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if which(name):
                p.add_(torch.randn_like(p) * std)
    return model


def _is_temporal(name):
    return ".temporal." in name


def _cond(b, length=6, d=16, **kw):
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[:, length - 2 :] = False  # padding at the end, as the text encoder gives
    return Cond(torch.randn(b, length, d), mask, **kw)


def test_video_output_equals_per_frame_image_output_at_init():
    model = _perturb(_model(fps_conditioning=True), lambda n: not _is_temporal(n))
    x, t = torch.randn(2, 4, 5, 8, 8), torch.tensor([0.3, 0.8])
    cond = _cond(2, fps=torch.tensor([8.0, 4.0]))
    with torch.no_grad():
        video = model(x, t, cond)
        frames = torch.cat([model(x[:, :, i : i + 1], t, cond) for i in range(5)], dim=2)
        torch.testing.assert_close(video, frames, atol=1e-5, rtol=1e-4)
        assert video.abs().mean() > 1e-2
        # once temporal layers have weights (training), frames do interact
        _perturb(model, _is_temporal)
        assert (model(x, t, cond) - frames).abs().max() > 1e-3


def test_single_frame_path_equals_the_image_model_and_image_weights_load():
    image_cfg = dict(temporal_kernel=0, temporal_attention=False)
    image = _perturb(_model(**image_cfg))
    video = _model()
    missing, unexpected = video.load_state_dict(image.state_dict(), strict=False)
    assert missing and all(_is_temporal(k) for k in missing) and not unexpected
    _perturb(video, _is_temporal)  # even with trained temporal layers, T=1 skips them
    x, t, cond = torch.randn(3, 4, 1, 8, 8), torch.rand(3), _cond(3)
    with torch.no_grad():
        torch.testing.assert_close(video(x, t, cond), image(x, t, cond))


def test_text_mask_and_dropped_captions():
    model = _perturb(_model())
    x, t, cond = torch.randn(2, 4, 3, 8, 8), torch.rand(2), _cond(2)
    with torch.no_grad():
        y = model(x, t, cond)
        padded = cond.text.clone()
        padded[:, -2:] = torch.randn(2, 2, 16) * 10  # masked positions: no effect
        torch.testing.assert_close(model(x, t, Cond(padded, cond.text_mask)), y)
        real = cond.text.clone()
        real[:, 1] += 1.0  # a real token: an effect
        assert (model(x, t, Cond(real, cond.text_mask)) - y).abs().max() > 1e-4
        null = model(x, t, cond.null_like())
        other = model(x, t, Cond(torch.randn(2, 9, 16), torch.zeros(2, 9, dtype=torch.bool)))
        assert torch.isfinite(null).all()
        torch.testing.assert_close(null, other)  # unconditional = only the learned null token
        assert (null - y).abs().max() > 1e-4


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


def test_cfg_batch_equals_separate_calls():
    model = _perturb(_model())
    x, t, cond = torch.randn(2, 4, 3, 8, 8), torch.rand(2), _cond(2)
    with torch.no_grad():
        both = model(torch.cat([x, x]), torch.cat([t, t]), Cond.cat([cond, cond.null_like()]))
        torch.testing.assert_close(both[:2], model(x, t, cond), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(both[2:], model(x, t, cond.null_like()), atol=1e-5, rtol=1e-4)


def test_padded_frames_do_not_change_real_frames():
    model = _perturb(_model(), std=0.1)
    x, t, cond = torch.randn(1, 4, 6, 8, 8), torch.rand(1), _cond(1)
    fm = torch.tensor([[True] * 4 + [False] * 2])
    with torch.no_grad():
        padded = model(x, t, Cond(cond.text, cond.text_mask, frame_mask=fm))
        short = model(x[:, :, :4], t, cond)
        torch.testing.assert_close(padded[:, :, :4], short, atol=1e-5, rtol=1e-4)


def test_fps_noise_level_and_concatenated_conditioning():
    model = _perturb(
        _model(fps_conditioning=True, noise_aug_conditioning=True, lowres_channels=4, image_channels=4)
    )
    x, t = torch.randn(2, 4, 4, 8, 8), torch.rand(2)
    with torch.no_grad():
        base = model(x, t, _cond(2))
        torch.manual_seed(0)
        c = _cond(2)
        same = model(
            x,
            t,
            Cond(
                c.text,
                c.text_mask,
                lowres=torch.zeros(2, 4, 4, 8, 8),
                image_latent=torch.zeros(2, 4, 1, 8, 8),
            ),
        )
        torch.manual_seed(0)
        torch.testing.assert_close(model(x, t, _cond(2)), same)  # absent = zeros
        lr = model(x, t, Cond(c.text, c.text_mask, lowres=torch.randn(2, 4, 2, 4, 4)))  # resized to x
        assert lr.shape == x.shape and (lr - same).abs().max() > 1e-4
        img = model(x, t, Cond(c.text, c.text_mask, image_latent=torch.randn(2, 4, 1, 8, 8)))
        assert (img - same).abs().max() > 1e-4
        f1 = model(x, t, Cond(c.text, c.text_mask, fps=torch.tensor([4.0, 4.0])))
        f2 = model(x, t, Cond(c.text, c.text_mask, fps=torch.tensor([16.0, 16.0])))
        assert (f1 - f2).abs().max() > 1e-4
        n1 = model(x, t, Cond(c.text, c.text_mask, noise_aug_level=torch.tensor([0.1, 0.1])))
        assert (n1 - same).abs().max() > 1e-4
    assert base.shape == x.shape


@pytest.mark.parametrize("shape", [(1, 4, 1, 8, 8), (2, 4, 3, 16, 8), (1, 4, 9, 8, 24)])
def test_toy_shapes(shape):
    model = _model()
    assert model(torch.randn(shape), torch.rand(shape[0]), _cond(shape[0])).shape == shape


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


def test_bad_inputs_raise_clear_errors():
    model = _model()
    with pytest.raises(VidiffError, match="input channels"):
        model(torch.randn(1, 3, 2, 8, 8), torch.rand(1), _cond(1))
    with pytest.raises(VidiffError, match="divisible by 2"):
        model(torch.randn(1, 4, 2, 9, 8), torch.rand(1), _cond(1))
    with pytest.raises(VidiffError, match="text_dim"):
        model(torch.randn(1, 4, 2, 8, 8), torch.rand(1), _cond(1, d=32))
    with pytest.raises(VidiffError, match="batch size"):
        model(torch.randn(2, 4, 2, 8, 8), torch.rand(2), _cond(1))
    with pytest.raises(VidiffError, match=r"\[B, C, T, H, W\]"):
        model(torch.randn(4, 2, 8, 8), torch.rand(1), _cond(1))
    with pytest.raises(VidiffError, match="head_dim"):
        load_config(UNetConfig, None, ["model_channels=48", "head_dim=40"])


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _perturb(_model(dropout=0.0))
    x, t, cond = torch.randn(2, 4, 3, 8, 8), torch.rand(2), _cond(2)

    def grads():
        model.zero_grad(set_to_none=True)
        model(x, t, cond).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.enable_gradient_checkpointing()
    ckpt = grads()
    assert plain.keys() == ckpt.keys() and len(plain) > 50
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_tiny_model_overfits_one_clip():
    """v-prediction diffusion training on one moving-square clip: held-out-noise loss falls > 10x."""
    torch.manual_seed(0)
    c, frames, size = 4, 4, 8
    clip = torch.full((c, frames, size, size), -0.8)
    for f in range(frames):  # a square moving right over a gradient background
        clip[0, 2:5, 1 + f : 4 + f] = 0.9
        clip[1, 2:5, 1 + f : 4 + f] = 0.2
    clip[2] += torch.linspace(0, 0.6, size)
    clip[3] += torch.linspace(0, 0.6, size)[:, None]

    def noisy(n, gen):
        t = torch.rand(n, generator=gen)
        a, s = (f(math.pi / 2 * t).view(-1, 1, 1, 1, 1) for f in (torch.cos, torch.sin))
        eps = torch.randn((n, *clip.shape), generator=gen)
        return a * clip + s * eps, t, a * eps - s * clip

    model = FactorizedUNet(UNetConfig(**{**TINY, "attention_levels": (1,)}))
    held_out = noisy(32, torch.Generator().manual_seed(123))
    null = Cond(torch.zeros(32, 1, 16), torch.zeros(32, 1, dtype=torch.bool))

    def held_out_loss():
        with torch.no_grad():
            return (model(held_out[0], held_out[1], null) - held_out[2]).square().mean().item()

    steps, batch = 150, 8
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    before = held_out_loss()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small gain nothing from threads, and lose a lot on a busy CPU
    try:
        for _ in range(steps):
            xt, t, v = noisy(batch, gen)
            loss = (model(xt, t, null[:batch]) - v).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    after = held_out_loss()
    print(f"held-out v-loss {before:.4f} -> {after:.4f} ({before / after:.1f}x) in {steps} steps")
    assert before / after > 10, (before, after)


def test_state_dict_is_plain_and_round_trips_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _perturb(_model())
    state = model.state_dict()
    assert all(v.is_contiguous() for v in state.values())
    save_file(state, str(tmp_path / "unet.safetensors"))
    again = _model()
    again.load_state_dict(load_file(str(tmp_path / "unet.safetensors")))
    x, t, cond = torch.randn(1, 4, 3, 8, 8), torch.rand(1), _cond(1)
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, cond), model(x, t, cond))
