"""Shared model layers: attention against a plain reference, RoPE relativity, identity-at-init temporal
layers, the temporal receptive field, and layout independence."""

import math

import pytest
import torch
import torch.nn.functional as F

from vidiff.models.layers import (
    Attention,
    ResBlock,
    RotaryEmbedding,
    ScalarEmbedding,
    TemporalAttention,
    TemporalConv,
    apply_rotary,
    sinusoidal_embedding,
    temporal_conv1d,
    to_video_layout,
)


def _perturb(module, std=0.2):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
    return module


def _reference_attention(x, ctx, wq, wk, wv, wo, heads, mask=None):
    q, k, v = x @ wq.weight.T + wq.bias, ctx @ wk.T, ctx @ wv.T
    n, lq, c = q.shape
    d = c // heads
    q, k, v = (t.reshape(n, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    o = (s.softmax(-1) @ v).transpose(1, 2).reshape(n, lq, c)
    return o @ wo.weight.T + wo.bias


def test_cross_attention_matches_reference_and_ignores_masked_keys():
    attn = Attention(32, head_dim=8, context_dim=12)
    x, ctx = torch.randn(3, 10, 32), torch.randn(3, 7, 12)
    mask = torch.rand(3, 7) > 0.4
    mask[:, 0] = True
    wk, wv = attn.to_kv.weight.chunk(2, 0)
    bk, bv = attn.to_kv.bias.chunk(2)
    ref = _reference_attention(
        x,
        torch.cat([ctx, torch.ones(3, 7, 1)], -1),
        attn.to_q,
        torch.cat([wk, bk[:, None]], 1),
        torch.cat([wv, bv[:, None]], 1),
        attn.to_out,
        4,
        mask,
    )
    out = attn(x, ctx, mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    ctx2 = torch.where(mask[..., None], ctx, torch.randn_like(ctx) * 100)
    torch.testing.assert_close(attn(x, ctx2, mask), out, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(attn(x, torch.randn_like(ctx), mask), out, atol=1e-3)


def test_rope_scores_depend_only_on_offset():
    rope = RotaryEmbedding(16)
    cos, sin = rope(12)
    q, k = torch.randn(16), torch.randn(16)
    qs = apply_rotary(q.expand(12, 16), cos, sin)
    ks = apply_rotary(k.expand(12, 16), cos, sin)
    scores = qs @ ks.T  # [i, j]
    for off in (0, 1, 3):
        diag = torch.diagonal(scores, offset=off)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores[0, 0], scores[0, 3])
    # a pure rotation: norms are kept
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(12))


def test_rope_1d_tables_are_unchanged():
    """The time tables are bit-identical to the formula trained models were built with."""
    for head_dim, base, length in ((16, 10000.0, 12), (64, 500.0, 33)):
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None]
        cos, sin = RotaryEmbedding(head_dim, base)(length)
        assert torch.equal(cos, torch.cat([angles.cos(), angles.cos()], -1))
        assert torch.equal(sin, torch.cat([-angles.sin(), angles.sin()], -1))


def test_rope_2d_scores_depend_only_on_the_row_and_column_offset():
    h, w, d = 4, 5, 16
    cos, sin = RotaryEmbedding(d, axes=2)((h, w))
    assert cos.shape == sin.shape == (h * w, d)
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    qs = apply_rotary(q.expand(h * w, d), cos.double(), sin.double())
    ks = apply_rotary(k.expand(h * w, d), cos.double(), sin.double())
    scores = qs @ ks.T
    rows, cols = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)  # row-major tokens
    by_offset: dict[tuple[int, int], list[float]] = {}
    for i in range(h * w):
        for j in range(h * w):
            by_offset.setdefault((int(rows[i] - rows[j]), int(cols[i] - cols[j])), []).append(
                scores[i, j].item()
            )
    assert len(by_offset) == (2 * h - 1) * (2 * w - 1)
    for offset, values in by_offset.items():
        torch.testing.assert_close(
            torch.tensor(values), torch.full((len(values),), values[0]), msg=str(offset)
        )
    # rows and columns are separate axes: a row offset is not a column offset, nor a token-index offset
    ref = by_offset[(0, 0)][0]
    assert len({round(by_offset[o][0] - ref, 6) for o in [(1, 0), (0, 1), (0, 2), (1, 1)]}) == 4
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(h * w))  # a pure rotation
    # the row half of the pairs sees only rows, the column half only columns
    row_only = RotaryEmbedding(d, axes=2)((h, 1))[0]
    col_only = RotaryEmbedding(d, axes=2)((1, w))[0]
    half = d // 4
    assert torch.equal(row_only[:, half : 2 * half], torch.ones(h, half))
    assert torch.equal(col_only[:, :half], torch.ones(w, half))
    with pytest.raises(ValueError, match="divisible by 4"):
        RotaryEmbedding(6, axes=2)
    with pytest.raises(ValueError, match="2 axes"):
        RotaryEmbedding(8, axes=2)(5)


