"""The training loss curve of a toy base stage on a fixed latent cache: one `vidiff train` run of 300 steps, its
per-step training loss written as JSON.

The run is `vidiff train --config configs/toy/base_{unet,dit}.yaml` (the toy model, schedule and seed as the
config has them) at batch 8 (videos and images) and lr 2e-4, on the cache in tests/fixtures/loss_curve/, with
the loss logged every step, on the CPU, at one torch thread. tests/test_loss_curve.py runs the current code
this way and compares with the curves an earlier revision's code gave (tests/fixtures/loss_curve/*.json), so a
change meant to make training faster shows that it leaves training's numbers alone.

Why lr 2e-4, not the toy config's 2e-3: at 2e-3 the toy U-Net's training amplifies float rounding about tenfold
every three steps from step 30 on, so two runs of the same math rounded differently (AdamW for-loop against
fused) differ by up to 29 % on a step after step 100, and no per-step tolerance tells rounding from a real
change. At 2e-4 rounding stays under 3e-5 on every step (measurements: tests/fixtures/loss_curve/README.md).

    python scripts/loss_curve.py {unet,dit} OUT.json [--tree DIR] [--threads N] [key=value ...]

`--tree DIR` runs another source tree's code (e.g. DIR from `git archive REV vidiff data_tools configs | tar -x
-C DIR`): `python -m vidiff` in DIR with PYTHONPATH=DIR, so `import vidiff` and the config come from there (the
vidiff imported is printed). Extra key=value overrides go to `vidiff train` after the fixed ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "loss_curve"
STEPS = 300
OVERRIDES = [f"train.max_steps={STEPS}", "train.log_every=1", "train.batch_size=8", "train.image_batch_size=8",
             "train.optim.lr=2e-4", "train.compile=false"]


def prepare_cache(dest: Path) -> Path:
    """A copy of the fixture's latent cache at `dest` whose meta.json names the fixture's VAE by its absolute
    path, so training (which copies the VAE into its export) runs from any working directory."""
    shutil.copytree(FIXTURE / "latents", dest)
    meta = json.loads((dest / "meta.json").read_text())
    meta["vae_dir"] = str(FIXTURE / meta["vae_dir"])
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))
    return dest


def train_args(model: str, cache: Path, out_dir: Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`vidiff train` arguments of the loss-curve run (the config path is relative to the tree it runs in)."""
    return ["train", "--config", f"configs/toy/base_{model}.yaml", f"data.latents={cache}", f"out_dir={out_dir}",
            *OVERRIDES, *extra]


def loss_curve(run_dir: Path) -> list[float]:
    """The per-step train/loss of a run folder's CSV log, in step order."""
    (metrics,) = sorted((run_dir / "logs").glob("version_*/metrics.csv"))
    with open(metrics) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return [float(r["train/loss"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


def run(model: str, tree: Path, threads: int, extra: list[str]) -> list[float]:
    """The loss curve of `model` trained by `tree`'s code, in a temporary folder."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    where = subprocess.run([sys.executable, "-c", "import vidiff; print(vidiff.__file__)"], cwd=tree, env=env,
                           capture_output=True, text=True, check=True)
    print(f"vidiff from {where.stdout.strip()}")
    with tempfile.TemporaryDirectory(prefix="loss-curve-") as tmp:
        cache, out = prepare_cache(Path(tmp) / "latents"), Path(tmp) / "run"
        r = subprocess.run([sys.executable, "-m", "vidiff", *train_args(model, cache, out, extra)], cwd=tree,
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"vidiff train failed ({r.returncode}):\n{r.stderr[-4000:]}")
        return loss_curve(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["unet", "dit"])
    p.add_argument("out", type=Path, help="JSON file: {model, steps, overrides, loss: [per step]}")
    p.add_argument("--tree", type=Path, default=ROOT, help="source tree whose code and configs train (default: this one)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the run")
    p.add_argument("overrides", nargs="*", help="further key=value overrides for vidiff train")
    args = p.parse_intermixed_args()
    loss = run(args.model, args.tree.resolve(), args.threads, args.overrides)
    record = {"model": args.model, "steps": STEPS, "overrides": [*OVERRIDES, *args.overrides], "threads": args.threads,
              "loss": loss}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(loss)} steps, loss {loss[0]:.4f} -> {loss[-1]:.4f}: {args.out}")


if __name__ == "__main__":
    main()
