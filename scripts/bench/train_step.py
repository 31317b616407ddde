"""Benchmark: one training step of the toy stages, split into its parts, and AdamW's implementations side by side.

For the toy base U-Net, the toy DiT (configs/toy/base_{unet,dit}.yaml, the training batch of 32 video clips at
the demo's latent size) and the toy VAE (configs/toy/vae.yaml, its training batch), a step is run as training
runs it, without Lightning around it: the objective (keyed timesteps, noise, caption dropout) and the model's
forward + backward, the optimizer step, and, for the diffusion stages, the EMA update. Each part is timed on
its own (perf_counter around it; the CPU has no asynchronous work) and the table shows samples/s of the whole
step and what share of it the model's forward + backward takes: the rest is what a faster loop can remove.

AdamW runs as each of torch's implementations (`--optimizers`: the for-loop one, foreach, fused) on the same
model, interleaved round by round so that a host slowing down affects all alike; the for-loop one is what
training used before `optim.adamw` (now fused by default). Medians over `--rounds` rounds of `--steps` steps
after a warm-up.

    python scripts/bench/train_step.py [--models unet,dit,vae] [--threads 2] [--rounds 5] [--steps 10] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vidiff.config import load_config  # noqa: E402
from vidiff.hostspeed import format_host_reference, host_reference  # noqa: E402
from vidiff.models.cond import Cond  # noqa: E402
from vidiff.training.diffusion_module import DiffusionModule  # noqa: E402
from vidiff.training.optimizer import ADAMW_IMPLEMENTATIONS, adamw  # noqa: E402
from vidiff.training.sample_keys import SampleKeys  # noqa: E402
from vidiff.training.train_stage import TrainRunConfig  # noqa: E402
from vidiff.training.vae_config import VAETrainConfig  # noqa: E402
from vidiff.training.vae_module import VAEModule  # noqa: E402


def diffusion_parts(kind: str, compile: bool):
    """(samples per step, {part: callable}, params) for a toy base stage's training step."""
    run = load_config(TrainRunConfig, ROOT / "configs" / "toy" / f"base_{kind}.yaml", ["data.latents=unused", f"train.compile={compile}"])
    module = DiffusionModule(run.stage, run.train).train()
    s, b = run.stage, run.train.batch_size
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(b, s.latent_channels, s.latent_frames, s.latent_height, s.latent_width, generator=gen)
    text = torch.randn(b, run.text.context_length, run.text.width, generator=gen)
    cond = Cond(text, torch.ones(b, run.text.context_length, dtype=torch.bool))
    step = [0]

    def forward_backward():
        module.zero_grad(set_to_none=True)
        keys = SampleKeys.for_rank(run.train.seed, step[0], b, 0)
        module.objective(module.stage, latents, cond, keys, module.train_forward).objective.backward()
        step[0] += 1

    return b, {"forward + backward": forward_backward, "EMA": lambda: module.ema.update(module.stage.denoiser)}, [
        p for p in module.stage.denoiser.parameters() if p.requires_grad
    ]


def vae_parts(compile: bool):
    cfg = load_config(VAETrainConfig, ROOT / "configs" / "toy" / "vae.yaml", [f"train.compile={compile}"])
    module = VAEModule(cfg).train()
    b, d = cfg.train.batch_size, cfg.data
    x = torch.rand(b, 3, d.num_frames, d.height, d.width, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def forward_backward():
        module.vae.zero_grad(set_to_none=True)
        loss, _, _ = module.losses(x, adv=False)
        loss.backward()

    return b, {"forward + backward": forward_backward}, list(module.vae.parameters())


def build(name: str, compile: bool):
    return vae_parts(compile) if name == "vae" else diffusion_parts(name, compile)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="unet,dit,vae", help="comma-separated: unet, dit, vae")
    p.add_argument("--optimizers", default="for-loop,foreach,fused", help=f"comma-separated: {', '.join(ADAMW_IMPLEMENTATIONS)}")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round and optimizer")
    p.add_argument("--compile", action="store_true", help="train.compile=true: the forward through torch.compile")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.optimizers.split(",") if n]
    unknown = [n for n in names if n not in ADAMW_IMPLEMENTATIONS]
    if unknown:
        raise SystemExit(f"--optimizers: unknown {unknown}; choose from {list(ADAMW_IMPLEMENTATIONS)}")
    print(format_host_reference(host_reference()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.rounds} rounds x {args.steps} steps")
    print(f"\n{'model':6} {'AdamW':9} {'samples/s':>10} {'step ms':>9} {'fwd+bwd':>8} {'optimizer':>10} {'EMA':>6}")
    for model in [m for m in args.models.split(",") if m]:
        batch, parts, params = build(model, args.compile)
        opts = {n: adamw(params, n, lr=1e-5) for n in names}
        times = {n: {part: [] for part in [*parts, "optimizer"]} for n in names}
        t0 = time.perf_counter()
        parts["forward + backward"]()  # with --compile, this compiles the video-batch shapes
        if args.compile:
            print(f"{model}: first forward + backward {time.perf_counter() - t0:.1f} s (compilation included)")
        for n in names:  # warm-up: first calls allocate optimizer state and caches
            parts["forward + backward"]()
            opts[n].step()
        for _ in range(args.rounds):
            for n in names:
                sums = dict.fromkeys(times[n], 0.0)
                for _ in range(args.steps):
                    for part, fn in [*parts.items(), ("optimizer", opts[n].step)]:
                        if part == "EMA":
                            continue
                        t0 = time.perf_counter()
                        fn()
                        sums[part] += time.perf_counter() - t0
                    if "EMA" in parts:
                        t0 = time.perf_counter()
                        parts["EMA"]()
                        sums["EMA"] += time.perf_counter() - t0
                for part, total in sums.items():
                    times[n][part].append(total / args.steps)
        for n in names:
            med = {part: statistics.median(v) for part, v in times[n].items()}
            step = sum(med.values())
            fb = med["forward + backward"]
            ema = f"{med['EMA'] / step:6.1%}" if "EMA" in med else f"{'-':>6}"
            print(f"{model:6} {n:9} {batch / step:10.1f} {step * 1e3:9.1f} {fb / step:8.1%} "
                  f"{med['optimizer'] / step:10.1%} {ema}")


if __name__ == "__main__":
    main()
