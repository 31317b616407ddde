"""Latent cache: clips (from a manifest, or toy-world clips) encoded once by the VAE, so diffusion training never
runs the encoder.

A cache folder holds `shard-NNNNN.safetensors` (tensors `latents_<i>` of shape [C, t, h, w], already
normalised with the VAE's latent mean/std), `items.jsonl` (one {shard, key, caption, clip_id, frames}
per item) and `meta.json` (settings and the VAE folder). Items with t == 1 are images.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vidiff.errors import VidiffError

SHARD_ITEMS = 2048


@dataclass
class EncodeSettings:
    num_frames: int = 9
    stride: int = 1
    size: tuple[int, int] = (32, 32)
    windows_per_clip: int = 1
    image_share: float = 0.0  # images (first frame of a window) per video item
    seed: int = 0


@dataclass
class LatentCache:
    latents: list[torch.Tensor]
    captions: list[str]
    vae_dir: Path


def _windows(row: dict, span: int, count: int, rng: np.random.Generator) -> list[int]:
    start, end = int(row["start_frame"]), int(row["end_frame"])
    last = end - span
    if last < start:
        return []
    if count == 1 or last == start:
        return [int(rng.integers(start, last + 1))]
    return sorted({int(round(s)) for s in np.linspace(start, last, count)})


def _steps_up(j: int, share: float) -> bool:
    return math.ceil((j + 1) * share - 1e-9) > math.ceil(j * share - 1e-9)


def _read_window(read_video, row: dict, start: int, span: int, s: EncodeSettings) -> torch.Tensor:
    # A written clip file starts at the clip's first frame; a reference reads the source itself.
    path, offset = (row["path"], int(row["start_frame"])) if row.get("path") else (row["source"], 0)
    return read_video(path, start - offset, start - offset + span, stride=s.stride, size=s.size)


def encode_manifest(
    vae_dir: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    batch_size: int = 32,
    progress: bool = True,
    **settings,
) -> Path:
    """Encode the manifest's kept clips into a cache at `out_dir` (skipped if it exists with the same settings)."""
    from vidiff.manifest import read_manifest
    from vidiff.models.vae import CausalVAE3D
    from vidiff.video import read_video

    s = EncodeSettings(**settings)
    s.size = tuple(s.size)
    out = Path(out_dir)
    meta = {"vae_dir": str(Path(vae_dir).resolve()), "manifest": str(Path(manifest).resolve()), **asdict(s)}
    meta["size"] = list(s.size)
    if (out / "meta.json").is_file() and json.loads((out / "meta.json").read_text()) == meta:
        return out
    vae = CausalVAE3D.from_pretrained(vae_dir).eval()
    if not vae.valid_num_frames(s.num_frames):
        raise VidiffError(
            f"encode: num_frames={s.num_frames} does not fit the VAE's temporal compression "
            f"{vae.config.temporal_compression}; use 1 + {vae.config.temporal_compression}k frames"
        )
    rows = [r for r in read_manifest(manifest) if r.get("status", "kept") == "kept"]
    if not rows:
        raise VidiffError(f"manifest {manifest} has no kept clips to encode")
    rng = np.random.default_rng(s.seed)
    span = (s.num_frames - 1) * s.stride + 1
    jobs = [(row, w) for row in rows for w in _windows(row, span, s.windows_per_clip, rng)]
    if not jobs:
        raise VidiffError(f"manifest {manifest}: no clip is long enough for {s.num_frames} frames at stride {s.stride}")

    writer = _CacheWriter(out)
    with torch.no_grad():
        for b in tqdm(range(0, len(jobs), batch_size), desc="encode", unit="batch", disable=not progress):
            batch = jobs[b : b + batch_size]
            videos = torch.stack([_read_window(read_video, row, start, span, s) for row, start in batch])
            z = vae.normalize_latents(vae.encode(videos).mode())
            # window j also gives an image when ceil((j + 1) * share) steps up: the asked share, and at least one
            # image from the first window on, so a small manifest still feeds joint image+video training
            picks = [i for i in range(len(batch)) if _steps_up(b + i, s.image_share)]
            zi = vae.normalize_latents(vae.encode(videos[picks, :, :1]).mode()) if picks else []
            images = dict(zip(picks, zi, strict=True))
            for i, (row, _) in enumerate(batch):
                writer.add(z[i], row.get("caption") or "", str(row.get("id", "")))
                if i in images:
                    writer.add(images[i], row.get("caption") or "", str(row.get("id", "")))
    return writer.finish(meta)


