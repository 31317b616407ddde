"""The manifest: one row per clip or still image (kept, dropped, or a source that failed), Parquet or JSONL.

`read_manifest(path)` is what the training data loader uses; it reads either format. Image rows (`media_type`
"image", written by `vidiff curate-images`) are one frame: start/end frame 0/1, fps NaN. A manifest written before
the column existed reads as all "video".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from vidiff.errors import VidiffError

# name -> (pyarrow type name, meaning)
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("string", "stable clip id: source stem, source hash, frame span"),
    "source": ("string", "absolute path of the source video"),
    "path": ("string", "the clip's own file when clips are written, else null (read source frames)"),
    "start_frame": ("int64", "first frame, in source frames"),
    "end_frame": ("int64", "one past the last frame"),
    "start_s": ("float64", "start_frame / fps"),
    "end_s": ("float64", "end_frame / fps"),
    "fps": ("float64", "source frame rate"),
    "width": ("int64", "source width in pixels"),
    "height": ("int64", "source height in pixels"),
    "num_frames": ("int64", "end_frame - start_frame"),
    "shot": ("int64", "index of the shot within its source"),
    "motion": ("float64", "mean optical-flow magnitude, frame widths per second (NaN: not measured)"),
    "status": ("string", "kept | dropped | error"),
    "reason": ("string", "why dropped or failed: short_shot, static, or the error message; '' if kept"),
    "caption": ("string", "clip caption ('' if none)"),
    "media_type": ("string", "video | image (a still: frames 0..1, fps NaN); older manifests: video"),
}


def _schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, (kind, _) in COLUMNS.items()])


def write_manifest(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows to `path` atomically: Parquet for .parquet, JSON lines for .jsonl."""
    path = Path(path)
    rows = [
        {**{name: row.get(name) for name in COLUMNS}, "media_type": row.get("media_type") or "video"}
        for row in rows
    ]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), tmp)
    elif path.suffix == ".jsonl":
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(_jsonable(row)) + "\n")
    else:
        raise VidiffError(f"manifest {path}: use a .parquet or .jsonl file name")
    os.replace(tmp, path)
    return path


def read_manifest(path: str | Path, status: str | None = None) -> list[dict]:
    """Rows of a Parquet or JSONL manifest as dicts (optionally only rows with `status`, e.g. "kept")."""
    path = Path(path)
    if not path.is_file():
        raise VidiffError(f"manifest {path} does not exist; run `vidiff curate ... --out DIR` first")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
            raise VidiffError(f"manifest {path} is not a readable Parquet file ({exc})") from None
    elif path.suffix == ".jsonl":
        rows = []
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise VidiffError(f"manifest {path} line {k} is not JSON ({exc})") from None
        for row in rows:
            if row.get("motion") is None and "motion" in row:
                row["motion"] = math.nan
    else:
        raise VidiffError(f"manifest {path}: expected a .parquet or .jsonl file")
    for row in rows:  # manifests from before image sets hold videos only
        row["media_type"] = row.get("media_type") or "video"
    return [r for r in rows if status is None or r.get("status") == status]


def _jsonable(row: dict) -> dict:
    # JSON has no NaN; null stands for "not measured"
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
