"""Image-to-video generation: a still image (and a prompt saying how it moves) -> an image-to-video base stage, then
the rest of the cascade -> VAE decode -> mp4 files.

The image is fitted to the base stage's frame size (vidiff.images.fit_image), encoded by the pipeline's VAE as a
one-frame latent (Cond.image_latent; with the causal VAE exactly what the first frame of a video encodes to) and
given to the stage, which makes a video starting from it (vidiff.models.conditioning.concat_conditioning).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.images import fit_image, read_image
from vidiff.models.cond import Cond
from vidiff.pipelines.generation import GenerationPipeline, write_videos


class ImageToVideo(GenerationPipeline):
    """Images and prompts -> videos through an image-to-video pipeline's leading stages and its VAE
    (GenerationPipeline); `sampling` may set `image_cfg`, the image guidance scale, beside `cfg`, the text's."""

    task = "image_to_video"
    other_task = ("generate from text with it (`vidiff generate`), or fine-tune an image-to-video stage from it "
                  "(configs/toy/i2v.yaml, train.init_from)")

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the base stage's frames: the size an image is fitted to."""
        c, f = self.stage.config, self.vae.config.spatial_compression
        return c.latent_height * f, c.latent_width * f

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image latents [B, C, 1, h, w] of images [B, 3, H, W] in [-1, 1] at `image_size`."""
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.image_size:
            h, w = self.image_size
            raise VidiffError(
                f"images must be [B, 3, {h}, {w}] in [-1, 1] for this pipeline's base stage, got {tuple(images.shape)}; "
                "fit them first (vidiff.images.fit_image, or `vidiff animate`, which does)"
            )
        return self.vae.encode_latents(images.to(self.device)[:, :, None])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str], seed: int = 0, progress: bool = False) -> torch.Tensor:
        """Videos [B, C, T, H, W] in [-1, 1] whose first frame is the image; prompt i ("" for none) says how image i
        moves. The same seed gives the same videos."""
        return self.vae.decode_latents(self.cascade.sample(self.cond(images, prompts), seed=seed, progress=progress))

    def stage_videos(self, images: torch.Tensor, prompts: Sequence[str], seed: int = 0,
                     progress: bool = False) -> list[torch.Tensor]:
        """Every stage's videos for the images and prompts, from one run of the cascade, in stage order; the last is
        what `__call__` returns for the same seed."""
        return self.stage_videos_for(self.cond(images, prompts), seed=seed, progress=progress)

    def cond(self, images: torch.Tensor, prompts: Sequence[str]) -> Cond:
        """The Cond of images [B, 3, H, W] (encoded) and their prompts."""
        if len(prompts) != images.shape[0]:
            raise VidiffError(f"{len(prompts)} prompts for {images.shape[0]} images; give one prompt per image")
        return self.text_cond(prompts, image_latent=self.encode_images(images))


def load_image_for(pipe: ImageToVideo, path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """The image at `path` fitted to the pipeline's base stage ([3, H, W] in [-1, 1]) and the notes of what was done
    to it (conversions, resizing, cropping)."""
    image, notes = read_image(path)
    fitted, note = fit_image(image, *pipe.image_size)
    return fitted, notes + ([note] if note else [])


def animate_images(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    prompts: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    stages: Sequence[str] | None = None,
    sampling: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
    report=print,
) -> list[Path]:
    """Write one mp4 per image into `out_dir`, at the last stage's frame rate, plus `prompts.jsonl` ({file, image,
    prompt, seed, notes, sampling settings}). `prompts`: one per image, or one for all, or none (unconditional
    motion). Every image is read and checked before any sampling; `report` gets a line per conversion or resize.
    Image i uses seed `seed + i`."""
    if not images:
        raise VidiffError("no image given; pass --image PICTURE (PNG, JPEG or WebP)")
    prompts = list(prompts or [""])
    if len(prompts) == 1:
        prompts = prompts * len(images)
    if len(prompts) != len(images):
        raise VidiffError(f"{len(prompts)} prompts for {len(images)} images; give one prompt, or one per image")
    pipe = ImageToVideo(checkpoint, device=device, stages=stages, sampling=sampling, overrides=overrides)
    loaded = [load_image_for(pipe, path) for path in images]
    for path, (_, notes) in zip(images, loaded, strict=True):
        for note in notes:
            report(f"{path}: {note}")

    def videos():
        for i, (path, (image, notes), prompt) in enumerate(
            tqdm(list(zip(images, loaded, prompts, strict=True)), desc="animate", unit="video", disable=len(images) < 2)
        ):
            video = pipe(image[None], [prompt], seed=seed + i, progress=progress)[0]
            yield video, {"image": str(path), "prompt": prompt, "seed": seed + i, "notes": notes,
                          **pipe.settings_record()}

    return write_videos(out_dir, videos(), pipe.cascade.fps)
