"""`vidiff demo` end to end at a tiny size: every step runs and the report holds scores and videos."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_resumes(tmp_path):
    args = [
        sys.executable, "-m", "vidiff", "demo", "--out", str(tmp_path / "demo"), "raw_videos=4", "windows_per_clip=1",
        "seeds_per_prompt=1", "train_prompts_to_score=2", "vae_overrides=[train.steps=10,data.num_samples=32]",
        "base_overrides=[train.max_steps=10,train.steps_per_epoch=5,stage.sampling.steps=3]",
    ]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    held, train = report["oracle"]
    assert held["n"] == 12 and train["n"] == 2
    assert all(0.0 <= held[k] <= 1.0 for k in ("colour", "shape", "motion"))
    assert (tmp_path / "demo" / "report" / "media" / "heldout_000.gif").is_file()
    assert (tmp_path / "demo" / "report" / "index.html").read_text().count("<figure>") >= 14
    # a second run finds every step's outputs and skips the training
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    trained = [p for p in (tmp_path / "demo" / "base" / "logs").glob("version_*/metrics.csv") if "train/loss" in p.read_text()]
    assert [p.parent.name for p in trained] == ["version_0"]  # the rerun trained no step
    # scripts/unet_experiment.py reruns only the U-Net step on the demo's latents and scores it the same way
    experiment = [
        sys.executable, str(ROOT / "scripts/unet_experiment.py"), "--latents", str(tmp_path / "demo" / "latents"),
        "--out", str(tmp_path / "exp"), "--seeds-per-prompt", "1",
        "train.max_steps=3", "train.steps_per_epoch=3", "stage.sampling.steps=2",
    ]
    ran = subprocess.run(experiment, cwd=ROOT, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads((tmp_path / "exp" / "result.json").read_text())
    assert result["heldout"]["n"] == 12 and result["train"]["n"] == 12
    assert (tmp_path / "exp" / "base" / "export" / "base" / "model.safetensors").is_file()
    bad = subprocess.run([*experiment[:3], str(tmp_path), "--out", str(tmp_path / "bad")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "not a latent cache" in bad.stderr
