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


def _register_curate(sub) -> None:
    from data_tools.curate import add_arguments

    p = sub.add_parser("curate", help="cut raw videos into clips and write a clip manifest (local pool or Ray)")
    add_arguments(p)
    p.set_defaults(func=_run_curate)


def _run_curate(args) -> int:
    from data_tools.curate import run_from_args

    run_from_args(args)
    return 0


COMMANDS = [_register_demo, _register_curate]


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
