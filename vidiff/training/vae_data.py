"""`vidiff train-vae` on a manifest (`data.manifest`): random windows and crops of its kept clips, its images
as one-frame videos, each draw keyed by (seed, step, index in the global batch): a resumed run sees the same data.

DataLoader workers import this module to decode (vidiff.training.vae_module starts them), so it imports
neither Lightning nor the models."""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidiff.errors import VidiffError
from vidiff.training.sample_keys import sample_seed

# The step of the keys that pick the clips train_vae measures latent statistics on (training steps are >= 0).
STATS_STEP = -1


@dataclass(frozen=True)
class Source:
    """Where one training item comes from: windows start at frames first..last of `path` (a still: 0..0)."""

    path: str
    first: int
    last: int
    still: bool  # an image file, read with vidiff.images.read_image
    name: str  # for messages: the manifest row and its clip id


@dataclass
class ManifestData:
    """The usable items of a manifest: `videos` give num_frames windows, `images` one frame each."""

    manifest: str
    videos: list[Source]
    images: list[Source]
    kept: int  # kept rows in the manifest
    short: int  # kept video rows shorter than num_frames (skipped)
    images_from_clips: bool  # the manifest has no image rows: single frames of its clips serve as images

    def summary(self) -> dict:
        return {
            "manifest": self.manifest,
            "kept_rows": self.kept,
            "clips": len(self.videos),
            "images": 0 if self.images_from_clips else len(self.images),
            "skipped_short": self.short,
            "images_from_clips": self.images_from_clips,
        }


def _row_file(row: dict) -> tuple[str, int]:
    """The file to read a row's frames from and the source frame its frame 0 is: a written clip file starts at
    the clip's first frame; without one the source itself is read (as vidiff.training.latent_cache does)."""
    if row.get("path"):
        return str(row["path"]), int(row["start_frame"] or 0)
    return str(row["source"]), 0


def load_manifest_data(
    path: str | Path, num_frames: int, image_share: float, key: str = "data.manifest"
) -> ManifestData:
    """Check a manifest and list its items, or raise one VidiffError naming the manifest and the fix (before
    any training: nothing is written). Clips shorter than num_frames are skipped and counted."""
    from vidiff.manifest import read_manifest

    if not path:
        raise VidiffError(
            f"{key} is empty; give the path of a manifest (`vidiff curate VIDEOS --out DIR` writes "
            "DIR/manifest.parquet)"
        )
    try:
        rows = read_manifest(path)
    except VidiffError as exc:
        raise VidiffError(f"{key}: {exc}") from None
    kept = [(k, r) for k, r in enumerate(rows, 1) if (r.get("status") or "kept") == "kept"]
    if not kept:
        counts = ", ".join(f"{n} {s}" for s, n in Counter(r.get("status") for r in rows).items()) or "no rows"
        raise VidiffError(
            f"{key}={path} has no kept rows ({counts}); curate videos into it (`vidiff curate VIDEOS --out "
            f"DIR`) or point {key} at a manifest with kept clips"
        )
    videos, stills, clip_frames, missing, short, longest = [], [], [], [], 0, 0
    for k, row in kept:
        name = f"row {k}" + (f" ({row['id']})" if row.get("id") else "")
        try:
            file, offset = _row_file(row)
            start, end = (
                int(row["start_frame"] or 0),
                int(row["end_frame"] if row.get("end_frame") is not None else 1),
            )
        except (KeyError, TypeError, ValueError):
            raise VidiffError(
                f"{key}={path}: {name} lacks a source or a frame span (start_frame, end_frame); re-curate "
                "the manifest or drop the row"
            ) from None
        if not Path(file).is_file():
            missing.append(file)
            continue
        if (row.get("media_type") or "video") == "image":
            stills.append(Source(file, 0, 0, True, name))
            continue
        first, length = start - offset, end - start
        if length >= 1:  # any frame of a clip can stand in for an image
            clip_frames.append(Source(file, first, first + length - 1, False, name))
        longest = max(longest, length)
        if length < num_frames:
            short += 1
            continue
        videos.append(Source(file, first, first + length - num_frames, False, name))
    if missing:
        shown = ", ".join(sorted(set(missing))[:3])
        raise VidiffError(
            f"{key}={path}: {len(missing)} of its {len(kept)} kept rows name files that do not exist "
            f"({shown}{', ...' if len(set(missing)) > 3 else ''}); restore them, or re-curate so the manifest "
            "names files that are there"
        )
    if not videos and image_share < 1:
        what = f"{len(clip_frames)} kept clips" if clip_frames else "kept rows (images only)"
        raise VidiffError(
            f"{key}={path}: none of its {what} has data.num_frames={num_frames} frames (the longest has "
            f"{longest}); set data.num_frames to 1 + 4k at most {longest}, curate longer clips, or train on its "
            "images alone with data.image_share=1"
        )
    if short and _rank_zero():
        print(
            f"{key}={path}: {short} of {len(kept)} kept clips are shorter than data.num_frames={num_frames} "
            "frames; training skips them",
            file=sys.stderr,
        )
    from_clips = not stills
    images = stills or (clip_frames if image_share > 0 else [])
    return ManifestData(str(path), videos, images, len(kept), short, from_clips and image_share > 0)


