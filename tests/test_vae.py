"""CausalVAE3D: causality, chunked == one-pass, seamless tiling, image <-> one latent frame, configs, bad input."""

from pathlib import Path

import pytest
import torch

from vidiff.config import ConfigError, load_config
from vidiff.errors import VidiffError
from vidiff.models.causal_conv import streaming
from vidiff.models.vae import CausalVAE3D, VAEConfig, count_parameters

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> CausalVAE3D:
    base = dict(
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        mid_layers=1,
        latent_channels=4,
        temporal_compression=4,
        spatial_compression=4,
        patch_size=1,
        tile_sample_size=16,
        tile_overlap=8,
        chunk_latent_frames=1,
    )
    base.update(kw)
    return CausalVAE3D(VAEConfig(**base)).eval()


def video(t=9, h=16, w=16, b=1):
    return torch.rand(b, 3, t, h, w) * 2 - 1


@torch.no_grad()
def test_shapes_images_share_the_latent_space():
    vae = tiny()
    vae.disable_chunking()
    x = video(13)
    z = vae.encode(x).mode()
    assert z.shape == (1, 4, 4, 4, 4)
    assert vae.decode(z).shape == x.shape
    img = vae.encode(x[:, :, :1]).mode()
    assert img.shape == (1, 4, 1, 4, 4)
    # replicate padding: an image is encoded exactly like the first frame of any video starting with it
    torch.testing.assert_close(img, z[:, :, :1], atol=1e-5, rtol=1e-5)
    assert vae.decode(img).shape == (1, 3, 1, 16, 16)


@pytest.mark.parametrize("padding", ["replicate", "zeros"])
@torch.no_grad()
def test_encoder_is_causal(padding):
    vae = tiny(causal_padding=padding)
    vae.disable_chunking()
    x = video(17)
    full = vae.encode(x).mode()
    for j in range(5):
        part = vae.encode(x[:, :, : 1 + 4 * j]).mode()
        torch.testing.assert_close(part, full[:, :, : 1 + j], atol=1e-5, rtol=1e-5)
    # and changing the future never changes the past
    y = x.clone()
    y[:, :, 9:] = -y[:, :, 9:]
    changed = vae.encode(y).mode()
    torch.testing.assert_close(changed[:, :, :3], full[:, :, :3], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed[:, :, 3:], full[:, :, 3:], atol=1e-3)


@torch.no_grad()
def test_decoder_is_causal():
    vae = tiny()
    vae.disable_chunking()
    z = torch.randn(1, 4, 4, 4, 4)
    full = vae.decode(z)
    for j in range(4):
        torch.testing.assert_close(vae.decode(z[:, :, : 1 + j]), full[:, :, : 1 + 4 * j], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 2, 3])
