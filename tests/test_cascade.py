"""The cascade checkpoint and `vidiff generate` over it: tiny untrained stage exports (base 9 frames of 32 px at
6 fps, TSR to 17 frames at 12 fps, SSR to 64 px) are assembled by `vidiff cascade`, generated from whole and in
part, and every bad input (assembling or loading) is a clear error before anything is written or sampled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from vidiff.cli import main
from vidiff.errors import VidiffError
from vidiff.models.denoisers import DenoiserConfig
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig
from vidiff.models.unet import UNetConfig
from vidiff.models.vae import CausalVAE3D
from vidiff.pipelines.assemble import assemble_cascade
from vidiff.pipelines.pipeline_folder import PIPELINE_FILE, read_index, save_pipeline
from vidiff.pipelines.stage import DiffusionStage, LowresConfig, SamplingConfig, StageConfig
from vidiff.pipelines.text_to_video import TextToVideo
from vidiff.video import probe_video

PROMPT = "a red circle moving left"
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_stage(name: str, frames: int, size: int, fps: int, temporal: int = 1, spatial: int = 1) -> DiffusionStage:
    """A tiny U-Net stage on the 4-channel latents of conftest's tiny VAE (4x in time and space); a super-resolution
    stage when a factor is above 1. Its weights are nudged off their zero initialisation, as training would."""
    sr = temporal > 1 or spatial > 1
    unet = UNetConfig(in_channels=4, model_channels=16, channel_mults=(1,), num_res_blocks=1, attention_levels=(0,),
                      head_dim=16, norm_groups=8, text_dim=16, lowres_channels=4 if sr else 0,
                      noise_aug_conditioning=sr)
    stage = DiffusionStage(StageConfig(
        name=name, latent_frames=frames, latent_height=size, latent_width=size, fps=fps,
        denoiser=DenoiserConfig(kind="unet", unet=unet), sampling=SamplingConfig(steps=2, cfg=2.0),
        lowres=LowresConfig(temporal_factor=temporal, spatial_factor=spatial),
    ))
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return stage.eval()


STAGES = {  # latents 3 x 8 x 8 (9 frames, 32 px) -> 5 x 8 x 8 (17 frames) -> 5 x 16 x 16 (64 px)
    "base": lambda: tiny_stage("base", 3, 8, 6),
    "tsr": lambda: tiny_stage("tsr", 5, 8, 12, temporal=2),
    "ssr": lambda: tiny_stage("ssr", 5, 16, 12, spatial=2),
    "tsr_fps": lambda: tiny_stage("tsr", 5, 8, 10, temporal=2),
}


def text_encoder(seed: int = 0) -> TextEncoder:
    return TextEncoder(TextEncoderConfig(width=16, layers=1, heads=2, context_length=8, seed=seed))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_vae_dir) -> dict[str, Path]:
    """Stage exports as `vidiff train` writes them (one stage beside the VAE and the text encoder), plus a TSR stage
    exported with another VAE, one with another text encoder and one at a frame rate that does not chain."""
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(1)
    other_vae = CausalVAE3D(CausalVAE3D.from_pretrained(tiny_vae_dir).config).save_pretrained(root / "other_vae")
    made = {}
    for name, vae, text_seed in [("base", tiny_vae_dir, 0), ("tsr", tiny_vae_dir, 0), ("ssr", tiny_vae_dir, 0),
                                 ("tsr_fps", tiny_vae_dir, 0), ("tsr_other_vae", other_vae, 0),
                                 ("tsr_other_text", tiny_vae_dir, 1)]:
        stage = STAGES[name if name in STAGES else "tsr"]()
        made[name] = save_pipeline(root / name, vae, text_encoder(text_seed), [(stage, None)])
    return made


@pytest.fixture(scope="module")
def cascade(exports, tmp_path_factory) -> Path:
    return assemble_cascade([exports["base"], exports["tsr"], exports["ssr"]], tmp_path_factory.mktemp("c") / "cascade")


def test_an_export_records_the_hash_of_its_vae(exports, tiny_vae_dir):
    config = yaml.safe_load((exports["tsr"] / "tsr" / "config.yaml").read_text())
    assert config["vae_hash"] == CausalVAE3D.from_pretrained(tiny_vae_dir).fingerprint()
    assert CausalVAE3D.from_pretrained(exports["tsr_other_vae"] / "vae").fingerprint() != config["vae_hash"]


def test_vidiff_cascade_then_generate_runs_every_stage_or_the_first_ones(exports, tmp_path, capsys):
    out = tmp_path / "cascade"
    assert main(["cascade", "--stage", str(exports["base"]), "--stage", str(exports["tsr"]),
                 "--stage", str(exports["ssr"]), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["base", PIPELINE_FILE, "ssr", "text_encoder", "tsr", "vae"]
    index = read_index(out)
    assert index.stages == ["base", "tsr", "ssr"]
    assert index.sampling["tsr"] == {"sampler": "dpmpp_2m", "steps": 2, "cfg": 2.0, "guidance_rescale": 0.0,
                                     "image_cfg": 1.0, "noise_aug_level": 0.1}
    assert index.sampling["base"]["noise_aug_level"] is None

    def generate(name: str, *extra: str):
        capsys.readouterr()
        assert main(["generate", "--checkpoint", str(out), "--prompt", PROMPT, "--out", str(tmp_path / name),
                     *extra]) == 0, capsys.readouterr().err
        info = probe_video(tmp_path / name / "0000.mp4")
        record = json.loads((tmp_path / name / "prompts.jsonl").read_text())
        return (info.num_frames, info.height, info.width, round(info.fps)), record, capsys.readouterr().err

    shape, record, err = generate("all", "--set", "tsr.steps=1", "--set", "ssr.noise_aug_level=0.2")
    assert shape == (17, 64, 64, 12)  # base 9 x 32 px at 6 fps -> TSR 17 frames at 12 fps -> SSR 64 px
    for bar in ("base (dpmpp_2m, 2 steps)", "tsr (dpmpp_2m, 1 steps)", "ssr (dpmpp_2m, 2 steps)"):
        assert bar in err  # one progress bar per stage, labelled with it
    assert record["stages"]["tsr"]["steps"] == 1 and record["stages"]["ssr"]["noise_aug_level"] == 0.2
    assert generate("two", "--stages", "base,tsr")[0] == (17, 32, 32, 12)
    shape, record, _ = generate("one", "--stages", "base", "--steps", "1")
    assert shape == (9, 32, 32, 6) and record["steps"] == 1 and "stages" not in record


def test_each_sr_stage_takes_the_previous_stages_latents_with_its_own_noise(cascade, monkeypatch):
    calls = []
    sample = DiffusionStage.sample

    def recording(stage, cond, num_frames=None, sampling=None, seed=0, progress=False, denoise=None):
        out = sample(stage, cond, num_frames, sampling, seed, progress, denoise=denoise)
        calls.append((stage.config.name, cond, seed, out))
        return out

    levels = {}
    augment = DiffusionStage.augment_input

    def recording_level(stage, cond, level, noise):
        levels[stage.config.name] = level.tolist()
        return augment(stage, cond, level, noise)

    monkeypatch.setattr(DiffusionStage, "sample", recording)
    monkeypatch.setattr(DiffusionStage, "augment_input", recording_level)
    pipe = TextToVideo(cascade, overrides=["ssr.noise_aug_level=0.3"])
    video = pipe([PROMPT], seed=3)
    assert video.shape == (1, 3, 17, 64, 64)
    assert [c[0] for c in calls] == ["base", "tsr", "ssr"]
    (_, base_cond, base_seed, base_out), (_, tsr_cond, tsr_seed, tsr_out), (_, ssr_cond, ssr_seed, _) = calls
    assert base_cond.lowres is None and tsr_cond.lowres is base_out and ssr_cond.lowres is tsr_out
    assert torch.equal(tsr_cond.text, base_cond.text) and torch.equal(ssr_cond.text, base_cond.text)
    assert base_seed == 3 and len({base_seed, tsr_seed, ssr_seed}) == 3
    # the SSR stage samples at the overridden level, the TSR at its config's; neither stage's config is changed
    assert levels == {"tsr": pytest.approx([0.1]), "ssr": pytest.approx([0.3])}
    assert [s.config.lowres.noise_aug_level for s in pipe.cascade.stages[1:]] == [0.1, 0.1]


SSR_AFTER_BASE = "takes a low-res input of latents [4, 5, 8, 8] (for its latents [4, 5, 16, 16]; longer in time runs over windows), but"


@pytest.mark.parametrize("stages, culprit, fragment", [
    (["base", "ssr", "tsr"], "ssr", SSR_AFTER_BASE),  # the SSR stage fed the base stage's 3 latent frames
    (["tsr", "ssr"], "tsr", "is a super-resolution stage: it needs the output of a stage before it"),
    (["base", "tsr_fps"], "tsr_fps", "which makes 12 fps; set stage.fps: 12"),
    (["base", "tsr_other_vae"], "tsr_other_vae", "was trained on another VAE"),
    (["base", "tsr_other_text"], "tsr_other_text", "text encoder"),
    (["base", "base"], "base", "both hold a stage named 'base'"),
])
def test_the_assembler_refuses_what_does_not_chain_and_writes_nothing(exports, tmp_path, capsys, stages, culprit,
                                                                      fragment):
    argv = ["cascade", "--out", str(tmp_path / "cascade")] + [a for s in stages for a in ("--stage", str(exports[s]))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(exports[culprit]) in err, err  # names the input
    assert list(tmp_path.iterdir()) == []  # no cascade, no half-written folder


def _edit(file: Path, **changes) -> None:
    file.write_text(yaml.safe_dump(yaml.safe_load(file.read_text()) | changes))


@pytest.mark.parametrize("break_it, args, fragment", [
    (lambda f: (f / PIPELINE_FILE).unlink(), [], "has no pipeline.yaml"),
    (lambda f: shutil.rmtree(f / "ssr"), [], "names stage 'ssr', but"),
    (lambda f: _edit(f / PIPELINE_FILE, stages=["base", "ssr", "tsr"]), [], SSR_AFTER_BASE),
    (lambda f: _edit(f / "tsr" / "config.yaml", vae_hash="0123456789abcdef"), [], "trained on another VAE"),
    (None, ["--stages", "base,xsr"], "its stages are base, tsr, ssr"),
    (None, ["--stages", "tsr"], "does not run the pipeline from its first stage"),
    (None, ["--set", "tsr.stepz=3"], "unknown key(s) stepz"),
    (None, ["--set", "xsr.steps=3"], "names stage 'xsr'"),
    (None, ["--set", "base.noise_aug_level=0.2"], "takes no low-res input"),
    (None, ["--set", "tsr.noise_aug_level=0.9"], "above stage.lowres.noise_aug_max"),
])
def test_a_bad_cascade_or_option_fails_before_any_sampling(cascade, tmp_path, capsys, monkeypatch, break_it, args,
                                                           fragment):
    folder = shutil.copytree(cascade, tmp_path / "cascade")
    if break_it is not None:
        break_it(folder)

    def no_sampling(*_, **__):
        raise AssertionError("sampled despite a bad input")

    monkeypatch.setattr(DiffusionStage, "sample", no_sampling)
    assert main(["generate", "--checkpoint", str(folder), "--prompt", PROMPT, "--out", str(tmp_path / "gen"),
                 *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert not (tmp_path / "gen").exists()


def test_a_super_resolution_stage_alone_does_not_generate(exports, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(exports["tsr"]), "--prompt", PROMPT, "--out", str(tmp_path)]) == 2
    assert "is a super-resolution stage" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["toy", "gpu"])
def test_the_shipped_configs_chain_base_tsr_ssr(size):
    """The SSR configs are trained on clips shorter than the TSR's output: they run over windows of it."""
    from vidiff.config import load_config
    from vidiff.pipelines.cascade import check_chain
    from vidiff.training.train_stage import TrainRunConfig

    root = Path(__file__).resolve().parents[1] / "configs" / size
    base = "base_dit.yaml" if size == "toy" else "base_unet.yaml"
    configs = [load_config(TrainRunConfig, root / name, ["data.latents=unused"]).stage for name in (base, "tsr.yaml", "ssr.yaml")]
    assert configs[2].latent_frames < configs[1].latent_frames  # windows, not one clip
    check_chain(configs, f"configs/{size}", base_first=True)


