"""Benchmark: one training step of the toy stages, split into its parts; AdamW's implementations side by side, or
this tree's code against an earlier revision's (`--baseline REV`).

For the toy base U-Net, the toy DiT (configs/toy/base_{unet,dit}.yaml, the training batch of 32 video clips at
the demo's latent size) and the toy VAE (configs/toy/vae.yaml, its training batch), a step is run as training
runs it, without Lightning around it: the objective (keyed timesteps, noise, caption dropout) and the model's
forward + backward, the optimizer step, and, for the diffusion stages, the EMA update. Each part is timed on
its own (perf_counter around it; the CPU has no asynchronous work) and the table shows samples/s of the whole
step and what share of it the model's forward + backward takes: the rest is what a faster loop can remove.
Medians over `--rounds` rounds of `--steps` steps after a warm-up.

AdamW runs as each of torch's implementations (`--optimizers`: the for-loop one, foreach, fused) on the same
model, interleaved round by round so that a host slowing down affects all alike; the for-loop one is what
training used before `optim.adamw` (now fused by default).

With `--baseline REV` the bench compares code instead: `git archive REV` (vidiff/, configs/, scripts/) is
unpacked into a temporary folder, and each model is built and timed twice, by REV's code and by this working
tree's, each in its own worker process (scripts/bench/train_step_worker.py) that imports vidiff from its tree
(the path is printed), builds the model with that tree's bench `build`, and takes train.compile and the AdamW
implementation from that tree's toy config. The workers take turns, one round at a time (ABBA order), so only
one measures at a time and a host slowing down hits both alike. The first step (compilation, when on,
included) is reported apart and left out of samples/s.

    python scripts/bench/train_step.py [--models unet,dit,vae] [--threads 2] [--rounds 5] [--steps 10] [--compile]
    python scripts/bench/train_step.py --baseline b7d88c3 [--models ...] [--threads 2] [--rounds 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step_worker import FORWARD_BACKWARD, step_calls, time_steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "train_step_worker.py"
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

    return b, {FORWARD_BACKWARD: forward_backward, "EMA": lambda: module.ema.update(module.stage.denoiser)}, [
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

    return b, {FORWARD_BACKWARD: forward_backward}, list(module.vae.parameters())


def build(name: str, compile: bool):
    return vae_parts(compile) if name == "vae" else diffusion_parts(name, compile)


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Per part, the median over rounds of seconds per step."""
    return {part: statistics.median(r[part] for r in rounds) for part in rounds[0]}


def compare_adamw(model: str, names: list[str], args: argparse.Namespace) -> None:
    """One model, built once, stepped by each AdamW implementation in turn; a table row per implementation."""
    batch, parts, params = build(model, args.compile)
    calls = {n: step_calls(parts, adamw(params, n, lr=1e-5).step) for n in names}
    t0 = time.perf_counter()
    parts[FORWARD_BACKWARD]()  # with --compile, this compiles the video-batch shapes
    if args.compile:
        print(f"{model}: first forward + backward {time.perf_counter() - t0:.1f} s (compilation included)")
    for n in names:  # warm-up: first calls allocate optimizer state and caches
        time_steps(calls[n], 1)
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            times[n].append(time_steps(calls[n], args.steps))
    for n in names:
        med = medians(times[n])
        step = sum(med.values())
        ema = f"{med['EMA'] / step:6.1%}" if "EMA" in med else f"{'-':>6}"
        print(f"{model:6} {n:9} {batch / step:10.1f} {step * 1e3:9.1f} {med[FORWARD_BACKWARD] / step:8.1%} "
              f"{med['optimizer'] / step:10.1%} {ema}")


