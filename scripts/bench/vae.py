"""Benchmark of CausalVAE3D on the CPU, measured side by side in one run; prints ratios.

1. Chunked decode memory: peak memory of decoding 4x more frames at the same size (target <= 1.3x).
2. Against diffusers' AutoencoderKLCogVideoX with the same widths, depth, latent channels and input:
   our encode+decode time and peak memory divided by theirs (target <= 1.0 for both).
3. The parameter count of configs/gpu/vae.yaml (built on the meta device, nothing allocated).

Memory method: every measurement runs in a fresh subprocess (Linux). After building the model and the input,
it returns freed heap to the OS (malloc_trim), resets the kernel's peak-RSS mark (`echo 5 > /proc/self/clear_refs`)
and notes VmRSS; after the work it reads VmHWM. Peak memory = VmHWM - that baseline: everything the call
allocated (activations, caches, the output), as the OS saw it. tracemalloc would miss torch's allocations.
Time: median of repeated encode+decode calls after a warm-up, ours and theirs interleaved round by round so
that load from other processes hits both alike.

    python scripts/bench/vae.py            # full run (a few minutes on 2 cores)
    python scripts/bench/vae.py --quick    # smaller sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _fix_mmap_threshold(nbytes: int) -> None:
    """glibc: serve every allocation >= nbytes by mmap (returned to the OS on free) and stop the dynamic threshold
    from rising, so peak RSS follows live tensors instead of heap fragmentation."""
    M_MMAP_THRESHOLD = -3
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, nbytes)


def _start_peak() -> int:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def _models(widths: list[int], layers: int, latent: int):
    import torch

    from vidiff.models.vae import CausalVAE3D, VAEConfig

    torch.manual_seed(0)
    ours = CausalVAE3D(VAEConfig(
        block_out_channels=tuple(widths), layers_per_block=layers, decoder_layers_per_block=layers + 1,
        mid_layers=2, latent_channels=latent, temporal_compression=4, spatial_compression=2 ** (len(widths) - 1),
    )).eval()
    return ours


def _cogvideox(widths: list[int], layers: int, latent: int):
    import torch
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    n = len(widths)
    return AutoencoderKLCogVideoX(
        block_out_channels=tuple(widths), layers_per_block=layers, latent_channels=latent,
        down_block_types=("CogVideoXDownBlock3D",) * n, up_block_types=("CogVideoXUpBlock3D",) * n,
        norm_num_groups=min(32, widths[0]), temporal_compression_ratio=4,
    ).eval()


def worker(args) -> dict:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    spec = json.loads(args.spec)
    w, layers, latent = spec["widths"], spec["layers"], spec["latent"]
    t, h, wd = spec["frames"], spec["height"], spec["width"]
    result = {}
    with torch.no_grad():
        if spec["kind"] == "decode":  # ours, latents -> video, chunking on or off
            if spec.get("mmap_threshold"):
                _fix_mmap_threshold(spec["mmap_threshold"])
            vae = _models(w, layers, latent)
            if not spec["chunking"]:
                vae.disable_chunking()
            s = vae.config.spatial_compression
            z = torch.randn(1, latent, vae.latent_frames(t), h // s, wd // s)
            base = _start_peak()
            t0 = time.perf_counter()
            out = vae.decode(z)
            result["seconds"] = time.perf_counter() - t0
            result["peak_mb"] = (_status_kb("VmHWM") - base) / 1024
            result["out_mb"] = out.numel() * 4 / 2**20
        else:  # encode + decode, ours or CogVideoX
            ours = spec["kind"] == "ours"
            vae = _models(w, layers, latent) if ours else _cogvideox(w, layers, latent)
            x = torch.rand(1, 3, t, h, wd) * 2 - 1

            def run():
                if ours:
                    return vae.decode(vae.encode(x).mode())
                return vae.decode(vae.encode(x).latent_dist.mode()).sample

            base = _start_peak()
            run()  # the first call is both the memory measurement and the warm-up
            result["peak_mb"] = (_status_kb("VmHWM") - base) / 1024
            times = []
            for _ in range(spec["repeats"]):
                t0 = time.perf_counter()
                y = run()
                times.append(time.perf_counter() - t0)
            result["seconds"] = times
            result["shape"] = list(y.shape)
            result["params"] = sum(p.numel() for p in vae.parameters())
    print(json.dumps(result))
    return result


def measure(spec: dict, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec), "--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"benchmark worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1: steadiest on a shared machine)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ours vs CogVideoX")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.spec = args.worker
        worker(args)
        return
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this benchmark measures peak memory through /proc (Linux only)")

    widths, layers, latent = ([16, 32, 32, 64], 1, 16) if args.quick else ([32, 64, 64, 128], 2, 16)
    size = 64 if args.quick else 128
    frames = 9 if args.quick else 17
    report: dict = {"widths": widths, "layers_per_block": layers, "latent_channels": latent, "threads": args.threads}

    # 1. decode memory, T vs 4T frames (1 + 4k -> 1 + 16k): chunking on and off with glibc's default allocator,
    # and chunking on with a fixed mmap threshold (peak RSS then follows live tensors, not heap fragmentation)
    long_frames = 4 * (frames - 1) + 1
    settings = {"chunking on ": (True, 0), "chunking off": (False, 0), "chunking on, fixed mmap threshold": (True, 1 << 17)}
    mem = {}
    for name, (chunking, threshold) in settings.items():
        for t in (frames, long_frames):
            spec = dict(kind="decode", widths=widths, layers=layers, latent=latent, frames=t, height=size, width=size,
                        chunking=chunking, mmap_threshold=threshold)
            mem[(name, t)] = measure(spec, args.threads)
    print(f"decode peak memory, {size}x{size}, {frames} -> {long_frames} frames (widths {widths}), target <= 1.3x:")
    ratios = {}
    for name in settings:
        a, b = mem[(name, frames)], mem[(name, long_frames)]
        ratios[name.strip()] = b["peak_mb"] / a["peak_mb"]
        print(f"  {name}: {a['peak_mb']:8.1f} MB -> {b['peak_mb']:8.1f} MB = {ratios[name.strip()]:.2f}x "
              f"(output alone {b['out_mb']:.1f} MB)")
    report["decode_memory"] = {"frames": [frames, long_frames], "size": size, "ratios": ratios,
                               "mb": {f"{n.strip()}_{t}": v["peak_mb"] for (n, t), v in mem.items()}}

    # 2. ours vs CogVideoX, interleaved
    runs: dict[str, list[dict]] = {"ours": [], "cogvideox": []}
    for _ in range(args.rounds):
        for kind in ("ours", "cogvideox"):
            spec = dict(kind=kind, widths=widths, layers=layers, latent=latent, frames=frames, height=size, width=size,
                        repeats=2)
            runs[kind].append(measure(spec, args.threads))
    t_ours = statistics.median(s for r in runs["ours"] for s in r["seconds"])
    t_cog = statistics.median(s for r in runs["cogvideox"] for s in r["seconds"])
    m_ours = statistics.median(r["peak_mb"] for r in runs["ours"])
    m_cog = statistics.median(r["peak_mb"] for r in runs["cogvideox"])
    print(f"encode+decode 1x3x{frames}x{size}x{size}, widths {widths}, {layers} resnets/block "
          f"(decoder {layers + 1}), {args.threads} threads, {args.rounds} interleaved rounds:")
    print(f"  ours:      {t_ours:7.2f} s  {m_ours:8.1f} MB peak  ({runs['ours'][0]['params'] / 1e6:.2f} M params)")
    print(f"  CogVideoX: {t_cog:7.2f} s  {m_cog:8.1f} MB peak  ({runs['cogvideox'][0]['params'] / 1e6:.2f} M params)")
    print(f"  time ratio ours/CogVideoX:   {t_ours / t_cog:.2f}  (target <= 1.0)")
    print(f"  memory ratio ours/CogVideoX: {m_ours / m_cog:.2f}  (target <= 1.0)")
    report["vs_cogvideox"] = {"seconds": [t_ours, t_cog], "peak_mb": [m_ours, m_cog], "time_ratio": t_ours / t_cog,
                              "memory_ratio": m_ours / m_cog, "frames": frames, "size": size,
                              "params": [runs["ours"][0]["params"], runs["cogvideox"][0]["params"]]}

    # 3. GPU config size
    from vidiff.config import load_config
    from vidiff.models.vae import count_parameters
    from vidiff.training.vae_config import VAETrainConfig

    n = count_parameters(load_config(VAETrainConfig, ROOT / "configs/gpu/vae.yaml").model)
    print(f"configs/gpu/vae.yaml: {n / 1e6:.1f} M parameters")
    report["gpu_config_params"] = n
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
