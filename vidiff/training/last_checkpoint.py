"""The one checkpoint a run keeps, `checkpoints/last.ckpt`, written every so many steps so a killed run resumes.

Not Lightning's ModelCheckpoint: with save_top_k=0 (one checkpoint, no copies) Lightning 2.6 writes last.ckpt only
when training ends, so a killed run started over; and with every_n_train_steps it warns at each save under manual
optimization (the VAE's), which saves the weights after the step, as resuming needs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl

from vidiff.training.checkpoint_layout import full_copy_path


class SaveLastCheckpoint(pl.Callback):
    """Writes `path` at the epoch ends every `every` steps and when training ends (epochs are a whole number of
    steps long, and batches depend on the step alone). Written beside and then moved into place, so a kill mid-write
    keeps the previous checkpoint; a ZeRO checkpoint is a folder, which is swapped in by two renames."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), every

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if (self.every > 0 and step % self.every == 0) or step >= trainer.max_steps:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            trainer.save_checkpoint(tmp)  # every rank takes part; rank 0 writes (ZeRO: each rank its shards)
            trainer.strategy.barrier("checkpoint written")
            if trainer.is_global_zero:
                _swap_in(tmp, self.path)
            trainer.strategy.barrier("checkpoint in place")


def _swap_in(new: Path, path: Path) -> None:
    if new.is_file() and not path.is_dir():
        new.replace(path)
    else:
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        if path.exists():
            path.rename(old)
        new.rename(path)
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    # the full copy of a checkpoint of another layout this run resumed from (vidiff.training.checkpoint_layout)
    full_copy_path(path).unlink(missing_ok=True)
