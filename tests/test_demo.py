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
