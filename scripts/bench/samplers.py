"""Sampler accuracy on Gaussian data, whose exact denoiser is known: error of the sampled distribution
against the truth for each sampler and step count, and whether DPM-Solver++(2M)@20 beats DDIM@50.

    python scripts/bench/samplers.py                       # linear, scaled_linear+ZTSNR, cosine+ZTSNR; v
    python scripts/bench/samplers.py --schedule cosine --prediction eps --no-ztsnr

Data: 3 channels, mean (0.6, 0, -0.4), std (0.5, 1, 1.3). Deterministic samplers start from noise
standardized per channel (exact mean 0, std 1): their map is affine for this data, so the errors are
pure discretization. DDPM injects fresh noise; its rows carry a sampling error of about the printed SE.
Exit status 1 if DPM-Solver++(2M)@20 is less accurate (W2) than DDIM@50 on any schedule.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vidiff.diffusion import SAMPLERS, get_sampler, make_schedule  # noqa: E402
from vidiff.diffusion.analytic import GaussianData, standard_noise  # noqa: E402

DATA = GaussianData(mean=(0.6, 0.0, -0.4), std=(0.5, 1.0, 1.3))
STEPS = (5, 10, 20, 50)
DEFAULT_PROBLEMS = [("linear", False), ("scaled_linear", True), ("cosine", True)]


def run_problem(schedule_name: str, ztsnr: bool, prediction: str, shape, ddpm_reference: bool) -> bool:
    schedule = make_schedule(schedule_name, zero_terminal_snr=ztsnr)
    x_T = standard_noise(shape, torch.Generator().manual_seed(0))
    per_channel = x_T.numel() // shape[1]
    fn = DATA.denoise_fn(schedule, prediction)
    print(f"\n## {schedule.name}, {prediction}-prediction, {per_channel} values per channel")
    print("| sampler | steps | mean err | std err (rel) | W2 (rel) | KL | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    w2 = {}
    runs = [(name, steps) for name in SAMPLERS for steps in STEPS]
    if ddpm_reference:
        runs.append(("ddpm", 1000))
    for name, steps in runs:
        start = time.perf_counter()
        out = get_sampler(name)(
            fn, x_T, schedule, steps, prediction=prediction, generator=torch.Generator().manual_seed(1)
        )
        seconds = time.perf_counter() - start
        e = DATA.errors(out)
        w2[name, steps] = e["w2"]
        print(
            f"| {name} | {steps} | {e['mean_err']:.4f} | {e['std_err']:.4f} | {e['w2']:.4f} | {e['kl']:.2e} | {seconds:.2f} |"
        )
    print(
        f"(DDPM rows: sampling SE of the std about {1 / math.sqrt(2 * per_channel):.4f}, of the mean up to "
        f"{max(DATA.std) / math.sqrt(per_channel):.4f})"
    )
    ok = w2["dpmpp_2m", 20] <= w2["ddim", 50]
    verdict = "YES" if ok else "NO"
    print(
        f"DPM-Solver++(2M)@20 at least as accurate as DDIM@50 on {schedule.name}: {verdict} "
        f"(W2 {w2['dpmpp_2m', 20]:.4f} vs {w2['ddim', 50]:.4f})"
    )
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--schedule", choices=["linear", "scaled_linear", "cosine"], help="one schedule (default: three)"
    )
    p.add_argument(
        "--no-ztsnr", action="store_true", help="with --schedule: keep the schedule's terminal SNR"
    )
    p.add_argument("--prediction", default="v", choices=["eps", "x0", "v"])
    p.add_argument("--values", type=int, default=32768, help="values per channel (default 32768)")
    p.add_argument("--no-ddpm-1000", action="store_true", help="skip the DDPM@1000 reference row")
    p.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: small elementwise ops)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    problems = [(args.schedule, not args.no_ztsnr)] if args.schedule else DEFAULT_PROBLEMS
    shape = (1, 3, max(1, args.values // 1024), 32, 32)
    start = time.perf_counter()
    results = [run_problem(name, z, args.prediction, shape, not args.no_ddpm_1000) for name, z in problems]
    print(f"\ntotal {time.perf_counter() - start:.1f}s; torch {torch.__version__}, {args.threads} thread(s)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
