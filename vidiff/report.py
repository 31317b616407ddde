"""A small static HTML report: headings, text, tables and looping GIF videos in one folder."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from vidiff.video import write_video


def video_grid(videos: list[torch.Tensor], ncols: int = 8, pad: int = 2) -> torch.Tensor:
    """Tile clips `[C,T,H,W]` (same C, H, W) into one clip; shorter clips hold their last frame."""
    if not videos:
        raise ValueError("video_grid needs at least one clip")
    frames = max(v.shape[1] for v in videos)
    padded = [torch.cat([v, v[:, -1:].expand(-1, frames - v.shape[1], -1, -1)], dim=1) for v in videos]
    ncols = min(ncols, len(padded))
    blank = torch.full_like(padded[0], -1.0)
    padded += [blank] * (-len(padded) % ncols)
    stack = torch.stack(padded)
    stack = torch.nn.functional.pad(stack, (pad, pad, pad, pad), value=1.0)
    return rearrange(stack, "(r k) c t h w -> c t (r h) (k w)", k=ncols)


class Report:
    """Collects sections and writes `index.html` (plus its media and a `report.json`) into `out_dir`."""

    def __init__(self, out_dir: str | Path, title: str):
        self.out_dir = Path(out_dir)
        self.media_dir = self.out_dir / "media"
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.parts: list[str] = []
        self.data: dict[str, Any] = {}

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, rows: list[dict[str, Any]], key: str | None = None) -> None:
        if key is not None:
            self.data[key] = rows
        if not rows:
            self.parts.append("<p><em>(none)</em></p>")
            return
        cols = list(rows[0])
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in cols) + "</tr>" for row in rows
        )
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def video(self, name: str, video: torch.Tensor, caption: str = "", fps: int = 8, scale: int = 4) -> Path:
        """Save a `[C,T,H,W]` clip as an upscaled GIF and show it."""
        if scale > 1:
            video = video.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
        path = self.media_dir / f"{name}.gif"
        write_video(path, video, fps=fps)
        rel = path.relative_to(self.out_dir).as_posix()
        self.parts.append(
            f'<figure><img src="{rel}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>"
        )
        return path

    def record(self, key: str, value: Any) -> None:
        self.data[key] = value

    def write(self) -> Path:
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
            "font-size:90%}figure{display:inline-block;margin:6px}img{image-rendering:pixelated}"
        )
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(self.parts)
            + "</body></html>"
        )
        index = self.out_dir / "index.html"
        index.write_text(page)
        (self.out_dir / "report.json").write_text(json.dumps(self.data, indent=2, default=str))
        return index


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape("" if value is None else str(value))
