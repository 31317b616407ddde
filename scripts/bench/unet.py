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
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    add_step_arguments,
    count_flops,
    cpu_memory_child,
    interleaved_times,
    measure_cpu_memory,
    print_table,
    run_child_or_parse,
)

sys.path.insert(0, str(ROOT))
from vidiff.hostspeed import matmul_gflops  # noqa: E402
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


def memory_child(name: str, args) -> None:
    """Runs in a fresh process: peak extra memory of one training step, in MiB."""
    cpu_memory_child(*build(name, args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p)
    p.add_argument(
        "--width", type=int, default=64, help="diffusers block_out_channels = width * (1, 2, 4, 4)"
    )
    p.add_argument(
        "--full-attention", action="store_true", help="attention at 32x32 too (diffusers' default layout)"
    )
    args = run_child_or_parse(p, memory_child)
    if args is None:
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
    times, cpu = interleaved_times(steps, args.repeats)
    peak_mm = 1e9 * matmul_gflops(2048, repeats=7)
    del models, steps
    mem = {n: measure_cpu_memory(__file__, n, child_argv) for n in names}

    print(
        f"\nlarge-matmul peak (2048^3 fp32, {torch.get_num_threads()} threads): {peak_mm / 1e9:.1f} GFLOP/s"
    )
    med = print_table(list(names), params, times, cpu, {n: mem[n]["peak_mib"] for n in names}, flops, peak_mm)
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
