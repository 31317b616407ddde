"""Networks: the causal video VAE (vae), denoisers (unet; the registry in denoisers), what conditions them
(cond, conditioning, text_encoder), shared layers, and the one save/load format (pretrained).

Import from the submodules (`vidiff.models.vae`, `vidiff.models.unet`, ...) so that loading one
network does not import the others' dependencies.
"""
