"""Latent cache: clips (from a manifest, or toy-world clips) encoded once by the VAE, so diffusion training never
runs the encoder.

A cache folder holds `shard-NNNNN.safetensors` (tensors `latents_<i>` of shape [C, t, h, w], already
normalised with the VAE's latent mean/std), `items.jsonl` (one {shard, key, caption, clip_id, frames}
per item) and `meta.json` (settings and the VAE folder). Items with t == 1 are images: the first frame of a video
window (`--image-share`), or a still of an image set (a `vidiff curate-images` manifest's rows), which its item marks
{media_type: "image"} so that training can tell an image set apart (vidiff.training.train_stage).

A super-resolution cache (`lowres`: "frames" for TSR, "space" for SSR) also holds, beside each video's
target latents, `lowres_<i>`: the same VAE's latents of the clip degraded by `degrade` (every 2nd frame,
or 2x smaller height and width), which is what the stage before it produces at sampling time; its items
add {lowres: true, lowres_frames}. `crop` encodes a random crop of each clip (SSR trains on crops).

With `world_size` > 1, rank r of N encodes only its share of the batches, and the last rank to finish merges the
shares into the same cache one process writes (vidiff.training.encode_ranks).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.pipelines.lowres import RESAMPLE_MODES, downsample_grid, prepare_lowres
from vidiff.pipelines.stage import LowresConfig
from vidiff.training import encode_ranks
from vidiff.training.encode_ranks import Item

SHARD_ITEMS = 2048
LOWRES_FACTOR = 2  # Imagen Video's per-stage factor: TSR doubles the frame rate, SSR the height and width
LOWRES_KINDS = ("frames", "space")
_CROP_STREAM = 0x63726F70  # keys each item's crop apart from the other randomness drawn from (seed, index)


@dataclass
class EncodeSettings:
    num_frames: int = 9
    stride: int = 1
    size: tuple[int, int] = (32, 32)
    windows_per_clip: int = 1
    image_share: float = 0.0  # images (first frame of a window) per video item
    seed: int = 0
    lowres: str = ""  # "" plain cache; "frames" (TSR) or "space" (SSR): also encode each clip's degraded copy
    crop: tuple[int, int] | None = None  # (height, width) of a random pixel crop of each clip; None: whole frames
    # "pixel": the degraded copy resampled back onto the clip's grid in pixels before it is encoded (the input of a
    # stage with stage.lowres.resample: pixel, vidiff.pipelines.lowres); "latent": encoded at its own size
    resample: str = "latent"


_PLAIN_KEYS = ("num_frames", "stride", "size", "windows_per_clip", "image_share", "seed")


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.safetensors"


class ShardTensors(Sequence):
    """A cache's tensors, each read from its shard when it is indexed: safetensors reads just that tensor's bytes, so
    a rank of a multi-rank run reads only the items of its slices. Shapes come from the shards' headers."""

    def __init__(self, folder: Path, refs: list[tuple[int, str]], headers: dict[int, dict[str, tuple]]):
        self.folder, self.refs = folder, refs
        self._files: dict = {}
        self.shapes = [headers[shard].get(key) for shard, key in refs]  # None: not in its shard (missing())

    @staticmethod
    def read_headers(folder: Path, shards: set[int]) -> dict[int, dict[str, tuple]]:
        """Each shard's {tensor key: shape}, from its safetensors header alone."""
        headers = {}
        for shard in sorted(shards):
            with safe_open(str(shard_path(folder, shard)), "pt") as f:
                headers[shard] = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        return headers

    def missing(self) -> list[int]:
        """The items whose tensor is not in their shard (an incomplete cache)."""
        return [i for i, shape in enumerate(self.shapes) if shape is None]

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        shard, key = self.refs[i]
        if shard not in self._files:
            self._files[shard] = safe_open(str(shard_path(self.folder, shard)), "pt")
        return self._files[shard].get_tensor(key)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}  # DataLoader workers open the shards themselves


class ChainedTensors(Sequence):
    """Two caches' tensors as one sequence, the first's then the second's (a video cache and an image cache)."""

    def __init__(self, first: Sequence[torch.Tensor], second: Sequence[torch.Tensor]):
        self.first, self.second = first, second
        self.shapes = tensor_shapes(first) + tensor_shapes(second)

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        return self.first[i] if i < len(self.first) else self.second[i - len(self.first)]


