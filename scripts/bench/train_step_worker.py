"""The timing loop of scripts/bench/train_step.py, and its `--baseline` worker: one toy model's training step,
built and timed by one source tree's code, a round at a time on request.

    python scripts/bench/train_step_worker.py TREE MODEL THREADS

The worker puts TREE first on sys.path before anything imports vidiff, so `import vidiff` resolves to that
tree's package (checked, and its path reported back). It builds MODEL with TREE/scripts/bench/train_step.py's
`build(name, compile)`, with train.compile and the AdamW implementation as that tree's toy config sets them,
sets torch to THREADS threads (0: torch's default), and runs and times one first step (compilation, when on,
and optimizer state included) and one warm-up step. Then it talks to the parent over stdin/stdout, one JSON
object a line: first {"vidiff", "torch", "threads", "batch", "compile", "adamw", "keeps_freed_memory", "first_step_s"}, then, for each
`round STEPS` line it reads, {part: seconds per step} over STEPS steps, until stdin closes. Anything else the
code prints goes to stderr, so stdout carries only these lines.

This file imports nothing from vidiff at its top, so importing it (train_step.py does) chooses no tree.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

FORWARD_BACKWARD = "forward + backward"
Call = Callable[[], object]


def step_calls(parts: dict[str, Call], optimizer_step: Call) -> dict[str, Call]:
    """A training step's calls in the order training makes them: forward + backward, optimizer, then the rest
    (EMA)."""
    rest = {part: fn for part, fn in parts.items() if part != FORWARD_BACKWARD}
    return {FORWARD_BACKWARD: parts[FORWARD_BACKWARD], "optimizer": optimizer_step, **rest}


def time_steps(calls: dict[str, Call], steps: int) -> dict[str, float]:
    """Mean seconds per step of each call over `steps` steps (perf_counter around each; the CPU has no
    asynchronous work)."""
    sums = dict.fromkeys(calls, 0.0)
    for _ in range(steps):
        for part, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            sums[part] += time.perf_counter() - t0
    return {part: total / steps for part, total in sums.items()}


def config_defaults(tree: Path, model: str) -> tuple[bool, str]:
    """(train.compile, AdamW implementation) as the tree's toy config of `model` sets them."""
    from vidiff.config import load_config

    if model == "vae":
        from vidiff.training.vae_config import VAETrainConfig

        t = load_config(VAETrainConfig, tree / "configs" / "toy" / "vae.yaml").train
        return t.compile, t.adamw
    from vidiff.training.train_stage import TrainRunConfig

    t = load_config(TrainRunConfig, tree / "configs" / "toy" / f"base_{model}.yaml", ["data.latents=unused"]).train
    return t.compile, t.optim.adamw


def load_tree_bench(tree: Path):
    """TREE/scripts/bench/train_step.py as a module (its `build` makes the model as that tree's bench does)."""
    spec = importlib.util.spec_from_file_location("tree_train_step", tree / "scripts" / "bench" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(tree: Path, model: str, threads: int) -> None:
    """The worker: build with `tree`'s code, report, then answer `round STEPS` lines until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w")  # stdout as it was; then fd 1 (prints, C++ warnings) goes to stderr
    os.dup2(2, 1)
    sys.path.insert(0, str(tree))
    import torch

    import vidiff
    from vidiff.training.optimizer import adamw

    if not Path(vidiff.__file__).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"worker for {tree}: imported vidiff from {vidiff.__file__}, not from that tree")
    if threads:
        torch.set_num_threads(threads)
    # the process setting training makes before it builds a model, where the tree has it (vidiff.runtime)
    kept = importlib.util.find_spec("vidiff.runtime") is not None and importlib.import_module(
        "vidiff.runtime").keep_freed_memory()
    compile, implementation = config_defaults(tree, model)
    batch, parts, params = load_tree_bench(tree).build(model, compile)
    calls = step_calls(parts, adamw(params, implementation, lr=1e-5).step)
    first = sum(time_steps(calls, 1).values())
    time_steps(calls, 1)  # warm-up

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    send({"vidiff": vidiff.__file__, "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": batch,
          "compile": compile, "adamw": implementation, "keeps_freed_memory": kept, "first_step_s": first})
    for line in sys.stdin:
        command, steps = line.split()
        if command != "round":
            raise SystemExit(f"worker: unknown command {line!r}")
        send(time_steps(calls, int(steps)))


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
