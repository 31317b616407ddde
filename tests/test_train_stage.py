"""Diffusion-stage training end to end on a tiny scale: manifest -> latent cache -> train -> export ->
generate, exact resume, and the checks a user meets on the way."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import TINY_UNET, tiny_latent_cache

from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.training.latent_cache import load_latent_cache
from vidiff.training.train_stage import TrainRunConfig, train_stage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_latent_cache(tmp_path_factory.mktemp("cache"))


def _run(tmp, cache, steps, name, extra=()):
    cfg = load_config(TrainRunConfig, None, [*TINY_UNET, f"data.latents={cache}", f"out_dir={tmp / name}",
                                              f"train.max_steps={steps}", *extra])
    return train_stage(cfg, progress=False)


def test_cache_holds_videos_and_images(cache):
    lc = load_latent_cache(cache)
    frames = sorted({int(z.shape[1]) for z in lc.latents})
    assert frames == [1, 2]  # 5 frames -> 2 latent frames; images -> 1
    assert all(z.shape[0] == 4 and z.shape[-2:] == (4, 4) for z in lc.latents)
    assert all(c for c in lc.captions)


@pytest.mark.parametrize("weighting", ["min_snr", "learned"])  # learned: its log-variance net and optimizer state resume too
def test_resume_matches_uninterrupted_run(tmp_path, cache, weighting):
    extra = ["train.image_share=0.5", f"train.loss_weighting={weighting}"]
    full = _run(tmp_path, cache, 6, "full", extra)
    _run(tmp_path, cache, 3, "split", extra)
    resumed = _run(tmp_path, cache, 6, "split", extra)
    a, b = load_file(str(full / "base" / "model.safetensors")), load_file(str(resumed / "base" / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = load_file(str(_run(tmp_path, cache, 1, "one") / "base" / "model.safetensors"))
    assert any(not torch.equal(a[k], moved[k]) for k in a)  # training changed the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_a_killed_run_resumes_from_its_last_epoch_end(tmp_path, cache, monkeypatch):
    from vidiff.training.diffusion_module import DiffusionModule

    extra = ["train.steps_per_epoch=2"]
    full = _run(tmp_path, cache, 6, "full", extra)
    step = DiffusionModule.training_step

    def killed_at_step_5(self, batch, batch_idx):
        if self.trainer.global_step == 5:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DiffusionModule, "training_step", killed_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, cache, 6, "split", extra)
    last = tmp_path / "split" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
    monkeypatch.setattr(DiffusionModule, "training_step", step)
    resumed = _run(tmp_path, cache, 6, "split", extra)
    a, b = load_file(str(full / "base" / "model.safetensors")), load_file(str(resumed / "base" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_generate_cli_is_deterministic_and_checks_input(tmp_path, cache, capsys):
    from vidiff.cli import main
    from vidiff.video import read_video

    export = _run(tmp_path, cache, 2, "gen")

    def gen(out, *extra):
        return main(["generate", "--checkpoint", str(export), "--prompt", "a red circle moving left",
                     "--out", str(out), *extra])

    # one real subprocess: the installed entry point works as a user calls it
    r = subprocess.run([sys.executable, "-m", "vidiff", "generate", "--checkpoint", str(export), "--prompt",
                        "a red circle moving left", "--out", str(tmp_path / "g1"), "--seed", "3"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert gen(tmp_path / "g2", "--seed", "3") == 0
    v1, v2 = read_video(tmp_path / "g1" / "0000.mp4"), read_video(tmp_path / "g2" / "0000.mp4")
    assert v1.shape == (3, 5, 16, 16) and torch.equal(v1, v2)
    records = [json.loads(line) for line in (tmp_path / "g1" / "prompts.jsonl").read_text().splitlines()]
    assert records[0]["prompt"] == "a red circle moving left" and records[0]["seed"] == 3
    capsys.readouterr()
    for args, fragment in [
        (["--sampler", "heun"], "valid names: ddpm, ddim, dpmpp_2m, euler"),
        (["--steps", "0"], "steps must be a positive integer"),
        (["--cfg", "-2"], "cfg scale -2.0 is out of range"),
        (["--prompt", "  "], "empty"),
    ]:
        assert gen(tmp_path / "bad", *args) == 2
        assert fragment in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(export / "vae"), "--prompt", "x", "--out", str(tmp_path / "bad")]) == 2
    assert "not a pipeline folder" in capsys.readouterr().err


def test_cache_mismatch_is_a_clear_error(tmp_path, cache):
    with pytest.raises(VidiffError, match="latent channels"):
        _run(tmp_path, cache, 1, "bad", ["stage.latent_channels=8", "stage.denoiser.unet.in_channels=8"])
    with pytest.raises(VidiffError, match="not a complete latent cache"):
        load_latent_cache(tmp_path)


def test_unknown_loss_weighting_lists_the_valid_ones(tmp_path, cache):
    with pytest.raises(VidiffError, match="one of plain, min_snr, min_snr_plain, learned, got 'p2'"):
        _run(tmp_path, cache, 1, "bad", ["train.loss_weighting=p2"])


def test_lr_warms_up_then_decays_by_cosine_to_the_floor():
    from vidiff.errors import ConfigError
    from vidiff.training.diffusion_module import OptimConfig
    from vidiff.training.lr_schedule import warmup_decay_factor

    f = [warmup_decay_factor(s, 10, 110, "cosine", 0.1) for s in range(130)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.55)  # half way through the decay
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False)) and f[110] == f[129] == pytest.approx(0.1)
    assert warmup_decay_factor(100, 10, 110, "constant") == 1.0  # "constant" stays at lr
    with pytest.raises(ConfigError, match="cosine"):
        OptimConfig(decay="linear")


def test_captions_encode_once_and_blanks_are_unconditional():
    from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig
    from vidiff.training.train_stage import encode_with_blanks

    encoder = TextEncoder(TextEncoderConfig(model_name="toy", width=16, layers=1, heads=2, context_length=16))
    text, mask = encode_with_blanks(encoder, ["a red circle", "", "a red circle", " "])
    assert mask[1].sum() == 0 and mask[3].sum() == 0 and mask[0].sum() > 0
    torch.testing.assert_close(text[0], text[2])
    text, mask = encode_with_blanks(encoder, ["", ""])  # no caption at all: an unconditional model
    assert text.shape[:2] == mask.shape == (2, 1) and text.shape[2] == encoder.dim and not mask.any()


def _loss_curve(run_dir: Path) -> list[float]:
    import csv

    (metrics,) = sorted((run_dir / "logs").glob("version_*/metrics.csv"))
    with open(metrics) as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_a_repeated_run_gives_the_same_loss_curve_and_weights_bit_for_bit(tmp_path, cache):
    extra = ["train.image_share=0.5", "train.steps_per_epoch=25"]
    a = _run(tmp_path, cache, 50, "a", extra)
    b = _run(tmp_path, cache, 50, "b", extra)
    curve = _loss_curve(tmp_path / "a")
    assert len(curve) == 50 and curve == _loss_curve(tmp_path / "b")
    wa, wb = load_file(str(a / "base" / "model.safetensors")), load_file(str(b / "base" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_compile_logs_the_compile_time_once_and_keeps_checkpoint_and_export_keys(tmp_path, cache, monkeypatch):
    """train.compile=true through Lightning, with torch.compile stubbed to run eagerly (inductor itself is covered
    in tests/test_compile.py): the same losses, checkpoint and export keys as without it, compile time logged once."""
    import csv

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    extra = ["train.image_share=0.5"]
    plain = _run(tmp_path, cache, 3, "plain", extra)
    compiled = _run(tmp_path, cache, 3, "compiled", [*extra, "train.compile=true"])
    assert _loss_curve(tmp_path / "compiled") == _loss_curve(tmp_path / "plain")
    (metrics,) = sorted((tmp_path / "compiled" / "logs").glob("version_*/metrics.csv"))
    with open(metrics) as f:
        logged = [r["train/compile_seconds"] for r in csv.DictReader(f) if r.get("train/compile_seconds")]
    assert len(logged) == 1 and float(logged[0]) >= 0
    wa, wb = load_file(str(plain / "base" / "model.safetensors")), load_file(str(compiled / "base" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ckpt = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
            for run in ("plain", "compiled")]
    assert list(ckpt[0]) == list(ckpt[1]) and not any("_orig_mod" in k for k in ckpt[1])
