"""The one model format and pipeline folders: exports of the earlier layout load and give exactly the
outputs the earlier code gave; a cascade-shaped pipeline stores its VAE and text encoder once; errors
name the folder and the fix."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.text_encoder import TextEncoder, TextEncoderConfig
from vidiff.models.unet import UNetConfig
from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.pipelines.pipeline_folder import PIPELINE_FILE, load_pipeline, save_pipeline, upgrade_export
from vidiff.pipelines.stage import DiffusionStage, LowresConfig, StageConfig
from vidiff.pipelines.text_to_video import TextToVideo

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_export_v0"
PROMPTS = ["a red circle moving left", "a blue square moving up"]  # as make_fixture.py used


@pytest.fixture(scope="module")
def expected():
    return load_file(str(LEGACY / "expected.safetensors"))


def _outputs(pipe: TextToVideo, expected) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        cond = pipe.text_encoder.cond(PROMPTS, fps=torch.tensor([6.0, 6.0]))
        return {
            "text": cond.text,
            "denoiser_out": pipe.stage(expected["x_t"], expected["t"], cond),
            "vae_encode_mode": pipe.vae.encode(expected["video"]).mode(),
            "vae_decode": pipe.vae.decode(expected["latents"]),
            "generated": pipe(PROMPTS, seed=7),
        }


def _assert_previous_outputs(pipe: TextToVideo, expected) -> None:
    for name, value in _outputs(pipe, expected).items():
        assert torch.equal(value, expected[name]), f"{name} differs from what the earlier code gave"


def test_an_export_of_the_earlier_layout_gives_exactly_the_earlier_outputs(expected):
    _assert_previous_outputs(TextToVideo(LEGACY / "export"), expected)


def test_upgrade_export_writes_a_pipeline_folder_with_the_same_outputs(tmp_path, expected, capsys):
    from vidiff.cli import main

    old = tmp_path / "old"
    shutil.copytree(LEGACY / "export", old)
    before = sorted(p.name for p in old.rglob("*"))
    assert main(["upgrade-export", str(old), str(tmp_path / "new")]) == 0
    assert sorted(p.name for p in old.rglob("*")) == before  # the old export is left as it was
    new = tmp_path / "new"
    assert sorted(p.name for p in new.iterdir()) == ["base", PIPELINE_FILE, "text_encoder", "vae"]
    _assert_previous_outputs(TextToVideo(new), expected)
    assert main(["upgrade-export", str(new), str(tmp_path / "again")]) == 2
    assert "nothing to upgrade" in capsys.readouterr().err
    with pytest.raises(VidiffError, match="new folder"):
        upgrade_export(old, old)


def _tiny_stage(name: str, text_dim: int, seed: int, tsr: bool = False) -> DiffusionStage:
    """A base stage (latents 2 x 4 x 4 at 8 fps), or a TSR stage after it (3 x 4 x 4 at 16 fps)."""
    torch.manual_seed(seed)
    unet = UNetConfig(in_channels=4, model_channels=16, channel_mults=(1,), num_res_blocks=1, attention_levels=(0,),
                      head_dim=16, text_dim=text_dim, norm_groups=8, lowres_channels=4 if tsr else 0)
    config = StageConfig(name=name, latent_channels=4, latent_frames=3 if tsr else 2, latent_height=4, latent_width=4,
                         fps=16 if tsr else 8, lowres=LowresConfig(temporal_factor=2 if tsr else 1))
    config.denoiser.unet = unet
    stage = DiffusionStage(config)
    with torch.no_grad():  # zero-initialised output layers would hide a load that skipped them
        for p in stage.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return stage


def _tiny_parts():
    vae = CausalVAE3D(VAEConfig(latent_channels=4, block_out_channels=(8, 8), layers_per_block=1, mid_layers=0,
                                temporal_compression=2, spatial_compression=2, tile_sample_size=32, tile_overlap=8))
    text = TextEncoder(TextEncoderConfig(width=16, layers=1, heads=2, context_length=8))
    return vae, text


def test_a_cascade_shaped_pipeline_stores_the_vae_and_text_encoder_once_and_loads_exactly(tmp_path):
    vae, text = _tiny_parts()
    base, second = _tiny_stage("base", 16, 0), _tiny_stage("tsr", 16, 1, tsr=True)
    ema = {k: v + 1 for k, v in second.state_dict().items()}  # e.g. EMA weights saved instead of the live ones
    folder = save_pipeline(tmp_path / "cascade", vae, text, [(base, None), (second, ema)])

    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == [
        "base/config.yaml", "base/model.safetensors", PIPELINE_FILE,
        "text_encoder/config.yaml", "text_encoder/model.safetensors",
        "tsr/config.yaml", "tsr/model.safetensors",
        "vae/config.yaml", "vae/model.safetensors",
    ]
    for stage_dir in ("base", "tsr"):  # a stage's file holds its denoiser only
        assert all(k.startswith("denoiser.") for k in load_file(str(folder / stage_dir / "model.safetensors")))

    pipe = load_pipeline(folder)
    assert [s.config.name for s in pipe.stages] == ["base", "tsr"]
    for loaded, want in [(pipe.vae, vae.state_dict()), (pipe.text_encoder, text.state_dict()),
                         (pipe.stages[0], base.state_dict()), (pipe.stages[1], ema)]:
        got = loaded.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    x, t = torch.randn(1, 4, 2, 4, 4), torch.tensor([500])
    cond = Cond(text=torch.randn(1, 3, 16), text_mask=torch.ones(1, 3, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(pipe.stages[0](x, t, cond), base.eval()(x, t, cond))


def test_a_failed_export_leaves_the_earlier_one_intact(tmp_path):
    vae, text = _tiny_parts()
    stage = _tiny_stage("base", 16, 0)
    folder = save_pipeline(tmp_path / "export", vae, text, [(stage, None)])
    bad_state = {"denoiser.x": "not a tensor"}
    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises, the old export must survive
        save_pipeline(folder, vae, text, [(stage, bad_state)])
    load_pipeline(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no half-written folder left behind


def test_parts_that_do_not_fit_are_clear_errors(tmp_path):
    vae, text = _tiny_parts()
    with pytest.raises(VidiffError, match="text features of width 32 but the text encoder gives 16"):
        save_pipeline(tmp_path / "p", vae, text, [(_tiny_stage("base", 32, 0), None)])
    stage = _tiny_stage("base", 16, 0)
    with pytest.raises(VidiffError, match="distinct names"):
        save_pipeline(tmp_path / "p", vae, text, [(stage, None), (stage, None)])
    assert not (tmp_path / "p").exists()

    folder = save_pipeline(tmp_path / "p", vae, text, [(stage, None)])
    with pytest.raises(VidiffError, match="holds a diffusion_stage, not a vae"):
        CausalVAE3D.from_pretrained(folder / "base")
    with pytest.raises(VidiffError, match="not a pipeline folder.*single model"):
        load_pipeline(folder / "vae")
    with pytest.raises(VidiffError, match="is not a folder"):
        load_pipeline(tmp_path / "nowhere")
    (folder / PIPELINE_FILE).write_text("task: text_to_video\nstages: [base, ssr]\n")
    with pytest.raises(VidiffError, match="ssr has no config.yaml"):
        load_pipeline(folder)
    (folder / PIPELINE_FILE).write_text("task: audio\n")
    with pytest.raises(VidiffError, match="task 'audio'"):
        load_pipeline(folder)
    cfg = (folder / "base" / "config.yaml").read_text()
    (folder / "base" / "config.yaml").write_text(cfg.replace("model_channels: 16", "model_channels: 32"))
    with pytest.raises(VidiffError, match="do not match config.yaml.*shape mismatches"):
        DiffusionStage.from_pretrained(folder / "base")
