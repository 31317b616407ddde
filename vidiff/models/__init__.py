"""Networks: the causal video VAE (vae), denoisers (unet), conditioning encoders and shared layers.

Import from the submodules (`vidiff.models.vae`, `vidiff.models.unet`, ...) so that loading one
network does not import the others' dependencies.
"""
