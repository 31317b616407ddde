"""Benchmark: DDP and DeepSpeed ZeRO-1/2/3 side by side at 2 CPU ranks (gloo) on a video DiT of over 100M
parameters: each rank's memory of the model states, and the training step time.

Memory is counted as live tensor bytes: every tensor storage reachable from the model, the optimizer and
DeepSpeed's engine (attributes, containers, each parameter's gradient and ZeRO-3 partition), each storage once,
after the first optimizer step has created AdamW's state, measured right after the second step's backward
(weights, gradients and optimizer state are all alive then, the activations are freed). It is reported per parameter beside what
ZeRO's accounting predicts for fp32 training with AdamW at N ranks: weights 4, gradients 4, AdamW's two moments 8,
and under ZeRO DeepSpeed's fp32 master copy of the partition 4 (it keeps one even when training in fp32):

    DDP 4 + 4 + 8 = 16 | ZeRO-1 4 + 4 + (4 + 8)/N | ZeRO-2 4 + (4 + 4 + 8)/N | ZeRO-3 (4 + 4 + 4 + 8)/N

Tensors only C++ holds are not seen: DDP's gradient buckets (a further 4 bytes per parameter, as vidiff runs DDP
with Lightning's defaults) are not in its figure. DeepSpeed's communication buckets are seen and counted; their
sizes are printed.
Step time is the median of `--steps` steps after 2 warm-up steps (forward, backward, all-reduce or
reduce-scatter, AdamW, all-gather), every rank 1 thread. Each strategy runs in its own 2 processes, one strategy
at a time.

    python scripts/bench/zero.py [--strategies ddp,zero1,zero2,zero3] [--steps 5] [--hidden 768] [--depth 14]
                                 [--bucket N]

`--arithmetic` prints instead, for each stage in configs/gpu/ (parameters counted on the meta device), the GPU
memory per rank of its model states in bf16 mixed precision with AdamW at 8 and 64 GPUs: bf16 weights 2 and
gradients 2, fp32 master 4 and moments 8 (ZeRO's K = 12), partitioned as each stage partitions them, plus
vidiff's fp32 EMA (4, partitioned under ZeRO-3). Activations come on top and depend on the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vidiff.models.cond import Cond  # noqa: E402
from vidiff.pipelines.stage import DiffusionStage, StageConfig  # noqa: E402
from vidiff.training.optimizer import adamw  # noqa: E402
from vidiff.training.strategy import DistributedConfig, deepspeed_config  # noqa: E402

WORLD = 2


def predicted_bytes_per_param(strategy: str, n: int = WORLD) -> float:
    return {"ddp": 16.0, "zero1": 8 + 12 / n, "zero2": 4 + 16 / n, "zero3": 20 / n}[strategy]


def build_stage(hidden: int, depth: int) -> DiffusionStage:
    from vidiff.config import load_config

    config = load_config(StageConfig, None, [
        "latent_channels=4", "latent_frames=3", "latent_height=8", "latent_width=8", "denoiser.kind=dit",
        "denoiser.dit.in_channels=4", "denoiser.dit.patch_size=[1,2,2]", f"denoiser.dit.hidden_size={hidden}",
        f"denoiser.dit.depth={depth}", f"denoiser.dit.num_heads={hidden // 64}", "denoiser.dit.text_dim=64"])
    torch.manual_seed(0)
    return DiffusionStage(config)


def held_tensor_bytes(*roots) -> int:
    """Bytes of the distinct tensor storages reachable from `roots` (the model, the optimizer or DeepSpeed's engine):
    through attributes, containers, each parameter's .grad and DeepSpeed's partition (.ds_tensor)."""
    warnings.filterwarnings("ignore", message=".*grad attribute of a Tensor that is not a leaf.*")
    seen_objects, storages, stack = set(), {}, list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen_objects or obj is None or isinstance(obj, (str, bytes, int, float, bool, type)):
            continue
        seen_objects.add(id(obj))
        if torch.is_tensor(obj):
            storage = obj.untyped_storage()
            storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
            stack += [obj.grad, *vars(obj).values()]  # a parameter's gradient; ZeRO-3's ds_tensor
        elif isinstance(obj, dict):
            stack += [*obj.keys(), *obj.values()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("torch", "deepspeed", "vidiff"):
            stack += list(vars(obj).values())
    return sum(storages.values())


def batch(stage: DiffusionStage, size: int = 2):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(size, 4, 3, 8, 8, generator=gen)
    cond = Cond(text=torch.randn(size, 8, 64, generator=gen), text_mask=torch.ones(size, 8, dtype=torch.bool))
    return x, torch.randint(0, 1000, (size,), generator=gen), cond


def worker(rank: int, strategy: str, port: int, args, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    stage = build_stage(args.hidden, args.depth)
    params = sum(p.numel() for p in stage.denoiser.parameters())
    optimizer = adamw(stage.denoiser.parameters(), "fused", lr=1e-4, weight_decay=0.01)
    x, t, cond = batch(stage)
    ds_info = None
    if strategy == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(stage.denoiser)  # as Lightning's DDPStrategy wraps it

        def backward():
            model(x, t, cond).float().pow(2).mean().backward()

        def step():
            torch.nn.utils.clip_grad_norm_(stage.denoiser.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        import deepspeed

        ds = deepspeed_config(DistributedConfig(strategy=strategy))
        zero = ds["zero_optimization"]
        for key in ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size"):
            if key in zero and args.bucket:
                zero[key] = args.bucket
        ds.update(train_micro_batch_size_per_gpu=x.shape[0], gradient_accumulation_steps=1, gradient_clipping=1.0)
        ds_info = ds
        engine, *_ = deepspeed.initialize(model=stage.denoiser, optimizer=optimizer, config=ds,
                                          dist_init_required=False)

        def backward():
            engine.backward(engine(x, t, cond).float().pow(2).mean())

        def step():
            engine.step()

    backward()
    step()  # AdamW's state exists from here on
    backward()
    live = held_tensor_bytes(stage.denoiser, optimizer, engine if strategy != "ddp" else None)
    step()
    times = []
    for _ in range(args.steps):
        dist.barrier()
        start = time.perf_counter()
        backward()
        step()
        times.append(time.perf_counter() - start)
    if rank == 0:
        results.put({"strategy": strategy, "params": params, "bytes": live, "step_s": statistics.median(times),
                     "ds": ds_info})
    else:
        results.put({"strategy": strategy, "rank1_bytes": live})
    dist.destroy_process_group()


def run(strategy: str, args) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=worker, args=(r, strategy, port, args, results)) for r in range(WORLD)]
    for p in procs:
        p.start()
    out, received = {}, 0
    while received < len(procs):
        try:
            out.update(results.get(timeout=5))
            received += 1
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise SystemExit(f"{strategy}: a rank failed (its error is above)") from None
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"{strategy}: a rank exited with {p.exitcode}")
    return out


def gpu_arithmetic() -> None:
    from vidiff.config import load_config
    from vidiff.models.denoisers import build_denoiser
    from vidiff.training.train_stage import TrainRunConfig

    def per_gpu(strategy: str, params: float, n: int) -> float:
        weights, grads, optimizer, ema = 2, 2, 12, 4
        return params * {
            "ddp": weights + grads + optimizer + ema,
            "zero1": weights + grads + optimizer / n + ema,
            "zero2": weights + (grads + optimizer) / n + ema,
            "zero3": (weights + grads + optimizer + ema) / n,
            "zero3_offload": 0.0,  # weights and optimizer state live in CPU memory; the GPU holds working buffers
        }[strategy] / 2**30

    strategies = ["ddp", "zero1", "zero2", "zero3", "zero3_offload"]
    print(f"{'stage (configs/gpu/)':<22}{'params':>8}" + "".join(f"{s + ' @' + str(n):>14}" for n in (8, 64)
                                                             for s in strategies[:4]))
    for path in sorted((ROOT / "configs" / "gpu").glob("*.yaml")):
        if path.stem == "vae":
            continue
        config = load_config(TrainRunConfig, path)
        with torch.device("meta"):
            params = sum(p.numel() for p in build_denoiser(config.stage.denoiser).parameters())
        cells = "".join(f"{per_gpu(s, params, n):>12.1f}GB" for n in (8, 64) for s in strategies[:4])
        print(f"{path.stem:<22}{params / 1e9:>7.2f}B{cells}")
    print("zero3_offload: model states in CPU memory (about 16 B/param per node's share), GPU: working buffers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="ddp,zero1,zero2,zero3")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--depth", type=int, default=14)
    parser.add_argument("--bucket", type=int, default=0,
                        help="elements per DeepSpeed reduce / all-gather / prefetch bucket (default: the configs')")
    parser.add_argument("--arithmetic", action="store_true", help="print the GPU memory arithmetic and stop")
    args = parser.parse_args()
    if args.arithmetic:
        return gpu_arithmetic()
    rows = [run(s, args) for s in args.strategies.split(",")]
    params = rows[0]["params"]
    print(f"video DiT: {params / 1e6:.1f}M parameters (hidden {args.hidden}, depth {args.depth}); fp32, AdamW; "
          f"{WORLD} CPU ranks (gloo), 1 thread each; torch {torch.__version__}")
    for r in rows:
        if r["ds"]:
            zero = r["ds"]["zero_optimization"]
            print(f"  {r['strategy']}: DeepSpeed zero_optimization = {json.dumps(zero, sort_keys=True)}")
    ddp = next((r for r in rows if r["strategy"] == "ddp"), None)
    print(f"\n{'strategy':<9}{'B/param rank 0':>15}{'rank 1':>9}{'predicted':>11}{'ratio':>8}{'step s':>9}"
          f"{'vs DDP':>8}")
    for r in rows:
        measured, other = r["bytes"] / params, r["rank1_bytes"] / params
        predicted = predicted_bytes_per_param(r["strategy"])
        vs = f"{r['step_s'] / ddp['step_s']:.2f}x" if ddp else "-"
        print(f"{r['strategy']:<9}{measured:>15.2f}{other:>9.2f}{predicted:>11.2f}{measured / predicted:>7.2f}x"
              f"{r['step_s']:>9.2f}{vs:>8}")


if __name__ == "__main__":
    main()
