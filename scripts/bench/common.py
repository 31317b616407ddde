"""Helpers the backbone training-step benchmarks share (scripts/bench/unet.py, scripts/bench/dit.py):
FLOP counting, interleaved step timing, and peak memory of one step (CPU: peak RSS of a fresh process;
CUDA: the allocator's peak). The machine's large-matmul FLOP/s comes from vidiff.hostspeed, the same
reference `vidiff demo` records.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of `step` (forward + backward), attention included."""
    import torch.utils.flop_counter as fc

    aten = torch.ops.aten
    # FlopCounterMode has no formula for the CPU flash-attention kernels; without these it counts 0.
    cpu_sdpa = {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, **kw: fc.sdpa_flop_count(
            q, k, v
        ),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            lambda g, q, k, v, *a, **kw: fc.sdpa_backward_flop_count(g, q, k, v)
        ),
    }
    counter = fc.FlopCounterMode(display=False, custom_mapping=cpu_sdpa)
    with counter:
        step()
    return counter.get_total_flops()


def interleaved_times(
    steps: dict[str, Callable[[], object]], repeats: int, device: str | torch.device = "cpu"
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of each step, the steps taking turns (a first round of warm-up)."""
    times: dict[str, list[float]] = {n: [] for n in steps}
    cpu: dict[str, list[float]] = {n: [] for n in steps}
    for r in range(repeats + 1):
        for n, step in steps.items():
            synchronize(device)
            c0, t0 = os.times(), time.perf_counter()
            step()
            synchronize(device)
            t1, c1 = time.perf_counter(), os.times()
            if r:
                times[n].append(t1 - t0)
                cpu[n].append(c1.user + c1.system - c0.user - c0.system)
        if r:
            print(
                f"  round {r}: "
                + ", ".join(f"{n} {times[n][-1]:.3f}s (cpu {cpu[n][-1]:.2f}s)" for n in steps),
                flush=True,
            )
    return times, cpu


# ---------------------------------------------------------------------------- peak memory


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_delta_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory added while `fn` runs, in MiB (Linux: the kernel's peak-RSS mark)."""
    base = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS mark := current RSS
    fn()
    return (_status_kb("VmHWM") - base) / 1024


def cpu_memory_child(model: torch.nn.Module, step: Callable[[], object]) -> None:
    """In a fresh process (see `measure_cpu_memory`): print the peak extra memory of one step as JSON."""
    calib = peak_delta_mib(lambda: torch.ones(256 * 2**20 // 4).sum())
    step()  # warm-up: one-time buffers (oneDNN primitives etc.) are not the step's cost
    model.zero_grad(set_to_none=True)
    peak = peak_delta_mib(step)
    print(json.dumps({"peak_mib": peak, "calibration_256mib": calib}))


def measure_cpu_memory(script: str, name: str, argv: list[str]) -> dict:
    """Run `script --memory-child name argv...` in a fresh process with glibc told to return every large
    block to the OS at once (so freed memory is not hidden in the allocator); its JSON line."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(
        [sys.executable, script, "--memory-child", name, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"memory measurement of {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cuda_peak_mib(model: torch.nn.Module, step: Callable[[], object]) -> float:
    """Peak CUDA memory one step allocates beyond what is live before it (after a warm-up step), MiB."""
    step()
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ---------------------------------------------------------------------------- report


def print_table(
    names: list[str],
    params: dict[str, int],
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    peak_mib: dict[str, float],
    flops: dict[str, int],
    peak_flops: float,
) -> dict[str, float]:
    """One row per model; returns the median step times."""
    med = {n: statistics.median(times[n]) for n in names}
    print(
        f"{'model':<10} {'params':>9} {'step s median':>14} {'min':>7} {'cpu s':>6} {'peak MiB':>9} "
        f"{'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}"
    )
    for n in names:
        rate = flops[n] / med[n]
        print(
            f"{n:<10} {params[n] / 1e6:>8.2f}M {med[n]:>14.3f} {min(times[n]):>7.3f} "
            f"{statistics.median(cpu[n]):>6.2f} {peak_mib[n]:>9.0f} {flops[n] / 1e9:>11.1f} "
            f"{rate / 1e9:>8.1f} {rate / peak_flops:>8.1%}"
        )
    return med


def add_step_arguments(parser) -> None:
    """The options every training-step bench shares: the input's shape, the text tokens and the repeats."""
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="latent height = width")
    parser.add_argument("--text-len", type=int, default=77)
    parser.add_argument("--text-dim", type=int, default=512)


def run_child_or_parse(parser, memory_child) -> object | None:
    """Parse with the shared --threads / --memory-child options; in a memory child, measure and return None."""
    import argparse

    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-child", choices=["diffusers", "vidiff"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return None
    return args

