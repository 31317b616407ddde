"""Image-to-video: the image latent and its mask reach the network, a stage fine-tuned from a text-to-video export
starts as that model, image and text guidance, training on the clip's own first frame, and `vidiff animate` end to
end on tiny untrained pipelines, with every bad input a clear error."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidiff.cli import main
from vidiff.diffusion.guidance import image_text_guided_denoise_fn
from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.denoisers import DenoiserConfig
from vidiff.models.dit import DiTConfig
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig
from vidiff.models.unet import UNetConfig
from vidiff.pipelines.image_to_video import ImageToVideo
from vidiff.pipelines.pipeline_folder import read_index, save_pipeline
from vidiff.pipelines.stage import DiffusionStage, ImageConfig, SamplingConfig, StageConfig
from vidiff.pipelines.text_to_video import TextToVideo
from vidiff.training.init_from import init_denoiser_from
from vidiff.training.objective import DiffusionObjective
from vidiff.training.sample_keys import SampleKeys
from vidiff.video import probe_video, write_video

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "a red circle moving left"


def backbone(kind: str, image: bool) -> DenoiserConfig:
    extra = {"image_channels": 4, "noise_aug_conditioning": True} if image else {}
    if kind == "unet":
        return DenoiserConfig(kind="unet", unet=UNetConfig(
            in_channels=4, model_channels=16, channel_mults=(1,), num_res_blocks=1, attention_levels=(0,),
            head_dim=16, norm_groups=8, text_dim=16, **extra))
    return DenoiserConfig(kind="dit", dit=DiTConfig(
        in_channels=4, patch_size=(1, 2, 2), hidden_size=32, depth=1, num_heads=2, text_dim=16, **extra))


def stage_of(kind: str, image: bool, name: str = "base", **sampling) -> DiffusionStage:
    """A tiny stage on conftest's tiny VAE latents (3 x 8 x 8: 9 frames of 32 px); nudged off its initialisation
    (zero-initialised parts included), as training would leave it."""
    stage = DiffusionStage(StageConfig(
        name=name, latent_frames=3, latent_height=8, latent_width=8, fps=6, denoiser=backbone(kind, image),
        sampling=SamplingConfig(steps=2, cfg=2.0, **sampling), image=ImageConfig(noise_aug_max=0.2, noise_aug_level=0.02),
    ))
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return stage.eval()


def text_encoder() -> TextEncoder:
    return TextEncoder(TextEncoderConfig(width=16, layers=1, heads=2, context_length=8))


def inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, Cond]:
    x, t = torch.randn(batch, 4, 3, 8, 8), torch.tensor([100, 700][:batch])
    cond = Cond(torch.randn(batch, 5, 16), torch.ones(batch, 5, dtype=torch.bool),
                image_latent=torch.randn(batch, 4, 1, 8, 8), noise_aug_level=torch.tensor([0.05, 0.1][:batch]))
    return x, t, cond


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, tiny_vae_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("i2v")
    return {
        "t2v": save_pipeline(root / "t2v", tiny_vae_dir, text_encoder(), [(stage_of("dit", False), None)]),
        "i2v": save_pipeline(root / "i2v", tiny_vae_dir, text_encoder(), [(stage_of("dit", True, "i2v"), None)]),
    }


# ---------------------------------------------------------------------------- fine-tuning from text-to-video


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_a_fresh_i2v_stage_fine_tuned_from_a_t2v_export_computes_the_t2v_model(kind, tmp_path, tiny_vae_dir):
    t2v = stage_of(kind, False)
    folder = save_pipeline(tmp_path / "t2v", tiny_vae_dir, text_encoder(), [(t2v, None)])
    i2v = DiffusionStage(dataclasses.replace(t2v.config, denoiser=backbone(kind, True))).eval()
    new = init_denoiser_from(i2v, folder)
    assert new  # the grown input projection and the noise-level embedding
    x, t, cond = inputs()
    with torch.no_grad():
        expected = t2v(x, t, Cond(cond.text, cond.text_mask))
        torch.testing.assert_close(i2v(x, t, cond), expected, atol=1e-5, rtol=1e-4)
        # trained, the image, its mask and the noise level reach the output
        for p in i2v.parameters():
            p.add_(0.05 * torch.randn_like(p))
        out = i2v(x, t, cond)
        other_image = i2v(x, t, dataclasses.replace(cond, image_latent=torch.randn_like(cond.image_latent)))
        other_level = i2v(x, t, dataclasses.replace(cond, noise_aug_level=torch.tensor([0.15, 0.0])))
    assert (out - other_image).abs().max() > 1e-4 and (out - other_level).abs().max() > 1e-4


def test_fine_tuning_refuses_another_network_or_vae(tmp_path, tiny_vae_dir):
    folder = save_pipeline(tmp_path / "t2v", tiny_vae_dir, text_encoder(), [(stage_of("dit", False), None)])
    wider = backbone("dit", True)
    wider.dit.hidden_size = 64
    with pytest.raises(VidiffError, match=r"hidden_size: 32 there, 64 here"):
        init_denoiser_from(DiffusionStage(StageConfig(denoiser=wider)), folder)
    with pytest.raises(VidiffError, match=r"is a dit, this one a unet"):
        init_denoiser_from(DiffusionStage(StageConfig(denoiser=backbone("unet", True))), folder)
    with pytest.raises(VidiffError, match=r"another VAE"):
        init_denoiser_from(DiffusionStage(StageConfig(denoiser=backbone("dit", True))), folder, vae_hash="0" * 16)


# ---------------------------------------------------------------------------- guidance and training


def test_image_and_text_guidance_at_scales_1_is_the_conditional_model_and_each_scale_acts():
    stage = stage_of("dit", True)
    x, t, cond = inputs()
    neither = cond.null_like().drop("image_latent", torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        full = stage(x, t, cond)
        both_1 = image_text_guided_denoise_fn(stage, cond, cond.null_like(), neither, 1.0, 1.0)(x, t)
        torch.testing.assert_close(both_1, full, atol=1e-5, rtol=1e-4)
        # what the guided branches see: a dropped image is zeros with no conditioning frame, as training drops it
        image_only = stage(x, t, cond.null_like())
        torch.testing.assert_close(
            image_text_guided_denoise_fn(stage, cond, cond.null_like(), neither, 1.0, 3.0)(x, t),
            stage(x, t, neither) + 3.0 * (image_only - stage(x, t, neither)) + (full - image_only),
            atol=1e-5, rtol=1e-4)
        guided = stage.guided(cond, SamplingConfig(cfg=1.0, image_cfg=2.0))(x, t)
    assert (guided - full).abs().max() > 1e-4


def test_training_conditions_on_the_clips_first_latent_frame_noised_at_a_level_the_network_gets():
    stage = stage_of("dit", True)
    latents = torch.randn(4, 4, 3, 8, 8)
    cond = Cond(torch.randn(4, 5, 16), torch.ones(4, 5, dtype=torch.bool))
    seen = {}

    def predict(x_t, t, c):
        seen["cond"] = c
        return stage(x_t, t, c)

    objective = DiffusionObjective("min_snr", dropout={"image_latent": 0.5}, seed=3)
    objective(stage, latents, cond, SampleKeys.for_rank(3, 0, 4, 0), predict)
    c = seen["cond"]
    assert c.noise_aug_level is not None and ((c.noise_aug_level >= 0) & (c.noise_aug_level <= 0.2)).all()
    kept = c.image_latent.flatten(1).ne(0).any(1)
    assert 0 < int(kept.sum()) < 4  # some rows dropped to zeros
    for row in torch.nonzero(kept).flatten():
        # alpha x + sigma noise of the first frame at a level <= 0.2: close to it, not equal
        err = (c.image_latent[row] - latents[row, :, :1]).abs().mean()
        assert 0 < err < 0.5 * latents[row, :, :1].abs().mean()


def test_sampling_an_i2v_stage_needs_its_image_at_its_size():
    stage = stage_of("dit", True)
    cond = Cond(torch.randn(1, 5, 16), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(VidiffError, match=r"image-to-video stage.*Cond.image_latent is missing"):
        stage.sample(cond)
    with pytest.raises(VidiffError, match=r"\[B, 4, 1, 8, 8\].*\[1, 4, 1, 4, 4\]"):
        stage.sample(dataclasses.replace(cond, image_latent=torch.randn(1, 4, 1, 4, 4)))


# ---------------------------------------------------------------------------- pipelines and `vidiff animate`


def write_png(path: Path, size=(48, 40), mode="RGB") -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def test_an_i2v_export_is_an_image_to_video_pipeline_and_each_task_refuses_the_other(pipelines):
    assert read_index(pipelines["i2v"]).task == "image_to_video"
    with pytest.raises(VidiffError, match=r"image_to_video pipeline.*vidiff animate"):
        TextToVideo(pipelines["i2v"])
    with pytest.raises(VidiffError, match=r"text_to_video pipeline.*fine-tune an image-to-video stage"):
        ImageToVideo(pipelines["t2v"])


def test_a_pipeline_whose_task_does_not_fit_its_first_stage_is_refused(pipelines, tmp_path):
    import shutil

    import yaml

    folder = tmp_path / "i2v"
    shutil.copytree(pipelines["i2v"], folder)
    index = yaml.safe_load((folder / "pipeline.yaml").read_text())
    (folder / "pipeline.yaml").write_text(yaml.safe_dump({**index, "task": "text_to_video"}))
    with pytest.raises(VidiffError, match=r"says task text_to_video, but its first stage 'i2v' takes an image"):
        TextToVideo(folder)


def test_image_to_video_is_seeded_and_starts_from_the_image(pipelines):
    pipe = ImageToVideo(pipelines["i2v"])
    assert pipe.image_size == (32, 32)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    a = pipe(images, [PROMPT, ""], seed=3)
    assert a.shape == (2, 3, 9, 32, 32)
    torch.testing.assert_close(pipe(images, [PROMPT, ""], seed=3), a)
    torch.testing.assert_close(pipe.stage_videos(images, [PROMPT, ""], seed=3)[-1], a)
    other = pipe(images.flip(0), [PROMPT, ""], seed=3)
    assert (other - a).abs().max() > 1e-3  # the image reaches the output
    with pytest.raises(VidiffError, match=r"\[B, 3, 32, 32\].*fit them first"):
        pipe(torch.zeros(1, 3, 16, 16), [PROMPT])


def test_an_i2v_stage_heads_a_cascade_that_animate_runs_to_the_end(pipelines, tmp_path, tiny_vae_dir, capsys):
    from test_cascade import tiny_stage

    from vidiff.pipelines.assemble import assemble_cascade

    tsr = save_pipeline(tmp_path / "tsr", tiny_vae_dir, text_encoder(), [(tiny_stage("tsr", 5, 8, 12, temporal=2), None)])
    cascade = assemble_cascade([pipelines["i2v"], tsr], tmp_path / "cascade")
    assert read_index(cascade).task == "image_to_video"
    image = write_png(tmp_path / "a.png", (32, 32))
    assert main(["animate", "--checkpoint", str(cascade), "--image", str(image), "--prompt", PROMPT, "--steps", "1",
                 "--out", str(tmp_path / "out")]) == 0
    assert probe_video(tmp_path / "out" / "0000.mp4").num_frames == 17  # through the TSR stage
    assert main(["animate", "--checkpoint", str(cascade), "--image", str(image), "--stages", "i2v", "--steps", "1",
                 "--out", str(tmp_path / "base")]) == 0
    assert probe_video(tmp_path / "base" / "0000.mp4").num_frames == 9


def test_vidiff_animate_writes_a_video_per_image_with_the_notes_of_what_it_did(pipelines, tmp_path, capsys):
    images = [write_png(tmp_path / "a.png", (48, 40)), write_png(tmp_path / "b.png", (32, 32), mode="L")]
    args = ["animate", "--checkpoint", str(pipelines["i2v"]), "--image", str(images[0]), "--image", str(images[1]),
            "--prompt", PROMPT, "--steps", "1", "--image-cfg", "1.5", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resized 48x40" in out and "grayscale expanded to RGB" in out
    records = [json.loads(line) for line in (tmp_path / "out" / "prompts.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == ["0000.mp4", "0001.mp4"]
    assert records[0]["prompt"] == PROMPT and records[0]["image_cfg"] == 1.5 and records[0]["steps"] == 1
    info = probe_video(tmp_path / "out" / "0000.mp4")
    assert (info.num_frames, info.height, info.width) == (9, 32, 32)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", "no such file"),
    (lambda d: (d / "notes.png").write_text("not a picture") and d / "notes.png", "not an image"),
    (lambda d: write_png(d / "dot.png", (1, 1)), "too small"),
    (lambda d: write_video(d / "clip.mp4", torch.zeros(3, 4, 16, 16), fps=4), "is a video, not a still image"),
])
def test_vidiff_animate_refuses_a_bad_image_before_sampling_and_writes_nothing(pipelines, tmp_path, capsys, make,
                                                                              message):
    path = make(tmp_path)
    out = tmp_path / "out"
    rc = main(["animate", "--checkpoint", str(pipelines["i2v"]), "--image", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and str(path.name) in err and "Traceback" not in err
    assert not out.exists()


def test_vidiff_animate_refuses_a_text_to_video_checkpoint_and_image_cfg_on_it(pipelines, tmp_path, capsys):
    image = write_png(tmp_path / "a.png")
    rc = main(["animate", "--checkpoint", str(pipelines["t2v"]), "--image", str(image), "--out", str(tmp_path / "o")])
    assert rc == 2 and "text_to_video pipeline" in capsys.readouterr().err
    rc = main(["generate", "--checkpoint", str(pipelines["t2v"]), "--prompt", PROMPT, "--set", "base.image_cfg=2",
               "--out", str(tmp_path / "g")])
    assert rc == 2 and "takes no image" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the held-out evaluation


def test_the_evaluation_animates_held_out_stills_and_scores_the_first_frame_on_the_networks_output(pipelines,
                                                                                                  tmp_path):
    from vidiff.eval.image_to_video_eval import evaluate_image_to_video, format_result, heldout_stills

    holdout = [("red", "circle", "left"), ("blue", "square", "up")]
    stills = heldout_stills(holdout, 2, 32)
    assert len(stills) == 4 and stills[0][1] == "a red circle moving left" and stills[0][0].shape == (3, 32, 32)
    assert not torch.equal(stills[0][0], stills[1][0])  # fresh positions per still
    result = evaluate_image_to_video(pipelines["i2v"], holdout, per_triple=2, out_dir=tmp_path, overrides=["i2v.steps=1"])
    assert result["videos"] == 4 and len(result["per_video"]) == 4
    assert {"first_frame_psnr_db", "centre_within_share", "color_accuracy", "motion_accuracy"} <= set(result)
    # an untrained stage does not reproduce the image: the figure is measured, not pasted
    assert result["first_frame_psnr_db"] < 25 and not result["meets"]["first_frame_psnr"]
    assert sorted(p.name for p in (tmp_path / "stills").iterdir()) == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert json.loads((tmp_path / "i2v_eval.json").read_text())["videos"] == 4
    assert "NOT met" in format_result(result)
