"""Benchmark: VideoDiT vs diffusers' LatteTransformer3DModel, training step (forward + backward).

Both models get the same latent input (default B=2, C=4, T=8, 32x32), the same patch (1 x 2 x 2 for
ours, 2 x 2 for Latte, so the same 16 x 16 = 256 tokens per frame), the same text tokens (77 of width
512, no padding), the same width, heads and depth (so close parameter counts, ~50M each by default),
and the same gradient checkpointing, dtype (fp32, or bf16 autocast) and SDPA backend settings. Latte
(norm_type "ada_norm_single", its text-to-video layout) runs a spatial block (self-attention,
cross-attention, MLP) and a temporal block (self-attention, MLP) per layer; ours runs spatial,
temporal and cross-attention and one MLP per block, with adaLN-Zero, QK-norm and rotary positions.

Time: interleaved repeats in this process, medians (the CPU may be shared). Peak memory: on CUDA the
allocator's peak during one step beyond what is live before it; on the CPU one fresh subprocess per
model reads VmHWM - VmRSS around one step after a warm-up (see scripts/bench/common.py). FLOPs:
FlopCounterMode, shown as achieved FLOP/s and as a share of this machine's measured large-matmul
FLOP/s (2048^3 fp32 on the CPU, 8192^3 in the step's dtype on a GPU).

    python scripts/bench/dit.py [--device cuda] [--dtype bf16] [--checkpointing] [--attention efficient]
    python scripts/bench/dit.py --only-vidiff --size 16   # without diffusers (pip install -e ".[bench]")

On the CPU a default step takes seconds; `--threads 1 --size 16` is the steadiest small reading.
"""

from __future__ import annotations

import argparse
import contextlib
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
    cuda_peak_mib,
    interleaved_times,
    measure_cpu_memory,
    print_table,
    run_child_or_parse,
)

sys.path.insert(0, str(ROOT))
from vidiff.hostspeed import matmul_gflops  # noqa: E402
from vidiff.models.cond import Cond  # noqa: E402
from vidiff.models.dit import DiTConfig, VideoDiT  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# SDPA kernels for both models; vidiff's cross-attention always carries a key mask (its learned null
# token and the text mask), which the flash kernel does not take, so "flash" is not offered.
BACKENDS = {"auto": None, "math": "MATH", "efficient": "EFFICIENT_ATTENTION"}


def latte_class():
    try:
        from diffusers import LatteTransformer3DModel
    except ImportError as exc:
        raise SystemExit(
            f'diffusers is needed for the comparison ({exc}); install it with `pip install -e ".[bench]"`, '
            "or run `python scripts/bench/dit.py --only-vidiff` for vidiff's half alone"
        ) from None
    return LatteTransformer3DModel


def latte_model(args):
    return latte_class()(
        num_attention_heads=args.heads,
        attention_head_dim=args.width // args.heads,
        in_channels=args.channels,
        out_channels=args.channels,
        num_layers=args.depth,
        cross_attention_dim=args.width,  # Latte projects the caption to its width first (caption_projection)
        caption_channels=args.text_dim,
        attention_bias=True,
        sample_size=args.size,
        patch_size=args.patch,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        video_length=args.frames,
    )


def vidiff_config(args) -> DiTConfig:
    return DiTConfig(
        in_channels=args.channels,
        patch_size=(1, args.patch, args.patch),
        hidden_size=args.width,
        depth=args.depth,
        num_heads=args.heads,
        text_dim=args.text_dim,
        gradient_checkpointing=args.checkpointing,
    )


