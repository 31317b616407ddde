"""A lent GPU machine's check, in one short run (scripts/gpu_check.sh installs what is missing and calls this).

What a CPU cannot tell: does each real-size diffusion stage (every config under configs/gpu/ with a `stage`
section) train a step at batch 1 under bf16 autocast, how long does the step take and how much memory does it
need, eagerly and through train.compile's torch.compile (vidiff.training.compile, inductor); does a
world-size-1 DeepSpeed ZeRO-2 step run; and the host's reference speed (vidiff.hostspeed) to put the times
in scale. With --vae, also a forward + backward of the real-size VAE on a small clip.

Sections run one after another; one that fails prints its error and the rest still run; the exit status
is 1 when any failed. The slow sections (compiling) come last, and --time-limit stops the run in time:
what it cut short counts as failed. On a machine without CUDA it exits with status 2 at once.

    python scripts/gpu_check.py [--configs configs/gpu/base_dit.yaml ...] [--repeats 5] [--no-compile] [--vae]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_CONFIGS = ROOT / "configs" / "gpu"
GIB = 2**30


class OutOfTime(BaseException):
    """--time-limit passed. A BaseException, so that no `except Exception` on the way (ours or torch's) stops it."""


def stage_configs() -> list[Path]:
    """The configs under configs/gpu/ that define a diffusion stage (a top-level `stage` section)."""
    import yaml

    return [p for p in sorted(GPU_CONFIGS.glob("*.yaml")) if "stage" in (yaml.safe_load(p.read_text()) or {})]


def free_cuda() -> None:
    """Between sections: drop the last section's compiled code and the memory it held."""
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def timed_steps(step: Callable[[], object], warmup: int, repeats: int) -> tuple[float, float]:
    """(median seconds of `repeats` steps after `warmup` untimed ones, peak GiB allocated during the timed ones)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), torch.cuda.max_memory_allocated() / GIB


# ---------------------------------------------------------------------------- sections


def host_section() -> None:
    from vidiff.hostspeed import format_host_reference, host_reference

    props = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.name} (sm_{props.major}{props.minor}, "
          f"{props.total_memory / GIB:.0f} GiB), bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    print(format_host_reference(host_reference("cuda", torch.bfloat16)))


def stage_step_section(config: Path, compiled: bool, repeats: int) -> Callable[[], None]:
    """A training step of the stage in `config` at batch 1 and the config's latent size, as `vidiff train` runs it:
    the stage's forward (eager, or through maybe_compile as train.compile does) under bf16 autocast, then a
    backward from the mean squared output; the config's gradient checkpointing setting as it is."""

    def run() -> None:
        from vidiff.config import load_config
        from vidiff.models.cond import Cond
        from vidiff.pipelines.stage import DiffusionStage
        from vidiff.training.compile import maybe_compile
        from vidiff.training.train_stage import TrainRunConfig

        run_cfg = load_config(TrainRunConfig, config)
        sc = run_cfg.stage
        name = f"{config.name} ({sc.denoiser.kind})"
        with torch.device("cuda"):  # built on the GPU: initialising ~1B parameters on the CPU takes long
            stage = DiffusionStage(sc).cuda().train()  # .cuda(): anything made on the CPU explicitly
        params = sum(p.numel() for p in stage.parameters())
        gen = torch.Generator("cuda").manual_seed(0)
        shape = (1, sc.latent_channels, sc.latent_frames, sc.latent_height, sc.latent_width)
        x_t = torch.randn(shape, device="cuda", generator=gen)
        t = torch.randint(0, sc.schedule.num_steps, (1,), device="cuda", generator=gen)
        length = run_cfg.text.context_length
        cond = Cond(torch.randn(1, length, sc.text_dim, device="cuda", generator=gen),
                    torch.ones(1, length, dtype=torch.bool, device="cuda"))
        field = sc.conditioning_input  # an SR stage's low-res input or an I2V stage's image, noise-augmented as in training
        if field:
            size = sc.lowres_shape(*shape[2:]) if field == "lowres" else (sc.image_channels, 1, *shape[3:])
            value = torch.randn(1, *size, device="cuda", generator=gen)
            level = torch.full((1,), sc.noise_augmentation.noise_aug_max / 2, device="cuda")
            cond = stage.augment_input(dataclasses.replace(cond, **{field: value}), level, torch.randn_like(value))
        forward = maybe_compile(stage, compiled, f"the {name} stage")

        def step() -> None:
            stage.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = forward(x_t, t, cond)
            out.float().square().mean().backward()

        lowres = f", low-res {list(cond.lowres.shape)}" if cond.lowres is not None else ""
        lowres += f", image {list(cond.image_latent.shape)}" if cond.image_latent is not None else ""
        print(f"{name}: {params / 1e9:.2f}B parameters, latents {list(shape)}{lowres}, text [1, {length}, {sc.text_dim}], "
              f"gradient checkpointing {'on' if getattr(stage.denoiser.config, 'gradient_checkpointing', False) else 'off'}")
        if compiled:
            t0 = time.perf_counter()
            step()  # compiles the forward and (where torch allows) the backward
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            if forward.error is not None:
                raise RuntimeError(f"torch.compile fell back to eager: {forward.error}")
            print(f"  first step {first:.1f} s, of which the first forward call (compiling) "
                  f"{forward.compile_seconds:.1f} s")
        median, peak = timed_steps(step, warmup=1 if compiled else 2, repeats=repeats)
        mode = "compiled" if compiled else "eager"
        print(f"  {mode}: step {median * 1e3:.1f} ms (median of {repeats}), peak memory {peak:.2f} GiB "
              f"(torch.cuda.max_memory_allocated)")

    return run


def vae_section(repeats: int) -> None:
    """The real-size VAE (configs/gpu/vae.yaml): encode, sample, decode and backward on a 9-frame 128x128 clip."""
    from vidiff.config import load_config
    from vidiff.training.vae_config import VAETrainConfig
    from vidiff.training.vae_module import VAEModule

    cfg = load_config(VAETrainConfig, GPU_CONFIGS / "vae.yaml")
    with torch.device("cuda"):
        module = VAEModule(cfg).train()
    x = torch.rand(1, cfg.model.in_channels, 9, 128, 128, device="cuda") * 2 - 1

    def step() -> None:
        module.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = module.losses(x, adv=False)
        loss.backward()

    median, peak = timed_steps(step, warmup=1, repeats=repeats)
    print(f"vae.yaml: step {median * 1e3:.1f} ms (median of {repeats}), peak memory {peak:.2f} GiB")


def deepspeed_section(repeats: int) -> None:
    """A ZeRO-2 step of a small MLP in one process (world size 1, NCCL): DeepSpeed and its collectives work here."""
    try:
        import deepspeed
    except ImportError:
        print("deepspeed: not installed")
        return
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517"), ("RANK", "0"), ("WORLD_SIZE", "1"),
                       ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    torch.cuda.set_device(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).cuda()
    # A torch optimizer, not DeepSpeed's fused Adam: that one is a CUDA extension built on first use (minutes).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    config = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    deepspeed.init_distributed(dist_backend="nccl")
    try:
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        x = torch.randn(8, 1024, device=engine.device, dtype=torch.bfloat16)

        def step() -> None:
            loss = engine(x).float().square().mean()
            engine.backward(loss)
            engine.step()

        median, peak = timed_steps(step, warmup=2, repeats=repeats)
        print(f"deepspeed {deepspeed.__version__}: ZeRO-2 step {median * 1e3:.2f} ms (median of {repeats}, "
              f"world size {engine.world_size}, bf16), peak memory {peak:.2f} GiB")
    finally:
        if torch.distributed.is_initialized():  # the sections after this one run without a process group
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=Path, help="stage configs (default: those under configs/gpu/)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per measurement (median)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile sections (the slow ones)")
    parser.add_argument("--vae", action="store_true", help="also a forward + backward of the real-size VAE")
    parser.add_argument("--time-limit", type=int, default=450, help="seconds; sections not finished by then fail")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a machine with a GPU",
              file=sys.stderr)
        return 2
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's vidiff, installed or not

    configs = [c.resolve() for c in args.configs] if args.configs else stage_configs()
    sections: list[tuple[str, Callable[[], None]]] = [("host reference", host_section)]
    sections += [(f"{c.name}: eager step", stage_step_section(c, False, args.repeats)) for c in configs]
    if args.vae:
        sections.append(("vae.yaml: eager step", lambda: vae_section(args.repeats)))
    sections.append(("deepspeed ZeRO-2, world size 1", lambda: deepspeed_section(args.repeats)))
    if not args.no_compile:  # last: compiling a real-size model takes minutes
        sections += [(f"{c.name}: compiled step", stage_step_section(c, True, args.repeats)) for c in configs]

    def out_of_time(signum, frame):
        raise OutOfTime

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(max(args.time_limit, 1))
    failed: list[str] = []
    done = 0
    start = time.perf_counter()
    try:
        for title, run in sections:
            print(f"\n== {title}", flush=True)
            t0 = time.perf_counter()
            try:
                run()
            except Exception as exc:
                traceback.print_exc()
                print(f"FAILED: {title}: {type(exc).__name__}: {exc}", flush=True)
                failed.append(title)
            finally:
                free_cuda()
            print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
            done += 1
    except OutOfTime:
        print(f"\nFAILED: time limit of {args.time_limit} s reached during {sections[done][0]!r}", flush=True)
        failed += [title for title, _ in sections[done:]]
    signal.alarm(0)

    print(f"\n== summary ({time.perf_counter() - start:.0f} s): {len(sections) - len(failed)} of {len(sections)} "
          "sections passed")
    for title in failed:
        print(f"FAILED: {title}")
    sys.stdout.flush()
    sys.stderr.flush()
    code = 1 if failed else 0
    if done < len(sections):
        os._exit(code)  # cut short mid-section: compile workers or NCCL may still hold the process open
    return code


if __name__ == "__main__":
    sys.exit(main())