@torch.no_grad()
def test_chunked_equals_one_pass(chunk):
    vae = tiny(chunk_latent_frames=chunk)
    x = video(17)
    vae.disable_chunking()
    z_one = vae.encode(x).mode()
    x_one = vae.decode(z_one)
    vae.enable_chunking(chunk)
    torch.testing.assert_close(vae.encode(x).mode(), z_one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vae.decode(z_one), x_one, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_chunks_without_the_cache_differ():
    """The cache is what makes chunking exact: chunks encoded independently do not match."""
    vae = tiny()
    x = video(13)
    one = vae.encoder(x)
    independent = torch.cat([vae.encoder(x[:, :, :1]), vae.encoder(x[:, :, 1:])], dim=2)
    assert independent.shape == one.shape
    assert (independent - one).abs().max() > 1e-2
    with streaming(vae.encoder):
        cached = torch.cat([vae.encoder(x[:, :, :1]), vae.encoder(x[:, :, 1:])], dim=2)
    torch.testing.assert_close(cached, one, atol=1e-5, rtol=1e-5)


def test_chunked_training_gradients_match():
    """Training through the chunked path (cache tensors stay in the graph) gives the one-pass gradients."""
    vae = tiny().train()
    x = video(9)
    grads = []
    for chunking in (False, True):
        vae.zero_grad()
        vae.use_chunking = chunking
        recon, _ = vae(x, sample_posterior=False)
        recon.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in vae.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


@torch.no_grad()
def test_tiled_decode_has_no_seams():
    torch.manual_seed(1)
    vae = tiny(tile_sample_size=32, tile_overlap=16, mid_layers=0)
    z = torch.randn(1, 4, 2, 16, 16)  # 64x64 pixels: tiles start at 0, 16, 32 px
    vae.disable_tiling()
    ref = vae.decode(z)
    vae.enable_tiling()
    tiled = vae.decode(z)
    assert tiled.shape == ref.shape
    err = (tiled - ref).abs()
    borders = (16, 32, 48)  # pixel rows/columns where a tile starts or ends inside the frame
    border_err = torch.stack([err[..., b - 1 : b + 1, :].mean() for b in borders] + [err[..., b - 1 : b + 1].mean() for b in borders])
    # Naive tiling (no overlap, no blending) for scale: its seam is what blending must remove.
    naive = torch.cat([torch.cat([vae.decode(z[..., i : i + 8, j : j + 8]) for j in (0, 8)], -1) for i in (0, 8)], -2)
    naive_err = (naive - ref).abs()[..., 31:33, :].mean()
    assert border_err.max() < 0.05, border_err
    assert border_err.max() < 0.25 * naive_err
    # no visible seam: row-to-row jumps in the tiled frame match the untiled frame's everywhere
    jump = (tiled[..., 1:, :] - tiled[..., :-1, :]).abs().mean(dim=(0, 1, 2, 4))
    ref_jump = (ref[..., 1:, :] - ref[..., :-1, :]).abs().mean(dim=(0, 1, 2, 4))
    assert (jump - ref_jump).abs().max() < 0.05


@torch.no_grad()
def test_tiled_encode_close_to_untiled():
    torch.manual_seed(2)
    vae = tiny(tile_sample_size=48, tile_overlap=24, mid_layers=0)
    x = video(5, 96, 96)  # tiles start at 0, 24, 48 px
    vae.disable_tiling()
    ref = vae.encode(x).mode()
    vae.enable_tiling()
    tiled = vae.encode(x).mode()
    assert tiled.shape == ref.shape
    naive = torch.cat([torch.cat([vae.encode(x[..., i : i + 48, j : j + 48]).mode() for j in (0, 48)], -1) for i in (0, 48)], -2)
    assert (tiled - ref).abs().mean() < 0.3 * (naive - ref).abs().mean()
    assert (tiled - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_tiling_switches_and_thresholds():
    vae = tiny()
    assert vae.use_tiling and vae.use_chunking  # on by default, active only above the thresholds
    vae.disable_tiling()
    assert not vae.use_tiling
    vae.enable_tiling(24, 8)
    assert (vae.tile_sample_size, vae.tile_overlap) == (24, 8)
    with pytest.raises(VidiffError, match="multiples of 4"):
        vae.enable_tiling(30, 8)
    with pytest.raises(VidiffError):
        vae.enable_chunking(0)


def _vae_configs():
    return sorted(ROOT.glob("configs/*/vae*.yaml"))


def test_every_vae_config_is_found():
    names = {p.relative_to(ROOT).as_posix() for p in _vae_configs()}
    assert {"configs/toy/vae.yaml", "configs/gpu/vae.yaml"} <= names


@pytest.mark.parametrize("path", _vae_configs(), ids=lambda p: p.parent.name)
def test_config_shapes(path):
    from vidiff.training.vae_config import VAETrainConfig

    cfg = load_config(VAETrainConfig, path)
    m, d = cfg.model, cfg.data
    n_params = count_parameters(m)
    assert n_params > 0
    # shapes without allocating weights or activations: the meta device
    with torch.device("meta"):
        vae = CausalVAE3D(m)
        x = torch.empty(2, m.in_channels, d.num_frames, d.height, d.width)
        vae.disable_tiling()
        vae.disable_chunking()
        z = vae.encode(x).mode()
        out = vae.decode(z)
    lt = 1 + (d.num_frames - 1) // m.temporal_compression
    assert tuple(z.shape) == (2, m.latent_channels, lt, d.height // m.spatial_compression, d.width // m.spatial_compression)
    assert tuple(out.shape) == tuple(x.shape)


def test_gpu_config_is_real_size():
    from vidiff.training.vae_config import VAETrainConfig

    m = load_config(VAETrainConfig, ROOT / "configs/gpu/vae.yaml").model
    assert (m.temporal_compression, m.spatial_compression, m.latent_channels) == (4, 8, 16)
    assert 50e6 < count_parameters(m) < 400e6


def test_save_load_roundtrip(tmp_path):
    vae = tiny()
    vae.config.latent_std = [2.5]
    vae.save_pretrained(tmp_path)
    loaded = CausalVAE3D.from_pretrained(tmp_path)
    assert loaded.config == vae.config
    x = video(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x).mode(), vae.encode(x).mode())


@torch.no_grad()
def test_latent_normalisation_is_per_channel():
    from vidiff.training.vae_eval import latent_stats

    vae = tiny()
    clips = video(9, b=6)
    z = vae.encode(clips).mode()
    vae.config.latent_mean, vae.config.latent_std = latent_stats(vae, clips, batch_size=4)
    assert len(vae.config.latent_std) == 4
    zn = vae.normalize_latents(z)
    dims = (0, 2, 3, 4)
    torch.testing.assert_close(zn.mean(dims), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(zn.std(dims), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(vae.denormalize_latents(zn), z, atol=1e-5, rtol=1e-5)
    # one value (as older configs hold) serves every channel
    shared = tiny(latent_mean=0.5, latent_std=2.0)
    assert (shared.config.latent_mean, shared.config.latent_std) == ([0.5], [2.0])
    torch.testing.assert_close(shared.normalize_latents(z), (z - 0.5) / 2.0)
    with pytest.raises(ConfigError, match="one per latent channel"):
        tiny(latent_std=[1.0, 2.0])
    with pytest.raises(ConfigError, match="positive"):
        tiny(latent_std=[0.0])


def test_mismatched_checkpoint_config_is_a_clear_error(tmp_path):
    tiny().save_pretrained(tmp_path)
    cfg = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(cfg.replace("latent_channels: 4", "latent_channels: 8"))
    with pytest.raises(VidiffError, match="do not match"):
        CausalVAE3D.from_pretrained(tmp_path)
    with pytest.raises(VidiffError, match="has no config.yaml"):
        CausalVAE3D.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "config.yaml").write_text(cfg)
    with pytest.raises(VidiffError, match="cannot be read"):
        CausalVAE3D.from_pretrained(tmp_path)


def test_bad_config_values():
    with pytest.raises(VidiffError, match="power of two"):
        VAEConfig(temporal_compression=3)
    with pytest.raises(VidiffError, match="downsampling steps"):
        VAEConfig(block_out_channels=(8, 16), spatial_compression=8)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.zeros(1, 4, 9, 16, 16), "4 channels, the model takes 3"),
        (lambda: torch.zeros(1, 3, 8, 16, 16), r"8 frames; it takes 1 \+ 4\*k frames \(e.g. 5 or 9\)"),
        (lambda: torch.zeros(1, 3, 10, 16, 16), r"e.g. 9 or 13"),
        (lambda: torch.zeros(3, 9, 16, 16), r"\[B, C, T, H, W\]"),
        (lambda: torch.zeros(1, 3, 9, 18, 16), "multiples of 4"),
        (lambda: torch.zeros(1, 3, 9, 16, 16).index_fill_(2, torch.tensor([3]), float("nan")), "NaN/inf"),
        (lambda: torch.zeros(1, 3, 9, 16, 16).index_fill_(3, torch.tensor([0]), float("inf")), "NaN/inf"),
    ],
)
def test_bad_input_is_a_clear_error(make, match):
    with pytest.raises(VidiffError, match=match):
        tiny().encode(make())


