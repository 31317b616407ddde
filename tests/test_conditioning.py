"""Cond batching for CFG, caption dropout, the text encoder (toy and open_clip-from-file), its errors,
causal masking, determinism, and the text cache."""

import json
import warnings

import pytest
import torch

from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig, load_text_cache, save_text_cache


def _cond(b=2, length=5, d=8, **kw):
    return Cond(torch.randn(b, length, d), torch.ones(b, length, dtype=torch.bool), **kw)


@pytest.fixture(scope="module")
def toy():
    return TextEncoder(TextEncoderConfig(context_length=16))


# ---------------------------------------------------------------------------- Cond


def test_cond_cat_pads_text_and_indexes_back():
    a = _cond(2, 5, fps=torch.tensor([8.0, 4.0]))
    b = _cond(1, 9, fps=torch.tensor([2.0]))
    c = Cond.cat([a, b])
    assert c.batch_size == 3 and c.text.shape == (3, 9, 8)
    assert c.text_mask[:2, 5:].sum() == 0 and c.text_mask[2].all()
    assert torch.equal(c[2].text, b.text) and torch.equal(c[:2].fps, a.fps)
    assert c[0].batch_size == 1 and c[-1].batch_size == 1
    assert torch.equal(c[torch.tensor([True, False, True])].fps, torch.tensor([8.0, 2.0]))
    r = a.repeat(3)
    assert r.batch_size == 6 and torch.equal(r.fps, torch.tensor([8.0, 8, 8, 4, 4, 4]))


def test_cond_cat_refuses_mismatched_fields_and_to_keeps_masks_bool():
    with pytest.raises(VidiffError, match="different optional fields"):
        Cond.cat([_cond(fps=torch.ones(2)), _cond()])
    c = _cond(frame_mask=torch.ones(2, 4)).to("cpu", dtype=torch.float64)
    assert (
        c.text.dtype == torch.float64 and c.text_mask.dtype == torch.bool and c.frame_mask.dtype == torch.bool
    )