def test_scalar_embeddings_distinguish_values():
    e = sinusoidal_embedding(torch.tensor([0.0, 1.0, 500.0]), 64)
    assert e.shape == (3, 64) and torch.isfinite(e).all()
    assert (e[0] - e[1]).abs().max() > 1e-3 and (e[1] - e[2]).abs().max() > 1e-3
    assert ScalarEmbedding(32, zero_init=True)(torch.rand(4)).abs().max() == 0


@pytest.mark.parametrize("layer", ["conv", "attn"])
def test_temporal_layers_are_identity_at_init_and_skip_single_frames(layer):
    mod = TemporalConv(16, 3, groups=4) if layer == "conv" else TemporalAttention(16, head_dim=8)
    x = to_video_layout(torch.randn(2, 16, 5, 4, 4))
    assert torch.equal(mod(x), x)
    _perturb(mod)
    assert not torch.allclose(mod(x), x)
    one = x[:, :, :1]
    assert torch.equal(mod(one), one)


def test_temporal_conv_mixes_only_neighbouring_frames():
    mod = _perturb(TemporalConv(8, 3, groups=4))
    x = to_video_layout(torch.randn(1, 8, 7, 3, 3))
    y = mod(x)
    x2 = x.clone()
    x2[:, :, 3] += torch.randn_like(x2[:, :, 3])
    d = (mod(x2) - y).abs().amax(dim=(0, 1, 3, 4))
    assert (d[[2, 3, 4]] > 1e-4).all() and (d[[0, 1, 5, 6]] == 0).all()


@pytest.mark.parametrize("t,k", [(6, 3), (2, 5), (1, 3), (4, 1)])
def test_temporal_conv1d_matches_conv1d_and_its_gradients(t, k):
    b, s, c = 2, 3, 4
    x = torch.randn(b, t, s, c, dtype=torch.float64, requires_grad=True)
    w = torch.randn(k, c, c, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c, dtype=torch.float64, requires_grad=True)
    ref = F.conv1d(x.permute(0, 2, 3, 1).reshape(b * s, c, t), w.permute(1, 2, 0), bias, padding=k // 2)
    ref = ref.reshape(b, s, c, t).permute(0, 3, 1, 2)
    torch.testing.assert_close(temporal_conv1d(x, w, bias), ref)
    assert torch.autograd.gradcheck(temporal_conv1d, (x, w, bias))


def test_temporal_attention_has_no_length_limit_and_masks_padded_frames():
    mod = _perturb(TemporalAttention(16, head_dim=8))
    for t in (2, 9, 33):
        assert mod(to_video_layout(torch.randn(1, 16, t, 2, 2))).shape == (1, 16, t, 2, 2)
    x = to_video_layout(torch.randn(2, 16, 6, 3, 3))
    fm = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6], dtype=torch.bool)
    y = mod(x, fm)
    x2 = x.clone()
    x2[0, :, 4:] = torch.randn_like(x2[0, :, 4:])
    torch.testing.assert_close(mod(x2, fm)[0, :, :4], y[0, :, :4])
    torch.testing.assert_close(y[0, :, :4], mod(x[:1, :, :4])[0])


def test_resblock_is_layout_independent_and_uses_the_embedding():
    blk = _perturb(ResBlock(8, 16, emb_dim=12, groups=4), 0.05)
    x, emb = torch.randn(2, 8, 3, 6, 6), torch.randn(2, 12)
    y = blk(to_video_layout(x), emb)
    assert y.shape == (2, 16, 3, 6, 6)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(blk(x.contiguous(), emb), y, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(blk(x, emb + 1), y)
    # time embedding is per sample: changing sample 1's embedding leaves sample 0 alone
    emb2 = emb.clone()
    emb2[1] += 1
    torch.testing.assert_close(blk(x, emb2)[0], y[0], atol=1e-5, rtol=1e-4)


def test_attention_backward_is_finite_with_fully_padded_keys_except_one():
    attn = Attention(16, head_dim=8, context_dim=16)
    x, ctx = torch.randn(2, 5, 16, requires_grad=True), torch.randn(2, 4, 16)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 0] = True
    F.mse_loss(attn(x, ctx, mask), torch.zeros(2, 5, 16)).backward()
    assert torch.isfinite(x.grad).all()