def encode_toyworld(
    vae_dir: str | Path,
    num_clips: int,
    out_dir: str | Path,
    num_frames: int = 9,
    size: tuple[int, int] = (32, 32),
    image_share: float = 0.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> Path:
    """Encode `num_clips` rendered toy-world clips (no files in between) into a cache at `out_dir`."""
    from vidiff.models.vae import CausalVAE3D
    from vidiff.toyworld import ToyWorldDataset

    out = Path(out_dir)
    meta = {"vae_dir": str(Path(vae_dir).resolve()), "toyworld": num_clips, "num_frames": num_frames,
            "size": list(size), "image_share": image_share, "seed": seed}
    if (out / "meta.json").is_file() and json.loads((out / "meta.json").read_text()) == meta:
        return out
    vae = CausalVAE3D.from_pretrained(vae_dir).eval()
    if not vae.valid_num_frames(num_frames):
        raise VidiffError(
            f"encode: num_frames={num_frames} does not fit the VAE's temporal compression "
            f"{vae.config.temporal_compression}; use 1 + {vae.config.temporal_compression}k frames"
        )
    ds = ToyWorldDataset(num_clips, num_frames, size[0], size[1], image_share=image_share, seed=seed)
    writer = _CacheWriter(out)
    with torch.no_grad():
        for b in tqdm(range(0, num_clips, batch_size), desc="encode", unit="batch", disable=not progress):
            items = [ds[i] for i in range(b, min(b + batch_size, num_clips))]
            for frames in sorted({it["video"].shape[1] for it in items}):  # images and videos batch apart
                group = [(b + k, it) for k, it in enumerate(items) if it["video"].shape[1] == frames]
                z = vae.normalize_latents(vae.encode(torch.stack([it["video"] for _, it in group])).mode())
                for zi, (i, it) in zip(z, group, strict=True):
                    writer.add(zi, it["caption"], f"toyworld-{seed}-{i:06d}")
    return writer.finish(meta)


class _CacheWriter:
    """Appends latents to shards of SHARD_ITEMS; `finish` writes items.jsonl and, last, meta.json."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").unlink(missing_ok=True)  # the cache is complete only once meta.json is written
        self.items: list[dict] = []
        self.shard: dict[str, torch.Tensor] = {}
        self.shard_idx = 0

    def add(self, z: torch.Tensor, caption: str, clip_id: str) -> None:
        key = f"latents_{len(self.shard)}"
        self.shard[key] = z.detach().float().cpu().contiguous()
        self.items.append({"shard": self.shard_idx, "key": key, "caption": caption, "clip_id": clip_id, "frames": int(z.shape[1])})
        if len(self.shard) >= SHARD_ITEMS:
            self._flush()

    def _flush(self) -> None:
        if self.shard:
            tmp = self.out / f".shard-{self.shard_idx:05d}.tmp"
            save_file(self.shard, str(tmp))
            os.replace(tmp, self.out / f"shard-{self.shard_idx:05d}.safetensors")
            self.shard, self.shard_idx = {}, self.shard_idx + 1

    def finish(self, meta: dict) -> Path:
        self._flush()
        (self.out / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in self.items))
        (self.out / "meta.json").write_text(json.dumps(meta, indent=2))
        return self.out


def load_latent_cache(path: str | Path) -> LatentCache:
    out = Path(path)
    if not (out / "meta.json").is_file() or not (out / "items.jsonl").is_file():
        raise VidiffError(
            f"{out} is not a complete latent cache (no meta.json/items.jsonl); write one with `vidiff encode`"
        )
    meta = json.loads((out / "meta.json").read_text())
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines() if line]
    shards: dict[int, dict[str, torch.Tensor]] = {}
    latents, captions = [], []
    for it in items:
        if it["shard"] not in shards:
            shards[it["shard"]] = load_file(str(out / f"shard-{it['shard']:05d}.safetensors"))
        latents.append(shards[it["shard"]][it["key"]])
        captions.append(it["caption"])
    empty = sum(1 for c in captions if not c)
    if empty == len(captions):
        raise VidiffError(f"latent cache {out}: no item has a caption; text-conditioned training needs captions")
    return LatentCache(latents=latents, captions=captions, vae_dir=Path(meta["vae_dir"]))