def test_bad_latents_are_a_clear_error():
    vae = tiny()
    with pytest.raises(VidiffError, match="latents have 3 channels"):
        vae.decode(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(VidiffError, match="NaN/inf"):
        vae.decode(torch.full((1, 4, 2, 4, 4), float("nan")))


def test_posterior_sample_and_kl():
    vae = tiny()
    with torch.no_grad():
        dist = vae.encode(video(5))
    gen = torch.Generator().manual_seed(0)
    s = dist.sample(gen)
    assert s.shape == dist.mode().shape and not torch.equal(s, dist.mode())
    assert (dist.kl() >= 0).all()
    z = dist.mode()
    torch.testing.assert_close(vae.denormalize_latents(vae.normalize_latents(z)), z)


@torch.no_grad()
def test_fold_and_unfold_shortcuts_invert_block_constant_video():
    """The residual paths are an average-pool autoencoder: a video constant over 2x2 pixels and causal frame pairs
    (frame 0 alone) survives fold -> unfold exactly, chunk after chunk too; any other video comes back averaged."""
    from vidiff.models.vae_blocks import FoldShortcut, UnfoldShortcut

    fold, unfold = FoldShortcut(16, spatial=True, temporal=True), UnfoldShortcut(4, spatial=True, temporal=True)
    coarse = torch.randn(2, 4, 4, 3, 5)  # [B, C, 1 + k, H/2, W/2]
    frames = torch.cat([coarse[:, :, :1], coarse[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)
    x = frames.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # 7 frames, 6 x 10
    z = fold(x)
    assert z.shape == (2, 16, 4, 3, 5)
    torch.testing.assert_close(unfold(z), x)
    with streaming(fold):
        chunked = torch.cat([fold(x[:, :, :3]), fold(x[:, :, 3:])], dim=2)
    torch.testing.assert_close(chunked, z)
    noisy = x + 0.1 * torch.randn_like(x)
    assert (unfold(fold(noisy)) - noisy).abs().max() > 1e-2


def test_vae_per_frame_script_prints_each_frames_psnr(tiny_vae_dir, tmp_path):
    import subprocess
    import sys

    script = [sys.executable, str(ROOT / "scripts/vae_per_frame.py"), "--clips", "2", "--frames", "9", "17"]
    ran = subprocess.run([*script, "--checkpoint", str(tiny_vae_dir)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    lines = ran.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["9 frames", "17 frames"]
    assert [len(line.split("per frame ")[1].split()) for line in lines] == [9, 17]
    bad = subprocess.run([*script, "--checkpoint", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "vae_per_frame: error:" in bad.stderr