def tensor_shapes(tensors: Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    """The shapes of a cache's tensors: from the shards' headers for ShardTensors (no tensor is read), else from
    the tensors (an in-memory list)."""
    if isinstance(tensors, (ShardTensors, ChainedTensors)):
        return list(tensors.shapes)
    return [tuple(t.shape) for t in tensors]


@dataclass
class LatentCache:
    latents: Sequence[torch.Tensor]  # ShardTensors: read on access
    captions: list[str]
    vae_dir: Path
    lowres: Sequence[torch.Tensor] | None = None  # conditioning latents in the order of `latents`; None: no SR cache
    lowres_kind: str = ""  # "frames" (TSR) or "space" (SSR); "" without lowres
    residual_std: float | None = None  # std of latents - lowres where both share a grid (meta.json), else None
    media_types: list[str] | None = None  # per item: "image" for an image set's still, else "video" (None: all video)

    def __post_init__(self):
        if self.media_types is None:
            self.media_types = ["video"] * len(self.latents)


def degrade(video: torch.Tensor, lowres: str) -> torch.Tensor:
    """The low-res clip an SR stage is conditioned on, made from its target `video` ([..., C, T, H, W] pixels).

    "frames" keeps every LOWRES_FACTOR-th frame (first and last of 1 + 2k frames); "space" averages
    LOWRES_FACTOR x LOWRES_FACTOR pixel blocks, an area resize, so it is antialiased.
    """
    if lowres == "frames":
        return downsample_grid(video, LOWRES_FACTOR, 1)
    if lowres == "space":
        return downsample_grid(video, 1, LOWRES_FACTOR)
    raise _unknown_lowres(lowres)


def _unknown_lowres(lowres: str) -> VidiffError:
    return VidiffError(
        f"encode: unknown --lowres {lowres!r}; use 'frames' (TSR: every 2nd frame) or 'space' (SSR: 2x downsampled)"
    )


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


def _meta(vae_dir: str | Path, source: dict, s: EncodeSettings, keys: Sequence[str]) -> dict:
    """meta.json's content; the degradation keys appear only when set, so a plain cache's meta is as before."""
    meta = {"vae_dir": str(Path(vae_dir).resolve()), **source, **{k: getattr(s, k) for k in keys}}
    meta["size"] = list(s.size)
    if s.lowres or s.crop is not None:
        meta |= {"lowres": s.lowres, "lowres_factor": LOWRES_FACTOR, "crop": list(s.crop) if s.crop else None}
    if s.resample != "latent":
        meta["resample"] = s.resample
    return meta


MEASURED_KEYS = ("lowres_residual_std",)  # figures meta.json records about the written cache, not settings


def _up_to_date(out: Path, meta: dict) -> bool:
    if not (out / "meta.json").is_file():
        return False
    written = json.loads((out / "meta.json").read_text())
    return {k: v for k, v in written.items() if k not in MEASURED_KEYS} == meta


def _load_vae(vae_dir: str | Path, s: EncodeSettings):
    """The VAE, once `s` is checked against it: each refusal names the flag to change."""
    from vidiff.models.vae import CausalVAE3D

    if s.lowres not in ("", *LOWRES_KINDS):
        raise _unknown_lowres(s.lowres)
    if s.resample not in RESAMPLE_MODES:
        raise VidiffError(f"encode: unknown --resample {s.resample!r}; use one of {', '.join(RESAMPLE_MODES)}")
    if s.resample != "latent" and not s.lowres:
        raise VidiffError(f"encode: --resample {s.resample} resamples the low-res copy of an SR cache; add --lowres "
                          "frames (TSR) or --lowres space (SSR)")
    vae = CausalVAE3D.from_pretrained(vae_dir).eval()
    tc, sc = vae.config.temporal_compression, vae.config.spatial_compression
    if s.lowres == "frames":
        step = LOWRES_FACTOR * tc
        if s.num_frames < 1 + step or (s.num_frames - 1) % step:
            raise VidiffError(
                f"encode --lowres frames: --frames {s.num_frames} does not leave 1 + {tc}k frames for the VAE once "
                f"every 2nd frame is dropped; use 1 + {step}k frames (e.g. {1 + step} or {1 + 2 * step})"
            )
    elif not vae.valid_num_frames(s.num_frames):
        raise VidiffError(
            f"encode: num_frames={s.num_frames} does not fit the VAE's temporal compression "
            f"{tc}; use 1 + {tc}k frames"
        )
    if s.lowres and s.image_share > 0:
        raise VidiffError(
            f"encode --lowres {s.lowres}: --image-share {s.image_share} asks for images, but an SR stage trains "
            f"on videos only; leave --image-share at 0"
        )
    if s.crop is not None and not (0 < s.crop[0] <= s.size[0] and 0 < s.crop[1] <= s.size[1]):
        raise VidiffError(
            f"encode: --crop {s.crop[0]} {s.crop[1]} does not fit in the {s.size[0]}x{s.size[1]} frames "
            f"(--height/--width); crop at most the frame size"
        )
    multiple = sc * (LOWRES_FACTOR if s.lowres == "space" else 1)
    h, w = s.crop or s.size
    if h % multiple or w % multiple:
        flag = "--crop" if s.crop else "--height/--width"
        why = (f"2x the VAE's spatial factor {sc}, so the 2x downsampled copy fits the VAE too" if s.lowres == "space"
               else f"the VAE's spatial factor {sc}")
        fit = [n // multiple * multiple or multiple for n in (h, w)]  # the nearest fitting size below
        raise VidiffError(
            f"encode: {flag} {h} {w} is not a multiple of {multiple} ({why}); use e.g. {flag} {fit[0]} {fit[1]}"
        )
    return vae


def _crop(videos: torch.Tensor, s: EncodeSettings, indices: Sequence[int]) -> torch.Tensor:
    """Each item's random crop, keyed by (seed, item index) so that a re-encode crops alike."""
    if s.crop is None:
        return videos
    (ch, cw), out = s.crop, []
    for v, i in zip(videos, indices, strict=True):
        rng = np.random.default_rng([s.seed, i, _CROP_STREAM])
        top, left = int(rng.integers(v.shape[-2] - ch + 1)), int(rng.integers(v.shape[-1] - cw + 1))
        out.append(v[..., top : top + ch, left : left + cw])
    return torch.stack(out)


def _encode_pairs(vae, videos: torch.Tensor, s: EncodeSettings) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(target latents, conditioning latents or None) per clip of `videos` [B, C, T, H, W]: the conditioning is the
    degraded clip's latents, as the stage's low-res input is made from the previous stage's latents."""
    z = vae.encode_latents(videos)
    if not s.lowres:
        return [(zi, None) for zi in z]
    factors = {"frames": (LOWRES_FACTOR, 1), "space": (1, LOWRES_FACTOR)}[s.lowres]
    how = LowresConfig(temporal_factor=factors[0], spatial_factor=factors[1], resample=s.resample)
    low = prepare_lowres(vae, vae.encode_latents(degrade(videos, s.lowres)), how)
    return list(zip(z, low, strict=True))


def encode_manifest(
    vae_dir: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    batch_size: int = 32,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    **settings,
) -> Path:
    """Encode the manifest's kept clips into a cache at `out_dir` (skipped if it exists with the same settings).
    With world_size > 1 this process encodes rank's share; `out_dir` holds the cache once the last rank returns."""
    from vidiff.manifest import read_manifest
    from vidiff.video import read_video

    encode_ranks.check_rank(rank, world_size)
    s = EncodeSettings(**settings)
    s.size, s.crop = tuple(s.size), tuple(s.crop) if s.crop is not None else None
    out = Path(out_dir)
    meta = _meta(vae_dir, {"manifest": str(Path(manifest).resolve())}, s, _PLAIN_KEYS)
    if _up_to_date(out, meta):
        return out
    vae = _load_vae(vae_dir, s)
    rows = [r for r in read_manifest(manifest) if r.get("status", "kept") == "kept"]
    if not rows:
        raise VidiffError(f"manifest {manifest} has no kept clips or images to encode")
    stills = [r for r in rows if r["media_type"] == "image"]  # an image set's rows (vidiff curate-images)
    rows = [r for r in rows if r["media_type"] != "image"]
    if stills and s.lowres:
        raise VidiffError(
            f"encode --lowres {s.lowres}: manifest {manifest} holds {len(stills)} image rows, but an SR stage trains "
            "on videos only; encode a manifest of clips (`vidiff curate`)"
        )
    rng = np.random.default_rng(s.seed)
    span = (s.num_frames - 1) * s.stride + 1
    jobs = [(row, w) for row in rows for w in _windows(row, span, s.windows_per_clip, rng)]
    if rows and not jobs:
        raise VidiffError(f"manifest {manifest}: no clip is long enough for {s.num_frames} frames at stride {s.stride}")
    video_batches = math.ceil(len(jobs) / batch_size)

    def encode_batch(k: int) -> list[Item]:
        if k >= video_batches:
            return encode_stills(k - video_batches)
        b = k * batch_size
        batch = jobs[b : b + batch_size]
        videos = torch.stack([_read_window(read_video, row, start, span, s) for row, start in batch])
        videos = _crop(videos, s, range(b, b + len(batch)))
        pairs = _encode_pairs(vae, videos, s)
        # window j also gives an image when ceil((j + 1) * share) steps up: the asked share, and at least one
        # image from the first window on, so a small manifest still feeds joint image+video training
        picks = [i for i in range(len(batch)) if _steps_up(b + i, s.image_share)]
        zi = vae.encode_latents(videos[picks, :, :1]) if picks else []
        images = dict(zip(picks, zi, strict=True))
        items = []
        for i, (row, _) in enumerate(batch):
            caption, clip_id = row.get("caption") or "", str(row.get("id", ""))
            items.append((pairs[i][0], caption, clip_id, pairs[i][1], "video"))
            if i in images:
                items.append((images[i], caption, clip_id, None, "video"))
        return items

    def encode_stills(k: int) -> list[Item]:
        b = k * batch_size
        batch = stills[b : b + batch_size]
        pixels = torch.stack([_read_still(row, s) for row in batch])
        pixels = _crop(pixels, s, range(len(jobs) + b, len(jobs) + b + len(batch)))  # keyed apart from the windows
        z = vae.encode_latents(pixels)
        return [(zi, row.get("caption") or "", str(row.get("id", "")), None, "image")
                for zi, row in zip(z, batch, strict=True)]

    return _encode_batches(out, meta, video_batches + math.ceil(len(stills) / batch_size), encode_batch, batch_size,
                           rank, world_size, progress)


def _read_still(row: dict, s: EncodeSettings) -> torch.Tensor:
    """An image row's picture as a one-frame clip [3, 1, H, W] of the cache's size: resized to cover it, centre-cropped
    (as `vidiff animate` fits an image to a stage), where a video window is resized to the size."""
    from vidiff.images import fit_image, read_image

    image, _ = read_image(row["source"])
    return fit_image(image, *s.size)[0][:, None]


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
    lowres: str = "",
    crop: tuple[int, int] | None = None,
    resample: str = "latent",
    rank: int = 0,
    world_size: int = 1,
) -> Path:
    """Encode `num_clips` rendered toy-world clips (no files in between) into a cache at `out_dir`; rank and
    world_size as in encode_manifest."""
    from vidiff.toyworld import ToyWorldDataset

    encode_ranks.check_rank(rank, world_size)
    s = EncodeSettings(num_frames=num_frames, size=tuple(size), image_share=image_share, seed=seed, lowres=lowres,
                       crop=tuple(crop) if crop is not None else None, resample=resample)
    out = Path(out_dir)
    meta = _meta(vae_dir, {"toyworld": num_clips}, s, ("num_frames", "size", "image_share", "seed"))
    if _up_to_date(out, meta):
        return out
    vae = _load_vae(vae_dir, s)
    ds = ToyWorldDataset(num_clips, num_frames, size[0], size[1], image_share=image_share, seed=seed)

    def encode_batch(k: int) -> list[Item]:
        b, out_items = k * batch_size, []
        items = [ds[i] for i in range(b, min(b + batch_size, num_clips))]
        for frames in sorted({it["video"].shape[1] for it in items}):  # images and videos batch apart
            group = [(b + j, it) for j, it in enumerate(items) if it["video"].shape[1] == frames]
            videos = _crop(torch.stack([it["video"] for _, it in group]), s, [i for i, _ in group])
            for (z, low), (i, it) in zip(_encode_pairs(vae, videos, s), group, strict=True):
                out_items.append((z, it["caption"], f"toyworld-{seed}-{i:06d}", low, "video"))
        return out_items

    return _encode_batches(out, meta, math.ceil(num_clips / batch_size), encode_batch, batch_size, rank, world_size,
                           progress)


def _encode_batches(out: Path, meta: dict, num_batches: int, encode_batch: Callable[[int], list[Item]],
                    batch_size: int, rank: int, world_size: int, progress: bool) -> Path:
    """Write the cache of batches 0..num_batches-1 (encode_batch(k): batch k's items in cache order), or, with
    world_size > 1, rank's share of them, merged by the last rank to finish. Ranks split at the batches one process
    encodes, so each VAE call sees the same clips together and the merged cache holds the same values."""
    plan = {"meta": meta, "batch_size": batch_size, "batches": num_batches, "world_size": world_size}
    encode_ranks.check_plan(out, plan)  # also stops one process from writing over unfinished parts
    with torch.no_grad():
        if world_size == 1:
            bar = tqdm(range(num_batches), desc="encode", unit="batch", disable=not progress)
            items = (item for k in bar for item in encode_batch(k))
        else:
            if not _up_to_date(out, meta):  # a cache of other settings stops being one now, as _CacheWriter does
                (out / "meta.json").unlink(missing_ok=True)
            encode_ranks.encode_part(out, rank, world_size, num_batches, encode_batch, progress)
            if not encode_ranks.claim_merge(out, rank, world_size, num_batches):
                return out
            items = encode_ranks.part_items(out, world_size)
        writer = _CacheWriter(out)
        for z, caption, clip_id, low, media_type in items:
            writer.add(z, caption, clip_id, lowres=low, media_type=media_type)
        writer.finish(meta)
    if world_size > 1:
        encode_ranks.remove_parts(out, world_size)
    return out


class _CacheWriter:
    """Appends latents to shards of SHARD_ITEMS; `finish` writes items.jsonl and, last, meta.json."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").unlink(missing_ok=True)  # the cache is complete only once meta.json is written
        self.items: list[dict] = []
        self.shard: dict[str, torch.Tensor] = {}
        self.shard_idx, self.in_shard = 0, 0
        self.residual_sq, self.residual_n = 0.0, 0

    def add(self, z: torch.Tensor, caption: str, clip_id: str, lowres: torch.Tensor | None = None,
            media_type: str = "video") -> None:
        """One item: its latents and, in an SR cache, its conditioning latents under the same index."""
        key = f"latents_{self.in_shard}"
        self.shard[key] = z.detach().float().cpu().contiguous()
        item = {"shard": self.shard_idx, "key": key, "caption": caption, "clip_id": clip_id, "frames": int(z.shape[1])}
        if media_type == "image":  # only an image set's stills are marked, so a cache without them reads as before
            item["media_type"] = "image"
        if lowres is not None:
            self.shard[f"lowres_{self.in_shard}"] = lowres.detach().float().cpu().contiguous()
            item |= {"lowres": True, "lowres_frames": int(lowres.shape[1])}
            if lowres.shape == z.shape:  # on the same grid: what a residual stage would model
                self.residual_sq += float((z - lowres).double().pow(2).sum())
                self.residual_n += z.numel()
        self.items.append(item)
        self.in_shard += 1
        if self.in_shard >= SHARD_ITEMS:
            self._flush()

    def _flush(self) -> None:
        if self.shard:
            tmp = self.out / f".shard-{self.shard_idx:05d}.tmp"
            save_file(self.shard, str(tmp))
            os.replace(tmp, shard_path(self.out, self.shard_idx))
            self.shard, self.shard_idx, self.in_shard = {}, self.shard_idx + 1, 0

    def finish(self, meta: dict) -> Path:
        self._flush()
        (self.out / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in self.items))
        if self.residual_n:  # the root mean square of latents - lowres: stage.lowres.residual_scale's value
            meta = meta | {"lowres_residual_std": round((self.residual_sq / self.residual_n) ** 0.5, 4)}
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
    kind = meta.get("lowres", "")
    captions = [it["caption"] for it in items]
    headers = ShardTensors.read_headers(out, {it["shard"] for it in items})  # once, for latents and low-res latents
    latents = ShardTensors(out, [(it["shard"], it["key"]) for it in items], headers)
    lowres = ShardTensors(out, [(it["shard"], "lowres_" + it["key"].removeprefix("latents_")) for it in items],
                          headers) if kind else None
    checks = [(latents, "latents", "")] + ([(lowres, "low-res latents", f" --lowres {kind}")] if kind else [])
    for tensors, what, fix in checks:
        gaps = tensors.missing() + ([n for n, it in enumerate(items) if not it.get("lowres")] if fix else [])
        if gaps:
            n = min(gaps)
            it = items[n]
            raise VidiffError(
                f"latent cache {out}: item {n} ({it.get('clip_id') or it['key']}) has no {what} in "
                f"shard-{it['shard']:05d}{f', though meta.json says lowres={kind}' if fix else ''}; the cache is "
                f"incomplete: write it again with `vidiff encode{fix}` into an empty folder"
            )
    empty = sum(1 for c in captions if not c)
    if empty == len(captions):
        raise VidiffError(f"latent cache {out}: no item has a caption; text-conditioned training needs captions")
    return LatentCache(latents=latents, captions=captions, vae_dir=Path(meta["vae_dir"]), lowres=lowres, lowres_kind=kind,
                       residual_std=meta.get("lowres_residual_std"),
                       media_types=[it.get("media_type", "video") for it in items])
