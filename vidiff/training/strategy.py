"""How a training run spreads over processes: `train.strategy` (DDP or a DeepSpeed ZeRO stage), `train.devices`,
`train.num_nodes` and the precision, turned into what Lightning's Trainer takes.

Every strategy also runs on CPU processes with the gloo backend, so each path is tested for real without a GPU:
Lightning's DeepSpeedStrategy refuses a CPU accelerator as shipped, and vidiff's subclass for CPU ranks lifts only
its CUDA-only checks (strategy_classes). The ZeRO configs are the JSON files in configs/deepspeed/ (or a user's, `train.deepspeed_config`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vidiff.errors import ConfigError

STRATEGIES = ("auto", "ddp", "zero1", "zero2", "zero3", "zero3_offload")
ZERO_STAGES = {"zero1": 1, "zero2": 2, "zero3": 3, "zero3_offload": 3}
DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"


@dataclass
class DistributedConfig:
    """The parallel layout of one training run: ranks = devices per node x nodes."""

    strategy: str = "auto"  # auto (one process, or DDP on several), ddp, zero1, zero2, zero3 or zero3_offload
    devices: int = 1  # processes (GPUs, or CPU ranks) per node; a torchrun/SLURM launch sets it from its environment
    num_nodes: int = 1  # machines; a torchrun/SLURM launch sets it from its environment
    deepspeed_config: str = ""  # a DeepSpeed JSON to use instead of configs/deepspeed/<strategy>.json

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"train.strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if self.devices < 1 or self.num_nodes < 1:
            raise ConfigError(f"train.devices and train.num_nodes must be at least 1; got {self.devices} and "
                              f"{self.num_nodes}")
        if self.deepspeed_config and self.strategy not in ZERO_STAGES:
            raise ConfigError(f"train.deepspeed_config={self.deepspeed_config} is a DeepSpeed config, but "
                              f"train.strategy={self.strategy} does not run DeepSpeed; set train.strategy to "
                              f"{' or '.join(ZERO_STAGES)}")

    @property
    def zero_stage(self) -> int:
        """The ZeRO stage (0 without DeepSpeed)."""
        return ZERO_STAGES.get(self.strategy, 0)


def slurm_job(env: Mapping[str, str]) -> bool:
    """Whether SLURM started this process as one task of a job (an interactive shell, job name bash or
    interactive, is one process whatever SLURM_NTASKS says)."""
    return "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def launched_layout(config: DistributedConfig, env: dict[str, str] | None = None) -> tuple[int, int]:
    """(devices per node, nodes) for this run. Under a launcher that already started the processes (torchrun sets
    WORLD_SIZE and LOCAL_WORLD_SIZE; SLURM sets SLURM_NTASKS and SLURM_NNODES) a layout left at its default is taken
    from the launcher, and one set by hand must agree with it."""
    env = os.environ if env is None else env
    launched = None
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
        per_node, world = int(env["LOCAL_WORLD_SIZE"]), int(env["WORLD_SIZE"])
        launched, launcher = (per_node, world // per_node), "torchrun"
    elif slurm_job(env) and "SLURM_NNODES" in env:
        nodes = int(env["SLURM_NNODES"])
        launched, launcher = (int(env["SLURM_NTASKS"]) // nodes, nodes), "SLURM"
    asked = (config.devices, config.num_nodes)
    if launched is None or asked == launched:
        return asked
    if asked == (1, 1):
        return launched
    raise ConfigError(
        f"train.devices={config.devices} train.num_nodes={config.num_nodes} do not match the {launcher} launch, which "
        f"started {launched[0]} process(es) on each of {launched[1]} node(s); leave them unset or set "
        f"train.devices={launched[0]} train.num_nodes={launched[1]}"
    )


def deepspeed_config(config: DistributedConfig) -> dict[str, Any]:
    """The DeepSpeed config of a ZeRO strategy: the user's JSON if given, else configs/deepspeed/<strategy>.json;
    its ZeRO stage must be the strategy's."""
    path = Path(config.deepspeed_config) if config.deepspeed_config else DEEPSPEED_CONFIG_DIR / f"{config.strategy}.json"
    key = "train.deepspeed_config" if config.deepspeed_config else f"the built-in config for {config.strategy}"
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist; pass the path of a DeepSpeed JSON config "
                          "(see configs/deepspeed/)")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {path} is not valid JSON ({exc}); fix the file") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"{key}: {path} must hold a JSON object")
    stage = ds.get("zero_optimization", {}).get("stage")
    if stage != config.zero_stage:
        raise ConfigError(
            f"{key}: {path} sets zero_optimization.stage={stage} but train.strategy={config.strategy} is ZeRO stage "
            f"{config.zero_stage}; set the stage in the file to {config.zero_stage} or pick the strategy that matches it"
        )
    for managed in ("gradient_accumulation_steps", "optimizer", "scheduler", "fp16", "bf16"):
        if managed in ds:
            raise ConfigError(f"{key}: {path} sets {managed!r}, which vidiff sets from the training config "
                              "(train.optim, train.precision); remove it from the file")
    ds.setdefault("zero_allow_untested_optimizer", True)
    return ds


