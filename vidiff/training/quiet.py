"""`quiet_lightning()`: hide the console lines of Lightning that a vidiff user cannot act on, by exact message.

vidiff builds and runs its Trainers inside it: it decorates train_stage (vidiff.training.train_stage) and train_vae
(vidiff.training.vae_module). Each entry below names one message and why hiding it is safe; everything else
Lightning logs or warns, and every warning of vidiff and of other libraries, still shows. Noise with a cause in
vidiff is fixed there instead: the EMA copy in eval mode (vidiff.training.diffusion_module), the resume warning
about mid-epoch checkpoints (vidiff.training.batching.StepKeyedLoader) and the manual-optimization checkpoint
warning (train_vae checkpoints at epoch ends).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

# Lightning's info lines (rank_zero_info and a few direct log.info calls), by the start of the message.
_INFO_NOISE = (
    # lightning/pytorch/trainer/setup.py: "GPU available: False, used: False", "TPU available: ...": a report of the
    # machine; the Trainer's accelerator is vidiff's choice (auto for stages, the CPU for the toy VAE)
    "GPU available: ",
    "TPU available: ",
    "HPU available: ",
    # lightning/pytorch/trainer/connectors/{logger,callback}_connector.py: adverts for litlogger / litmodels
    "💡 Tip: ",
    # lightning/pytorch/loops/fit_loop.py: every vidiff run is counted in steps and ends at max_steps; the line
    # lands in the middle of the progress bar. ("`Trainer.fit` stopped: No training batches." still shows.)
    "`Trainer.fit` stopped: `max_steps=",
    # lightning/pytorch/accelerators/cuda.py: "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"
    "LOCAL_RANK: ",
    # lightning/pytorch/trainer/connectors/checkpoint_connector.py: repeats "Restoring states from the checkpoint
    # path at ...", which still shows
    "Restored all states from the checkpoint at ",
)
# The loggers those lines go to. rank_zero_info logs to lightning_utilities' `log`, which lightning.pytorch points at
# lightning.pytorch.utilities.rank_zero; lightning.fabric's is listed too in case it is the one set.
_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
)

# Warnings, as (message regex, category, module regex) for warnings.filterwarnings.
_WARNING_NOISE = (
    # torch deprecated LeafSpec(); Lightning's own pytree helper still builds one (lightning/pytorch/utilities/
    # _pytree.py). Nothing in vidiff calls it.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    # lightning/pytorch/loops/fit_loop.py, when train.steps_per_epoch < train.log_every: vidiff trains by steps over
    # many short epochs, and Lightning logs every log_every_n_steps steps counted across epochs, so logs do appear.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", Warning,
     r"lightning\.pytorch\.loops\.fit_loop"),
    # lightning/pytorch/trainer/setup.py: the toy VAE trains on the CPU on purpose (Trainer(accelerator="cpu")); the
    # diffusion stages take the GPU by themselves (accelerator "auto"), so this cannot hide a stage on the CPU.
    (r"GPU available but not used", Warning, r"lightning\.pytorch\.trainer\.setup"),
)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip().startswith(self.prefixes)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block, Lightning's messages listed above are hidden; on exit, the warning filters and loggers are
    as they were."""
    drop = _DropMessages(_INFO_NOISE)
    loggers = [logging.getLogger(name) for name in _INFO_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for message, category, module in _WARNING_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category, module=module)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)

