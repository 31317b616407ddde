"""Benchmark: FactorizedUNet vs diffusers' UNet3DConditionModel, training step (forward + backward).

Both models get the same input (default B=2, C=4, T=8, 32x32 latents, 77 text tokens of width 512)
and matched parameter counts. Time: interleaved repeats in this process, medians (the CPU may be
shared). Peak memory: one fresh subprocess per model; after a warm-up step it resets the kernel's
peak-RSS mark (/proc/self/clear_refs) and reads VmHWM - VmRSS around one step, with glibc told to
return every large block to the OS at once (MALLOC_MMAP_THRESHOLD_), so freed memory is not hidden
in the allocator. A known 256 MiB allocation calibrates that reading. FLOPs: FlopCounterMode, shown
as achieved FLOP/s and as a share of this machine's measured large-matmul FLOP/s.

    python scripts/bench/unet.py [--repeats 5] [--full-attention] [--threads N]

On a CPU shared with other jobs wall times swing several-fold; the interleaved medians still compare
like with like, and `--threads 1` with the process-CPU-time ratio is the steadiest reading.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vidiff.models.cond import Cond  # noqa: E402
from vidiff.models.unet import FactorizedUNet, UNetConfig  # noqa: E402

TIME_TARGET, MEMORY_TARGET = 0.8, 1.0


def diffusers_model(args):
    from diffusers import UNet3DConditionModel

    if args.full_attention:  # diffusers' default layout: cross-attention blocks at levels 0, 1, 2
        down = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
        up = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    else:
        down = ("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D")
        up = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D")
    return UNet3DConditionModel(
        in_channels=args.channels,
        out_channels=args.channels,
        block_out_channels=tuple(args.width * m for m in (1, 2, 4, 4)),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=2,
        cross_attention_dim=args.text_dim,
        attention_head_dim=8,  # diffusers reads this as the number of heads
    )


def ours_config(args, model_channels: int) -> UNetConfig:
    head_dim = next(h for h in (64, 40, 32, 16, 8) if model_channels % h == 0)
    return UNetConfig(
        in_channels=args.channels,
        model_channels=model_channels,
        channel_mults=(1, 2, 4, 4),
        num_res_blocks=2,
        attention_levels=(0, 1, 2) if args.full_attention else (1, 2),
        head_dim=head_dim,
        text_dim=args.text_dim,
    )


def matched_config(args, target: int) -> UNetConfig:
    """The model_channels (multiple of 8) whose parameter count is closest to `target`."""
    best = None
    with torch.device("meta"):
        for mc in range(32, 4 * args.width + 1, 8):
            n = FactorizedUNet(ours_config(args, mc)).num_parameters()
            if best is None or abs(n - target) < abs(best[0] - target):
                best = (n, mc)
    return ours_config(args, best[1])


def build(name: str, args):
    torch.manual_seed(0)
    ref = diffusers_model(args)
    if name == "diffusers":
        model = ref
    else:
        model = FactorizedUNet(matched_config(args, sum(p.numel() for p in ref.parameters())))
        del ref
    model.train()
    b, t, s = args.batch, args.frames, args.size
    x = torch.randn(b, args.channels, t, s, s)
    ts = torch.rand(b)
    text = torch.randn(b, args.text_len, args.text_dim)
    if name == "diffusers":

        def step():
            model.zero_grad(set_to_none=True)
            out = model(x, ts * 1000, encoder_hidden_states=text).sample
            out.square().mean().backward()

    else:
        cond = Cond(text, torch.ones(b, args.text_len, dtype=torch.bool))

        def step():
            model.zero_grad(set_to_none=True)
            model(x, ts, cond).square().mean().backward()

    return model, step


def matmul_flops_per_s(n: int = 2048, repeats: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def count_flops(step) -> int:
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


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_delta_mib(fn) -> float:
    base = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS mark := current RSS
    fn()
    return (_status_kb("VmHWM") - base) / 1024


def memory_child(name: str, args) -> None:
    """Runs in a fresh process: peak extra memory of one training step, in MiB."""
    calib = _peak_delta_mib(lambda: torch.ones(256 * 2**20 // 4).sum())
    model, step = build(name, args)
    step()  # warm-up: one-time buffers (oneDNN primitives etc.) are not the step's cost
    model.zero_grad(set_to_none=True)
    peak = _peak_delta_mib(step)
    print(json.dumps({"peak_mib": peak, "calibration_256mib": calib}))


def measure_memory(name: str, argv: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--text-len", type=int, default=77)
    p.add_argument("--text-dim", type=int, default=512)
    p.add_argument(
        "--width", type=int, default=64, help="diffusers block_out_channels = width * (1, 2, 4, 4)"
    )
    p.add_argument(
        "--full-attention", action="store_true", help="attention at 32x32 too (diffusers' default layout)"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory-child", choices=["diffusers", "vidiff"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    child_argv = [a for a in sys.argv[1:]]

    names = ("diffusers", "vidiff")
    models, steps = {}, {}
    for n in names:
        models[n], steps[n] = build(n, args)
    params = {n: sum(p.numel() for p in models[n].parameters()) for n in names}
    print(
        f"input: x [{args.batch}, {args.channels}, {args.frames}, {args.size}, {args.size}], "
        f"text [{args.batch}, {args.text_len}, {args.text_dim}]; threads {torch.get_num_threads()}; "
        f"attention at {'32x32, ' if args.full_attention else ''}16x16, 8x8"
    )
    cfg = models["vidiff"].config
    print(
        f"vidiff: model_channels={cfg.model_channels} mults={cfg.channel_mults} head_dim={cfg.head_dim}; "
        f"diffusers: block_out_channels={tuple(args.width * m for m in (1, 2, 4, 4))} heads=8"
    )
    print(
        f"parameters: diffusers {params['diffusers'] / 1e6:.2f}M, vidiff {params['vidiff'] / 1e6:.2f}M "
        f"(ratio {params['vidiff'] / params['diffusers']:.3f})"
    )

    flops = {n: count_flops(steps[n]) for n in names}
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(args.repeats + 1):  # first round is warm-up
        for n in names:
            c0, t0 = os.times(), time.perf_counter()
            steps[n]()
            t1, c1 = time.perf_counter(), os.times()
            if r:
                times[n].append(t1 - t0)
                cpu[n].append(c1.user + c1.system - c0.user - c0.system)
        if r:
            print(
                f"  round {r}: "
                + ", ".join(f"{n} {times[n][-1]:.2f}s (cpu {cpu[n][-1]:.2f}s)" for n in names),
                flush=True,
            )
    peak_mm = matmul_flops_per_s()
    del models, steps
    mem = {n: measure_memory(n, child_argv) for n in names}

    med = {n: statistics.median(times[n]) for n in names}
    print(
        f"\nlarge-matmul peak (2048^3 fp32, {torch.get_num_threads()} threads): {peak_mm / 1e9:.1f} GFLOP/s"
    )
    print(
        f"{'model':<10} {'params':>9} {'step s median':>14} {'min':>6} {'cpu s':>6} {'peak MiB':>9} "
        f"{'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}"
    )
    for n in names:
        rate = flops[n] / med[n]
        print(
            f"{n:<10} {params[n] / 1e6:>8.2f}M {med[n]:>14.2f} {min(times[n]):>6.2f} {statistics.median(cpu[n]):>6.2f} "
            f"{mem[n]['peak_mib']:>9.0f} {flops[n] / 1e9:>11.1f} {rate / 1e9:>8.1f} {rate / peak_mm:>8.1%}"
        )
    calib = [round(mem[n]["calibration_256mib"]) for n in names]
    print(f"memory calibration: a 256 MiB allocation read as {calib} MiB")
    t_min = min(times["vidiff"]) / min(times["diffusers"])
    t_cpu = statistics.median(cpu["vidiff"]) / statistics.median(cpu["diffusers"])
    print(f"time ratio by fastest step {t_min:.2f}, by median process CPU time {t_cpu:.2f}")
    t_ratio = med["vidiff"] / med["diffusers"]
    m_ratio = mem["vidiff"]["peak_mib"] / mem["diffusers"]["peak_mib"]
    print(
        f"\nratio vidiff / diffusers: time {t_ratio:.2f} (target <= {TIME_TARGET}: "
        f"{'met' if t_ratio <= TIME_TARGET else 'NOT met'}), memory {m_ratio:.2f} "
        f"(target <= {MEMORY_TARGET}: {'met' if m_ratio <= MEMORY_TARGET else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
