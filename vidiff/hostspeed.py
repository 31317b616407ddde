"""This host's reference speed, so that timings taken on different machines can be compared.

A training step or a demo run that took 20 minutes says little without the machine: two numbers put it in
scale. The large-matmul rate is close to the peak a machine reaches on dense math (what the benches'
"share of peak" divides by); the conv step is a small fixed Conv3d forward + backward, the kind of op a
video model runs, which also feels memory bandwidth and threading overhead. Both are the best of a few
runs after a warm-up: the best reading is the one least disturbed by other jobs on a shared machine.
Both run at torch's current thread count. On the CPU the whole measurement takes well under 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}
CONV_SHAPE = (4, 32, 8, 32, 32)  # [B, C, T, H, W] of conv_step_ms's input


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """The fastest of `repeats` timed calls of `fn`, after one untimed warm-up call."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()  # CUDA runs asynchronously: the time is the kernels', not the launch's
        best = min(best, time.perf_counter() - t0)
    return best


def _default_matmul_n(device: torch.device) -> int:
    # large enough that the product runs at the device's dense-math peak, small enough to take a fraction of a second
    return 8192 if device.type == "cuda" else 2048


def _default_repeats(device: torch.device, repeats: int | None) -> int:
    # a GPU's matmul takes milliseconds, so more repeats cost nothing; a CPU's takes a tenth of a second
    return repeats if repeats is not None else (10 if device.type == "cuda" else 3)


def matmul_gflops(
    n: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    repeats: int | None = None,
) -> float:
    """GFLOP/s of an n x n x n matrix product (2 n^3 FLOPs), the best of `repeats` (3 on the CPU, 10 on a GPU).

    `n` defaults to 2048 on the CPU and 8192 on a GPU."""
    device = torch.device(device)
    n = n or _default_matmul_n(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _best_seconds(lambda: a @ b, _default_repeats(device, repeats), device)
    return 2 * n**3 / seconds / 1e9


def conv_step_ms(
    shape: tuple[int, int, int, int, int] = CONV_SHAPE,
    out_channels: int = 32,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    repeats: int | None = None,
) -> float:
    """Milliseconds of one forward + backward of a 3x3x3 Conv3d (padding 1) on an input of `shape`
    [B, C, T, H, W] to `out_channels` channels, the best of `repeats` (3 on the CPU, 10 on a GPU)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)  # the same weights and input on every host
    conv = torch.nn.Conv3d(shape[1], out_channels, 3, padding=1)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    conv = conv.to(device=device, dtype=dtype)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)

    def step():
        conv.zero_grad(set_to_none=True)
        x.grad = None
        conv(x).square().mean().backward()

    return 1e3 * _best_seconds(step, _default_repeats(device, repeats), device)


def host_reference(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    matmul_n: int | None = None,
    conv_shape: tuple[int, int, int, int, int] = CONV_SHAPE,
    repeats: int | None = None,
) -> dict:
    """Both reference numbers with what they depend on: the matmul size and dtype, the threads (CPU) or the
    GPU's name, and the torch version. The defaults are the reference; other sizes are for tests."""
    device = torch.device(device)
    n = matmul_n or _default_matmul_n(device)
    return {
        "matmul_gflops": _three_digits(matmul_gflops(n, dtype, device, repeats)),
        "matmul_n": n,
        "dtype": dtype_name(dtype),
        "conv_step_ms": _three_digits(conv_step_ms(conv_shape, dtype=dtype, device=device, repeats=repeats)),
        "conv_shape": list(conv_shape),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _three_digits(x: float) -> float:
    """Three significant digits: what the measurement's noise allows, and never rounded down to 0."""
    return float(f"{x:.3g}")


def format_host_reference(d: dict) -> str:
    """One line, e.g. "host: 158.6 GFLOP/s large matmul (2048^3 fp32, 2 threads), conv step 41.2 ms"."""
    where = d.get("device_name") or f"{d['threads']} threads"
    return (
        f"host: {d['matmul_gflops']:.1f} GFLOP/s large matmul ({d['matmul_n']}^3 {d['dtype']}, {where}), "
        f"conv step {d['conv_step_ms']:.1f} ms"
    )
