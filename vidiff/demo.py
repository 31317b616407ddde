"""`vidiff demo`: the whole path on the toy world, on a CPU, with a report at the end.

raw toy videos -> curation (cuts, motion, manifest) -> toy VAE -> latent cache -> base DiT (or U-Net) ->
text-to-video on held-out prompts -> oracle scores -> TSR and SSR stages -> the cascade on held-out prompts, its
final videos against the base stage's -> an image-to-video stage fine-tuned from the base, animating held-out stills
-> report. Each step leaves its outputs in
`out_dir` and is skipped when they are already there, so an interrupted demo resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidiff.config import load_config, save_config
from vidiff.errors import ConfigError
from vidiff.hostspeed import format_host_reference, host_reference
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
    seed: int = 0  # seeds the raw videos, the held-out split, training and generation
    raw_videos: int = 80  # toy raw videos to write and curate
    scenes_per_video: int = 8  # scenes per raw video, joined by cuts, cross-fades and fades
    raw_size: int = 64  # raw video height and width in pixels
    # objects' diameter range as a share of the frame side (2-3 latent positions at 32 px), and scenes
    # short enough that objects that large still have room to move
    object_size: tuple[float, float] = (0.28, 0.42)
    scene_frames: tuple[int, int] = (18, 30)  # range of a scene's length in frames
    holdout_per_motion: int = HOLDOUT_PER_MOTION  # (colour, shape) pairs per direction never shown in training
    vae_config: str = str(CONFIGS / "toy" / "vae.yaml")  # the VAE's training config
    # fewer steps than the toy config's own, to keep the whole demo (cascade and I2V stage) near 35 CPU minutes (measured:
    # docs/experiments/toy-demo.md)
    vae_overrides: list[str] = field(default_factory=lambda: ["train.steps=2700"])
    # the base stage's backbone: "dit" or "unet" (picks configs/toy/base_<denoiser>.yaml); the DiT meets every
    # held-out target in the demo's minutes, the U-Net not shape (docs/experiments/toy-demo.md)
    denoiser: str = "dit"
    base_config: str | None = None  # the base stage's training config; None: the toy config of `denoiser`
    # key=value on base_config; its train.max_steps is the demo's budget (toy U-Net 2400 steps, toy DiT 4000:
    # about 10 minutes each on a 2-core CPU, docs/experiments/toy-demo.md)
    base_overrides: list[str] = field(default_factory=list)
    # the cascade after the base stage: a TSR stage (2x the frames: 17 at 12 fps) and an SSR stage (2x the pixels:
    # 64 px), trained on the same curated clips, then held-out videos generated through all three stages; false:
    # the base stage alone. Their steps are the demo's budget for them (docs/experiments/toy-demo.md).
    cascade: bool = True
    tsr_config: str = str(CONFIGS / "toy" / "tsr.yaml")  # the TSR stage's training config
    tsr_overrides: list[str] = field(default_factory=lambda: ["train.max_steps=600"])  # key=value on tsr_config
    ssr_config: str = str(CONFIGS / "toy" / "ssr.yaml")  # the SSR stage's training config
    ssr_overrides: list[str] = field(default_factory=lambda: ["train.max_steps=500"])  # key=value on ssr_config
    # image-to-video: an I2V stage fine-tuned from the base stage (its new input channels start at zero), then
    # animating fresh first frames of held-out (colour, shape, direction) clips with their captions; false: skipped;
    # null: on when the base stage is the toy DiT, which the toy I2V config fine-tunes (off for denoiser=unet).
    # Its steps are the demo's budget for it (docs/experiments/toy-demo.md)
    i2v: bool | None = None
    i2v_config: str = str(CONFIGS / "toy" / "i2v.yaml")  # the I2V stage's training config (a DiT: a DiT base stage's)
    i2v_overrides: list[str] = field(default_factory=lambda: ["train.max_steps=3000"])  # key=value on i2v_config
    i2v_stills_per_triple: int = 6  # held-out stills animated per held-out triple (72 videos)
    clip_frames: int = 9  # frames per training window (1 + 4k for the toy VAE)
    clip_stride: int = 2  # raw videos run at 12 fps; every 2nd frame gives clearer motion per clip
    size: int = 32  # training and generation frame size in pixels
    windows_per_clip: int = 4  # training windows taken from each curated clip
    image_share: float = 0.2  # share of image (T == 1) items in the latent cache
    seeds_per_prompt: int = 2  # videos generated per prompt (each scored by the oracle)
    train_prompts_to_score: int = TRAIN_PROMPTS_TO_SCORE  # training prompts also generated and scored
    workers: int = 2  # curation worker processes

    def __post_init__(self):
        if self.base_config is None and not (CONFIGS / "toy" / f"base_{self.denoiser}.yaml").is_file():
            raise ConfigError(f"demo: denoiser={self.denoiser!r} has no toy config; use unet or dit, or set base_config")
        fits = self.base_config is not None or self.denoiser == "dit" or self.i2v_config != DemoConfig.i2v_config
        if self.i2v is None:
            self.i2v = fits
        elif self.i2v and not fits:
            raise ConfigError(
                f"demo: the toy I2V stage fine-tunes a DiT base stage, but denoiser={self.denoiser!r}; set i2v=false or "
                "give i2v_config a stage with the base stage's backbone"
            )


class Demo:
    def __init__(self, out_dir: str | Path, config: DemoConfig):
        self.out = Path(out_dir)
        self.cfg = config
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(config, self.out / "demo.yaml")
        self.holdout = holdout_triples(config.seed, config.holdout_per_motion)
        self.timings: dict[str, float] = {}
        self.host: dict | None = None  # this machine's reference speed (vidiff.hostspeed), measured as the run starts
        self.report = Report(self.out / "report", "vidiff demo: toy world, raw video to generated video")

    @property
    def base_config(self) -> str:
        if self.cfg.base_config:
            return self.cfg.base_config
        return str(CONFIGS / "toy" / f"base_{self.cfg.denoiser}.yaml")

    @property
    def base_name(self) -> str:
        return {"unet": "base U-Net", "dit": "base DiT"}.get(self.cfg.denoiser, f"base {self.cfg.denoiser}")

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

    def encode_sr(self, vae_dir: Path, manifest: Path, name: str, config: str, overrides: list[str]) -> Path:
        """The paired latent cache of a super-resolution stage: its targets on the grid it makes (TSR: twice the base
        clips' frame rate; SSR: twice their size, at the TSR's frame rate) with their degraded copies, prepared as
        the stage's config takes them (stage.lowres.resample)."""
        from vidiff.training.latent_cache import LOWRES_FACTOR, encode_manifest
        from vidiff.training.train_stage import TrainRunConfig

        c = self.cfg
        resample = load_config(TrainRunConfig, config, overrides).stage.lowres.resample
        stride = max(1, c.clip_stride // LOWRES_FACTOR)  # the TSR's output frame rate, which the SSR also runs at
        grid = {"tsr": dict(num_frames=LOWRES_FACTOR * (c.clip_frames - 1) + 1, size=(c.size, c.size), lowres="frames"),
                "ssr": dict(num_frames=c.clip_frames, size=(LOWRES_FACTOR * c.size,) * 2, lowres="space")}[name]
        return encode_manifest(vae_dir, manifest, self.out / f"latents_{name}", stride=stride,
                               windows_per_clip=c.windows_per_clip, seed=c.seed, resample=resample, **grid)

    def train_base(self, latents: Path) -> Path:
        return self._train("base", self.base_config, self.cfg.base_overrides, latents)

    def _train(self, folder: str, config: str, overrides: list[str], latents: Path) -> Path:
        from vidiff.training.train_stage import TrainRunConfig, train_stage

        run = load_config(TrainRunConfig, config,
                          [*overrides, f"data.latents={latents}", f"out_dir={self.out / folder}"])
        return train_stage(run)

    def train_cascade(self, vae_dir: Path, manifest: Path, base_export: Path) -> Path:
        """The TSR and SSR stages, each on its own latent cache, assembled with the base stage into out/cascade."""
        from vidiff.pipelines.assemble import assemble_cascade

        c = self.cfg
        exports = [base_export]
        for name, config, overrides in (("tsr", c.tsr_config, c.tsr_overrides), ("ssr", c.ssr_config, c.ssr_overrides)):
            latents = self._timed(f"{name.upper()} latent cache",
                                  lambda n=name, cf=config, o=overrides: self.encode_sr(vae_dir, manifest, n, cf, o))
            exports.append(self._timed(f"{name.upper()} training",
                                       lambda n=name, cf=config, o=overrides, z=latents: self._train(n, cf, o, z)))
        return assemble_cascade(exports, self.out / "cascade")

    def train_i2v(self, latents: Path, base_export: Path) -> Path:
        """The I2V stage, fine-tuned from the base stage on the same latent cache."""
        return self._train("i2v", self.cfg.i2v_config, [*self.cfg.i2v_overrides, f"train.init_from={base_export}"],
                           latents)

    def animate_heldout(self, i2v_export: Path) -> dict:
        """Fresh first frames of held-out clips animated with their captions, scored (vidiff.eval.image_to_video_eval);
        stills, videos and i2v_eval.json in generated/i2v."""
        from vidiff.eval.image_to_video_eval import evaluate_image_to_video

        out = self.out / "generated" / "i2v"
        if (out / "i2v_eval.json").is_file():
            result = json.loads((out / "i2v_eval.json").read_text())
            if result.get("holdout") == [list(t) for t in self.holdout] and \
                    result.get("videos") == len(self.holdout) * self.cfg.i2v_stills_per_triple:
                return result
        return evaluate_image_to_video(i2v_export, self.holdout, self.cfg.i2v_stills_per_triple, out_dir=out)

    def cascade_pairs(self, cascade: Path, prompts: list[str]) -> dict:
        """Held-out prompts through the whole cascade (seeds as the base stage's held-out videos, so its base videos
        are those): base and final videos in generated/cascade, and their consistency (vidiff.eval.cascade_consistency)."""
        from vidiff.eval.cascade_consistency import evaluate_cascade

        out = self.out / "generated" / "cascade"
        if (out / "consistency.json").is_file():
            result = json.loads((out / "consistency.json").read_text())
            if result.get("prompts") == prompts:
                return result
        c = self.cfg
        return evaluate_cascade(cascade, prompts, seed=c.seed * 1000, out_dir=out)

    # ---------------------------------------------------------------- the whole run
    def run(self) -> Path:
        rep = self.report
        # Minutes mean little without the machine: measured first, before the demo's own work heats or loads it.
        self.host = host_reference()
        print(f"[demo] {format_host_reference(self.host)}", flush=True)
        raw = self._timed("raw videos", self.make_raw)
        manifest, summary = self._timed("curation", lambda: self.curate(raw))
        vae_dir = self._timed("VAE training", self.train_vae)
        latents = self._timed("latent cache", lambda: self.encode(vae_dir, manifest))
        export = self._timed(f"{self.base_name} training", lambda: self.train_base(latents))

        held_prompts = heldout_prompts(self.holdout)
        tr_prompts = train_prompts(self.cfg.seed, self.holdout, self.cfg.train_prompts_to_score)
        held_videos, held_expanded, held = self._timed(
            "generation (held-out)", lambda: self.generate_and_score(export, held_prompts, "heldout"))
        tr_videos, tr_expanded, tr = self._timed(
            "generation (train prompts)", lambda: self.generate_and_score(export, tr_prompts, "train"))
        pairs = animated = None
        if self.cfg.cascade:
            cascade = self.train_cascade(vae_dir, manifest, export)
            pairs = self._timed("generation (cascade, held-out)", lambda: self.cascade_pairs(cascade, held_expanded))
        if self.cfg.i2v:
            i2v_export = self._timed("I2V training", lambda: self.train_i2v(latents, export))
            animated = self._timed("animation (held-out stills)", lambda: self.animate_heldout(i2v_export))

        self.scores_section(held, tr)
        rep.heading("Generated videos, held-out prompts", nav="Held-out videos")
        rep.text("Each video under its prompt, with the oracle's reading: green where it saw what the prompt "
                 "names, red with what it saw instead.", muted=True)
        self._show(held_videos, held["per_video"], held_expanded, "heldout")
        rep.heading("Generated videos, training prompts", nav="Training-prompt videos")
        self._show(tr_videos, tr["per_video"], tr_expanded, "train")
        if pairs is not None:
            self.cascade_section(pairs)
        if animated is not None:
            self.i2v_section(animated)
        self._curation_section(manifest, summary)
        self.training_section()
        self._vae_section(vae_dir)
        self.timings_section()
        self.config_section()
        rep.record("holdout", self.holdout)
        return rep.write()

    # ---------------------------------------------------------------- report sections from the run folder
    def scores_section(self, held: dict, tr: dict) -> None:
        """Headline cards, the oracle's score table and a bar chart: held-out against training prompts."""
        from vidiff.plots import bars_figure
        from vidiff.toyworld import COLORS, MOTIONS, SHAPES

        rep = self.report
        rows = [_score_row("held-out prompts", held), _score_row("training prompts", tr)]
        vae_summary = self.out / "vae" / "summary.json"
        vae = json.loads(vae_summary.read_text()) if vae_summary.is_file() else {}
        rep.cards([
            *((f"held-out {k}", _percent(rows[0][k])) for k in ("colour", "shape", "motion", "all correct")),
            ("training prompts, all correct", _percent(rows[1]["all correct"])),
            *([("VAE held-out PSNR", f"{vae['heldout_psnr_db']:.1f} dB")] if "heldout_psnr_db" in vae else []),
        ])
        rep.heading("Scores (toy-world oracle)", nav="Scores")
        rep.text("Held-out prompts name (colour, shape, direction) combinations that no training clip shows; "
                 "each colour, shape and direction appears in training on its own. Accuracy is the share of "
                 "videos in which the oracle sees what the prompt names; consistency is its temporal "
                 "consistency score (object present, colour and size stable).")
        rep.table(rows, key="oracle")
        keys = ("colour", "shape", "motion", "all correct", "consistency")
        fig = bars_figure(
            {r["prompts"]: {k: r[k] for k in keys} for r in rows},
            reference={"colour": 1 / len(COLORS), "shape": 1 / len(SHAPES), "motion": 1 / len(MOTIONS)},
            reference_label="chance (1 / number of values)",
            ylabel="share of videos",
        )
        rep.figure("scores", fig, f"Oracle scores of {rows[0]['n']} held-out and {rows[1]['n']} training-prompt videos.")

    def cascade_section(self, pairs: dict) -> None:
        """The consistency figures, then each held-out prompt's base video beside its final video."""
        from vidiff.eval.cascade_consistency import ORACLE_TOLERANCE, PSNR_TARGET_DB
        from vidiff.toyworld import ATTRIBUTES
        from vidiff.video import read_video

        rep, folder = self.report, self.out / "generated" / "cascade"
        frames, space = pairs["factors"]["frames"], pairs["factors"]["space"]
        rep.heading("Cascade: the base stage beside the final video, held-out prompts", nav="Cascade")
        rep.text(f"Each held-out prompt through the whole cascade: the base stage, then the TSR stage ({frames}x the "
                 f"frames), then the SSR stage ({space}x the pixels), the same seeds as the held-out videos above. "
                 f"Consistency: each final video brought back to the base grid (one frame in {frames}, {space}x{space} "
                 "pixel means) against its base video, target PSNR >= "
                 f"{PSNR_TARGET_DB:.0f} dB; the oracle's accuracies on the final videos within {ORACLE_TOLERANCE} of "
                 "the base videos'.")
        o = pairs["oracle"]
        names = {"base": "base", "final": "final", "final_on_base_grid": "final, on the base grid"}
        rows = [{"videos": label, "colour": o[name]["color_accuracy"], "shape": o[name]["shape_accuracy"],
                 "motion": o[name]["motion_accuracy"], "all correct": o[name]["all_correct"]}
                for name, label in names.items() if name in o]
        rep.cards([("final vs base, PSNR on the base grid", f"{pairs['psnr_db']:.1f} dB"),
                   ("lowest", f"{pairs['psnr_db_min']:.1f} dB"),
                   ("oracle within tolerance", "yes" if pairs["meets_oracle_target"] else "no")])
        rep.table(rows, key="cascade_oracle")
        keys = ("psnr_db", "psnr_db_min", "share_at_target", "oracle", "oracle_difference",
                "oracle_difference_on_base_grid", "meets_psnr_target", "meets_oracle_target",
                "meets_oracle_target_on_base_grid")
        rep.record("cascade", {k: pairs[k] for k in keys if k in pairs})
        rep.text(f"Left: the base stage's video ({pairs['fps']['base']} fps, each frame and pixel held to the final "
                 f"grid); right: the final video ({pairs['fps']['final']} fps). The tags are the oracle's reading of the "
                 "final video.", muted=True)
        with rep.block("gallery"):
            for i, (prompt, item) in enumerate(zip(pairs["prompts"], pairs["per_video"]["final"], strict=True)):
                base, final = (read_video(folder / name / f"{i:04d}.mp4") for name in ("base", "final"))
                held = base[:, torch.arange(final.shape[1]) // frames].repeat_interleave(space, -1).repeat_interleave(space, -2)
                tags = [(_verdict(k, item[k], item["predicted"][k]), item[k]) for k in ATTRIBUTES]
                rep.video(f"cascade_{i:03d}", video_grid([held, final], ncols=2), prompt,
                          fps=pairs["fps"]["final"], scale=2, tags=tags)

    def i2v_section(self, result: dict) -> None:
        """The image-to-video figures, then each held-out still beside the video made from it."""
        from vidiff.eval.image_to_video_eval import PSNR_TARGET_DB
        from vidiff.images import read_image
        from vidiff.toyworld import ATTRIBUTES
        from vidiff.video import read_video

        rep, folder = self.report, self.out / "generated" / "i2v"
        rep.heading("Image-to-video: held-out stills animated by their prompts", nav="Image-to-video")
        rep.text("An I2V stage fine-tuned from the base stage animates the first frame of a fresh clip of each held-out "
                 "(colour, shape, direction) combination with its caption: no training clip shows that direction with "
                 "that colour and shape. Figures: the generated first frame against the image after the VAE round trip "
                 f"(target >= {PSNR_TARGET_DB:.0f} dB), the object's tracked centre in the first frame within "
                 f"{result['centre_within_px']:.0f} px of the image's (target >= 90 % of videos), and the oracle's "
                 "colour, shape (targets >= 0.9) and motion (target >= 0.8).")
        rep.cards([("first frame vs image", f"{result['first_frame_psnr_db']:.1f} dB"),
                   ("starts where the image has it", _percent(result["centre_within_share"])),
                   *((f"I2V {name}", _percent(result[f"{key}_accuracy"]))
                     for key, name in (("color", "colour"), ("shape", "shape"), ("motion", "motion")))])
        keys = ("videos", "first_frame_psnr_db", "first_frame_psnr_db_min", "centre_within_share", "color_accuracy",
                "shape_accuracy", "motion_accuracy", "all_correct", "meets")
        rep.record("i2v", {k: result[k] for k in keys})
        per_triple = self.cfg.i2v_stills_per_triple
        rep.text(f"The first of the {per_triple} stills of each held-out combination. Left: the input image (held "
                 "still); right: the generated video. The tags are the oracle's reading of the video.", muted=True)
        with rep.block("gallery"):
            for i in range(0, len(result["per_video"]), per_triple):
                item = result["per_video"][i]
                video = read_video(folder / "videos" / f"{i:04d}.mp4")
                still = read_image(folder / "stills" / f"{i:04d}.png")[0][:, None].expand_as(video)
                tags = [(_verdict(k, item[k], item["predicted"][k]), item[k]) for k in ATTRIBUTES]
                rep.video(f"i2v_{i:03d}", video_grid([still, video], ncols=2), item["prompt"], scale=2, tags=tags)

    def training_section(self) -> None:
        """A row per trained model and its logged curves (Lightning's CSV logs, a resumed run's joined by step)."""
        from vidiff.plots import curves_figure, read_metrics

        rep = self.report
        models = [("VAE", "vae", "VAE training"), (self.base_name, "base", f"{self.base_name} training"),
                  *((f"{n.upper()} stage", n, f"{n.upper()} training") for n in ("tsr", "ssr") if self.cfg.cascade),
                  *([("I2V stage", "i2v", "I2V training")] if self.cfg.i2v else [])]
        runs = {title: (folder, read_metrics(self.out / folder / "logs")) for title, folder, _ in models}
        rows = []
        for title, folder, step_name in models:
            metrics = runs[title][1]
            losses = [name for name in metrics if name.split("/")[-1] == "loss"] or list(metrics)
            if not losses:
                continue
            loss = metrics[losses[0]]
            steps = _last_step(self.out / folder / "logs")
            seconds = self.timings.get(step_name)
            rows.append({"model": title, "steps": steps, "seconds": seconds,  # of this demo run
                         "steps/s": steps / seconds if seconds else None,
                         "first loss": loss[0][1], "last loss": loss[-1][1]})
        if not rows:
            return
        rep.heading("Training")
        rep.table(rows, key="training", formats={"seconds": "{:.1f}", "steps/s": "{:.2f}"})
        base = [{k: v for k, v in r.items() if k != "model"} for r in rows if r["model"] == self.base_name]
        if base:
            rep.record("base_training", base)
        for title, (folder, metrics) in runs.items():
            if metrics:
                rep.figure(f"training_{folder}", curves_figure({title: metrics}),
                           f"{title}: the logged training metrics against the optimizer step ({folder}/logs). "
                           "With many points, faint: as logged; solid: smoothed.")

    def timings_section(self) -> None:
        from vidiff.plots import timings_figure

        rep = self.report
        rep.heading("Time per step (this machine)", nav="Timings")
        with rep.block("row"):
            rep.table([{"step": k, "seconds": v} for k, v in self.timings.items()], key="timings",
                      formats={"seconds": "{:.1f}"})
            if self.timings:
                rep.figure("timings", timings_figure(self.timings))
        if self.host is not None:
            rep.text(f"{format_host_reference(self.host)} (vidiff.hostspeed: compare these numbers before comparing "
                     "timings taken on different machines).")
            rep.record("host", self.host)
        rep.text("Steps whose outputs were already there (a resumed demo) are skipped and take almost no time "
                 f"here. {torch.get_num_threads()} CPU threads, torch {torch.__version__}.", muted=True)

    def config_section(self) -> None:
        """The demo's settings and the training configs the run used, as the YAML files it saved."""
        rep = self.report
        rep.heading("Configuration")
        rep.text("What produced this report: the demo's settings (DemoConfig with the options given to vidiff demo) and "
                 f"the configs the VAE, the {self.base_name} and the SR stages trained with, overrides applied.")
        files = [("demo settings", "demo.yaml"), ("VAE training", "vae/train_config.yaml"),
                 (f"{self.base_name} training", "base/train.yaml"), ("TSR training", "tsr/train.yaml"),
                 ("SSR training", "ssr/train.yaml"), ("I2V training", "i2v/train.yaml")]
        for i, (title, rel) in enumerate(files):
            path = self.out / rel
            if path.is_file():
                rep.details(f"{title}: {rel}", path.read_text(), open=i == 0)

    def generate_and_score(self, export: Path, prompts: list[str], name: str) -> tuple[list, list[str], dict]:
        """`seeds_per_prompt` videos per prompt in generated/NAME, scored with the toy-world oracle."""
        from vidiff.eval.toy_generation import generate_and_score

        c = self.cfg
        return generate_and_score(export, prompts, self.out / "generated" / name, c.seeds_per_prompt, seed=c.seed * 1000)

    def _show(self, videos, items, prompts, name) -> None:
        from vidiff.toyworld import ATTRIBUTES

        with self.report.block("gallery"):
            for i, (video, item, prompt) in enumerate(zip(videos, items, prompts, strict=True)):
                tags = [(_verdict(k, item[k], item["predicted"][k]), item[k]) for k in ATTRIBUTES]
                self.report.video(f"{name}_{i:03d}", video, prompt, tags=tags)

    def _curation_section(self, manifest: Path, summary: dict) -> None:
        from vidiff.manifest import read_manifest
        from vidiff.video import read_video

        rep = self.report
        rep.heading("Curation of the raw toy videos", nav="Curation")
        dropped = summary.get("clips_dropped") or {}
        minutes = {k: 60 * summary[f"hours_{k}"] if summary.get(f"hours_{k}") is not None else None
                   for k in ("of_video", "kept")}
        rep.table([{"raw videos": summary.get("videos"), "failed": summary.get("videos_failed"),
                    "clips kept": summary.get("clips_kept"),
                    "clips dropped": ", ".join(f"{k}: {v}" for k, v in dropped.items()) or "0",
                    "minutes of video": minutes["of_video"], "minutes kept": minutes["kept"]}],
                  formats={"minutes of video": "{:.1f}", "minutes kept": "{:.1f}"})
        rep.details("curation summary (curated/summary.json)",
                    json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}, indent=2, default=str))
        rows = [r for r in read_manifest(manifest) if r["status"] == "kept"][:16]
        clips = [read_video(r["source"], r["start_frame"], min(r["end_frame"], r["start_frame"] + 24), size=(32, 32)) for r in rows]
        if clips:
            rep.video("curated_clips", video_grid(clips, ncols=8), "kept clips (first 2 s each)", scale=3)

    def _vae_section(self, vae_dir: Path) -> None:
        from vidiff.eval.psnr import psnr
        from vidiff.models.vae import CausalVAE3D
        from vidiff.toyworld import ToyWorldDataset

        rep = self.report
        rep.heading("Toy VAE: original (top) and reconstruction (bottom), held-out clips", nav="VAE")
        vae = CausalVAE3D.from_pretrained(vae_dir).eval()
        ds = ToyWorldDataset(8, num_frames=self.cfg.clip_frames, height=self.cfg.size, width=self.cfg.size, seed=4242)
        videos = torch.stack([ds[i]["video"] for i in range(len(ds))])
        with torch.no_grad():
            recon = vae.decode(vae.encode(videos).mode()).clamp(-1, 1)
        db = float(psnr(recon, videos).mean())
        rep.text(f"PSNR on these held-out clips: {db:.1f} dB")
        rep.record("vae_psnr_db", db)
        rep.video("vae_recon", video_grid(list(videos) + list(recon), ncols=8), "top: original, bottom: VAE")


def _score_row(name: str, s: dict) -> dict:
    return {"prompts": name, "n": s["n_videos"], "colour": s["color_accuracy"], "shape": s["shape_accuracy"],
            "motion": s["motion_accuracy"], "all correct": s["all_correct"], "consistency": s["consistency"]}


def _verdict(attribute: str, ok: bool | None, predicted) -> str:
    name = {"color": "colour"}.get(attribute, attribute)
    if ok:
        return f"{name} ✓"
    return f"{name}: {predicted}" if ok is None else f"{name} ✗ saw {predicted}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _last_step(logs_dir: Path) -> int:
    """Steps trained, as the last step in the run's metrics logs (+1: Lightning counts from 0)."""
    from vidiff.plots import read_metrics

    steps = [s for series in read_metrics(logs_dir).values() for s, _ in series]
    return max(steps) + 1 if steps else 0


def run_demo(out_dir: str | Path = "demo_out", seed: int = 0, config: str | None = None, overrides=()) -> Path:
    cfg = load_config(DemoConfig, config, [*overrides, f"seed={seed}"])
    return Demo(out_dir, cfg).run()
