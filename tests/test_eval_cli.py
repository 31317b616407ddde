"""`vidiff eval` end to end on toy-world videos: JSON + summary, saved real statistics, clear errors."""

import json
from pathlib import Path

import pytest
import torch
from cli import run_vidiff

from vidiff.errors import VidiffError
from vidiff.eval.clip_score import TINY_CLIP_CONFIG, load_clip, register_model_config
from vidiff.eval.fvd import FVDProtocol
from vidiff.eval.run import evaluate, generated_videos
from vidiff.toyworld import ToyWorldDataset, generate_dataset
from vidiff.video import write_video

ROOT = Path(__file__).resolve().parents[1]


def _generated(folder: Path, n=6, sidecar=True, seed=7):
    folder.mkdir(parents=True)
    data = ToyWorldDataset(n, num_frames=16, height=32, width=32, seed=seed)
    rows = []
    for i in range(n):
        item = data[i]
        write_video(folder / f"{i:04d}.mp4", item["video"], fps=8)
        rows.append({"file": f"{i:04d}.mp4", "prompt": item["caption"], "seed": i})
    if sidecar:
        # the last video's prompt comes from a NAME.txt instead, the other documented sidecar
        (folder / rows[-1]["file"]).with_suffix(".txt").write_text(rows[-1]["prompt"] + "\n")
        (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    base = tmp_path_factory.mktemp("evalcli")
    manifest = generate_dataset(base / "real", n=8, num_frames=16, height=32, width=32, seed=1)
    gen = _generated(base / "gen")
    cfg = base / "tiny-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    register_model_config("tiny-clip", TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    torch.save(load_clip("tiny-clip", "random").model.state_dict(), base / "tiny-clip.pt")
    return {"base": base, "manifest": manifest, "gen": gen, "cfg": cfg, "clip": base / "tiny-clip.pt"}


def test_cli_writes_json_and_summary_and_reuses_saved_real_stats(toy):
    stats = toy["base"] / "real_stats.npz"
    common = [
        "--generated",
        toy["gen"],
        "--i3d",
        "random",
        "--fvd-resolution",
        "32",
        "--clip-model",
        "tiny-clip",
        "--clip-config",
        toy["cfg"],
        "--clip-weights",
        toy["clip"],
    ]
    r = run_vidiff("eval", *common, "--real", toy["manifest"], "--save-real-stats", stats)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "N generated = 6, N real = 8" in r.stdout and "RANDOM I3D WEIGHTS" in r.stdout
    result = json.loads((toy["gen"] / "eval.json").read_text())
    assert (toy["gen"] / "eval.txt").read_text().strip() == result["summary"]
    assert result["fvd"]["n_real"] == 8 and result["fvd"]["biased"] and result["fvd"]["fvd"] > 0
    assert result["fvd"]["protocol"]["resolution"] == 32 and not result["fvd"]["comparable_to_published"]
    assert result["clipsim"]["n_videos"] == 6 and -1 <= result["clipsim"]["clipsim_mean_cosine"] <= 1
    # the oracle reads true toy-world renders correctly, so a broken wrapper would show here
    assert result["oracle"]["n_videos"] == 6 and result["oracle"]["color_accuracy"] >= 0.8
    assert {v["prompt"] for v in result["oracle"]["per_video"]} >= {
        result["clipsim"]["per_video"][-1]["prompt"]
    }

    out = toy["base"] / "second"
    r2 = run_vidiff(
        "eval",
        "--generated",
        toy["gen"],
        "--real",
        stats,
        "--metrics",
        "fvd",
        "--i3d",
        "random",
        "--fvd-resolution",
        "32",
        "--out",
        out,
    )
    assert r2.returncode == 0, r2.stderr[-2000:]
    again = json.loads((out / "eval.json").read_text())
    assert again["fvd"]["fvd"] == pytest.approx(result["fvd"]["fvd"], rel=1e-9)
    assert "clipsim" not in again and "oracle" not in again


def test_cli_errors_are_one_clear_line(toy, tmp_path):
    r = run_vidiff("eval", "--generated", toy["gen"], "--real", toy["manifest"], "--metrics", "fvd")
    assert r.returncode == 2 and "i3d_torchscript.pt" in r.stderr and "Traceback" not in r.stderr
    r = run_vidiff(
        "eval",
        "--generated",
        toy["gen"],
        "--real",
        toy["base"] / "real_stats.npz",
        "--metrics",
        "fvd",
        "--i3d",
        "random",
        "--fvd-resolution",
        "64",
    )
    assert r.returncode == 2 and "protocol" in r.stderr and "Traceback" not in r.stderr


def test_library_errors_for_bad_input(toy, tmp_path):
    no_prompts = _generated(tmp_path / "noprompts", n=2, sidecar=False)
    with pytest.raises(VidiffError, match="prompts.jsonl"):
        evaluate(no_prompts, metrics=["oracle"], progress=False)
    one = _generated(tmp_path / "one", n=1)
    with pytest.raises(VidiffError, match="at least 2 samples"):
        evaluate(
            one,
            toy["base"] / "real_stats.npz",
            metrics=["fvd"],
            i3d="random",
            protocol=FVDProtocol(resolution=32),
            progress=False,
        )
    with pytest.raises(VidiffError, match="unknown metric"):
        evaluate(toy["gen"], metrics=["fid"], progress=False)
    with pytest.raises(VidiffError, match="needs a real set"):
        evaluate(toy["gen"], metrics=["fvd"], i3d="random", progress=False)
    with pytest.raises(VidiffError, match="does not exist"):
        generated_videos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidiffError, match="no videos"):
        generated_videos(tmp_path / "empty")
