"""Image sets for joint image+video training (`vidiff curate-images`): folders of images, or a table of image paths
and captions (CSV, Parquet or JSONL, the LAION layout), in; a manifest of image rows (`media_type` "image") and
summary.json out, which `vidiff encode` turns into a cache of one-frame latents.

Every image is decoded in full once (vidiff.images.decode_image), so a broken, truncated or mislabelled file becomes
an error row; images whose shorter side is below `min_side` or whose long/short side ratio is above `max_aspect` are
dropped (`too_small`, `bad_aspect`), and a path met a second time is dropped as `duplicate`. The job never stops on
one image; only inputs it cannot start from (a missing SRC, a folder without images, a table without a path or a
caption column) stop it, before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from vidiff.errors import VidiffError
from vidiff.manifest import read_manifest, write_manifest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv", ".parquet", ".jsonl"}
# Column names tried in order, case-insensitively: ours, img2dataset's and LAION's (caption / TEXT).
PATH_COLUMNS = ("path", "file", "filepath", "file_path", "image_path", "filename")
CAPTION_COLUMNS = ("caption", "text")
URL_COLUMNS = ("url", "image_url")
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "hf://", "ftp://")


@dataclass
class ImageFilters:
    min_side: int = 32  # an image whose shorter side is below this many pixels is dropped (too_small)
    max_aspect: float = 2.0  # an image whose long side / short side exceeds this is dropped (bad_aspect)


@dataclass
class Entry:
    """One image to check: where it is, its caption if a table gave one, and where it was named (for messages)."""

    path: str  # absolute path; for a row that names no usable file, the raw value
    caption: str | None  # None: read NAME.txt / NAME.json beside the image
    origin: str  # "TABLE row N", or the image's path for a folder
    error: str = ""  # known before reading: a URL, an empty path


# --------------------------------------------------------------------------- inputs


def collect_images(
    inputs: list[str], path_column: str | None = None, caption_column: str | None = None
) -> list[Entry]:
    """The images named by `inputs`: image files, folders (searched recursively for image suffixes; captions from
    sidecars) and tables (.csv/.parquet/.jsonl with a path and a caption column; relative paths are relative to the
    table). Raises VidiffError for an input it cannot read, before any image is opened."""
    if not inputs:
        raise VidiffError("curate-images: give at least one folder of images or a .csv/.parquet/.jsonl table")
    entries: list[Entry] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = [
                f.resolve()
                for f in sorted(p.rglob("*"))
                # names starting with '.' are hidden files, e.g. macOS's ._NAME.jpg resource forks, not images
                if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file()
            ]
            if not found:
                raise VidiffError(
                    f"curate-images: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder {p}; check the "
                    "path, or pass a .csv/.parquet/.jsonl table of image paths and captions"
                )
            entries.extend(Entry(str(f), None, str(f)) for f in found)
        elif p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
            entries.extend(_table_entries(p, path_column, caption_column))
        elif p.is_file():
            entries.append(Entry(str(p.resolve()), None, str(p.resolve())))
        else:
            raise VidiffError(
                f"curate-images: {p} does not exist; pass a folder of images, an image file, or a "
                ".csv/.parquet/.jsonl table of image paths and captions"
            )
    return entries


def _table_entries(table: Path, path_column: str | None, caption_column: str | None) -> list[Entry]:
    known = {
        *PATH_COLUMNS,
        *CAPTION_COLUMNS,
        *URL_COLUMNS,
        *(c.lower() for c in (path_column, caption_column) if c),
    }
    columns, rows = _read_table(table, known)
    if not rows:
        raise VidiffError(
            f"curate-images: the table {table} has no rows; give a table with one row per image"
        )
    lower = {c.lower(): c for c in columns}
    found = f"its columns: {', '.join(columns) or 'none'}"
    path_col = _pick(lower, path_column, PATH_COLUMNS, table, "--path-column", found)
    if path_col is None:
        url = next((lower[c] for c in URL_COLUMNS if c in lower), None)
        if url is not None:
            caption = next((lower[c] for c in CAPTION_COLUMNS if c in lower), "caption")
            raise VidiffError(
                f"curate-images: the table {table} has image URLs (column {url!r}) but no column of local files; "
                f"vidiff does not download images: fetch them first, e.g. `img2dataset --url_list {table} "
                f"--input_format {table.suffix[1:].lower()} --url_col {url} --caption_col {caption} --output_format "
                "files --output_folder images` (images with NAME.txt captions), and pass that folder"
            )
        raise VidiffError(
            f"curate-images: the table {table} has no column of image paths ({found}); name it 'path' or pass "
            "--path-column NAME"
        )
    caption_col = _pick(lower, caption_column, CAPTION_COLUMNS, table, "--caption-column", found)
    if caption_col is None:
        raise VidiffError(
            f"curate-images: the table {table} has no caption column ({found}); name it 'caption' (LAION's 'TEXT' "
            "works too) or pass --caption-column NAME"
        )
    entries = []
    for k, row in enumerate(rows, 1):
        origin = f"{table} row {k}"
        value, caption = row.get(path_col), row.get(caption_col)
        caption = (
            "" if caption is None or (isinstance(caption, float) and math.isnan(caption)) else str(caption)
        )
        value = "" if value is None else str(value).strip()
        if not value:
            entries.append(
                Entry("", caption, origin, f"{origin}: the {path_col!r} cell is empty; give the image's path")
            )
        elif value.lower().startswith(URL_SCHEMES):
            entries.append(
                Entry(
                    value,
                    caption,
                    origin,
                    (
                        f"{origin}: {value!r} is a URL; vidiff does not download images: fetch them first (e.g. with "
                        "img2dataset) and give local paths"
                    ),
                )
            )
        else:
            q = Path(value).expanduser()
            entries.append(
                Entry(str((q if q.is_absolute() else table.parent / q).resolve()), caption.strip(), origin)
            )
    return entries


def _pick(
    lower: dict[str, str], given: str | None, names: tuple[str, ...], table: Path, flag: str, found: str
):
    if given is not None:
        if given.lower() not in lower:
            raise VidiffError(f"curate-images: {flag} {given!r} is not a column of {table} ({found})")
        return lower[given.lower()]
    return next((lower[n] for n in names if n in lower), None)


def _read_table(table: Path, known: set[str]) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of a CSV, Parquet or JSONL table; VidiffError when it cannot be read. Of a
    Parquet file only the `known` columns (lower case) are read: LAION's shards have dozens of others."""
    suffix = table.suffix.lower()
    try:
        if suffix == ".csv":
            with open(table, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 starts with a BOM
                reader = csv.DictReader(f)
                rows = list(reader)
                return list(reader.fieldnames or []), rows
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            names = list(pq.read_schema(table).names)
            return names, pq.read_table(table, columns=[c for c in names if c.lower() in known]).to_pylist()
        rows = []
        for k, line in enumerate(table.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise VidiffError(
                        f"curate-images: {table} line {k} is not a JSON object; give one object per line"
                    )
                rows.append(row)
        return list(dict.fromkeys(c for row in rows for c in row)), rows
    except UnicodeDecodeError as exc:
        raise VidiffError(
            f"curate-images: the table {table} is not UTF-8 text ({exc}); save it as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise VidiffError(
            f"curate-images: {table} is not JSON lines ({exc}); give one JSON object per line"
        ) from None
    except (csv.Error, OSError) as exc:
        raise VidiffError(f"curate-images: cannot read the table {table} ({exc}); check the file") from None
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        if isinstance(exc, VidiffError):
            raise
        raise VidiffError(f"curate-images: {table} is not a readable Parquet file ({exc})") from None


def sidecar_caption(image: str | Path) -> str:
    """The caption in NAME.json ({"caption": ...}, img2dataset's layout) or NAME.txt beside an image, or ''."""
    image = Path(image)
    js, txt = image.with_suffix(".json"), image.with_suffix(".txt")
    if js.is_file():
        try:
            data = json.loads(_utf8(js))
        except json.JSONDecodeError as exc:
            raise VidiffError(f"caption file {js} is not valid JSON ({exc}); fix or remove it") from None
        if isinstance(data, dict) and isinstance(data.get("caption"), str):
            return data["caption"].strip()
    return _utf8(txt).strip() if txt.is_file() else ""


def _utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # a guessed encoding would put mojibake in the captions silently
        raise VidiffError(f"caption file {path} is not UTF-8 text ({exc}); save it as UTF-8") from None


# --------------------------------------------------------------------------- one image


def image_row(entry: Entry, filters: ImageFilters) -> dict:
    """The manifest row of one image: kept, dropped (too_small, bad_aspect) or error. Never raises."""
    from vidiff.images import decode_image

    row = _row(entry)
    try:
        if entry.error:
            raise VidiffError(entry.error)
        rgb, _ = decode_image(entry.path)
        if entry.caption is None:
            row["caption"] = sidecar_caption(entry.path)
    except Exception as exc:  # one bad image must never stop the job; the reason goes in the manifest
        message = str(exc) if isinstance(exc, VidiffError) else f"internal error: {type(exc).__name__}: {exc}"
        if entry.origin != entry.path and entry.origin not in message:
            message = f"{entry.origin}: {message}"
        return row | {
            "status": "error",
            "reason": message,
            "start_frame": None,
            "end_frame": None,
            "num_frames": 0,
        }
    h, w = rgb.shape[:2]
    row.update(width=w, height=h)
    if min(h, w) < filters.min_side:
        row.update(status="dropped", reason="too_small")
    elif max(h, w) / min(h, w) > filters.max_aspect:
        row.update(status="dropped", reason="bad_aspect")
    return row


def _row(entry: Entry) -> dict:
    """A kept image's row before the image is read: one frame, no frame rate, no motion."""
    return {
        "id": _image_id(entry),
        "source": entry.path,
        "path": None,
        "start_frame": 0,
        "end_frame": 1,
        "start_s": 0.0,
        "end_s": 0.0,  # a still lasts no time
        "fps": math.nan,  # nor has it a frame rate
        "width": None,
        "height": None,
        "num_frames": 1,
        "shot": None,
        "motion": math.nan,
        "status": "kept",
        "reason": "",
        "caption": entry.caption or "",
        "media_type": "image",
    }


def _image_id(entry: Entry) -> str:
    key = hashlib.sha1(f"{entry.path}\0{entry.origin if entry.error else ''}".encode()).hexdigest()[:8]
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(entry.path).stem)[:60] or "image"
    return f"{stem}_{key}"


# --------------------------------------------------------------------------- the job


def curate_images(
    inputs: list[str],
    out_dir: str | Path,
    filters: ImageFilters | None = None,
    path_column: str | None = None,
    caption_column: str | None = None,
    jsonl: bool = False,
    progress: bool = True,
) -> dict:
    """Check every image named by `inputs`; write OUT/manifest.parquet (and .jsonl) and summary.json; return the
    summary. Nothing is written when an input cannot be read."""
    from tqdm import tqdm

    filters = filters or ImageFilters()
    if filters.min_side < 1 or filters.max_aspect < 1:
        raise VidiffError(
            f"curate-images: --min-side {filters.min_side} --max-aspect {filters.max_aspect}: the smallest side is "
            "at least 1 pixel and the aspect ratio (long side / short side) at least 1"
        )
    out_dir = Path(out_dir)
    entries = collect_images(inputs, path_column, caption_column)
    _refuse_video_manifest(out_dir / "manifest.parquet")
    t0 = time.perf_counter()
    rows, seen = [], set()
    for entry in tqdm(entries, desc="curate-images", unit="image", disable=not progress, file=sys.stderr):
        if not entry.error and entry.path in seen:
            # the same file named twice (two folders, repeated table rows) would weigh double in training
            rows.append(
                _row(entry)
                | {"id": f"{_image_id(entry)}_dup{len(rows)}", "status": "dropped", "reason": "duplicate"}
            )
            continue
        seen.add(entry.path)
        rows.append(image_row(entry, filters))
    manifest = write_manifest(rows, out_dir / "manifest.parquet")
    if jsonl:
        write_manifest(rows, out_dir / "manifest.jsonl")
    summary = summarize(rows) | {"manifest": str(manifest), "wall_seconds": time.perf_counter() - t0}
    tmp = out_dir / f".summary.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out_dir / "summary.json")
    return summary


def _refuse_video_manifest(path: Path) -> None:
    # image and video manifests stay apart: `vidiff encode` makes a cache of each, and training joins them
    if path.is_file() and any(r["media_type"] != "image" for r in read_manifest(path)):
        raise VidiffError(
            f"curate-images: {path} is a video manifest (from `vidiff curate`); write the image manifest to "
            "another --out"
        )


def summarize(rows: list[dict]) -> dict:
    kept = [r for r in rows if r["status"] == "kept"]
    return {
        "images": len(rows),
        "kept": len(kept),
        "dropped": dict(sorted(Counter(r["reason"] for r in rows if r["status"] == "dropped").items())),
        "errors": sum(r["status"] == "error" for r in rows),
        "uncaptioned": sum(not r["caption"] for r in kept),
    }


def format_summary(s: dict) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "none"
    return "\n".join(
        [
            f"images: {s['images']}  kept: {s['kept']}  dropped: {dropped}  errors: {s['errors']}"
            + (f"  kept without a caption: {s['uncaptioned']}" if s["uncaptioned"] else ""),
            f"manifest: {s['manifest']}",
        ]
    )


# --------------------------------------------------------------------------- command line


def add_arguments(p) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="SRC",
        help="folders of images (captions from NAME.txt / NAME.json beside each), image files, or "
        ".csv/.parquet/.jsonl tables with a path and a caption column (paths relative to the table)",
    )
    p.add_argument("--out", required=True, help="output folder: manifest.parquet, summary.json")
    p.add_argument(
        "--min-side",
        type=int,
        default=ImageFilters.min_side,
        help="drop images whose shorter side is below this many pixels (too_small)",
    )
    p.add_argument(
        "--max-aspect",
        type=float,
        default=ImageFilters.max_aspect,
        help="drop images whose long side / short side exceeds this (bad_aspect)",
    )
    p.add_argument(
        "--path-column",
        help="the tables' column of image paths (default: the first of "
        f"{', '.join(PATH_COLUMNS)}, in any case)",
    )
    p.add_argument(
        "--caption-column", help="the tables' caption column (default: caption, else text / LAION's TEXT)"
    )
    p.add_argument("--jsonl", action="store_true", help="also write manifest.jsonl")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args) -> dict:
    summary = curate_images(
        args.inputs,
        args.out,
        ImageFilters(min_side=args.min_side, max_aspect=args.max_aspect),
        path_column=args.path_column,
        caption_column=args.caption_column,
        jsonl=args.jsonl,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    return summary
