"""For training tests: a tiny latent cache (6 captioned toy clips of 5 frames at 16x16, and images, encoded by a
small randomly initialised causal VAE: 4 latent channels, 4x in time and space) and a tiny U-Net stage for it."""

import json
from pathlib import Path

from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.training.latent_cache import encode_manifest

# `vidiff train` overrides for a U-Net stage of 0.28M parameters on that cache, 3 steps per epoch
TINY_UNET = [
    "stage.latent_channels=4", "stage.latent_frames=2", "stage.latent_height=4", "stage.latent_width=4",
    "stage.denoiser.unet.in_channels=4", "stage.denoiser.unet.model_channels=16",
    "stage.denoiser.unet.channel_mults=[1,2]", "stage.denoiser.unet.attention_levels=[1]",
    "stage.denoiser.unet.head_dim=16", "stage.denoiser.unet.norm_groups=8", "stage.denoiser.unet.num_res_blocks=1",
    "text.width=32", "text.heads=2", "stage.denoiser.unet.text_dim=32",
    "stage.sampling.steps=4", "train.batch_size=4", "train.image_batch_size=4", "train.steps_per_epoch=3",
    "train.optim.warmup_steps=2", "train.log_every=1",
]


def tiny_latent_cache(root: Path) -> Path:
    """Write the clips, their manifest, the VAE and the cache under `root`; returns the cache folder."""
    from vidiff.toyworld import generate_dataset

    jsonl = generate_dataset(root / "toy", 6, num_frames=5, height=16, width=16, seed=1)
    rows = []
    for line in jsonl.read_text().splitlines():
        item = json.loads(line)
        rows.append({"source": str(root / "toy" / item["path"]), "start_frame": 0, "end_frame": 5,
                     "caption": item["caption"], "status": "kept", "id": item["path"]})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vae = CausalVAE3D(VAEConfig(latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, mid_layers=1,
                                temporal_compression=4, spatial_compression=4, tile_sample_size=64, tile_overlap=16))
    vae.save_pretrained(root / "vae")
    return encode_manifest(root / "vae", manifest, root / "latents", num_frames=5, size=(16, 16), image_share=0.5,
                           progress=False)
