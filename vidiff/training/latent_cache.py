"""Latent cache: encode clips once with the VAE into safetensors shards, so diffusion training never runs the encoder.

Layout of a cache folder:
  cache.yaml               VAE folder, latent normalisation, counts
  shard_00000.safetensors  "latents" [N, C, t, h, w] (one shape per shard); metadata "captions" (JSON list)
  index.jsonl              one row per clip: shard, row, caption, shape, source, start_frame, end_frame
Latents are stored normalised for diffusion: (z - latent_mean) / latent_std, from the posterior mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.models.vae import CausalVAE3D

MANIFEST_KEYS = ("source", "start_frame", "end_frame", "caption")


@dataclass
class ClipSpec:
    """Where to read one clip: a video file and a frame span (end exclusive), plus its caption."""

    source: str
    start_frame: int
    end_frame: int
    caption: str


def read_clip_manifest(path: str | Path) -> list[ClipSpec]:
    """Kept rows of a curation manifest (JSONL, or Parquet with pyarrow): source, start_frame, end_frame, caption.

    A row's own clip file (`path`, when the curator wrote clips) is preferred over its source span.
    """
    path = Path(path)
    if not path.is_file():
        raise VidiffError(f"manifest {path} does not exist; pass the manifest written by `vidiff curate`")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise VidiffError(f"manifest {path} line {n} is not JSON ({exc})") from None
    clips = []
    for n, row in enumerate(rows, 1):
        if row.get("status", "kept") != "kept":
            continue
        missing = [k for k in MANIFEST_KEYS if row.get(k) is None]
        if missing:
            raise VidiffError(f"manifest {path} row {n} lacks {', '.join(missing)}; rows need {', '.join(MANIFEST_KEYS)}")
        if row.get("path"):
            clip_path = Path(row["path"])
            if not clip_path.is_absolute():
                clip_path = path.parent / clip_path
            clips.append(ClipSpec(str(clip_path), 0, int(row["end_frame"]) - int(row["start_frame"]), row["caption"]))
        else:
            clips.append(ClipSpec(str(row["source"]), int(row["start_frame"]), int(row["end_frame"]), row["caption"]))
    if not clips:
        raise VidiffError(f"manifest {path} has no kept clips to encode")
    return clips


def _largest_valid(n: int, tc: int) -> int:
    return 1 + (n - 1) // tc * tc if n >= 1 else 0


def manifest_items(clips: list[ClipSpec], num_frames: int | None, size: tuple[int, int], tc: int) -> Iterator[dict]:
    """Read each clip (its first `num_frames` frames, or the longest 1 + tc*k), resized to `size`."""
    from vidiff.video import read_video

    for clip in clips:
        n = clip.end_frame - clip.start_frame
        take = min(num_frames, n) if num_frames else n
        take = _largest_valid(take, tc)
        if take < 1:
            raise VidiffError(f"clip {clip.source} [{clip.start_frame}, {clip.end_frame}) has no frames")
        video = read_video(clip.source, start=clip.start_frame, end=clip.start_frame + take, size=size)
        yield {
            "video": video,
            "caption": clip.caption,
            "source": clip.source,
            "start_frame": clip.start_frame,
            "end_frame": clip.start_frame + video.shape[1],
        }


def toyworld_items(n: int, num_frames: int, height: int, width: int, seed: int, image_share: float = 0.0) -> Iterator[dict]:
    from vidiff.toyworld import ToyWorldDataset

    ds = ToyWorldDataset(n, num_frames, height, width, image_share=image_share, seed=seed)
    for i in range(n):
        item = ds[i]
        yield {"video": item["video"], "caption": item["caption"], "source": f"toyworld:{seed}:{i}", "start_frame": 0,
               "end_frame": int(item["video"].shape[1])}


class _ShardWriter:
    def __init__(self, out: Path, shard_size: int):
        self.out, self.shard_size = out, shard_size
        self.pending: dict[tuple, list[tuple[torch.Tensor, dict]]] = {}
        self.count = 0
        self.index = open(out / "index.jsonl", "w")

    def add(self, latent: torch.Tensor, meta: dict) -> None:
        group = self.pending.setdefault(tuple(latent.shape), [])
        group.append((latent, meta))
        if len(group) >= self.shard_size:
            self._flush(tuple(latent.shape))

    def _flush(self, shape: tuple) -> None:
        group = self.pending.pop(shape, [])
        if not group:
            return
        name = f"shard_{self.count:05d}.safetensors"
        self.count += 1
        captions = [m["caption"] for _, m in group]
        tmp = self.out / f".{name}.tmp"
        save_file({"latents": torch.stack([z for z, _ in group]).contiguous()}, str(tmp),
                  metadata={"captions": json.dumps(captions)})
        tmp.replace(self.out / name)
        for row, (_, m) in enumerate(group):
            self.index.write(json.dumps({"shard": name, "row": row, "shape": list(shape), **m}) + "\n")

    def close(self) -> None:
        for shape in list(self.pending):
            self._flush(shape)
        self.index.close()


@torch.no_grad()
def encode_to_cache(
    vae: CausalVAE3D,
    items: Iterable[dict],
    out_dir: str | Path,
    vae_dir: str | Path | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    total: int | None = None,
) -> Path:
    """Encode `{"video": [C,T,H,W], "caption": str, ...}` items into a cache folder; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard_*.safetensors"):
        old.unlink()  # a cache is rewritten whole; stale shards would not match the new index
    vae.eval()
    writer = _ShardWriter(out, shard_size)
    n = 0
    batch: list[dict] = []

    def run(batch: list[dict]) -> None:
        z = vae.normalize_latents(vae.encode(torch.stack([b["video"] for b in batch])).mode())
        for latent, item in zip(z, batch):
            writer.add(latent.float().cpu(), {k: v for k, v in item.items() if k != "video"})

    try:
        for item in tqdm(items, total=total, desc="encode", unit="clip"):
            if batch and batch[0]["video"].shape != item["video"].shape:
                run(batch)
                batch = []
            batch.append(item)
            n += 1
            if len(batch) == batch_size:
                run(batch)
                batch = []
        if batch:
            run(batch)
    finally:
        writer.close()
    meta = {
        "vae": str(vae_dir) if vae_dir else None,
        "normalized": True,
        "latent_mean": vae.config.latent_mean,
        "latent_std": vae.config.latent_std,
        "latent_channels": vae.config.latent_channels,
        "num_clips": n,
        "num_shards": writer.count,
    }
    (out / "cache.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


class LatentCacheDataset(torch.utils.data.Dataset):
    """`{"latents": [C, t, h, w], "caption": str}` per clip of a cache folder written by `encode_to_cache`."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        index = self.dir / "index.jsonl"
        if not index.is_file():
            raise VidiffError(f"{self.dir} is not a latent cache (no index.jsonl); write one with `vidiff encode`")
        self.rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
        self.meta = yaml.safe_load((self.dir / "cache.yaml").read_text()) if (self.dir / "cache.yaml").is_file() else {}
        self._shards: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, name: str) -> torch.Tensor:
        if name not in self._shards:
            path = self.dir / name
            if not path.is_file():
                raise VidiffError(f"latent cache {self.dir} lacks {name}; re-run `vidiff encode`")
            with safe_open(str(path), framework="pt") as f:
                self._shards[name] = f.get_tensor("latents")
        return self._shards[name]

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        return {"latents": self._shard(row["shard"])[row["row"]], "caption": row["caption"]}

    def video_indices(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r["shape"][1] > 1]

    def image_indices(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r["shape"][1] == 1]
