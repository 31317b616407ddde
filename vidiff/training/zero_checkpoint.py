"""Checkpoints across layouts: a sharded DeepSpeed ZeRO checkpoint folder read into one full Lightning checkpoint
(weights, EMA, AdamW state, loops and schedule), and a full checkpoint loaded into a ZeRO engine of any world size.

ZeRO writes each rank's partition of the fp32 master weights and of AdamW's moments. Stages 1 and 2 partition one
flat buffer per parameter group (the parameters in order, each followed by its alignment padding, split into equal
rank ranges); stage 3 splits every parameter on its own into equal zero-padded rank ranges. Reassembling both gives
the tensors one process would hold, so a run resumes on another number of ranks (or under DDP), and `vidiff export`
reads any checkpoint the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch

from vidiff.errors import VidiffError

PARAM_NAMES = "vidiff_param_names"  # in a full checkpoint: the optimizer's parameters by name, in its order
MOMENTS = ("exp_avg", "exp_avg_sq")


def is_zero_checkpoint(path: str | Path) -> bool:
    """True for a DeepSpeed checkpoint folder (as Lightning's DeepSpeed strategy writes `last.ckpt`)."""
    return Path(path).is_dir()


def zero_layout(path: str | Path) -> tuple[int, int]:
    """(ZeRO stage, world size) of the DeepSpeed checkpoint folder `path`."""
    files = _optim_files(Path(path))
    state = torch.load(files[0], map_location="cpu", weights_only=False, mmap=True)["optimizer_state_dict"]
    count = state["partition_count"]
    return int(state["zero_stage"]), int(max(count) if isinstance(count, list) else count)


def read_zero_checkpoint(path: str | Path) -> dict:
    """The DeepSpeed checkpoint folder `path` as one full Lightning checkpoint dict."""
    path = Path(path)
    tag_dir = _tag_dir(path)
    model_files = sorted(tag_dir.glob("*model_states.pt"))
    if not model_files:
        raise VidiffError(f"{path} holds no DeepSpeed model states (*model_states.pt under {tag_dir}); it is not a "
                          "complete ZeRO checkpoint: resume from another one or start a new out_dir")
    # memory-mapped: the merges below copy out what they keep, so a rank's shard is never read into memory whole
    main = torch.load(model_files[0], map_location="cpu", weights_only=False, mmap=True)
    shards = [torch.load(f, map_location="cpu", weights_only=False, mmap=True)["optimizer_state_dict"]
              for f in _optim_files(path)]
    stage = int(shards[0]["zero_stage"])
    groups = main["param_shapes"]  # one {name: shape} per parameter group, in the optimizer's order
    base = shards[0]["base_optimizer_state" if stage <= 2 else "optimizer_state_dict"]

    def merge(key: str | None) -> dict[str, torch.Tensor]:
        flats = [_rank_flats(shard, stage, len(groups), key) for shard in shards]
        if stage <= 2:
            return _merge_flat_groups(flats, groups, shards[0].get("param_alignment_paddings"))
        return _merge_per_parameter(flats, groups)

    weights, moments = merge(None), {key: merge(key) for key in MOMENTS}
    names = [name for group in groups for name in group]
    step = next(iter(base["state"].values()))["step"]
    state = {i: {"step": step.clone(), **{key: moments[key][name] for key in MOMENTS}} for i, name in enumerate(names)}
    param_groups, first = [], 0
    for group, saved in zip(groups, base["param_groups"], strict=True):
        param_groups.append({**{k: v for k, v in saved.items() if k != "params"},
                             "params": list(range(first, first + len(group)))})
        first += len(group)
    module = {k: v for k, v in main["module"].items() if k not in weights}  # buffers, the EMA; placeholders out
    module.update(weights)
    lightning_keys = ("epoch", "global_step", "pytorch-lightning_version", "loops", "callbacks", "lr_schedulers",
                      "hyper_parameters", "hparams_name")
    checkpoint = {k: main[k] for k in lightning_keys if k in main}
    checkpoint.update(state_dict=module, optimizer_states=[{"state": state, "param_groups": param_groups}])
    checkpoint[PARAM_NAMES] = names
    return checkpoint


def write_full_checkpoint(zero_dir: str | Path, out: str | Path) -> Path:
    """Read the ZeRO folder `zero_dir` and save it as one Lightning checkpoint file `out` (atomically)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    torch.save(read_zero_checkpoint(zero_dir), tmp)
    tmp.replace(out)
    return out


def load_full_checkpoint_into_engine(engine, checkpoint: dict, named_groups: list[list[tuple[str, torch.nn.Parameter]]]
                                     ) -> None:
    """Put a full checkpoint's weights and AdamW state into DeepSpeed `engine` (ZeRO 1-3, any world size): every
    rank writes its own partition. `named_groups` are the optimizer's parameter groups as (name, parameter) pairs."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    weights = checkpoint["state_dict"]
    saved = checkpoint["optimizer_states"][0]
    names = checkpoint.get(PARAM_NAMES) or [n for group in named_groups for n, _ in group]
    by_name = {name: saved["state"].get(i, {}) for i, name in enumerate(names)}
    expected = [n for group in named_groups for n, _ in group]
    if sorted(expected) != sorted(names):
        missing = sorted(set(expected) - set(names))[:3] or sorted(set(names) - set(expected))[:3]
        raise VidiffError(f"the checkpoint's optimizer holds other parameters than this model (e.g. {missing}); resume "
                          "with the config the run was trained with")
    zero3 = engine.zero_optimization_stage() == 3
    base = engine.optimizer.optimizer  # torch's AdamW over this rank's flat fp32 partitions
    flats = engine.optimizer.fp32_partitioned_groups_flat if zero3 else engine.optimizer.single_partition_of_fp32_groups
    steps = [st["step"] for st in saved["state"].values() if "step" in st]
    for flat in flats:  # AdamW creates its state at the first step; the checkpoint's goes in now
        base.state[flat] = {"step": (steps[0] if steps else torch.tensor(0.0)).to(torch.float32).clone(),
                            **{key: torch.zeros_like(flat) for key in MOMENTS}}
    if hasattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state"):
        # ZeRO 1/2 link each parameter to its range of the flat moments once they exist (after the first step)
        engine.optimizer._lazy_init_hp_params_optimizer_state()
    for group in named_groups:
        for name, p in group:
            full = weights[name].to(torch.float32)
            if zero3:
                with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                    p.data.copy_(full.view_as(p.data))
            else:
                p.data.copy_(full.view_as(p.data))
            safe_set_full_fp32_param(p, full)
            for key in MOMENTS:
                if key in by_name[name]:
                    safe_set_full_optimizer_state(p, by_name[name][key].to(torch.float32), key)
    for live, stored in zip(base.param_groups, saved["param_groups"], strict=True):
        live["lr"] = stored["lr"]
        if "initial_lr" in stored:
            live["initial_lr"] = stored["initial_lr"]


def _rank_flats(shard: dict, stage: int, num_groups: int, key: str | None):
    """One rank's flat fp32 master partition (`key` None) or AdamW moment `key`: a tensor per parameter group for
    ZeRO 1/2; for ZeRO 3 one tensor, its sub-groups joined in order."""
    if stage <= 2:
        if key is None:
            return list(shard["single_partition_of_fp32_groups"])
        return [shard["base_optimizer_state"]["state"][g][key] for g in range(num_groups)]
    if key is None:
        return torch.cat(list(shard["fp32_flat_groups"]))
    return torch.cat([state[key] for _, state in sorted(shard["optimizer_state_dict"]["state"].items())])


def _merge_flat_groups(flats: list[list[torch.Tensor]], groups: list[dict], paddings: list | None
                       ) -> dict[str, torch.Tensor]:
    """ZeRO 1/2: per group, the ranks' ranges make one flat buffer; cut it into the parameters, skipping paddings."""
    out = {}
    for g, shapes in enumerate(groups):
        flat = torch.cat([rank[g] for rank in flats])
        offset = 0
        for i, (name, shape) in enumerate(shapes.items()):
            n = math.prod(shape)
            out[name] = flat[offset : offset + n].view(tuple(shape)).clone()
            offset += n + (paddings[g][i] if paddings else 0)
    return out


def _merge_per_parameter(flats: list[torch.Tensor], groups: list[dict]) -> dict[str, torch.Tensor]:
    """ZeRO 3: each rank holds ceil(numel / N) elements of every parameter, in order, the last range zero-padded."""
    world, out, offset = len(flats), {}, 0
    for shapes in groups:
        for name, shape in shapes.items():
            n = math.prod(shape)
            part = math.ceil(n / world)
            out[name] = torch.cat([f[offset : offset + part] for f in flats])[:n].view(tuple(shape)).clone()
            offset += part
    return out


def _tag_dir(path: Path) -> Path:
    latest = path / "latest"
    tag = latest.read_text().strip() if latest.is_file() else "checkpoint"
    if not (path / tag).is_dir():
        raise VidiffError(f"{path} is not a DeepSpeed checkpoint folder (no {tag}/ inside); resume from a "
                          "checkpoint that `vidiff train` wrote, or start a new out_dir")
    return path / tag


def _optim_files(path: Path) -> list[Path]:
    files = sorted(_tag_dir(path).glob("*_optim_states.pt"), key=lambda f: _rank_of(f.name))
    if not files:
        raise VidiffError(f"{path} holds no ZeRO optimizer states (*_optim_states.pt); it is not a complete ZeRO "
                          "checkpoint: resume from another one or start a new out_dir")
    return files


def _rank_of(name: str) -> int:
    # zero_pp_rank_{r}_mp_rank_00_optim_states.pt
    return int(name.split("zero_pp_rank_")[1].split("_")[0])


def parameter_shapes(checkpoint: str | Path) -> dict[str, tuple[int, ...]]:
    """The trained parameters' full shapes in a checkpoint (a ZeRO folder or a Lightning file), by name."""
    if is_zero_checkpoint(checkpoint):
        main = torch.load(sorted(_tag_dir(Path(checkpoint)).glob("*model_states.pt"))[0], map_location="cpu",
                          weights_only=False, mmap=True)
        return {n: tuple(s) for group in main["param_shapes"] for n, s in group.items()}
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    return {k: tuple(v.shape) for k, v in state.items()}


def shape_mismatch(stored: dict[str, tuple[int, ...]], live: Iterable[tuple[str, torch.nn.Parameter]]) -> str:
    """'' when every live parameter is in `stored` with its shape, else a description of the first difference."""
    for name, p in live:
        if name not in stored:
            return f"it has no {name}"
        if tuple(stored[name]) != tuple(p.shape):
            return f"its {name} has shape {list(stored[name])}, this config's {list(p.shape)}"
    return ""
