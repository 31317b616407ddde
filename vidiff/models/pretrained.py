"""One model format: a folder with `config.yaml` (the model's config dataclass) and `model.safetensors`
(its weights, tagged with the model's kind), saved and loaded the same way by every model."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from vidiff.config import load_config, save_config
from vidiff.errors import VidiffError

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
KIND_KEY = "vidiff_kind"  # safetensors metadata: which model class wrote the weights

M = TypeVar("M", bound="PretrainedMixin")


class PretrainedMixin:
    """`save_pretrained(folder)` / `from_pretrained(folder)` for an nn.Module built from one config dataclass.

    A subclass names `config_class`, `model_kind` (e.g. "vae") and `written_by` (the command that writes
    such a folder, for error messages). `from_config` builds the module before its weights load;
    `state_to_save` chooses what is saved (all of state_dict() by default).
    """

    config_class: ClassVar[type]
    model_kind: ClassVar[str]
    written_by: ClassVar[str] = "save_pretrained"
    config: Any

    @classmethod
    def from_config(cls: type[M], config) -> M:
        return cls(config)

    def state_to_save(self) -> dict[str, Tensor]:
        return self.state_dict()

    def save_pretrained(self, folder: str | Path, state_dict: dict[str, Tensor] | None = None) -> Path:
        """Write config.yaml + model.safetensors (the given state, e.g. EMA weights, or the live one)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_config(self.config, out / CONFIG_FILE)
        state = self.state_to_save() if state_dict is None else state_dict
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, str(out / WEIGHTS_FILE), metadata={KIND_KEY: self.model_kind})
        return out

    @classmethod
    def from_pretrained(cls: type[M], folder: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> M:
        """Load a folder written by `save_pretrained`; `overrides` (key=value) change config fields."""
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not folder.is_dir():
            raise VidiffError(
                f"{cls.model_kind} checkpoint {folder} has no {CONFIG_FILE}: it is not a folder; "
                f"pass a folder written by {cls.written_by}"
            )
        for path in (config_path, weights_path):
            if not path.is_file():
                raise VidiffError(
                    f"{cls.model_kind} checkpoint {folder} has no {path.name}; pass a folder written by {cls.written_by}"
                )
        kind = weights_kind(weights_path)
        if kind is not None and kind != cls.model_kind:
            raise VidiffError(
                f"{folder} holds a {kind}, not a {cls.model_kind}; pass a folder written by {cls.written_by}"
            )
        model = cls.from_config(load_config(cls.config_class, config_path, overrides))
        load_weights(model, weights_path, f"{cls.model_kind} weights", config_path)
        return model.eval()


def tensors_hash(state: Mapping[str, Tensor], *extra: object) -> str:
    """A short content hash of tensors (names, dtypes, shapes and values) and of `extra` values (their reprs):
    equal for equal weights however their file was written, so it identifies a model across copies."""
    h = hashlib.sha256()
    for name in sorted(state):
        v = state[name].detach().contiguous().cpu()
        h.update(f"{name}|{v.dtype}|{list(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    for value in extra:
        h.update(repr(value).encode())
    return h.hexdigest()[:16]


def weights_kind(path: Path) -> str | None:
    """The model kind recorded in a weights file (None for files written before kinds were recorded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(KIND_KEY)
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise VidiffError(f"weights {path} cannot be read ({exc}); the file is corrupt or not safetensors") from None


def read_weights(path: Path, what: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise VidiffError(f"{what} {path} are missing; the checkpoint folder is incomplete")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise VidiffError(f"{what} {path} cannot be read ({exc}); the file is corrupt or not safetensors") from None


def load_weights(module: nn.Module, path: Path, what: str, config_path: Path | None = None) -> None:
    """Load `path` into `module`, strictly; one error names the first
    mismatching tensor (in the module's order; then the first unexpected one) and counts every kind of
    mismatch. Modules' load_state_dict pre-hooks (e.g. renamed keys of older files) apply first."""
    state = read_weights(path, what)
    seen: list[tuple[list[str], list[str]]] = []  # torch's key lists, even when it raises on shapes

    def record(_module, incompatible) -> None:
        seen.append((incompatible.missing_keys, incompatible.unexpected_keys))

    hook = module.register_load_state_dict_post_hook(record)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
        wrong: list[tuple[str, str]] = []
    except RuntimeError as exc:  # size mismatches: torch lists them one per line
        wrong = [(k, _shapes(why)) for k, why in re.findall(r"size mismatch for ([^:]+): (.*)", str(exc))]
        wrong = wrong or [("", str(exc).splitlines()[-1])]
        missing, unexpected = seen[-1] if seen else ([], [])
    finally:
        hook.remove()
    if missing or unexpected or wrong:
        reasons = {k: "missing from the weights" for k in missing}
        reasons.update({k: why for k, why in wrong if k})
        first = next((k for k in module.state_dict() if k in reasons), None)
        if first is None and unexpected:
            first, reasons[unexpected[0]] = unexpected[0], "in the weights, not in the model"
        detail = "; ".join(
            part
            for part in (
                f"the first mismatching tensor is {first} ({reasons[first]})" if first else "",
                f"missing {len(missing)} tensors (e.g. {missing[0]})" if missing else "",
                f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})" if unexpected else "",
                f"{len(wrong)} shape mismatches (e.g. {': '.join(p for p in wrong[0] if p)})" if wrong else "",
            )
            if part
        )
        against = config_path.name if config_path is not None else "its config"
        raise VidiffError(
            f"{what} {path} do not match {against}: {detail}. Use the {against} saved with these weights; "
            "the config was changed or the files are mixed up"
        )


def _shapes(why: str) -> str:
    """torch's size-mismatch sentence as "shape [a, b] in the weights, [c, d] in the model"."""
    m = re.search(r"shape torch\.Size\((\[.*?\])\) from checkpoint.* is torch\.Size\((\[.*?\])\)", why)
    return f"shape {m[1]} in the weights, {m[2]} in the model" if m else why.rstrip(".")