def build(name: str, args):
    """The model (fp32 weights, training mode) and one training step (zero grads, forward, backward)."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    if name == "diffusers":
        model = latte_model(args)
        if args.checkpointing:
            model.enable_gradient_checkpointing()
    else:
        model = VideoDiT(vidiff_config(args))
    model.to(device).train()
    gen = torch.Generator().manual_seed(1)
    b, t, s = args.batch, args.frames, args.size
    x = torch.randn(b, args.channels, t, s, s, generator=gen).to(device)
    ts = torch.rand(b, generator=gen).to(device)
    text = torch.randn(b, args.text_len, args.text_dim, generator=gen).to(device)
    dtype = DTYPES[args.dtype]

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def attention_backend():
        # around backward too: checkpointed blocks recompute their forward there
        if BACKENDS[args.attention] is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(getattr(SDPBackend, BACKENDS[args.attention]))

    if name == "diffusers":

        def forward():
            return model(x, timestep=ts * 1000, encoder_hidden_states=text).sample

    else:
        cond = Cond(text, torch.ones(b, args.text_len, dtype=torch.bool, device=device))

        def forward():
            return model(x, ts, cond)

    def step():
        model.zero_grad(set_to_none=True)
        with attention_backend():
            with autocast():
                out = forward()
            out.float().square().mean().backward()

    return model, step


def memory_child(name: str, args) -> None:
    """Runs in a fresh process: peak extra memory of one training step, in MiB."""
    cpu_memory_child(*build(name, args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p)
    p.add_argument("--patch", type=int, default=2, help="spatial patch (ours: 1 x patch x patch)")
    p.add_argument("--width", type=int, default=512, help="hidden size of both models")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument(
        "--depth", type=int, default=7, help="blocks (ours) = layers (Latte's spatial + temporal pairs)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="bf16/fp16: autocast, fp32 weights")
    p.add_argument("--attention", choices=list(BACKENDS), default="auto", help="SDPA backend for both")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in both")
    p.add_argument("--only-vidiff", action="store_true", help="time vidiff alone (no diffusers needed)")
    args = run_child_or_parse(p, memory_child)
    if args is None:
        return
    if args.size % args.patch:
        raise SystemExit(f"--size {args.size} is not a multiple of --patch {args.patch}")
    cuda = torch.device(args.device).type == "cuda"
    names = ["vidiff"] if args.only_vidiff else ["diffusers", "vidiff"]
    if not args.only_vidiff:
        latte_class()  # fail early, with the install hint

    models, steps = {}, {}
    for n in names:
        models[n], steps[n] = build(n, args)
    params = {n: sum(q.numel() for q in models[n].parameters()) for n in names}
    tokens = (args.size // args.patch) ** 2
    print(
        f"input: x [{args.batch}, {args.channels}, {args.frames}, {args.size}, {args.size}], patch "
        f"{args.patch}x{args.patch} -> {tokens} tokens per frame, {tokens * args.frames} per clip; "
        f"text [{args.batch}, {args.text_len}, {args.text_dim}]"
    )
    print(
        f"both: width {args.width}, {args.heads} heads, depth {args.depth}; device {args.device}, "
        f"dtype {args.dtype}, attention {args.attention}, checkpointing {'on' if args.checkpointing else 'off'}"
        + ("" if cuda else f", threads {torch.get_num_threads()}")
    )
    print("parameters: " + ", ".join(f"{n} {params[n] / 1e6:.2f}M" for n in names), end="")
    print(f" (ratio {params['vidiff'] / params['diffusers']:.3f})" if len(names) == 2 else "")

    flops = {n: count_flops(steps[n]) for n in names}
    times, cpu = interleaved_times(steps, args.repeats, args.device)
    if cuda:
        peak_mm = 1e9 * matmul_gflops(8192, DTYPES[args.dtype], args.device, repeats=7)
        mem = {n: cuda_peak_mib(models[n], steps[n]) for n in names}
        del models, steps
    else:
        peak_mm = 1e9 * matmul_gflops(2048, repeats=7)
        del models, steps
        child_argv = list(sys.argv[1:])
        mem_child = {n: measure_cpu_memory(__file__, n, child_argv) for n in names}
        mem = {n: mem_child[n]["peak_mib"] for n in names}
        calib = [round(mem_child[n]["calibration_256mib"]) for n in names]

    size = (
        f"8192^3 {args.dtype} on {torch.cuda.get_device_name()}"
        if cuda
        else f"2048^3 fp32, {torch.get_num_threads()} threads"
    )
    print(f"\nlarge-matmul peak ({size}): {peak_mm / 1e9:.1f} GFLOP/s")
    med = print_table(names, params, times, cpu, mem, flops, peak_mm)
    if not cuda:
        print(f"memory calibration: a 256 MiB allocation read as {calib} MiB")
    if args.only_vidiff:
        return
    t_min = min(times["vidiff"]) / min(times["diffusers"])
    t_cpu = statistics.median(cpu["vidiff"]) / statistics.median(cpu["diffusers"])
    print(f"time ratio by fastest step {t_min:.2f}, by median process CPU time {t_cpu:.2f}")
    t_ratio = med["vidiff"] / med["diffusers"]
    m_ratio = mem["vidiff"] / mem["diffusers"]
    share = {n: flops[n] / med[n] / peak_mm for n in names}
    print(
        f"\nratio vidiff / diffusers: time {t_ratio:.2f}, peak memory {m_ratio:.2f}; "
        f"share of the matmul peak {share['vidiff']:.1%} vs {share['diffusers']:.1%}"
    )


if __name__ == "__main__":
    main()