def export_revision(rev: str, dest: Path) -> str:
    """Unpack `git archive REV` (vidiff/, configs/, scripts/) into `dest`; returns REV's short hash."""
    git = ["git", "-C", str(ROOT)]
    short = subprocess.run([*git, "rev-parse", "--short", f"{rev}^{{commit}}"], capture_output=True, text=True,
                           check=True)
    tar = subprocess.run([*git, "archive", "--format=tar", rev, "vidiff", "configs", "scripts"], capture_output=True,
                         check=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as f:
        f.extractall(dest, filter="data")
    return short.stdout.strip()


class Worker:
    """A train_step_worker.py process: one model built and timed by one tree's code, a round per request."""

    def __init__(self, tree: Path, model: str, threads: int):
        self.proc = subprocess.Popen([sys.executable, str(WORKER), str(tree), model, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._receive()  # the worker has built the model and run its first steps

    def _receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a bench worker exited with code {self.proc.wait()} (its error is above)")
        return json.loads(line)

    def round(self, steps: int) -> dict[str, float]:
        self.proc.stdin.write(f"round {steps}\n")
        self.proc.stdin.flush()
        return self._receive()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def compare_trees(model: str, trees: dict[str, Path], args: argparse.Namespace) -> str:
    """One model timed by each tree's code in its own worker, the workers taking turns round by round (ABBA);
    returns the table row."""
    workers = {label: Worker(tree, model, args.threads) for label, tree in trees.items()}  # one builds at a time
    times = {label: [] for label in workers}
    try:
        for r in range(args.rounds):
            for label in list(workers)[:: 1 if r % 2 == 0 else -1]:
                times[label].append(workers[label].round(args.steps))
    finally:
        for w in workers.values():
            w.close()
    for label, w in workers.items():
        i = w.info
        print(f"{model} {label}: vidiff {i['vidiff']}, torch {i['torch']}, {i['threads']} threads, "
              f"train.compile {i['compile']}, AdamW {i['adamw']}")
    med = {label: medians(times[label]) for label in workers}
    rate = {label: w.info["batch"] / sum(med[label].values()) for label, w in workers.items()}
    first = {label: w.info["first_step_s"] for label, w in workers.items()}
    return (f"{model:6} {rate['before']:10.1f} {rate['after']:10.1f} {rate['after'] / rate['before']:8.3f} "
            f"{med['after'][FORWARD_BACKWARD] / sum(med['after'].values()):8.1%} {first['before']:9.2f} "
            f"{first['after']:9.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="unet,dit,vae", help="comma-separated: unet, dit, vae")
    p.add_argument("--baseline", metavar="REV", help="compare this working tree's code against git revision REV")
    p.add_argument("--optimizers", default="for-loop,foreach,fused",
                   help=f"without --baseline, comma-separated: {', '.join(ADAMW_IMPLEMENTATIONS)}")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round and optimizer (or tree)")
    p.add_argument("--compile", action="store_true",
                   help="without --baseline, train.compile=true: the forward through torch.compile (with --baseline "
                        "each tree's toy config decides)")
    args = p.parse_args()
    if args.baseline and args.compile:
        p.error("--compile: with --baseline each tree's toy config sets train.compile")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.optimizers.split(",") if n]
    unknown = [n for n in names if n not in ADAMW_IMPLEMENTATIONS]
    if unknown:
        raise SystemExit(f"--optimizers: unknown {unknown}; choose from {list(ADAMW_IMPLEMENTATIONS)}")
    models = [m for m in args.models.split(",") if m]
    print(format_host_reference(host_reference()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.rounds} rounds x {args.steps} steps")
    if not args.baseline:
        print(f"\n{'model':6} {'AdamW':9} {'samples/s':>10} {'step ms':>9} {'fwd+bwd':>8} {'optimizer':>10} {'EMA':>6}")
        for model in models:
            compare_adamw(model, names, args)
        return
    with tempfile.TemporaryDirectory(prefix="vidiff-baseline-") as tmp:
        short = export_revision(args.baseline, Path(tmp))
        print(f"before: {args.baseline} ({short}), exported to {tmp}; after: this working tree, {ROOT}")
        rows = [compare_trees(model, {"before": Path(tmp), "after": ROOT}, args) for model in models]
    print(f"\n{'model':6} {'samples/s':>21} {'after/':>8} {'fwd+bwd':>8} {'first step s':>19}")
    print(f"{'':6} {'before':>10} {'after':>10} {'before':>8} {'(after)':>8} {'before':>9} {'after':>9}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
