"""The evaluation job: find generated and real videos and their prompts, compute FVD / toy FVD / CLIP-SIM /
oracle, and write `eval.json` plus a readable `eval.txt`.

Generated videos: the video files directly inside a folder. Their prompts come from `prompts.jsonl` in
that folder (one JSON object per line: {"file": "0000.mp4", "prompt": "..."}; `vidiff generate` writes
it) or, for a video without a line there, from a text file beside it with the same stem (`0000.txt`).

Real videos: a folder (video files at any depth), a manifest (.jsonl or .parquet rows with `path`, or
`source` + `start_frame`/`end_frame`; rows whose `status` is not "kept" are skipped; relative paths
are relative to the manifest), or a `.npz` of saved FVD statistics. For toy FVD (`fvd_toy`,
vidiff.eval.toy_fvd) it may also be `toyworld:N`: N toy clips rendered with a fixed seed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidiff.errors import VidiffError
from vidiff.eval.frechet import BiasedEstimateWarning, GaussianStats
from vidiff.eval.fvd import (
    FVDProtocol,
    I3DFeatures,
    check_compatible,
    fvd,
    i3d_features,
    load_i3d,
    stats_meta,
)

METRICS = ("fvd", "fvd_toy", "clipsim", "oracle")
DEFAULT_METRICS = ("fvd", "clipsim", "oracle")  # fvd_toy trains a classifier on first use: ask for it
VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".webm", ".mkv")
PROMPTS_FILE = "prompts.jsonl"


@dataclass
class VideoRef:
    """One video (or a frame span of one) and, for generated videos, its prompt."""

    name: str
    path: Path
    start: int = 0
    end: int | None = None
    prompt: str | None = None

    def read(self, max_frames: int | None = None) -> torch.Tensor:
        from vidiff.video import probe_video, read_video

        end = self.end
        if max_frames is not None:
            available = (self.end if self.end is not None else probe_video(self.path).num_frames) - self.start
            # Never ask past the end: a short video should meet the protocol's own clear error.
            end = self.start + min(max_frames, available)
        return read_video(self.path, start=self.start, end=end)


def _videos_in(folder: Path, recursive: bool) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise VidiffError(
                f"{path}, line {k}: not valid JSON ({exc.msg}); write one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise VidiffError(f"{path}, line {k}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def generated_videos(folder: str | Path) -> list[VideoRef]:
    """Videos directly in `folder`, with prompts from prompts.jsonl or NAME.txt where present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VidiffError(
            f"generated-video folder {folder} does not exist; pass the folder `vidiff generate --out` wrote"
        )
    prompts: dict[str, str] = {}
    sidecar = folder / PROMPTS_FILE
    if sidecar.is_file():
        for k, row in enumerate(_read_jsonl(sidecar), 1):
            if "file" not in row or "prompt" not in row:
                raise VidiffError(f'{sidecar}, line {k}: needs keys "file" and "prompt", got {sorted(row)}')
            if not (folder / row["file"]).is_file():
                raise VidiffError(f"{sidecar}, line {k}: {row['file']} is not in {folder}")
            prompts[str(row["file"])] = str(row["prompt"])
    refs = []
    for path in _videos_in(folder, recursive=False):
        prompt = prompts.get(path.name)
        if prompt is None and path.with_suffix(".txt").is_file():
            prompt = path.with_suffix(".txt").read_text().strip()
        refs.append(VideoRef(path.name, path, prompt=prompt))
    if not refs:
        raise VidiffError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {folder}")
    return refs