def precision_for(setting: str, accelerator: str) -> str:
    """Lightning's precision flag: `auto` is bf16-mixed on a GPU that has bf16, 32-true otherwise (the CPU)."""
    if setting != "auto":
        return setting
    if accelerator == "gpu" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def trainer_layout(config: DistributedConfig, precision: str = "auto", explicit_gradients: bool = False
                   ) -> dict[str, Any]:
    """Keyword arguments for lightning.Trainer: accelerator, devices, num_nodes, strategy and precision.
    `explicit_gradients`: the module averages its gradients over the ranks itself (average_gradients), as a module
    with several optimizers and backward passes per step must; DDP then does not wrap it, and ZeRO is refused."""
    devices, num_nodes = launched_layout(config)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    world = devices * num_nodes
    backend = "nccl" if accelerator == "gpu" else "gloo"
    classes = strategy_classes()
    if config.zero_stage and explicit_gradients:
        raise ConfigError(f"train.strategy={config.strategy}: this training steps two optimizers (the VAE and its "
                          "discriminator), which DeepSpeed's engine does not take; use train.strategy=ddp")
    if config.zero_stage:
        zero = classes.zero if accelerator == "gpu" else classes.cpu_zero
        strategy = zero(config=deepspeed_config(config), process_group_backend=backend)
    elif config.strategy == "ddp" or world > 1:
        strategy = (classes.unwrapped_ddp if explicit_gradients else classes.ddp)(process_group_backend=backend)
    else:
        strategy = classes.single(device=torch.device("cuda", 0) if accelerator == "gpu" else torch.device("cpu"))
    return dict(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                precision=precision_for(precision, accelerator))


class StrategyClasses(NamedTuple):
    single: type
    ddp: type
    unwrapped_ddp: type
    zero: type
    cpu_zero: type


@functools.cache
def strategy_classes() -> StrategyClasses:
    """vidiff's Lightning strategies, built on first use: importing Lightning's DeepSpeed strategy imports
    DeepSpeed, which is slow."""
    from lightning.fabric.utilities.seed import reset_seed
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy

    from vidiff.training.checkpoint_layout import LayoutAwareCheckpoints, ZeroCheckpoints

    class SingleDevice(LayoutAwareCheckpoints, SingleDeviceStrategy):
        """One process; resumes from checkpoints of any layout (vidiff.training.checkpoint_layout)."""

    class DDP(LayoutAwareCheckpoints, DDPStrategy):
        """Lightning's DDP; resumes from checkpoints of any layout (vidiff.training.checkpoint_layout)."""

    class UnwrappedDDP(LayoutAwareCheckpoints, DDPStrategy):
        """DDP's processes and process group, without DDP's wrapper: the module averages its own gradients after
        each backward (average_gradients). DDP's reducer allows one backward per forward; a GAN step has two."""

        def configure_ddp(self) -> None:
            pass

    class Zero(ZeroCheckpoints, DeepSpeedStrategy):
        """Lightning's DeepSpeedStrategy; resumes from checkpoints of any layout, and puts every parameter in plain
        contiguous layout before DeepSpeed takes it: the U-Net keeps its conv weights channels-last, which DeepSpeed's
        broadcast and flat buffers cannot view."""

        def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
            for p in model.parameters():
                if not p.is_contiguous() or (p.dim() and p.stride(-1) != 1):  # a [o, i, 1, 1] channels-last weight
                    p.data = p.data.clone(memory_format=torch.contiguous_format)
            return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)

    class CPUZero(Zero):
        """The same on CPU processes (gloo). DeepSpeed itself runs ZeRO on the CPU, but Lightning's strategy as
        shipped refuses any accelerator other than CUDA, checks that device indices match local ranks (a CPU device
        has no index) and hands DeepSpeed the root device's index. Only those checks change."""

        def setup_environment(self) -> None:
            # DDP's environment setup, without DeepSpeedStrategy's CUDA-only check
            super(DeepSpeedStrategy, self).setup_environment()

        def setup_distributed(self) -> None:
            # DeepSpeedStrategy's, without the device-index check
            reset_seed()
            self.set_world_ranks()
            self._init_deepspeed_distributed()

        @property
        def root_device(self) -> torch.device:
            return torch.device("cpu", 0)

    return StrategyClasses(SingleDevice, DDP, UnwrappedDDP, Zero, CPUZero)


def average_gradients(params) -> None:
    """Replace every gradient by its mean over the ranks (one all-reduce of all of them); nothing on one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
