"""Toy FVD (vidiff.eval.toy_fvd) at tiny size: feature shapes, distances that see a changed colour, the
cached classifier, `vidiff eval --metrics fvd_toy` end to end, and clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import run_vidiff
from safetensors.torch import load_file, save_file

from vidiff.errors import VidiffError
from vidiff.eval import toy_fvd as tf
from vidiff.eval.frechet import GaussianStats
from vidiff.eval.run import evaluate
from vidiff.toyworld import ToyWorldDataset, sample_spec
from vidiff.video import write_video

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache."""
    monkeypatch.setenv("VIDIFF_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("toyclf") / "tiny"
    model = tf.train_toy_classifier(tf.tiny_config(), folder, log=None)
    return folder, model


def _clips(n, seed, colors=None, frames=9, size=32):
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng, colors=colors) for _ in range(n)]
    data = ToyWorldDataset(n, frames, size, size, seed=seed, specs=specs)
    return [data[i]["video"] for i in range(n)]


def _write(folder: Path, clips) -> Path:
    folder.mkdir(parents=True)
    for i, clip in enumerate(clips):
        write_video(folder / f"{i:04d}.mp4", clip, fps=8)
    return folder


def test_features_have_the_documented_shape_for_any_clip_size():
    cfg = tf.tiny_config()
    model = tf.ToyVideoClassifier(cfg).eval()
    with torch.no_grad():
        assert model.features(torch.zeros(2, 3, 9, 32, 32)).shape == (2, cfg.feature_dim)
        logits = model(torch.zeros(2, 3, 5, 24, 40))  # global pooling: other T, H, W
    assert {k: v.shape for k, v in logits.items()} == {"color": (2, 6), "shape": (2, 3), "motion": (2, 5)}
    assert (
        tf.ToyVideoClassifierConfig().feature_dim == 64
    )  # the default: ~70 videos give a full-rank covariance
    # the protocol takes the first `frames` frames and resizes to `size`
    feats = tf.toy_features([torch.zeros(3, 16, 64, 64), torch.zeros(3, 9, 32, 32)], model)
    assert feats.shape == (2, cfg.feature_dim) and feats.dtype == np.float64
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-6)
    with pytest.raises(VidiffError, match="has 4 frames but toy FVD takes the first 9"):
        tf.toy_features([torch.zeros(3, 4, 32, 32)], model)
    with pytest.raises(VidiffError, match=r"\[3, T, H, W\]"):
        tf.toy_features([torch.zeros(1, 9, 32, 32)], model)


def test_halve_chroma_keeps_grey_and_blurs_colour_edges():
    grey = torch.full((1, 3, 2, 8, 8), 0.3)
    torch.testing.assert_close(tf.halve_chroma(grey), grey)
    red = -torch.ones(1, 3, 1, 8, 8)
    red[:, 0, :, :, :3] = 1.0  # a red stripe 3 pixels wide: its right edge falls inside a 2x2 block
    out = tf.halve_chroma(red)
    assert out.shape == red.shape and (out - red).abs().max() > 0.1


def test_distance_is_zero_against_itself_and_grows_with_a_changed_colour(tiny):
    _, model = tiny
    red_a, red_b, blue = _clips(24, 1, ["red"]), _clips(24, 2, ["red"]), _clips(24, 3, ["blue"])
    same = tf.toy_fvd(red_a, red_a, classifier=model)
    assert same["fvd_toy"] == pytest.approx(0.0, abs=1e-6)
    near = tf.toy_fvd(red_a, red_b, classifier=model)["fvd_toy"]
    far = tf.toy_fvd(red_a, blue, classifier=model)
    assert 0 < near < far["fvd_toy"]
    assert far["n_generated"] == far["n_real"] == 24 and far["feature_dim"] == 16 and not far["biased"]
    assert far["protocol"]["num_frames"] == 9 and far["classifier"]["fingerprint"] == model.fingerprint
    few = tf.toy_fvd(red_a[:8], blue, classifier=model)
    assert few["biased"] and "below the feature dimension" in few["notes"][0]


def test_toyworld_real_set_and_saved_statistics(tiny, tmp_path):
    folder, model = tiny
    assert tf.parse_toyworld("toyworld:12") == 12 and tf.parse_toyworld("real/") is None
    for bad in ("toyworld:", "toyworld:x", "toyworld:1"):
        with pytest.raises(VidiffError, match="toyworld:N with N >= 2"):
            tf.parse_toyworld(bad)
    stats, label = tf.real_toy_stats("toyworld:12", model)
    assert stats.n == 12 and "seed 9102" in label and "mp4" in label
    again, _ = tf.real_toy_stats("toyworld:12", model)  # fixed seed: the same clips
    np.testing.assert_allclose(again.mean, stats.mean)
    gen = _clips(10, 5)
    direct = tf.toy_fvd(gen, "toyworld:12", classifier=folder)
    saved = stats.save(tmp_path / "toy_real.npz")
    assert tf.toy_fvd(gen, saved, classifier=model)["fvd_toy"] == pytest.approx(direct["fvd_toy"], rel=1e-9)
    other = tf.train_toy_classifier(tf.tiny_config(), None, log=None)
    other.fingerprint = "another"
    with pytest.raises(VidiffError, match="same classifier"):
        tf.toy_fvd(gen, saved, classifier=other)
    GaussianStats(stats.mean, stats.cov, stats.n, {"metric": "fvd"}).save(tmp_path / "i3d.npz")
    with pytest.raises(VidiffError, match="not toy-FVD ones"):
        tf.toy_fvd(gen, tmp_path / "i3d.npz", classifier=model)