def _rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def crop_box(src_h: int, src_w: int, h: int, w: int, scale: tuple[float, float], u: Sequence[float]):
    """(top, left, box_h, box_w) of a random crop of an src_h x src_w frame, resized to h x w afterwards.

    The box has the crop's aspect ratio; its side is a fraction in [scale[0], scale[1]] (u[0]) of the largest
    such box the frame holds, but never smaller than h x w where the frame allows: a crop is at most native
    resolution, never a blown-up patch. u[1], u[2] in [0, 1) place it.
    """
    big_h = min(src_h, src_w * h / w)  # the largest box of aspect w/h inside the frame
    frac = scale[0] + (scale[1] - scale[0]) * float(u[0])
    box_h = min(big_h, max(frac * big_h, min(h, big_h)))
    bh = max(1, min(src_h, round(box_h)))
    bw = max(1, min(src_w, round(box_h * w / h)))
    top = min(src_h - bh, int(float(u[1]) * (src_h - bh + 1)))
    left = min(src_w - bw, int(float(u[2]) * (src_w - bw + 1)))
    return top, left, bh, bw


def resize_frames(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, h, w, 3]: area averaging down (no aliasing), bilinear up."""
    import cv2

    if frames.shape[1:3] == (h, w):
        return frames
    down = h * w < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if down else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def _read(source: Source, start: int, count: int) -> np.ndarray:
    """Frames [count, H, W, 3] uint8 of `source` from `start`: only that span is decoded."""
    if source.still:
        from vidiff.images import read_image
        from vidiff.video import to_uint8

        return to_uint8(read_image(source.path)[0][:, None])
    from vidiff.video import read_frames

    return read_frames(source.path, start, start + count)


class ManifestClips(torch.utils.data.Dataset):
    """Items are keys (step, index in the global batch, item): item < len(videos) is a num_frames window of
    that clip, else one frame of images[item - len(videos)]. The window's start and the crop come from a
    generator seeded by (seed, step, index), so a key always gives the same tensor, in any process."""

    def __init__(
        self,
        data: ManifestData,
        num_frames: int,
        height: int,
        width: int,
        crop_scale: tuple[float, float],
        seed: int,
    ):
        self.data, self.num_frames, self.size = data, num_frames, (height, width)
        self.crop_scale, self.seed = tuple(crop_scale), seed

    def __len__(self) -> int:
        return len(self.data.videos) + len(self.data.images)

    def source(self, item: int) -> tuple[Source, int]:
        n = len(self.data.videos)
        return (self.data.videos[item], self.num_frames) if item < n else (self.data.images[item - n], 1)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        step, index, item = key
        source, count = self.source(item)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, step, index, "vae_data"))
        start = source.first + int(torch.randint(source.last - source.first + 1, (), generator=gen))
        u = torch.rand(3, generator=gen).tolist()
        try:
            frames = _read(source, start, count)
        except VidiffError as exc:
            raise VidiffError(
                f"data.manifest={self.data.manifest}: {source.name}: {exc}; re-curate the manifest or drop "
                "the row"
            ) from None
        top, left, bh, bw = crop_box(frames.shape[1], frames.shape[2], *self.size, self.crop_scale, u)
        from vidiff.video import from_uint8

        return {"video": from_uint8(resize_frames(frames[:, top : top + bh, left : left + bw], *self.size))}


def worker_init(worker_id: int) -> None:
    """A DataLoader worker's start: one OpenCV thread, as the workers already run side by side."""
    import cv2

    cv2.setNumThreads(1)


def stats_clips(dataset: ManifestClips, count: int) -> torch.Tensor:
    """`count` windows spread over the clips (over the images when there are none), keyed by STATS_STEP
    (never a training step), for the latent statistics."""
    n = len(dataset.data.videos) or len(dataset)
    items = [k * n // count for k in range(count)]
    return torch.stack([dataset[(STATS_STEP, k, item)]["video"] for k, item in enumerate(items)])


def heldout_clips(
    path: str | Path, num_frames: int, height: int, width: int, max_clips: int, key: str = "eval.manifest"
) -> tuple[torch.Tensor, list[str]]:
    """The middle num_frames window of kept clips of a held-out manifest (at most max_clips, spread evenly),
    resized to cover height x width and centre-cropped: [N, 3, T, height, width], and their names."""
    data = load_manifest_data(path, num_frames, 0.0, key)
    picked = data.videos
    if len(picked) > max_clips:
        picked = [picked[math.floor(k * len(picked) / max_clips)] for k in range(max_clips)]
    clips, names = [], []
    for s in picked:
        start = (s.first + s.last) // 2
        frames = _read(s, start, num_frames)
        src_h, src_w = frames.shape[1:3]
        scale = max(height / src_h, width / src_w)
        rh, rw = max(height, round(src_h * scale)), max(width, round(src_w * scale))
        frames = resize_frames(frames, rh, rw)
        top, left = (rh - height) // 2, (rw - width) // 2
        from vidiff.video import from_uint8

        clips.append(from_uint8(frames[:, top : top + height, left : left + width]))
        names.append(f"{Path(s.path).name}@{start}")
    return torch.stack(clips), names
