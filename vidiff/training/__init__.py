"""Training: Lightning modules, data helpers, the VAE latent cache."""
