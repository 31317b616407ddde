"""What a denoiser is conditioned on: `Cond`, one batch's text tokens and optional image latent,
low-res video, noise level, fps and frame mask."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vidiff.errors import VidiffError


@dataclass
class Cond:
    """Conditioning for one batch; every field is batch-first with batch size B.

    text [B, L, D] float tokens; text_mask [B, L] bool (True = real token). A row whose mask is all
    False is unconditional (the denoiser then attends only to its learned null token).
    image_latent [B, C, 1, h, w] (image-to-video), lowres [B, C, T', H', W'] (super-resolution),
    noise_aug_level [B] (noise added to lowres), fps [B], frame_mask [B, T] bool (True = real frame).
    """

    text: Tensor
    text_mask: Tensor
    image_latent: Tensor | None = None
    lowres: Tensor | None = None
    noise_aug_level: Tensor | None = None
    fps: Tensor | None = None
    frame_mask: Tensor | None = None

    def __post_init__(self):
        if self.text.dim() != 3:
            raise VidiffError(f"Cond.text must be [B, L, D], got shape {tuple(self.text.shape)}")
        b, length = self.text.shape[:2]
        if tuple(self.text_mask.shape) != (b, length):
            raise VidiffError(
                f"Cond.text_mask must be [B, L] = {(b, length)} to match text, got {tuple(self.text_mask.shape)}"
            )
        if self.text_mask.dtype != torch.bool:
            self.text_mask = self.text_mask.bool()
        expect = {"image_latent": 5, "lowres": 5, "noise_aug_level": 1, "fps": 1, "frame_mask": 2}
        for name, ndim in expect.items():
            v = getattr(self, name)
            if v is None:
                continue
            if v.dim() != ndim or v.shape[0] != b:
                raise VidiffError(
                    f"Cond.{name} must have {ndim} dims with batch {b} first, got {tuple(v.shape)}"
                )
        if self.image_latent is not None and self.image_latent.shape[2] != 1:
            raise VidiffError(
                f"Cond.image_latent must be one frame [B, C, 1, h, w], got {tuple(self.image_latent.shape)}"
            )
        if self.frame_mask is not None and self.frame_mask.dtype != torch.bool:
            self.frame_mask = self.frame_mask.bool()

    @property
    def batch_size(self) -> int:
        return self.text.shape[0]

    def _fields(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _map(self, fn) -> Cond:
        return Cond(**{k: None if v is None else fn(k, v) for k, v in self._fields().items()})

    def to(self, device=None, dtype: torch.dtype | None = None) -> Cond:
        """Move to `device`; cast float fields (not masks) to `dtype`."""

        def move(_, v: Tensor) -> Tensor:
            if dtype is not None and v.is_floating_point():
                return v.to(device=device, dtype=dtype)
            return v.to(device=device)

        return self._map(move)

    def __getitem__(self, index) -> Cond:
        """Select batch rows (int, slice, index tensor or bool mask); an int keeps the batch dim."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda _, v: v[index])

    def repeat(self, n: int) -> Cond:
        """Repeat each row n times in place (row i becomes rows i*n .. i*n+n-1), e.g. n seeds per prompt."""
        return self._map(lambda _, v: v.repeat_interleave(n, dim=0))

    @staticmethod
    def cat(conds: list[Cond]) -> Cond:
        """Concatenate along the batch (e.g. [cond, cond.null_like()] for CFG); pads text to the longest L."""
        if not conds:
            raise VidiffError("Cond.cat needs at least one Cond")
        present = [tuple(k for k, v in c._fields().items() if v is not None) for c in conds]
        if len(set(present)) != 1:
            raise VidiffError(
                f"Cond.cat: the conds carry different optional fields {sorted(set(present))}; give all the same ones"
            )
        length = max(c.text.shape[1] for c in conds)
        out = {}
        for name in present[0]:
            parts = [getattr(c, name) for c in conds]
            if name in ("text", "text_mask"):
                parts = [
                    F.pad(p, (0, 0, 0, length - p.shape[1]) if p.dim() == 3 else (0, length - p.shape[1]))
                    for p in parts
                ]
            try:
                out[name] = torch.cat(parts, dim=0)
            except RuntimeError as exc:
                raise VidiffError(f"Cond.cat: field {name} has shapes that do not stack: {exc}") from None
        return Cond(**out)

    def null_like(self) -> Cond:
        """The same batch with no text (all tokens masked); image, low-res, fps and masks are kept."""
        return dataclasses.replace(
            self, text=torch.zeros_like(self.text), text_mask=torch.zeros_like(self.text_mask)
        )

    def drop_text(self, drop: Tensor) -> Cond:
        """Make rows where `drop` [B] bool is True unconditional."""
        keep = ~drop.to(device=self.text.device, dtype=torch.bool)
        return dataclasses.replace(
            self,
            text=self.text * keep[:, None, None].to(self.text.dtype),
            text_mask=self.text_mask & keep[:, None],
        )

    def drop(self, name: str, rows: Tensor) -> Cond:
        """Remove input `name` ("text" or one of DROPPABLE) from the rows where `rows` [B] bool is True: text
        becomes unconditional, a latent input becomes zeros (what a backbone sees when a batch has none)."""
        if name == "text":
            return self.drop_text(rows)
        if name not in DROPPABLE:
            raise VidiffError(f"Cond.drop: {name!r} cannot be dropped; use 'text' or one of {', '.join(DROPPABLE)}")
        value = getattr(self, name)
        if value is None:
            return self
        keep = ~rows.to(device=value.device, dtype=torch.bool)
        return dataclasses.replace(self, **{name: value * keep.reshape(-1, *[1] * (value.dim() - 1)).to(value.dtype)})

    @classmethod
    def from_batch(cls, batch: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> Cond:
        """The conditioning a training batch carries: `text` and `text_mask`, plus any optional field present
        under its own name (image_latent, lowres, noise_aug_level, fps, frame_mask); floats cast to `dtype`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in batch.items() if k in fields}
        return cls(**values).to(dtype=dtype)


DROPPABLE = ("image_latent", "lowres")  # conditioning inputs besides text that training may drop per sample