# ---------------------------------------------------------------- consistency: the final output against the base's

def test_to_base_grid_undoes_a_finer_grid_exactly():
    from vidiff.eval.cascade_consistency import to_base_grid

    base = torch.rand(2, 3, 5, 8, 8) * 2 - 1
    middle = (base[:, :, :-1] + base[:, :, 1:]) / 2  # frames in between, then every pixel as a 2 x 2 block
    finer = torch.stack([base[:, :, :-1], middle], dim=3).flatten(2, 3)
    finer = torch.cat([finer, base[:, :, -1:]], dim=2).repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert finer.shape == (2, 3, 9, 16, 16)
    assert torch.allclose(to_base_grid(finer, 2, 2), base, atol=1e-6)
    assert not torch.allclose(to_base_grid(finer, 1, 2)[:, :, 1::2], base[:, :, 1:], atol=1e-2)  # a wrong factor
    with pytest.raises(VidiffError, match="not on a grid 2x finer in time"):
        to_base_grid(finer[:, :, :8], 2, 2)


def test_consistency_runs_the_cascade_once_and_keeps_its_base_and_final_videos(cascade, tmp_path):
    from vidiff.eval.cascade_consistency import evaluate_cascade, format_consistency, generate_base_and_final

    prompts = [PROMPT, "a blue square moving up"]
    base, final, factors, fps = generate_base_and_final(cascade, prompts, seed=5)
    # the final videos are the ones `vidiff generate` makes, the base videos those of the base stage alone
    whole, base_only = TextToVideo(cascade), TextToVideo(cascade, stages=["base"])
    for i, prompt in enumerate(prompts):
        assert torch.allclose(final[i], whole([prompt], seed=5 + i)[0], atol=1e-5)
        assert torch.allclose(base[i], base_only([prompt], seed=5 + i)[0], atol=1e-5)
    assert factors == (2, 2) and fps == (6, 12)

    result = evaluate_cascade(cascade, prompts, seed=5, out_dir=tmp_path / "pairs")
    assert result["factors"] == {"frames": 2, "space": 2} and result["n_videos"] == 2
    assert len(result["psnr_db_each"]) == 2 and all(5 < db < 60 for db in result["psnr_db_each"])
    assert set(result["oracle"]) == {"base", "final", "final_on_base_grid"}
    assert [probe_video(tmp_path / "pairs" / name / "0001.mp4").num_frames for name in ("base", "final")] == [9, 17]
    assert json.loads((tmp_path / "pairs" / "consistency.json").read_text())["psnr_db"] == pytest.approx(result["psnr_db"])
    assert "PSNR against the base output" in format_consistency(result)
    # the first stages only: the TSR's output against the base's
    _, final, factors, fps = generate_base_and_final(cascade, prompts[:1], seed=5, stages=["base", "tsr"])
    assert final[0].shape == (3, 17, 32, 32) and factors == (2, 1) and fps == (6, 12)


def test_consistency_refuses_a_single_stage_pipeline(exports):
    from vidiff.eval.cascade_consistency import evaluate_cascade

    with pytest.raises(VidiffError, match="runs one stage here"):
        evaluate_cascade(exports["base"], [PROMPT])