def test_cond_validates_shapes():
    with pytest.raises(VidiffError, match="text_mask"):
        Cond(torch.randn(2, 5, 8), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(VidiffError, match="text must be"):
        Cond(torch.randn(2, 5), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(VidiffError, match="image_latent"):
        _cond(image_latent=torch.randn(2, 4, 3, 8, 8))
    with pytest.raises(VidiffError, match="fps"):
        _cond(fps=torch.ones(3))


def test_null_like_and_dropping_inputs():
    c = _cond(4, image_latent=torch.randn(4, 4, 1, 8, 8))
    n = c.null_like()
    assert not n.text_mask.any() and n.text.abs().sum() == 0 and torch.equal(n.image_latent, c.image_latent)
    rows = torch.tensor([True, False, True, False])
    d = c.drop_text(rows)
    assert not d.text_mask[[0, 2]].any() and d.text_mask[[1, 3]].all()
    assert torch.equal(d.text[1], c.text[1])
    assert torch.equal(c.drop("text", rows).text_mask, d.text_mask)
    img = c.drop("image_latent", rows)
    assert img.image_latent[[0, 2]].abs().sum() == 0 and torch.equal(img.image_latent[[1, 3]], c.image_latent[[1, 3]])
    assert torch.equal(img.text, c.text)
    assert c.drop("lowres", rows) is c  # nothing to drop
    with pytest.raises(VidiffError, match="cannot be dropped"):
        c.drop("fps", rows)


def test_cond_from_batch_carries_the_optional_inputs():
    batch = {"latents": torch.randn(2, 4, 3, 8, 8), "text": torch.randn(2, 5, 16).half(),
             "text_mask": torch.ones(2, 5, dtype=torch.bool), "image_latent": torch.randn(2, 4, 1, 8, 8),
             "fps": torch.tensor([8.0, 24.0])}
    c = Cond.from_batch(batch)
    assert c.text.dtype == torch.float32 and c.text_mask.dtype == torch.bool
    assert torch.equal(c.image_latent, batch["image_latent"]) and torch.equal(c.fps, batch["fps"])
    assert c.lowres is None and c.noise_aug_level is None


# ---------------------------------------------------------------------------- toy text encoder


def test_toy_encoder_shapes_mask_and_frozen(toy, caplog):
    tokens, mask = toy(["a red circle moving left", "a blue square"])
    assert tokens.shape == (2, 16, 64) and mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [2 + 5, 2 + 3]  # start + words + end
    assert torch.isfinite(tokens).all()
    assert toy.is_random and all(not p.requires_grad for p in toy.parameters())
    toy.train()
    assert not toy.training
    with caplog.at_level("WARNING"):
        TextEncoder(TextEncoderConfig(context_length=8))
    assert "RANDOMLY INITIALISED" in caplog.text


def test_toy_encoder_is_causal(toy):
    short, ms = toy(["a red circle"])
    long, ml = toy(["a red circle moving left quickly"])
    n = int(ms.sum())  # start, a, red, circle, end: the first n-1 match, the end token differs
    torch.testing.assert_close(short[0, : n - 1], long[0, : n - 1])
    assert not torch.allclose(short[0, n - 1], long[0, n - 1])


def test_toy_encoder_tells_single_words_apart(toy):
    """Frozen and random, the toy tower must still separate prompts that differ in one word, at that word's
    token: with open_clip's training init "left" and "right" came out at cosine 0.96 and the demo's U-Net
    could not learn motion from them."""
    feats, mask = toy(["a red circle moving left", "a red circle moving right", "a blue circle moving left"])
    cos = torch.nn.functional.cosine_similarity
    assert cos(feats[0, 5], feats[1, 5], dim=0) < 0.6  # direction token (start, a, red, circle, moving, left)
    assert cos(feats[0, 2], feats[2, 2], dim=0) < 0.6  # colour token
    torch.testing.assert_close(feats[0, :5], feats[1, :5])  # causal: identical before the differing word


def test_toy_encoder_is_seeded_not_global_rng():
    prompts = ["a green triangle moving up"]
    torch.manual_seed(1)
    a = TextEncoder(TextEncoderConfig(seed=3))
    torch.manual_seed(2)
    torch.rand(100)
    b = TextEncoder(TextEncoderConfig(seed=3))
    c = TextEncoder(TextEncoderConfig(seed=4))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert torch.equal(a(prompts)[0], b(prompts)[0])
    assert not torch.allclose(a(prompts)[0], c(prompts)[0])


def test_empty_prompt_is_an_error_and_long_prompt_truncates_with_warning(toy):
    for bad in (["a red circle", "  "], [""], []):
        with pytest.raises(VidiffError, match="empty|no prompts"):
            toy(bad)
    long_prompt = " ".join(["red circle"] * 20)
    with pytest.warns(UserWarning, match="truncated to 16"):
        tokens, mask = toy([long_prompt])
    assert mask.all() and tokens.shape == (1, 16, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        toy(["a red circle"])  # a short prompt does not warn


def test_toy_cond_builds_a_cond(toy):
    c = toy.cond(["a red circle", "a blue square"], fps=torch.tensor([8.0, 8.0]))
    assert isinstance(c, Cond) and c.batch_size == 2 and c.fps is not None


# ---------------------------------------------------------------------------- open_clip from a local file


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("clipcfg")
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (d / "vidiff-test-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    model = open_clip.create_model("vidiff-test-tiny").eval()
    weights = d / "tiny.pt"
    torch.save(model.state_dict(), weights)
    return model, weights


def test_open_clip_tower_loads_local_weights_and_matches_encode_text(tiny_clip):
    model, weights = tiny_clip
    enc = TextEncoder(TextEncoderConfig(model_name="vidiff-test-tiny", pretrained=str(weights)))
    assert not enc.is_random and enc.dim == 32 and enc.context_length == 20
    torch.testing.assert_close(enc.tower.token_embedding.weight, model.token_embedding.weight)
    tokens, mask = enc(["a red circle moving left"])
    ids, _ = enc.tokenize(["a red circle moving left"])
    eot = int(mask.sum()) - 1
    pooled = tokens[0, eot] @ model.text_projection
    with torch.no_grad():
        torch.testing.assert_close(pooled, model.encode_text(ids)[0], atol=1e-5, rtol=1e-4)


def test_open_clip_errors_name_the_problem(tmp_path):
    with pytest.raises(VidiffError, match="does not exist"):
        TextEncoder(TextEncoderConfig(model_name="ViT-B-32", pretrained=str(tmp_path / "missing.pt")))
    with pytest.raises(VidiffError, match="unknown open_clip model"):
        TextEncoder(TextEncoderConfig(model_name="no-such-model"))
    with pytest.raises(VidiffError, match="Hugging Face"):
        TextEncoder(TextEncoderConfig(model_name="ViT-B-16-SigLIP"))


# ---------------------------------------------------------------------------- cache


def test_text_cache_round_trip_and_fingerprint_check(toy, tmp_path):
    caps = ["a red circle moving left", "a blue square", "a green triangle moving up"]
    path = save_text_cache(tmp_path / "text.safetensors", toy, caps, batch_size=2)
    tensors, got = load_text_cache(path, toy)
    assert got == caps
    tokens, mask = toy(caps)
    length = tensors["text"].shape[1]
    assert length == int(mask.sum(1).max())
    torch.testing.assert_close(tensors["text"].float(), tokens[:, :length], atol=2e-3, rtol=2e-3)
    assert torch.equal(tensors["text_mask"], mask[:, :length])
    with pytest.raises(VidiffError, match="another text encoder"):
        load_text_cache(path, TextEncoder(TextEncoderConfig(context_length=16, seed=9)))


def test_unfrozen_tower_trains():
    enc = TextEncoder(TextEncoderConfig(context_length=8, frozen=False))
    enc.train()
    assert enc.training
    tokens, mask = enc(["a red circle"])
    tokens[mask].square().mean().backward()
    assert enc.tower.token_embedding.weight.grad is not None
