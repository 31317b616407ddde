"""`vidiff encode` split across N ranks (processes that never talk): each writes its share of the batches into a
part folder under the cache folder, resumably, and the last rank to finish merges the parts into the cache.

Layout inside OUT while parts exist: `parts.json` (the settings every rank must share), `part-RRRRR-of-NNNNN/`
holding `batches-A-B.safetensors` (the items of batches [A, B) of the one-process order, their captions, clip ids
and media types in the file's metadata), and `merge.lock` while a rank merges.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from vidiff.errors import VidiffError
from vidiff.training.strategy import slurm_job

# (latents, caption, clip id, low-res latents or None, media type: "image" for an image set's still, else "video")
Item = tuple[torch.Tensor, str, str, torch.Tensor | None, str]

PLAN = "parts.json"
LOCK = "merge.lock"
CHUNK_ITEMS = 256  # items per part file: what a crashed rank re-encodes at most, and few files on a shared filesystem


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise VidiffError(f"encode: --rank {rank} --world-size {world_size}: need world size >= 1 and "
                          f"0 <= rank < world size; ranks are numbered 0..{max(world_size, 1) - 1}")


def resolve_rank(rank: int | None, world_size: int | None, env: Mapping[str, str] | None = None
                 ) -> tuple[int, int, str]:
    """(rank, world size, where they came from): the --rank/--world-size flags, else torchrun's RANK/WORLD_SIZE,
    else SLURM's SLURM_PROCID/SLURM_NTASKS, else one process."""
    env = os.environ if env is None else env
    if rank is not None or world_size is not None:
        if world_size is None or (rank is None and world_size != 1):
            raise VidiffError("encode: give --rank R and --world-size N together (R = 0..N-1), or neither to take "
                              "them from torchrun/SLURM")
        rank, source = rank or 0, "--rank/--world-size"
    elif "RANK" in env and "WORLD_SIZE" in env:
        rank, world_size, source = env["RANK"], env["WORLD_SIZE"], "torchrun's RANK/WORLD_SIZE"
    elif slurm_job(env) and "SLURM_PROCID" in env:
        rank, world_size, source = env["SLURM_PROCID"], env["SLURM_NTASKS"], "SLURM_PROCID/SLURM_NTASKS"
    else:
        return 0, 1, "one process"
    try:
        rank, world_size = int(rank), int(world_size)
    except ValueError:
        raise VidiffError(f"encode: {source} = {rank!r}/{world_size!r} are not integers; pass --rank and "
                          "--world-size") from None
    check_rank(rank, world_size)
    return rank, world_size, source


def block(rank: int, world_size: int, num_batches: int) -> range:
    """Rank r's batches: a contiguous block, so that the merge is the parts concatenated in rank order, and a rank
    reading a manifest reads neighbouring windows of the same sources. Blocks differ in size by at most 1 batch."""
    return range(num_batches * rank // world_size, num_batches * (rank + 1) // world_size)


def part_dir(out: Path, rank: int, world_size: int) -> Path:
    return out / f"part-{rank:05d}-of-{world_size:05d}"


def check_plan(out: Path, plan: dict) -> None:
    """Refuse to mix parts of other settings into OUT; a rank of a new multi-rank encode records `plan` first."""
    path = out / PLAN
    if not path.is_file() and plan["world_size"] > 1:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{PLAN}.{socket.gethostname()}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(plan, indent=2))
        try:  # a hard link never overwrites: of two ranks starting at once with other settings, one is refused
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links (some FUSE mounts): the plan is written whole, at least
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if not path.is_file():
        return
    written = json.loads(path.read_text())
    if written != plan:
        old, new = _flat(written), _flat(plan)
        diff = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(old.keys() | new.keys())
                         if old.get(k) != new.get(k))
        raise VidiffError(
            f"encode: {out} holds the parts of an unfinished encode with other settings ({diff}); rerun that "
            f"command (same settings, --batch-size and --world-size) to finish it, or delete {path} and "
            f"{out}/part-* to start over, or write to another --out"
        )


def _flat(plan: dict) -> dict:
    return {**plan.get("meta", {}), **{k: v for k, v in plan.items() if k != "meta"}}


