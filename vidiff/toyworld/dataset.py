"""Toy-world training data: a deterministic torch Dataset and a writer of captioned mp4 clips + JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.toyworld.world import SceneSpec, caption, render, sample_spec


class ToyWorldDataset(Dataset):
    """`{"video": [C,T,H,W] in [-1,1], "caption": str}` per index; item i depends only on (seed, i).

    A fraction `image_share` of items are images (T == 1, caption without motion). With `specs`,
    item i renders specs[i % len(specs)] instead of a random scene.
    """

    def __init__(
        self,
        num_samples: int,
        num_frames: int = 16,
        height: int = 32,
        width: int = 32,
        image_share: float = 0.0,
        seed: int = 0,
        specs: list[SceneSpec] | None = None,
    ):
        if num_samples < 1 or num_frames < 1:
            raise VidiffError(
                f"ToyWorldDataset needs num_samples, num_frames >= 1, got {num_samples}, {num_frames}"
            )
        if not 0.0 <= image_share <= 1.0:
            raise VidiffError(f"image_share must be in [0, 1], got {image_share}")
        if specs is not None and len(specs) == 0:
            raise VidiffError("ToyWorldDataset: specs is an empty list; pass None for random scenes")
        self.num_samples, self.num_frames = num_samples, num_frames
        self.height, self.width = height, width
        self.image_share, self.seed, self.specs = image_share, seed, specs

    def __len__(self) -> int:
        return self.num_samples

    def item_spec(self, index: int) -> tuple[SceneSpec, bool, int]:
        """(spec, is_image, render seed) of item `index`, without rendering it."""
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        is_image = bool(rng.random() < self.image_share)
        spec = self.specs[index % len(self.specs)] if self.specs is not None else sample_spec(rng)
        return spec, is_image, int(rng.integers(2**31))

    def __getitem__(self, index: int) -> dict:
        spec, is_image, render_seed = self.item_spec(index)
        t = 1 if is_image else self.num_frames
        video = render(spec, t, self.height, self.width, seed=render_seed)
        return {"video": video, "caption": caption(spec, image=is_image)}


def generate_dataset(
    out_dir,
    n: int,
    num_frames: int = 16,
    height: int = 32,
    width: int = 32,
    fps: int = 8,
    image_share: float = 0.0,
    seed: int = 0,
    crf: int = 18,
    pix_fmt: str | None = None,
) -> Path:
    """Write n items as `clips/NNNNN.mp4` (images as .png) plus `captions.jsonl`; returns the JSONL path.

    pix_fmt None writes yuv420p (plays in browsers; ~31 dB PSNR at 32x32 since chroma is halved around
    small saturated shapes); "yuv444p" keeps full chroma (~42 dB at crf 18) for training data.

    Each JSONL line: path (relative to out_dir), caption, num_frames, height, width, fps, spec.
    """
    from PIL import Image

    from vidiff.video import to_uint8, write_video

    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    ds = ToyWorldDataset(n, num_frames, height, width, image_share=image_share, seed=seed)
    jsonl = out / "captions.jsonl"
    with open(jsonl, "w") as fh:
        for i in tqdm(range(n), desc="toy world", unit="clip", disable=n < 50):
            spec, is_image, _ = ds.item_spec(i)
            item = ds[i]
            video = item["video"]
            if is_image:
                rel = f"clips/{i:05d}.png"
                Image.fromarray(to_uint8(video)[0]).save(out / rel)
            else:
                rel = f"clips/{i:05d}.mp4"
                write_video(out / rel, video, fps=fps, crf=crf, pix_fmt=pix_fmt)
            row = {
                "path": rel,
                "caption": item["caption"],
                "num_frames": int(video.shape[1]),
                "height": height,
                "width": width,
                "fps": fps,
                "spec": spec.to_dict(),
            }
            fh.write(json.dumps(row) + "\n")
    return jsonl