def real_videos(source: str | Path) -> list[VideoRef]:
    """Videos of a real set given as a folder or a manifest (.jsonl / .parquet)."""
    source = Path(source)
    if source.is_dir():
        refs = [VideoRef(str(p.relative_to(source)), p) for p in _videos_in(source, recursive=True)]
    elif source.is_file() and source.suffix in (".jsonl", ".parquet"):
        refs = _manifest_videos(source)
    elif source.is_file():
        raise VidiffError(
            f"real set {source}: give a folder of videos, a .jsonl/.parquet manifest or a .npz of FVD statistics"
        )
    else:
        raise VidiffError(f"real set {source} does not exist")
    if not refs:
        raise VidiffError(f"real set {source} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return refs


def _manifest_videos(path: Path) -> list[VideoRef]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
            raise VidiffError(f"manifest {path} is not a readable Parquet file ({exc})") from None
    else:
        rows = _read_jsonl(path)
    refs = []
    for k, row in enumerate(rows, 1):
        if row.get("status") not in (None, "kept"):
            continue
        if row.get("path"):
            file, start, end = row["path"], 0, None
        elif row.get("source"):
            file, start, end = row["source"], int(row.get("start_frame") or 0), row.get("end_frame")
        else:
            raise VidiffError(f'manifest {path}, row {k}: needs a "path" (or "source" with frame span)')
        file = Path(file) if Path(file).is_absolute() else path.parent / file
        if file.suffix.lower() not in VIDEO_SUFFIXES:
            continue  # image rows (T == 1) say nothing about video quality
        refs.append(
            VideoRef(
                f"{file.name}[{start}:{end}]" if end is not None else file.name,
                file,
                start,
                None if end is None else int(end),
                row.get("caption"),
            )
        )
    return refs


def _clips(refs: Sequence[VideoRef], max_frames: int | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    for ref in refs:
        yield ref.name, ref.read(max_frames)


def _check_prompts(refs: Sequence[VideoRef], metric: str) -> None:
    missing = [r.name for r in refs if not r.prompt]
    if missing:
        raise VidiffError(
            f"{metric} needs the prompt of every generated video; none for {missing[:3]}"
            f"{' and more' if len(missing) > 3 else ''}. Write {PROMPTS_FILE} in the folder "
            '(lines {"file": "NAME.mp4", "prompt": "..."}) or NAME.txt beside each video'
        )


def _with_prompts(refs: Sequence[VideoRef]) -> Iterator[tuple[str, torch.Tensor, str]]:
    for ref in refs:
        yield ref.name, ref.read(), ref.prompt


def real_stats(
    real: str | Path,
    detector: I3DFeatures,
    protocol: FVDProtocol,
    save_to: str | Path | None = None,
    progress=True,
) -> tuple[GaussianStats, str]:
    """FVD statistics of the real set (loaded from .npz, or computed and optionally saved) and a label."""
    meta = stats_meta(detector, protocol)
    if Path(real).suffix == ".npz":
        stats = GaussianStats.load(real)
        check_compatible(stats, meta, str(real))
        return stats, str(real)
    refs = real_videos(real)
    feats = i3d_features(
        _clips(refs, protocol.frames_needed),
        detector,
        protocol,
        total=len(refs),
        desc="I3D real",
        progress=progress,
    )
    stats = GaussianStats.from_features(feats, meta={**meta, "source": str(real)}, name=f"real set {real}")
    if save_to is not None:
        stats.save(save_to)
    return stats, str(real)


def evaluate(
    generated: str | Path | None,
    real: str | Path | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    i3d: str | Path | I3DFeatures | None = None,
    protocol: FVDProtocol | None = None,
    save_real_stats: str | Path | None = None,
    clip_model: str | None = None,
    clip_weights: str | Path | None = None,
    clip_config: str | Path | dict | None = None,
    toy_fvd_model: str | Path | Any | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the requested metrics for the videos in `generated`; write eval.json / eval.txt to `out_dir`.

    With `generated=None`, only the real set's FVD statistics are computed and saved (`save_real_stats`).
    `toy_fvd_model`: the toy-FVD classifier (a ToyVideoClassifier or its folder; None: the cached default,
    trained on first use).
    """
    metrics = [m.strip().lower() for m in metrics if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise VidiffError(f"unknown metric(s) {unknown or metrics}; choose from {', '.join(METRICS)}")
    protocol = protocol or FVDProtocol()
    result: dict[str, Any] = {"generated": None if generated is None else str(generated), "metrics": metrics}
    refs = generated_videos(generated) if generated is not None else []
    result["n_generated"] = len(refs)
    want_fvd = "fvd" in metrics or (generated is None and save_real_stats)
    want_clip = bool(refs) and "clipsim" in metrics
    want_oracle = bool(refs) and "oracle" in metrics
    want_toy = bool(refs) and "fvd_toy" in metrics

    # Check every input and load every model before the first long computation.
    if want_fvd and real is None:
        raise VidiffError("FVD needs a real set: pass --real DIR, a manifest, or a saved statistics .npz")
    if want_fvd and str(real).startswith("toyworld:"):
        raise VidiffError(
            f"--real {real}: toyworld:N is a real set for fvd_toy only; FVD needs a folder, a manifest or a .npz"
        )
    if want_toy and real is None:
        raise VidiffError(
            "fvd_toy needs a real set: pass --real toyworld:N (N toy clips rendered with a fixed seed, "
            "e.g. toyworld:256), a folder or a manifest of real videos"
        )
    if want_clip:
        _check_prompts(refs, "CLIP-SIM")
    if want_oracle:
        _check_prompts(refs, "the oracle")
    if want_fvd:
        detector = i3d if isinstance(i3d, I3DFeatures) else load_i3d(i3d, device=device)
        detector.module.to(device)
    if want_clip:
        from vidiff.eval.clip_score import clip_similarity, load_clip

        scorer = load_clip(clip_model, clip_weights, config=clip_config, device=device)
    if want_toy:
        from vidiff.eval import toy_fvd

        toy_fvd.parse_toyworld(real)  # a malformed toyworld:N fails before the classifier trains
        classifier = toy_fvd.as_classifier(toy_fvd_model, device=device, progress=progress)

    if want_fvd:
        r_stats, r_label = real_stats(real, detector, protocol, save_to=save_real_stats, progress=progress)
        if save_real_stats:
            result["real_stats_saved"] = str(save_real_stats)
        if refs:
            g = i3d_features(
                _clips(refs, protocol.frames_needed),
                detector,
                protocol,
                total=len(refs),
                desc="I3D generated",
                progress=progress,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BiasedEstimateWarning)  # recorded in "notes" instead
                out = fvd(g, r_stats)
            out.update(
                real=r_label,
                protocol=protocol.describe(),
                i3d=detector.describe(),
                comparable_to_published=detector.is_reference and protocol.is_standard,
            )
            result["fvd"] = out

    if want_toy:
        frames = classifier.config.frames
        result["fvd_toy"] = toy_fvd.toy_fvd(
            ((r.name, r.read(frames)) for r in refs),
            real,
            classifier=classifier,
            device=device,
            progress=progress,
            total=len(refs),
        )

    if want_clip:
        result["clipsim"] = clip_similarity(scorer, _with_prompts(refs), total=len(refs), progress=progress)

    if want_oracle:
        from vidiff.eval.oracle_metric import oracle_metric

        result["oracle"] = oracle_metric(_with_prompts(refs), total=len(refs), progress=progress)

    result["summary"] = format_summary(result)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "eval.txt").write_text(result["summary"] + "\n")
        result["written"] = [str(out / "eval.json"), str(out / "eval.txt")]
    return result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_summary(result: dict[str, Any]) -> str:
    if result["generated"] is None:
        lines = ["vidiff eval: real-set statistics only (no --generated folder)"]
    else:
        lines = [f"vidiff eval: {result['n_generated']} generated videos in {result['generated']}"]
    if "real_stats_saved" in result:
        lines.append(f"real-set FVD statistics saved to {result['real_stats_saved']}")
    if "fvd" in result:
        f, p = result["fvd"], result["fvd"]["protocol"]
        lines.append(
            f"FVD        {f['fvd']:.2f}  (N generated = {f['n_generated']}, N real = {f['n_real']}, "
            f"{f['feature_dim']}-d I3D features)"
        )
        lines.append(
            f"           protocol: first {p['num_frames']} frames (stride {p['frame_stride']}), "
            f"{p['resize']} to {p['resolution']}x{p['resolution']}, values in {p['value_range']}; "
            f"I3D {f['i3d']['kind']}: {f['i3d']['source']}; real: {f['real']}"
        )
        if f["i3d"]["kind"] == "random":
            lines.append(
                "           RANDOM I3D WEIGHTS: this FVD only ranks runs against each other; it means nothing else"
            )
        elif not f["i3d"]["stylegan_v_detector"]:
            lines.append(
                "           I3D is not StyleGAN-V's TorchScript detector: FVDs differ from published ones"
            )
        elif not f["comparable_to_published"]:
            lines.append(
                "           non-standard protocol (standard: 16 frames at 224x224): not comparable to published FVDs"
            )
        if f["biased"]:
            lines.append(
                f"           biased: fewer samples than the {f['feature_dim']} feature dimensions; compare only at equal N"
            )
    if "fvd_toy" in result:
        f, p, k = result["fvd_toy"], result["fvd_toy"]["protocol"], result["fvd_toy"]["classifier"]
        lines.append(
            f"FVD-toy    {f['fvd_toy']:.3f}  (N generated = {f['n_generated']}, N real = {f['n_real']}, "
            f"{f['feature_dim']}-d toy-classifier features)"
        )
        acc = k["heldout_accuracy"] or {}
        acc_text = ", ".join(f"{a} {_pct(v)}" for a, v in acc.items()) or "not recorded"
        lines.append(
            f"           protocol: first {p['num_frames']} frames, resized to {p['resolution']}x{p['resolution']}, "
            f"values in {p['value_range']}; real: {f['real']}"
        )
        lines.append(
            f"           classifier {k['source']} (settings {k['settings_hash']}, weights {k['fingerprint']}; "
            f"held-out accuracy {acc_text}); compare only with toy FVDs of the same classifier, never with FVD"
        )
        if f["biased"]:
            lines.append(
                f"           biased: fewer samples than the {f['feature_dim']} feature dimensions; compare only at equal N"
            )
    if "clipsim" in result:
        c = result["clipsim"]
        lines.append(
            f"CLIP-SIM   mean cosine {c['clipsim_mean_cosine']:.4f}   100*max(mean,0) = {c['clipsim_x100']:.2f}  "
            f"(N = {c['n_videos']}, {c['clip']['model']} weights {c['clip']['weights']})"
        )
        if c["clip"]["weights"] == "random":
            lines.append("           RANDOM CLIP WEIGHTS: smoke test only")
    if "oracle" in result:
        o = result["oracle"]
        lines.append(
            f"Oracle     colour {_pct(o['color_accuracy'])}  shape {_pct(o['shape_accuracy'])}  "
            f"motion {_pct(o['motion_accuracy'])}  all named attributes {_pct(o['all_correct'])}  "
            f"temporal consistency {o['consistency']:.3f}  (N = {o['n_videos']})"
        )
    return "\n".join(lines)
