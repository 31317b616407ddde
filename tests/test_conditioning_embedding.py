"""The shared conditioning module: embeddings and text context, the causal-layout resize of low-res
latents, the concatenated conditioning channels and their errors, and the legacy key renames."""

import pytest
import torch
import torch.nn.functional as F

from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.conditioning import (
    ConditioningConfig,
    ConditioningEmbedding,
    concat_conditioning,
    masked_mean,
    rename_legacy_keys,
    resize_latent_video,
    zero_conditioning_channels_,
)


def _cond(b=2, length=5, d=8, **kw):
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[:, -2:] = False
    return Cond(torch.randn(b, length, d), mask, **kw)


# ---------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "src,dst",
    [
        ((3, 4, 4), (5, 8, 8)),  # TSR + SSR: 1 + 2 groups -> 1 + 4 groups, 2x in space
        ((3, 4, 4), (3, 8, 8)),  # SSR only
        ((2, 8, 8), (5, 8, 8)),  # TSR only
        ((1, 4, 4), (4, 8, 8)),  # an image fills the clip
        ((4, 4, 4), (1, 8, 8)),  # an image stage keeps frame 0
    ],
)
def test_resize_shapes_and_frame_zero_stays_apart(src, dst):
    video = torch.randn(2, 3, *src)
    out = resize_latent_video(video, *dst)
    assert out.shape == (2, 3, *dst)
    # output frame 0 is input frame 0 resized in space, whatever the other frames hold
    first = F.interpolate(video[:, :, 0], size=dst[1:], mode="bilinear", align_corners=False)
    assert torch.equal(out[:, :, 0], first)
    others = video.clone()
    others[:, :, 1:] = torch.randn_like(others[:, :, 1:]) * 100
    assert torch.equal(resize_latent_video(others, *dst)[:, :, 0], out[:, :, 0])
    if src[0] > 1 and dst[0] > 1:
        # the group frames never see frame 0
        changed = video.clone()
        changed[:, :, 0] += 100
        assert torch.equal(resize_latent_video(changed, *dst)[:, :, 1:], out[:, :, 1:])
        assert (resize_latent_video(others, *dst)[:, :, 1:] - out[:, :, 1:]).abs().max() > 1


def test_resize_passes_a_video_on_the_grid_through_and_repeats_an_image():
    video = torch.randn(1, 4, 3, 8, 8)
    assert resize_latent_video(video, 3, 8, 8) is video
    image = torch.randn(1, 4, 1, 8, 8)
    out = resize_latent_video(image, 4, 8, 8)
    assert torch.equal(out, image.expand(-1, -1, 4, -1, -1))
    # groups of a time-only resize are interpolated among themselves (a constant stays constant)
    groups = torch.cat([torch.zeros(1, 1, 1, 2, 2), torch.ones(1, 1, 2, 2, 2)], dim=2)
    out = resize_latent_video(groups, 5, 2, 2)
    assert torch.equal(out[:, :, 0], torch.zeros(1, 1, 2, 2)) and torch.equal(
        out[:, :, 1:], torch.ones(1, 1, 4, 2, 2)
    )


# ---------------------------------------------------------------------------- concat


def test_concat_appends_lowres_then_image_and_its_mask_and_zeros_for_absent_fields():
    cfg = ConditioningConfig(text_dim=8, lowres_channels=2, image_channels=3)
    x = torch.randn(2, 4, 3, 8, 8)
    none = concat_conditioning(x, _cond(), cfg)
    assert none.shape == (2, 10, 3, 8, 8) and torch.equal(none[:, :4], x) and not none[:, 4:].any()
    lowres, image = torch.randn(2, 2, 2, 4, 4), torch.randn(2, 3, 1, 8, 8)
    full = concat_conditioning(x, _cond(lowres=lowres, image_latent=image), cfg)
    assert torch.equal(full[:, 4:6], resize_latent_video(lowres, 3, 8, 8))
    # the image on every frame, the mask on the conditioning frame
    assert torch.equal(full[:, 6:9], image.expand(-1, -1, 3, -1, -1))
    assert torch.equal(full[:, 9, 0], torch.ones(2, 8, 8)) and not full[:, 9, 1:].any()
    # a row whose image is zeros (dropped) has no conditioning frame
    dropped = image.clone()
    dropped[1] = 0
    mask = concat_conditioning(x, _cond(lowres=lowres, image_latent=dropped), cfg)[:, 9]
    assert mask[0, 0].eq(1).all() and not mask[1].any()
    assert concat_conditioning(x, _cond(lowres=lowres), ConditioningConfig(text_dim=8)) is x


