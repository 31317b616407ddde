"""Networks: the causal video VAE and the diffusion backbones."""

from vidiff.models.vae import CausalVAE3D, VAEConfig

__all__ = ["CausalVAE3D", "VAEConfig"]
