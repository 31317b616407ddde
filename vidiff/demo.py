"""`vidiff demo`: the whole path on the toy world, on a CPU, with a report at the end.

raw toy videos -> curation (cuts, motion, manifest) -> toy VAE -> latent cache -> base U-Net ->
text-to-video on held-out prompts -> oracle scores -> report. Each step leaves its outputs in
`out_dir` and is skipped when they are already there, so an interrupted demo resumes.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidiff.config import load_config, save_config
from vidiff.report import Report, video_grid

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIRECTIONS = ("left", "right", "up", "down")


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
    holdout_per_motion: int = 3  # (colour, shape) pairs per direction never shown in training
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
    train_prompts_to_score: int = 12
    workers: int = 2


def holdout_triples(seed: int, per_motion: int) -> list[tuple[str, str, str]]:
    """Held-out (colour, shape, direction) triples: no colour or shape is held out twice per direction."""
    from vidiff.toyworld import COLORS, SHAPES

    rng = np.random.default_rng(seed + 17)
    out = []
    for motion in DIRECTIONS:
        colors = list(rng.permutation(list(COLORS)))[:per_motion]
        shapes = list(rng.permutation(list(SHAPES)))
        out += [(str(c), str(shapes[i % len(shapes)]), motion) for i, c in enumerate(colors)]
    return out


def prompt_of(color: str, shape: str, motion: str) -> str:
    return f"a {color} {shape} moving {motion}"


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

    def generate(self, export: Path, prompts: list[str], name: str) -> tuple[list[Path], list[str]]:
        from vidiff.pipelines.text_to_video import generate_videos

        out = self.out / "generated" / name
        expanded = [p for p in prompts for _ in range(self.cfg.seeds_per_prompt)]
        if (out / "prompts.jsonl").is_file():
            records = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
            if [r["prompt"] for r in records] == expanded:
                return [out / r["file"] for r in records], expanded
        paths = generate_videos(export, expanded, out, seed=self.cfg.seed * 1000)
        return paths, expanded

    # ---------------------------------------------------------------- the whole run
    def run(self) -> Path:
        rep = self.report
        raw = self._timed("raw videos", self.make_raw)
        manifest, summary = self._timed("curation", lambda: self.curate(raw))
        vae_dir = self._timed("VAE training", self.train_vae)
        latents = self._timed("latent cache", lambda: self.encode(vae_dir, manifest))
        export = self._timed("base U-Net training", lambda: self.train_base(latents))

        held_videos, held_expanded, held = self._timed(
            "generation (held-out)", lambda: self.generate_and_score(export, self.heldout_prompts(), "heldout"))
        tr_videos, tr_expanded, tr = self._timed(
            "generation (train prompts)", lambda: self.generate_and_score(export, self.train_prompts(), "train"))

        rep.heading("Scores (toy-world oracle)")
        rows = [_score_row("held-out prompts", held), _score_row("training prompts", tr)]
        rep.table(rows, key="oracle")
        rep.text("Held-out prompts name (colour, shape, direction) combinations that no training clip shows; "
                 "each colour, shape and direction appears in training on its own.")
        rep.heading("Generated videos, held-out prompts")
        self._show(held_videos, held["items"], held_expanded, "heldout")
        rep.heading("Generated videos, training prompts")
        self._show(tr_videos, tr["items"], tr_expanded, "train")
        self._curation_section(manifest, summary)
        self._vae_section(vae_dir)
        self._training_section()
        rep.heading("Time per step (this machine)")
        rep.table([{"step": k, "seconds": v} for k, v in self.timings.items()], key="timings")
        rep.record("holdout", self.holdout)
        return rep.write()

    def generate_and_score(self, export: Path, prompts: list[str], name: str) -> tuple[list, list[str], dict]:
        """Generate `seeds_per_prompt` videos per prompt and score them with the toy-world oracle."""
        from vidiff.toyworld import Oracle
        from vidiff.video import read_video

        paths, expanded = self.generate(export, prompts, name)
        videos = [read_video(p) for p in paths]
        return videos, expanded, Oracle().score_batch(videos, expanded)

    def heldout_prompts(self) -> list[str]:
        return [prompt_of(*t) for t in self.holdout]

    def train_prompts(self) -> list[str]:
        from vidiff.toyworld import COLORS, SHAPES

        rng = np.random.default_rng(self.cfg.seed + 29)
        pool = [t for t in itertools.product(COLORS, SHAPES, DIRECTIONS) if t not in set(self.holdout)]
        pick = rng.choice(len(pool), self.cfg.train_prompts_to_score, replace=False)
        return [prompt_of(*pool[i]) for i in pick]

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
        from vidiff.models.vae import CausalVAE3D
        from vidiff.toyworld import ToyWorldDataset

        rep = self.report
        rep.heading("Toy VAE: original (top) and reconstruction (bottom), held-out clips")
        vae = CausalVAE3D.from_pretrained(vae_dir).eval()
        ds = ToyWorldDataset(8, num_frames=self.cfg.clip_frames, height=self.cfg.size, width=self.cfg.size, seed=4242)
        videos = torch.stack([ds[i]["video"] for i in range(len(ds))])
        with torch.no_grad():
            recon = vae.decode(vae.encode(videos).mode()).clamp(-1, 1)
        mse = ((recon - videos) / 2).pow(2).flatten(1).mean(1)
        psnr = float((10 * torch.log10(1 / mse)).mean())
        rep.text(f"PSNR on these held-out clips: {psnr:.1f} dB")
        rep.record("vae_psnr_db", psnr)
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
    return {"prompts": name, "n": s["n"], "colour": s["color"], "shape": s["shape"], "motion": s["motion"],
            "consistency": s["consistency"]}


def run_demo(out_dir: str | Path = "demo_out", seed: int = 0, config: str | None = None, overrides=()) -> Path:
    cfg = load_config(DemoConfig, config, [*overrides, f"seed={seed}"])
    return Demo(out_dir, cfg).run()
