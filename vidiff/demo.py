"""`vidiff demo`: the whole path on the toy world, on a CPU, with a report at the end.

raw toy videos -> curation (cuts, motion, manifest) -> toy VAE -> latent cache -> base U-Net ->
text-to-video on held-out prompts -> oracle scores -> report. Each step leaves its outputs in
`out_dir` and is skipped when they are already there, so an interrupted demo resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidiff.config import load_config, save_config
from vidiff.report import Report, video_grid
from vidiff.toyworld.prompts import (
    HOLDOUT_PER_MOTION,
    TRAIN_PROMPTS_TO_SCORE,
    heldout_prompts,
    holdout_triples,
    train_prompts,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class DemoConfig:
    seed: int = 0
    raw_videos: int = 80
    scenes_per_video: int = 8
    raw_size: int = 64
    # objects' diameter range as a share of the frame side (8-13 px at 32 px: 2-3 latent positions), and
    # scenes short enough that objects that large still have room to move
    object_size: tuple[float, float] = (0.28, 0.42)
    scene_frames: tuple[int, int] = (18, 30)
    holdout_per_motion: int = HOLDOUT_PER_MOTION  # (colour, shape) pairs per direction never shown in training
    vae_config: str = str(CONFIGS / "toy" / "vae.yaml")
    # CPU budget (README has the measured minutes): 2700 of the toy VAE config's 3000 steps (its noise-augmented
    # decoding made each step ~7 % slower), and 2400 of the U-Net config's 3000 steps
    vae_overrides: list[str] = field(default_factory=lambda: ["train.steps=2700"])
    base_config: str = str(CONFIGS / "toy" / "base_unet.yaml")
    base_overrides: list[str] = field(default_factory=lambda: ["train.max_steps=2400"])
    clip_frames: int = 9
    clip_stride: int = 2  # raw videos run at 12 fps; every 2nd frame gives clearer motion per clip
    size: int = 32
    windows_per_clip: int = 4
    image_share: float = 0.2  # share of image (T == 1) items in the latent cache
    seeds_per_prompt: int = 2
    train_prompts_to_score: int = TRAIN_PROMPTS_TO_SCORE
    workers: int = 2


class Demo:
    def __init__(self, out_dir: str | Path, config: DemoConfig):
        self.out = Path(out_dir)
        self.cfg = config
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(config, self.out / "demo.yaml")
        self.holdout = holdout_triples(config.seed, config.holdout_per_motion)
        self.timings: dict[str, float] = {}
        self.report = Report(self.out / "report", "vidiff demo: toy world, raw video to generated video")

    def _timed(self, name: str, fn):
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        print(f"[demo] {name}: {self.timings[name]} s", flush=True)
        return result

    # ---------------------------------------------------------------- steps
    def make_raw(self) -> Path:
        from vidiff.toyworld import write_raw_video

        raw = self.out / "raw"
        raw.mkdir(exist_ok=True)
        c = self.cfg
        for i in range(c.raw_videos):
            path = raw / f"raw_{i:03d}.mp4"
            if path.with_suffix(".json").is_file():
                continue
            write_raw_video(
                path, seed=c.seed * 10_000 + i, num_scenes=c.scenes_per_video, height=c.raw_size,
                width=c.raw_size, holdout=set(self.holdout),
                object_size=tuple(c.object_size), scene_frames=tuple(c.scene_frames),
            )
        return raw

    def curate(self, raw: Path) -> tuple[Path, dict]:
        from data_tools.curate import curate

        curated = self.out / "curated"
        summary = curate([str(raw)], curated, workers=self.cfg.workers)
        return curated / "manifest.parquet", summary

    def train_vae(self) -> Path:
        from vidiff.training.vae_module import VAETrainConfig, train_vae

        vae_cfg = load_config(VAETrainConfig, self.cfg.vae_config, [*self.cfg.vae_overrides, f"out_dir={self.out / 'vae'}"])
        return train_vae(vae_cfg)

    def encode(self, vae_dir: Path, manifest: Path) -> Path:
        from vidiff.training.latent_cache import encode_manifest

        c = self.cfg
        return encode_manifest(
            vae_dir, manifest, self.out / "latents", num_frames=c.clip_frames, stride=c.clip_stride,
            size=(c.size, c.size), windows_per_clip=c.windows_per_clip, image_share=c.image_share, seed=c.seed,
        )

    def train_base(self, latents: Path) -> Path:
        from vidiff.training.train_stage import TrainRunConfig, train_stage

        run = load_config(
            TrainRunConfig, self.cfg.base_config,
            [*self.cfg.base_overrides, f"data.latents={latents}", f"out_dir={self.out / 'base'}"],
        )
        return train_stage(run)

    # ---------------------------------------------------------------- the whole run
    def run(self) -> Path:
        rep = self.report
        raw = self._timed("raw videos", self.make_raw)
        manifest, summary = self._timed("curation", lambda: self.curate(raw))
        vae_dir = self._timed("VAE training", self.train_vae)
        latents = self._timed("latent cache", lambda: self.encode(vae_dir, manifest))
        export = self._timed("base U-Net training", lambda: self.train_base(latents))

        held_prompts = heldout_prompts(self.holdout)
        tr_prompts = train_prompts(self.cfg.seed, self.holdout, self.cfg.train_prompts_to_score)
        held_videos, held_expanded, held = self._timed(
            "generation (held-out)", lambda: self.generate_and_score(export, held_prompts, "heldout"))
        tr_videos, tr_expanded, tr = self._timed(
            "generation (train prompts)", lambda: self.generate_and_score(export, tr_prompts, "train"))

        rep.heading("Scores (toy-world oracle)")
        rows = [_score_row("held-out prompts", held), _score_row("training prompts", tr)]
        rep.table(rows, key="oracle")
        rep.text("Held-out prompts name (colour, shape, direction) combinations that no training clip shows; "
                 "each colour, shape and direction appears in training on its own.")
        rep.heading("Generated videos, held-out prompts")
        self._show(held_videos, held["per_video"], held_expanded, "heldout")
        rep.heading("Generated videos, training prompts")
        self._show(tr_videos, tr["per_video"], tr_expanded, "train")
        self._curation_section(manifest, summary)
        self._vae_section(vae_dir)
        self._training_section()
        rep.heading("Time per step (this machine)")
        rep.table([{"step": k, "seconds": v} for k, v in self.timings.items()], key="timings")
        rep.record("holdout", self.holdout)
        return rep.write()

    def generate_and_score(self, export: Path, prompts: list[str], name: str) -> tuple[list, list[str], dict]:
        """`seeds_per_prompt` videos per prompt in generated/NAME, scored with the toy-world oracle."""
        from vidiff.eval.toy_generation import generate_and_score

        c = self.cfg
        return generate_and_score(export, prompts, self.out / "generated" / name, c.seeds_per_prompt, seed=c.seed * 1000)

    def _show(self, videos, items, prompts, name) -> None:
        from vidiff.toyworld import ATTRIBUTES

        for i, (video, item, prompt) in enumerate(zip(videos, items, prompts, strict=True)):
            verdict = ", ".join(
                f"{k} {'ok' if item[k] else 'saw ' + str(item['predicted'][k])}" for k in ATTRIBUTES
            )
            self.report.video(f"{name}_{i:03d}", video, f"{prompt} — {verdict}")

    def _curation_section(self, manifest: Path, summary: dict) -> None:
        from vidiff.manifest import read_manifest
        from vidiff.video import read_video

        rep = self.report
        rep.heading("Curation of the raw toy videos")
        rep.preformatted(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}, indent=2, default=str))
        rows = [r for r in read_manifest(manifest) if r["status"] == "kept"][:16]
        clips = [read_video(r["source"], r["start_frame"], min(r["end_frame"], r["start_frame"] + 24), size=(32, 32)) for r in rows]
        if clips:
            rep.video("curated_clips", video_grid(clips, ncols=8), "kept clips (first 2 s each)", scale=3)

    def _vae_section(self, vae_dir: Path) -> None:
        from vidiff.eval.psnr import psnr
        from vidiff.models.vae import CausalVAE3D
        from vidiff.toyworld import ToyWorldDataset

        rep = self.report
        rep.heading("Toy VAE: original (top) and reconstruction (bottom), held-out clips")
        vae = CausalVAE3D.from_pretrained(vae_dir).eval()
        ds = ToyWorldDataset(8, num_frames=self.cfg.clip_frames, height=self.cfg.size, width=self.cfg.size, seed=4242)
        videos = torch.stack([ds[i]["video"] for i in range(len(ds))])
        with torch.no_grad():
            recon = vae.decode(vae.encode(videos).mode()).clamp(-1, 1)
        db = float(psnr(recon, videos).mean())
        rep.text(f"PSNR on these held-out clips: {db:.1f} dB")
        rep.record("vae_psnr_db", db)
        rep.video("vae_recon", video_grid(list(videos) + list(recon), ncols=8), "top: original, bottom: VAE")

    def _training_section(self) -> None:
        import csv

        rep = self.report
        logs = sorted((self.out / "base" / "logs").glob("version_*/metrics.csv"))
        if not logs:
            return
        with open(logs[-1]) as f:
            rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
        if not rows:
            return
        first, last = float(rows[0]["train/loss"]), float(rows[-1]["train/loss"])
        seconds = self.timings.get("base U-Net training", float("nan"))
        steps = int(float(rows[-1]["step"])) + 1
        rep.heading("Base U-Net training")
        rep.table([{"steps": steps, "seconds": seconds, "steps/s": steps / seconds, "first loss": first, "last loss": last}],
                  key="base_training")


def _score_row(name: str, s: dict) -> dict:
    return {"prompts": name, "n": s["n_videos"], "colour": s["color_accuracy"], "shape": s["shape_accuracy"],
            "motion": s["motion_accuracy"], "consistency": s["consistency"]}


def run_demo(out_dir: str | Path = "demo_out", seed: int = 0, config: str | None = None, overrides=()) -> Path:
    cfg = load_config(DemoConfig, config, [*overrides, f"seed={seed}"])
    return Demo(out_dir, cfg).run()
