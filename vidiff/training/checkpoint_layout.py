"""Resuming a run on another layout: strategy mixins that load a checkpoint whatever wrote it.

A one-process or DDP run writes one Lightning file; a ZeRO run writes a folder of per-rank shards, which DeepSpeed
itself reloads only on the same number of ranks with the same stage. When the checkpoint to resume from does not
fit the running strategy (another world size, another ZeRO stage, a file for ZeRO or a folder for DDP), global rank
0 writes it once as one full file (vidiff.training.zero_checkpoint) beside it, `<name>.full.ckpt`, and every rank
loads that: a ZeRO rank takes its own partitions of the weights and of AdamW's moments. The next save replaces the
old checkpoint by one of the new layout, and then the full file goes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from vidiff.training.zero_checkpoint import (
    is_zero_checkpoint,
    load_full_checkpoint_into_engine,
    write_full_checkpoint,
    zero_layout,
)


def full_copy_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.ckpt')}.full.ckpt")


class LayoutAwareCheckpoints:
    """For strategies that write one Lightning file (one process, DDP): a ZeRO folder is read as a full file."""

    def fits(self, path: Path) -> bool:
        """Whether this strategy loads the checkpoint at `path` as it is."""
        return not is_zero_checkpoint(path)

    def full_checkpoint(self, path: Path) -> Path:
        """`path` as one full Lightning file: written once by global rank 0 when it is a ZeRO folder."""
        if not is_zero_checkpoint(path):
            return path
        full = full_copy_path(path)
        if self.is_global_zero:
            write_full_checkpoint(path, full)
            print(f"resuming from {path} (written by {zero_layout(path)[1]} ZeRO rank(s)) on {self.world_size} "
                  f"rank(s): read into {full}", flush=True)
        self.barrier("full checkpoint")
        return full

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        path = Path(self.broadcast(str(checkpoint_path)))
        if self.fits(path):
            return super().load_checkpoint(path, weights_only)
        return super().load_checkpoint(self.full_checkpoint(path), weights_only=False)

    def load_optimizer_state_dict(self, checkpoint) -> None:
        super().load_optimizer_state_dict(checkpoint)
        # A full copy holds AdamW's moments in plain layout, but a channels-last weight's moments must share its
        # memory layout: the fused and foreach kernels walk the tensors' storage side by side.
        for optimizer in self.optimizers:
            for p, state in optimizer.state.items():
                for key, value in state.items():
                    if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                        state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)

    def save_checkpoint(self, checkpoint, filepath, storage_options=None):
        path = Path(filepath)
        written = self.__dict__.setdefault("_written_paths", set())  # paths this run has saved: in its own layout
        if path not in written:
            self.replace_other_layout(path)
        super().save_checkpoint(checkpoint, filepath, storage_options)
        if path not in written:
            self.drop_full_copy(path)
            written.add(path)

    def replace_other_layout(self, path: Path) -> None:
        # the checkpoint this run resumed from may have another layout, which a save cannot overwrite in place;
        # its full copy stays until the new checkpoint is written
        if path.exists() and not self.fits(path) and self.is_global_zero:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.barrier("replace checkpoint")

    def drop_full_copy(self, path: Path) -> None:
        self.barrier("checkpoint written")
        full = full_copy_path(path)
        if self.is_global_zero and full.exists():
            full.unlink()


class ZeroCheckpoints(LayoutAwareCheckpoints):
    """For DeepSpeed strategies: a ZeRO folder of the same stage and world size loads natively; any other
    checkpoint (a file, or a folder of another layout) loads through its full copy, each rank taking its partition."""

    _full_loaded = False

    def fits(self, path: Path) -> bool:
        stage = int(self.config["zero_optimization"]["stage"])
        return is_zero_checkpoint(path) and zero_layout(path) == (stage, self.world_size)

    def full_checkpoint(self, path: Path) -> Path:
        return super().full_checkpoint(path) if is_zero_checkpoint(path) else path

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        path = Path(self.broadcast(str(checkpoint_path)))
        if self.fits(path):
            return super().load_checkpoint(path, weights_only)
        checkpoint = torch.load(self.full_checkpoint(path), map_location="cpu", weights_only=False, mmap=True)
        load_full_checkpoint_into_engine(self.deepspeed_engine, checkpoint, self.lightning_module.named_param_groups())
        self._full_loaded = True
        return checkpoint

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        if not self._full_loaded:
            return super().load_model_state_dict(checkpoint, strict)
        # the weights went into the engine with the optimizer state; here the rest: buffers and the EMA
        module = self.lightning_module
        params = {name for name, _ in module.named_parameters()}
        result = module.load_state_dict({k: v for k, v in checkpoint["state_dict"].items() if k not in params},
                                        strict=False)
        if strict and result.unexpected_keys:
            raise RuntimeError(f"unexpected keys in the checkpoint: {result.unexpected_keys[:5]}")