def test_concat_errors_name_the_field_and_the_expected_shape():
    cfg = ConditioningConfig(text_dim=8, lowres_channels=4, image_channels=4)
    x = torch.randn(1, 4, 3, 8, 8)
    with pytest.raises(VidiffError, match=r"cond\.lowres has shape \(1, 3, 2, 4, 4\).*\[B, 4, T', h, w\]"):
        concat_conditioning(x, _cond(1, lowres=torch.randn(1, 3, 2, 4, 4)), cfg, "VideoDiT")
    with pytest.raises(VidiffError, match=r"cond\.image_latent .*\[B, 4, 1, 8, 8\]"):
        concat_conditioning(x, _cond(1, image_latent=torch.randn(1, 2, 1, 8, 8)), cfg)
    with pytest.raises(VidiffError, match=r"VideoDiT expects \[B, 4, 1, 8, 8\]"):
        concat_conditioning(x, _cond(1, image_latent=torch.randn(1, 4, 1, 4, 4)), cfg, "VideoDiT")


def test_zero_conditioning_channels_keeps_the_input_weights():
    conv = torch.nn.Conv2d(7, 5, 3)
    before = conv.weight.detach().clone()
    zero_conditioning_channels_(conv.weight, 4)
    assert torch.equal(conv.weight[:, :4], before[:, :4]) and not conv.weight[:, 4:].any()


# ---------------------------------------------------------------------------- embedding


def test_embedding_context_null_token_and_pooled_text():
    cfg = ConditioningConfig(text_dim=8, fps_conditioning=True, noise_aug_conditioning=True)
    mod = ConditioningEmbedding(cfg, emb_dim=24)
    cond = _cond()
    emb, context, mask = mod(torch.rand(2), cond)
    assert emb.shape == (2, 24) and context.shape == (2, 6, 8) and mask.shape == (2, 6)
    assert torch.equal(context[:, 0], mod.null_text[0].expand(2, -1)) and mask[:, 0].all()
    assert torch.equal(mask[:, 1:], cond.text_mask)
    # a scalar t is broadcast; fps / noise level start at zero
    t = torch.tensor(0.4)
    base = mod(t, cond).emb
    torch.testing.assert_close(mod(t.expand(2), cond).emb, base, atol=0, rtol=0)
    both = Cond(cond.text, cond.text_mask, fps=torch.tensor([4.0, 8.0]), noise_aug_level=torch.rand(2))
    torch.testing.assert_close(mod(t, both).emb, base, atol=0, rtol=0)
    # pooled text: masked tokens do not count, real ones do
    pooled = masked_mean(context, mask)
    torch.testing.assert_close(pooled, context[:, :4].mean(1))  # the null token and the 3 real ones
    padded = cond.text.clone()
    padded[:, -2:] = 100
    torch.testing.assert_close(mod(t, Cond(padded, cond.text_mask)).emb, base)
    real = cond.text.clone()
    real[:, 0] += torch.randn(8)
    assert (mod(t, Cond(real, cond.text_mask)).emb - base).abs().max() > 1e-4
    blind = ConditioningEmbedding(ConditioningConfig(text_dim=8, pooled_text=False), emb_dim=24)
    assert blind.pooled_text_embed is None
    torch.testing.assert_close(blind(t, Cond(real, cond.text_mask)).emb, blind(t, cond).emb, atol=0, rtol=0)


def test_embedding_checks_cond_against_x():
    mod = ConditioningEmbedding(ConditioningConfig(text_dim=8), emb_dim=16)
    mod.check(_cond(), 2, 3, "VideoDiT")
    with pytest.raises(VidiffError, match="batch size"):
        mod.check(_cond(), 3, 3, "VideoDiT")
    with pytest.raises(VidiffError, match="VideoDiT was built for text_dim=8"):
        mod.check(_cond(d=4), 2, 3, "VideoDiT")
    with pytest.raises(VidiffError, match="frame_mask has 4 frames"):
        mod.check(_cond(frame_mask=torch.ones(2, 4, dtype=torch.bool)), 2, 3, "VideoDiT")


def test_config_from_any_config_with_the_same_fields():
    from dataclasses import dataclass

    @dataclass
    class DiTLike:
        depth: int = 2
        text_dim: int = 12
        lowres_channels: int = 4
        image_channels: int = 0
        timestep_scale: float = 1.0
        fps_conditioning: bool = True
        pooled_text: bool = False
        noise_aug_conditioning: bool = True

    cfg = ConditioningConfig.from_config(DiTLike())
    assert cfg == ConditioningConfig(12, 4, 0, 1.0, True, False, True) and cfg.extra_channels == 4


def test_legacy_keys_are_renamed_under_the_prefix_only():
    state = {
        "denoiser.time_embed.mlp.0.weight": 1,
        "denoiser.null_text": 2,
        "denoiser.pooled_text_embed.1.bias": 3,
        "denoiser.conv_in.weight": 4,
        "denoiser.conditioning.fps_embed.mlp.2.bias": 5,
        "other.time_embed.mlp.0.weight": 6,
        "denoiser.time_embedding.x": 7,
    }
    rename_legacy_keys(state, "denoiser.")
    assert state == {
        "denoiser.conditioning.time_embed.mlp.0.weight": 1,
        "denoiser.conditioning.null_text": 2,
        "denoiser.conditioning.pooled_text_embed.1.bias": 3,
        "denoiser.conv_in.weight": 4,
        "denoiser.conditioning.fps_embed.mlp.2.bias": 5,
        "other.time_embed.mlp.0.weight": 6,
        "denoiser.time_embedding.x": 7,
    }
