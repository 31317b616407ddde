"""`train.compile`: run a model's training forward through torch.compile, and never let compiling end a run.

torch.compile can fail where eager PyTorch runs: no C++ compiler for inductor's CPU kernels, no Triton, an op
or a Python construct dynamo does not handle, a bug in a given torch release. A training run should not die of
that, so `maybe_compile` falls back to eager with one warning and keeps training.

What is compiled is the call, not the module tree: the wrapper holds the module without registering it
anywhere, and `torch.compile(module)` shares the module's parameters. So the registered model stays as it
was: optimizers, EMA, checkpoints and exports see the same parameters under the same keys (no
`_orig_mod.` prefix), and sampling, evaluation and export run eagerly.

The first call's wall time (tracing and compiling, the backward's compilation included where this torch
can be told to compile it up front) is kept as `compile_seconds`, so training logs it apart from step times.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import warnings
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class CompiledForward:
    """Calls `module` through `torch.compile(module, dynamic=False)` (inductor); eager after a failure.

    Not an `nn.Module`, so storing it on a module does not register the compiled copy. A failure at any
    call (the first, or a recompilation for a new input shape) warns once and runs `module` eagerly from
    then on. A genuine error of the forward still raises: the eager retry raises it as without compile.
    """

    def __init__(self, module: nn.Module, name: str):
        self.module = module
        self.name = name
        self.compile_seconds: float | None = None  # wall time of the first call, compilation included
        self.error: str | None = None  # why it fell back to eager, once it has
        self._seconds_taken = False  # take_compile_seconds has handed compile_seconds out
        try:
            self._compiled = torch.compile(module, dynamic=False)
        except Exception as exc:  # torch.compile itself can refuse (e.g. a Python version dynamo lacks)
            self._fall_back(exc)

    @property
    def compiled(self) -> bool:
        """Whether calls still go through the compiled forward (False once it fell back to eager)."""
        return self.error is None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            return self.module(*args, **kwargs)
        first = self.compile_seconds is None
        t0 = time.perf_counter()
        try:
            with _compile_backward_up_front():
                out = self._compiled(*args, **kwargs)
        except Exception as exc:
            failure = exc
        else:
            if first:
                self.compile_seconds = time.perf_counter() - t0
                log.info("torch.compile of %s: first call took %.1f s (compilation included)", self.name,
                         self.compile_seconds)
            return out
        if first:
            self.compile_seconds = time.perf_counter() - t0
        # Outside the except block, so that a genuine error of the forward raises on its own (not chained).
        out = self.module(*args, **kwargs)
        self._fall_back(failure)
        return out

    def _fall_back(self, exc: Exception) -> None:
        # The first two lines: BackendCompilerFailed says "backend='inductor' raised:", then the inner error.
        text = " ".join([line.strip() for line in str(exc).splitlines() if line.strip()][:2])
        self.error = f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
        warnings.warn(
            f"torch.compile failed for {self.name} ({self.error}); it falls back to eager and trains uncompiled "
            "from here on. Set train.compile=false to skip compiling.",
            RuntimeWarning,
            stacklevel=3,
        )


def maybe_compile(module: nn.Module, enabled: bool, name: str) -> nn.Module | CompiledForward:
    """`module`'s forward through torch.compile when `enabled` (a `CompiledForward`), else `module` itself.

    Call the result in place of `module` for the training forward; keep `module` registered and use it for
    everything else. `name` names the model in the fallback warning and the log (e.g. "the base stage's unet").
    Store the result without registering it (it may be `module` itself): `object.__setattr__(self, attr, result)`.
    """
    return CompiledForward(module, name) if enabled else module


def take_compile_seconds(forward: object) -> float | None:
    """`compile_seconds` of a `CompiledForward` the first time it is asked for once known, else None: a training
    loop calls this every step and logs what it gets, so the compile time is logged once."""
    if not isinstance(forward, CompiledForward) or forward.compile_seconds is None or forward._seconds_taken:
        return None
    forward._seconds_taken = True
    return forward.compile_seconds


def _compile_backward_up_front() -> contextlib.AbstractContextManager:
    """AOTAutograd compiles the backward at the first backward call by default, outside this wrapper's reach;
    where this torch has the switch, compile it with the forward, so its failure falls back too and its time
    counts in `compile_seconds`."""
    try:
        config = importlib.import_module("torch._functorch.config")
    except ImportError:
        return contextlib.nullcontext()
    if not hasattr(config, "force_non_lazy_backward_lowering"):  # older torch releases: lazy only
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)