def test_cache_trains_once_then_loads_and_retrains_a_damaged_entry(tmp_path):
    cfg = tf.tiny_config()
    where = tf.default_model_dir(cfg)
    assert where == tmp_path / "cache" / "toy_fvd" / tf.settings_hash(cfg)
    assert tf.settings_hash(tf.tiny_config()) == tf.settings_hash(cfg)
    changed = tf.tiny_config()
    changed.train.steps += 1
    assert tf.settings_hash(changed) != tf.settings_hash(cfg)

    logs = []
    first = tf.load_or_train_classifier(config=cfg, log=logs.append)
    assert any("training" in line for line in logs) and (where / "config.yaml").is_file()
    assert json.loads((where / tf.SUMMARY_FILE).read_text())["settings_hash"] == tf.settings_hash(cfg)
    logs.clear()
    second = tf.load_or_train_classifier(config=cfg, log=logs.append)
    assert logs == [] and second.fingerprint == first.fingerprint and second.source == str(where)
    for k, v in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[k], v, rtol=0, atol=0)
    assert second.summary["heldout_accuracy"].keys() == {"color", "shape", "motion"}

    (where / "model.safetensors").write_bytes(b"not safetensors")
    third = tf.load_or_train_classifier(config=cfg, log=logs.append)
    assert any("unusable" in line and "retraining" in line for line in logs)
    assert load_file(str(where / "model.safetensors")).keys() == first.state_dict().keys()
    assert third.fingerprint == first.fingerprint  # deterministic training: the same weights again


def test_an_explicit_folder_is_trained_into_when_empty_and_an_error_when_damaged(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    model = tf.load_or_train_classifier(folder, tf.tiny_config(), log=None)
    assert model.source == str(folder) and (folder / "model.safetensors").is_file()
    assert tf.load_or_train_classifier(folder, log=None).config.feature_dim == 16  # loads its own settings
    (folder / "config.yaml").write_text("widths: [oops\n")
    with pytest.raises(VidiffError, match="(?s)is damaged.*Delete it"):
        tf.load_or_train_classifier(folder, log=None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VidiffError, match="is a file"):
        tf.load_or_train_classifier(tmp_path / "file", log=None)
    weights = folder / "model.safetensors"
    weights.unlink()
    (folder / "config.yaml").unlink()
    model.save_pretrained(folder)
    save_file(load_file(str(weights)), str(weights), metadata={"vidiff_kind": "vae"})
    with pytest.raises(VidiffError, match="holds a vae, not a toy_video_classifier"):
        tf.load_toy_classifier(folder)


def test_evaluate_fvd_toy_on_folders_and_bad_input(tiny, tmp_path):
    folder, _ = tiny
    gen = _write(tmp_path / "gen", _clips(6, 11))
    real = _write(tmp_path / "real", _clips(8, 12, frames=12))
    result = evaluate(gen, real, ["fvd_toy"], toy_fvd_model=folder, progress=False)
    f = result["fvd_toy"]
    assert f["n_generated"] == 6 and f["n_real"] == 8 and f["real"] == str(real) and f["fvd_toy"] > 0
    assert "FVD-toy" in result["summary"] and "never with FVD" in result["summary"]
    with pytest.raises(VidiffError, match="fvd_toy"):
        evaluate(gen, real, ["fid"], progress=False)
    with pytest.raises(VidiffError, match="toyworld:N"):
        evaluate(gen, None, ["fvd_toy"], toy_fvd_model=folder, progress=False)
    with pytest.raises(VidiffError, match="for fvd_toy only"):
        evaluate(gen, "toyworld:8", ["fvd"], i3d="random", progress=False)
    with pytest.raises(VidiffError, match="N >= 2"):
        evaluate(gen, "toyworld:many", ["fvd_toy"], toy_fvd_model=folder, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidiffError, match="no videos"):
        evaluate(tmp_path / "empty", "toyworld:8", ["fvd_toy"], toy_fvd_model=folder, progress=False)


def _vidiff(*args, cache):
    return run_vidiff(*args, VIDIFF_CACHE=str(cache))


def test_cli_fvd_toy_end_to_end_and_its_errors(tiny, tmp_path):
    folder, _ = tiny
    gen = _write(tmp_path / "gen", _clips(6, 21))
    out = tmp_path / "out"
    r = _vidiff(
        "eval",
        "--generated",
        gen,
        "--real",
        "toyworld:10",
        "--metrics",
        "fvd_toy",
        "--toy-fvd-model",
        folder,
        "--out",
        out,
        cache=tmp_path / "cache",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FVD-toy" in r.stdout and "N generated = 6, N real = 10, 16-d toy-classifier features" in r.stdout
    result = json.loads((out / "eval.json").read_text())
    assert result["metrics"] == ["fvd_toy"] and result["fvd_toy"]["fvd_toy"] > 0
    assert result["fvd_toy"]["classifier"]["source"] == str(folder)
    assert not (tmp_path / "cache").exists()  # an explicit classifier folder leaves the cache alone

    r = _vidiff(
        "eval", "--generated", gen, "--real", "toyworld:10", "--metrics", "fvd,fvd_tiy", cache=tmp_path / "c"
    )
    assert r.returncode == 2 and "fvd_toy" in r.stderr and "Traceback" not in r.stderr
