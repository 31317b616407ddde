"""`vidiff encode`: toy-world clips or a manifest's kept clips -> normalised latent shards with captions."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli import run_vidiff

from vidiff.errors import VidiffError
from vidiff.models.vae import CausalVAE3D
from vidiff.training.latent_cache import encode_toyworld, load_latent_cache

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_toyworld_cache_matches_the_encoder(tiny_vae_dir, tmp_path):
    from vidiff.toyworld import ToyWorldDataset

    out = encode_toyworld(tiny_vae_dir, 5, tmp_path / "cache", num_frames=9, size=(16, 16), seed=3, batch_size=2, progress=False)
    cache = load_latent_cache(out)
    ds = ToyWorldDataset(5, 9, 16, 16, seed=3)
    assert cache.captions == [ds[i]["caption"] for i in range(5)]
    vae = CausalVAE3D.from_pretrained(tiny_vae_dir)
    with torch.no_grad():
        expect = vae.normalize_latents(vae.encode(torch.stack([ds[i]["video"] for i in range(5)])).mode())
    torch.testing.assert_close(torch.stack(list(cache.latents)), expect, atol=1e-5, rtol=1e-5)
    assert cache.latents[0].shape == (4, 3, 4, 4)


def test_toyworld_cache_with_images_and_skip_when_unchanged(tiny_vae_dir, tmp_path):
    out = encode_toyworld(tiny_vae_dir, 12, tmp_path / "c", num_frames=5, size=(16, 16), image_share=0.5, progress=False)
    frames = sorted({int(z.shape[1]) for z in load_latent_cache(out).latents})
    assert frames == [1, 2]
    stamp = (out / "meta.json").stat().st_mtime_ns
    encode_toyworld(tiny_vae_dir, 12, out, num_frames=5, size=(16, 16), image_share=0.5, progress=False)
    assert (out / "meta.json").stat().st_mtime_ns == stamp  # same settings: nothing re-encoded


def test_bad_frame_count_is_a_clear_error(tiny_vae_dir, tmp_path):
    with pytest.raises(VidiffError, match=r"1 \+ 4k frames"):
        encode_toyworld(tiny_vae_dir, 2, tmp_path / "c", num_frames=8, size=(16, 16), progress=False)


def _cli(*args):
    return run_vidiff(*args, timeout=300)


def test_encode_cli_toyworld(tiny_vae_dir, tmp_path):
    r = _cli("encode", "--checkpoint", str(tiny_vae_dir), "--out", str(tmp_path / "c"), "--toyworld", "3",
             "--frames", "5", "--height", "16", "--width", "16")
    assert r.returncode == 0, r.stderr
    assert len(load_latent_cache(tmp_path / "c").latents) == 3


def test_encode_cli_manifest(tiny_vae_dir, toy_manifest, tmp_path):
    r = _cli("encode", "--checkpoint", str(tiny_vae_dir), "--out", str(tmp_path / "c"), "--manifest", str(toy_manifest),
             "--frames", "9", "--height", "16", "--width", "16")
    assert r.returncode == 0, r.stderr
    cache = load_latent_cache(tmp_path / "c")
    assert cache.captions == ["clip 0", "clip 2"]
    assert all(z.shape == (4, 3, 4, 4) for z in cache.latents)


def test_encode_cli_needs_a_source(tiny_vae_dir, tmp_path):
    r = _cli("encode", "--checkpoint", str(tiny_vae_dir), "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "--toyworld" in r.stderr


def test_latent_robustness_script_scores_noisy_latents(tiny_vae_dir, tmp_path):
    cache = encode_toyworld(tiny_vae_dir, 4, tmp_path / "c", num_frames=9, size=(32, 32), seed=1, progress=False)
    script = [sys.executable, str(ROOT / "scripts/latent_robustness.py"), "--latents", str(cache), "--clips", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*script, "--noise", "0", "0.5"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line[:1] == " " or line[:1].isdigit()]
    assert [row[0] for row in rows[-2:]] == ["0.00", "0.50"]
    assert all(0 <= float(x) <= 1 for row in rows[-2:] for x in row[1:])
    bad = subprocess.run([*script, "--noise", "-1"], capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "--noise takes stds >= 0" in bad.stderr
