"""What every denoiser backbone shares besides its conditioning: the one model format, a gradient
checkpointing switch, and a parameter count."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vidiff.models.pretrained import PretrainedMixin


class Backbone(PretrainedMixin, nn.Module):
    """Base class of FactorizedUNet and VideoDiT: `denoiser(x_t, t, cond) -> prediction`, saved as config.yaml +
    model.safetensors. Subclasses run each block through `_block` so the checkpointing switch applies."""

    gradient_checkpointing: bool = False

    def enable_gradient_checkpointing(self, enabled: bool = True) -> Backbone:
        """Recompute each block's activations in backward instead of storing them (less memory, ~30% slower)."""
        self.gradient_checkpointing = enabled
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _block(self, blk: nn.Module, *args) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)
