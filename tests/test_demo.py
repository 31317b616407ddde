"""`vidiff demo` end to end at a tiny size: every step runs, the report holds scores, plots and videos, and
it renders in a real browser (headless Chromium)."""

import base64
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """One tiny demo run, shared by this module's tests: (its folder, the command that made it)."""
    out = tmp_path_factory.mktemp("tiny_demo") / "demo"
    args = [
        sys.executable, "-m", "vidiff", "demo", "--out", str(out), "raw_videos=4", "windows_per_clip=1",
        "seeds_per_prompt=1", "train_prompts_to_score=2", "vae_overrides=[train.steps=10,data.num_samples=32]",
        "base_overrides=[train.max_steps=10,train.steps_per_epoch=5,stage.sampling.steps=3,train.compile=false]",
        *(f"{sr}_overrides=[train.max_steps=4,train.steps_per_epoch=2,train.log_every=1,stage.sampling.steps=2]" for sr in ("tsr", "ssr")),
        "i2v_overrides=[train.max_steps=4,train.steps_per_epoch=2,train.log_every=1,stage.sampling.steps=2,train.compile=false]",
        "i2v_stills_per_triple=1",
    ]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    return out, args


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_resumes(tiny_demo, tmp_path):
    demo, args = tiny_demo
    report = json.loads((demo / "report" / "report.json").read_text())
    held, train = report["oracle"]
    assert held["n"] == 12 and train["n"] == 2
    assert all(0.0 <= held[k] <= 1.0 for k in ("colour", "shape", "motion"))
    media = demo / "report" / "media"
    assert len(list(media.glob("heldout_000.*"))) == 1
    assert all((media / f"{name}.png").is_file() for name in ("scores", "training_vae", "training_base", "timings"))
    assert [r["model"] for r in report["training"]] == ["VAE", "base DiT", "TSR stage", "SSR stage", "I2V stage"]
    # image-to-video: the I2V stage fine-tuned from the base stage animates one held-out still per triple
    assert len(list(media.glob("i2v_*.*"))) == 12 and report["i2v"]["videos"] == 12
    assert (demo / "i2v" / "export" / "i2v" / "model.safetensors").is_file()
    # the cascade: held-out prompts through base -> TSR -> SSR, each final video beside its base video
    assert len(list(media.glob("cascade_*.*"))) == 12
    assert 0 < report["cascade"]["psnr_db"] < 100 and set(report["cascade"]["oracle"]) == {"base", "final", "final_on_base_grid"}
    assert [p.name for p in sorted((demo / "cascade").iterdir())] == ["base", "pipeline.yaml", "ssr", "text_encoder",
                                                                      "tsr", "vae"]
    assert report["host"]["matmul_gflops"] > 0 and report["host"]["conv_step_ms"] > 0  # this machine's reference speed
    assert (demo / "report" / "index.html").read_text().count("<figure>") >= 14
    # a second run finds every step's outputs and skips the training
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("base", "tsr", "ssr", "i2v"):
        trained = [p for p in (demo / stage / "logs").glob("version_*/metrics.csv") if "train/loss" in p.read_text()]
        assert [p.parent.name for p in trained] == ["version_0"]  # the rerun trained no step
    # scripts/base_stage_experiment.py reruns only the base-stage step on the demo's latents and scores it the same way
    experiment = [
        sys.executable, str(ROOT / "scripts/base_stage_experiment.py"), "--latents", str(demo / "latents"),
        "--out", str(tmp_path / "exp"), "--seeds-per-prompt", "1",
        "train.max_steps=3", "train.steps_per_epoch=3", "stage.sampling.steps=2", "train.compile=false",
    ]
    ran = subprocess.run(experiment, cwd=ROOT, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads((tmp_path / "exp" / "result.json").read_text())
    assert result["heldout"]["n"] == 12 and result["train"]["n"] == 12
    assert (tmp_path / "exp" / "base" / "export" / "base" / "model.safetensors").is_file()
    bad = subprocess.run([*experiment[:3], str(tmp_path), "--out", str(tmp_path / "bad")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "not a latent cache" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium and its driver: apt-get install chromium chromium-driver (.ci/run installs them)",
)
def test_tiny_demo_report_renders_in_chromium(tiny_demo, monkeypatch):
    """Headless Chromium opens the report: every image decodes, every video has data, the console stays
    clean, nothing outside the report folder loads, and a full-page screenshot lands beside index.html."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    report = tiny_demo[0] / "report"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get((report / "index.html").as_uri())  # returns after the load event: images are done
        images = driver.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        assert images and all(ok for _, ok in images), [src for src, ok in images if not ok]
        videos = "return [...document.querySelectorAll('video')].map(v => [v.getAttribute('src'), v.readyState, v.error && v.error.code])"
        deadline = time.monotonic() + 30
        while any(state < 2 and not error for _, state, error in driver.execute_script(videos)) and time.monotonic() < deadline:
            time.sleep(0.25)
        states = driver.execute_script(videos)
        assert all(state >= 2 for _, state, _ in states), [v for v in states if v[1] < 2]  # HAVE_CURRENT_DATA
        shown = {Path(src).stem for src, _ in images} | {Path(src).stem for src, _, _ in states}
        assert {"scores", "training_vae", "training_base", "timings", "heldout_000", "train_000"} <= shown
        assert len(images) + len(states) >= 4 + 12 + 2 + 2  # plots, held-out and training videos, curation, VAE
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert all(url.startswith("file://") for url in loaded), loaded  # self-contained: nothing fetched
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")  # no sideways scroll
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors

        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        })
        path = report / "screenshot.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"screenshot of the report: {path}")
        assert path.stat().st_size > 50_000 and size["height"] > 2000
    finally:
        driver.quit()


def test_the_demo_picks_the_base_backbone_by_name(tmp_path, capsys):
    from vidiff.cli import main
    from vidiff.config import load_config
    from vidiff.demo import Demo, DemoConfig

    dit = Demo(tmp_path / "d", load_config(DemoConfig))  # the default
    assert dit.base_config.endswith("configs/toy/base_dit.yaml") and dit.base_name == "base DiT"
    unet = Demo(tmp_path / "u", load_config(DemoConfig, None, ["denoiser=unet"]))
    assert unet.base_config.endswith("configs/toy/base_unet.yaml") and unet.base_name == "base U-Net"
    assert dit.cfg.i2v and not unet.cfg.i2v  # the toy I2V stage fine-tunes the DiT
    assert main(["demo", "--out", str(tmp_path / "bad"), "denoiser=unet", "i2v=true"]) == 2
    assert "the toy I2V stage fine-tunes a DiT base stage" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "bad"), "denoiser=vit"]) == 2
    assert "denoiser='vit' has no toy config; use unet or dit" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything was written