def _chunks(folder: Path) -> list[tuple[int, int, Path]]:
    """(first batch, end batch, file) of each part file written so far, in batch order; temporary files (a rank
    stopped while saving) start with '.' and are not listed."""
    found = []
    for f in folder.glob("batches-*-*.safetensors"):
        a, b = f.name.removesuffix(".safetensors").split("-")[1:]
        found.append((int(a), int(b), f))
    return sorted(found)


def _done(folder: Path) -> set[int]:
    return {k for a, b, _ in _chunks(folder) for k in range(a, b)}


def _save_chunk(folder: Path, first: int, end: int, items: list[Item]) -> None:
    tensors = {}
    for j, (z, _, _, low, _) in enumerate(items):
        tensors[f"latents_{j}"] = z.detach().float().cpu().contiguous()
        if low is not None:
            tensors[f"lowres_{j}"] = low.detach().float().cpu().contiguous()
    name = f"batches-{first:07d}-{end:07d}.safetensors"
    tmp = folder / f".{name}.tmp"
    save_file(tensors, str(tmp), metadata={"items": json.dumps([[c, i, m] for _, c, i, _, m in items])})
    os.replace(tmp, folder / name)  # a part file exists complete or not at all


def encode_part(out: Path, rank: int, world_size: int, num_batches: int, encode_batch: Callable[[int], list[Item]],
                progress: bool) -> None:
    """Encode the batches of rank's block that its part folder does not hold yet."""
    folder = part_dir(out, rank, world_size)
    folder.mkdir(parents=True, exist_ok=True)
    done = _done(folder)
    todo = [k for k in block(rank, world_size, num_batches) if k not in done]
    items: list[Item] = []
    first = end = 0
    for k in tqdm(todo, desc=f"encode {rank}/{world_size}", unit="batch", disable=not progress):
        if items and (k != end or len(items) >= CHUNK_ITEMS):  # a part file holds consecutive batches only
            _save_chunk(folder, first, end, items)
            items = []
        if not items:
            first = k
        items += encode_batch(k)
        end = k + 1
    if items:
        _save_chunk(folder, first, end, items)


def claim_merge(out: Path, rank: int, world_size: int, num_batches: int) -> bool:
    """True for the one rank that is to merge: every part is complete and it took the lock. Each rank asks after
    writing its own part, so the last to finish sees all parts complete; the lock settles a tie."""
    missing = [r for r in range(world_size)
               if not set(block(r, world_size, num_batches)) <= _done(part_dir(out, r, world_size))]
    if missing:
        print(f"encode rank {rank}/{world_size}: part written to {part_dir(out, rank, world_size)}; rank(s) "
              f"{', '.join(map(str, missing))} not finished yet: the last rank to finish merges the cache")
        return False
    try:
        fd = os.open(out / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        held = (out / LOCK).read_text().strip() or "another rank"
        print(f"encode rank {rank}/{world_size}: all parts written; {held} merges them into {out}. If that process "
              f"is gone, delete {out / LOCK} and rerun this command to merge")
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"rank {rank} (host {socket.gethostname()}, pid {os.getpid()})\n")
    return True


def part_items(out: Path, world_size: int) -> Iterator[Item]:
    """Every part's items in the order one process encodes them, one part file in memory at a time."""
    end = 0
    for r in range(world_size):
        for a, b, path in _chunks(part_dir(out, r, world_size)):
            if a != end:
                raise VidiffError(f"encode: {path} starts at batch {a}, not {end}: the parts in {out} overlap; "
                                  f"delete {out}/part-* and {out / PLAN} and encode again")
            end = b
            with safe_open(str(path), "pt") as f:
                infos = json.loads(f.metadata()["items"])
                keys = set(f.keys())
                for j, (caption, clip_id, *media) in enumerate(infos):  # parts written before media types: videos
                    low = f.get_tensor(f"lowres_{j}") if f"lowres_{j}" in keys else None
                    yield f.get_tensor(f"latents_{j}"), caption, clip_id, low, (media or ["video"])[0]


def remove_parts(out: Path, world_size: int) -> None:
    """After the merged cache is written: the parts go, then the plan, and the lock last."""
    for r in range(world_size):
        shutil.rmtree(part_dir(out, r, world_size), ignore_errors=True)
    (out / PLAN).unlink(missing_ok=True)
    (out / LOCK).unlink(missing_ok=True)
