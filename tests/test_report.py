"""The demo report without the demo: a fake run folder (Lightning CSV logs, saved configs) and fake oracle
scores give the plot PNGs, an index.html that shows them, and report.json."""

import csv
import json
import math

import torch
from PIL import Image

from vidiff.demo import Demo, DemoConfig
from vidiff.plots import read_metrics
from vidiff.toyworld.oracle import summarize_scores

PNG = b"\x89PNG\r\n\x1a\n"


def _write_log(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _fake_run(run):
    """VAE logs in one version; the base stage logs in two (a resume that re-logged steps 39 and 49)."""
    vae_rows = [[0, 0.5 * math.exp(-s / 80) + 0.01, 10 + s / 20, s, 1e-3, 0.3, 0.5 * math.exp(-s / 80), 10 + s / 20]
                for s in range(9, 300, 10)]
    _write_log(run / "vae/logs/version_0/metrics.csv",
               ["epoch", "loss", "psnr", "step", "train/kl", "train/l1", "train/mse", "train/psnr"], vae_rows)
    _write_log(run / "base/logs/version_0/metrics.csv", ["epoch", "step", "train/loss", "train/loss_t3"],
               [[0, s, 1.0 - s / 100, 1.0 - s / 100] for s in range(9, 50, 10)] + [[0, 44, "", 0.4]])
    _write_log(run / "base/logs/version_10/metrics.csv", ["epoch", "step", "train/loss", "train/loss_t1"],
               [[1, s, 0.5 - s / 1000, 0.45] for s in range(39, 100, 10)])
    (run / "vae").mkdir(parents=True, exist_ok=True)
    (run / "vae/train_config.yaml").write_text("train:\n  steps: 300\n  lr: 0.002\n")
    (run / "base/train.yaml").write_text("train:\n  max_steps: 100\nstage:\n  name: base\n")
    (run / "vae/summary.json").write_text(json.dumps({"heldout_psnr_db": 24.5}))


def _fake_scores(n, right):
    rows = [{"file": f"{i}.mp4", "prompt": "a red circle moving left", "consistency": 0.8,
             "color": i < right, "shape": True, "motion": i % 2 == 0 if i else None,
             "predicted": {"color": "red" if i < right else "blue", "shape": "circle", "motion": "left"}}
            for i in range(n)]
    return summarize_scores(rows)


def test_read_metrics_joins_resumed_versions_by_step(tmp_path):
    _fake_run(tmp_path)
    base = read_metrics(tmp_path / "base/logs")
    assert list(base) == ["train/loss", "train/loss_t3", "train/loss_t1"]  # epoch and step are not metrics
    loss = dict(base["train/loss"])
    assert sorted(loss) == list(range(9, 100, 10))  # version_10 is read after version_0, not before it
    assert loss[39] == 0.5 - 39 / 1000 and loss[49] == 0.5 - 49 / 1000  # the resumed run's value replaces the first run's at the same step
    assert dict(base["train/loss_t3"])[44] == 0.4  # a row that logged only some metrics
    assert read_metrics(tmp_path / "nowhere") == {}


def test_demo_report_sections_write_plots_and_page(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    demo = Demo(run, DemoConfig(seed=3))
    demo.timings = {"raw videos": 1.5, "VAE training": 300.0, "base DiT training": 100.0}
    demo.host = {"matmul_gflops": 158.6, "matmul_n": 2048, "dtype": "fp32", "conv_step_ms": 41.2, "threads": 2}
    held, train = _fake_scores(4, right=3), _fake_scores(2, right=2)
    demo.scores_section(held, train)
    demo._show([torch.zeros(3, 2, 8, 8)] * 4, held["per_video"], [r["prompt"] for r in held["per_video"]], "heldout")
    demo.training_section()
    demo.timings_section()
    demo.config_section()
    index = demo.report.write()

    page = index.read_text()
    media = run / "report" / "media"
    for name in ("scores", "training_vae", "training_base", "timings"):
        png = media / f"{name}.png"
        assert png.read_bytes()[:8] == PNG, name
        with Image.open(png) as im:
            assert im.width >= 300 and im.height >= 150, (name, im.size)
        assert f'src="media/{name}.png"' in page
    video = media / f"heldout_000.{demo.report.video_format}"
    assert video.is_file() and f'src="media/{video.name}"' in page
    assert "colour ✗ saw blue" in page and "colour ✓" in page  # the oracle's reading under each video
    assert "seed: 3" in page and "steps: 300" in page and "name: base" in page  # demo, VAE and base configs
    assert "24.5 dB" in page
    assert "host: 158.6 GFLOP/s large matmul (2048^3 fp32, 2 threads), conv step 41.2 ms" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained

    report = json.loads((run / "report" / "report.json").read_text())
    held_row, train_row = report["oracle"]
    assert (held_row["n"], held_row["colour"], train_row["colour"]) == (4, 0.75, 1.0)
    assert [(r["model"], r["steps"]) for r in report["training"]] == [("VAE", 300), ("base DiT", 100)]
    assert report["base_training"][0]["steps/s"] == 1.0
    assert report["timings"] == [{"step": k, "seconds": v} for k, v in demo.timings.items()]
    assert report["host"] == demo.host
