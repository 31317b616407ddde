"""Shared test fixtures. The repo root goes first on sys.path so a worktree tests its own code."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: with 2 threads on a shared 2-core machine each op waits on the other thread (~10x slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """A saved, untrained CausalVAE3D (4 latent channels, 4x in time and space) for latent-cache tests."""
    from vidiff.models.vae import CausalVAE3D, VAEConfig

    d = tmp_path_factory.mktemp("vae")
    vae = CausalVAE3D(VAEConfig(latent_channels=4, block_out_channels=(8, 8, 16), layers_per_block=1, mid_layers=0,
                                temporal_compression=4, spatial_compression=4, patch_size=2, tile_sample_size=64,
                                tile_overlap=16, latent_mean=0.1, latent_std=0.5))
    vae.save_pretrained(d)
    return d


@pytest.fixture
def toy_manifest(tmp_path):
    """A clip manifest of three 12-frame 16x16 toy-world mp4s (captions "clip 0".."clip 2"); clip 1 is dropped."""
    import json

    from vidiff.toyworld import SceneSpec, render
    from vidiff.video import write_video

    rows = []
    for i, status in enumerate(["kept", "dropped", "kept"]):
        path = tmp_path / f"clip{i}.mp4"
        write_video(path, render(SceneSpec("red", "circle", "left"), 12, 16, 16, seed=i), fps=8)
        rows.append({"id": f"c{i}", "source": str(path), "start_frame": 0, "end_frame": 12,
                     "caption": f"clip {i}", "status": status})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
