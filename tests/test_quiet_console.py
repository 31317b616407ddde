"""A quiet console: `vidiff train` and `vidiff train-vae` print their progress and real warnings, not Lightning's
noise (vidiff.training.quiet hides exact messages; the causes in vidiff are fixed)."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NOISE = [
    "GPU available:",  # Lightning's machine report
    "TPU available:",
    "Tip:",  # litlogger / litmodels adverts
    "`Trainer.fit` stopped: `max_steps=",
    "isinstance(treespec, LeafSpec)",  # torch's deprecation, raised inside Lightning
    "module(s) in eval mode",  # the EMA copy: now outside the module tree
    "Using ModelCheckpoint with manual optimization",  # VAE: checkpoints at epoch ends, not every_n_train_steps
    "resuming from a checkpoint that ended before the epoch ended",  # StepKeyedLoader
    "is smaller than the logging interval",
    "Restored all states from the checkpoint",  # "Restoring states from ..." says it once
]

SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    from pathlib import Path

    import torch
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
    from safetensors.torch import load_file

    from vidiff.config import load_config
    from vidiff.models.vae import CausalVAE3D, VAEConfig
    from vidiff.toyworld import generate_dataset
    from vidiff.training.diffusion_module import DiffusionModule
    from vidiff.training.latent_cache import encode_manifest
    from vidiff.training.train_stage import TrainRunConfig, train_stage
    from vidiff.training.vae_config import VAETrainConfig
    from vidiff.training.vae_module import train_vae

    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = Path(sys.argv[1])
    jsonl = generate_dataset(root / "toy", 4, num_frames=5, height=16, width=16, seed=1)
    rows = [dict(source=str(root / "toy" / json.loads(l)["path"]), start_frame=0, end_frame=5,
                 caption=json.loads(l)["caption"], status="kept", id=str(i))
            for i, l in enumerate(jsonl.read_text().splitlines())]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    vae = CausalVAE3D(VAEConfig(latent_channels=4, block_out_channels=(8, 8, 8), layers_per_block=1, mid_layers=0,
                                temporal_compression=4, spatial_compression=4))
    vae.save_pretrained(root / "vae")
    cache = encode_manifest(root / "vae", root / "manifest.jsonl", root / "latents", num_frames=5, size=(16, 16),
                            image_share=0.5, progress=False)

    def on_train_start(self):  # real warnings raised while the trainer runs: they must show
        warnings.warn("vidiff test: a real warning from vidiff code", UserWarning)
        rank_zero_warn("vidiff test: a real Lightning warning")
        rank_zero_info("vidiff test: a real Lightning info line")
    DiffusionModule.on_train_start = on_train_start

    def stage(name, steps):
        return train_stage(load_config(TrainRunConfig, None, [
            "stage.latent_channels=4", "stage.latent_frames=2", "stage.latent_height=4", "stage.latent_width=4",
            "stage.denoiser.unet.in_channels=4", "stage.denoiser.unet.model_channels=8",
            "stage.denoiser.unet.channel_mults=[1]", "stage.denoiser.unet.attention_levels=[0]",
            "stage.denoiser.unet.head_dim=8", "stage.denoiser.unet.norm_groups=4",
            "stage.denoiser.unet.num_res_blocks=1", "text.width=16", "text.heads=2", "text.layers=1",
            "text.context_length=5",  # shorter than the captions: the text encoder's truncation warning
            "stage.denoiser.unet.text_dim=16", "train.batch_size=2", "train.image_batch_size=2",
            "train.image_share=0.5", "train.steps_per_epoch=3", "train.log_every=10",
            f"train.max_steps={steps}", f"data.latents={cache}", f"out_dir={root / name}"]), progress=True)

    full = stage("full", 5)
    stage("split", 4)  # its last checkpoint is mid-epoch (4 = 3 + 1)
    resumed = stage("split", 5)
    a, b = load_file(str(full / "base/model.safetensors")), load_file(str(resumed / "base/model.safetensors"))
    print("resume exact:", all(torch.equal(a[k], b[k]) for k in a))

    vae_args = ["model.block_out_channels=[8,8,8]", "model.latent_channels=4", "model.mid_layers=0",
                "model.spatial_compression=4", "model.temporal_compression=4",
                "data.num_samples=4", "data.height=16", "data.width=16", "data.num_frames=5", "eval.num_samples=1",
                "train.batch_size=1", "train.checkpoint_every=2", f"out_dir={root / 'vae_run'}"]
    train_vae(load_config(VAETrainConfig, None, [*vae_args, "train.steps=3"]))
    train_vae(load_config(VAETrainConfig, None, [*vae_args, "train.steps=4"]))  # resumes mid-epoch, from step 3
    print("done")
    """
)


@pytest.mark.slow
def test_training_console_shows_progress_and_real_warnings_but_no_lightning_noise(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    console = run.stdout + run.stderr
    assert run.returncode == 0, console[-3000:]
    assert "resume exact: True" in console and "done" in console
    for noise in NOISE:
        assert noise not in console, f"{noise!r} is on the console:\n{console[-3000:]}"
    for real in ("vidiff test: a real warning from vidiff code", "vidiff test: a real Lightning warning",
                 "vidiff test: a real Lightning info line", "more than the text context of 5",
                 "Restoring states from the checkpoint path at", "Epoch 1"):
        assert real in console, f"{real!r} is missing from the console:\n{console[-3000:]}"


def test_quiet_lightning_hides_exactly_its_messages(capfd):
    """Fast: the filters match Lightning's messages and let others through, and are undone on exit."""
    import logging

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from vidiff.training.quiet import quiet_lightning

    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_lightning():
                rank_zero_info("GPU available: False, used: False")
                rank_zero_info("💡 Tip: For seamless cloud logging ...")
                rank_zero_info("`Trainer.fit` stopped: `max_steps=10` reached.")
                rank_zero_info("`Trainer.fit` stopped: No training batches.")
                warnings.warn_explicit("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning,
                                       "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")
                warnings.warn_explicit("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning,
                                       "mine.py", 1, module="vidiff.something")  # not Lightning's: shows
                warnings.warn("prompt 0 has 40 tokens, more than the text context", UserWarning, stacklevel=1)
            rank_zero_info("GPU available: True (cuda), used: True")  # outside the block: shows
    finally:
        log.removeHandler(handler)
    assert records == ["`Trainer.fit` stopped: No training batches.", "GPU available: True (cuda), used: True"]
    assert [str(w.message)[:20] for w in caught] == ["`isinstance(treespec", "prompt 0 has 40 toke"]
