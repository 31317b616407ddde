"""Networks: denoisers (FactorizedUNet), the VAE, conditioning encoders and their shared layers."""

# --- unet / conditioning (issue 4) ---
from vidiff.models.conditioning import Cond, TextEncoder, TextEncoderConfig, caption_dropout
from vidiff.models.unet import FactorizedUNet, UNetConfig, gpu_unet_config

__all__ = [
    "Cond",
    "FactorizedUNet",
    "TextEncoder",
    "TextEncoderConfig",
    "UNetConfig",
    "caption_dropout",
    "gpu_unet_config",
]
# --- end unet / conditioning ---
