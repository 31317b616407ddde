"""A small static HTML report in one folder: headings, text, tables, matplotlib figures (PNG), looping videos
and collapsible text, with a `report.json` of the recorded figures beside it.

The page is self-contained: media under `media/` with relative paths, inline CSS, no scripts, nothing fetched
from the network. Videos are H.264 mp4 in `<video>` elements when PyAV has an H.264 encoder (every browser
plays that), GIFs in `<img>` otherwise.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from vidiff.video import write_video

H264_ENCODERS = ("libx264", "libopenh264", "h264")


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


def browser_video_format() -> str:
    """"mp4" when PyAV can encode H.264 (which browsers play), else "gif"."""
    try:
        from vidiff.video import _pick_codec

        return "mp4" if _pick_codec() in H264_ENCODERS else "gif"
    except Exception:
        return "gif"


class Report:
    """Collects sections and writes `index.html` (plus its media and a `report.json`) into `out_dir`.

    `video_format`: "mp4" (H.264 in a `<video>`), "gif" (an `<img>`), or "auto" (mp4 when it can be written).
    """

    def __init__(self, out_dir: str | Path, title: str, subtitle: str = "", video_format: str = "auto"):
        if video_format not in ("auto", "mp4", "gif"):
            raise ValueError(f"video_format must be auto, mp4 or gif, got {video_format!r}")
        self.out_dir = Path(out_dir)
        self.media_dir = self.out_dir / "media"
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.subtitle = subtitle
        self.video_format = browser_video_format() if video_format == "auto" else video_format
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []  # (anchor, heading)
        self.data: dict[str, Any] = {}

    # ---------------------------------------------------------------- text
    def heading(self, text: str, nav: str | None = None) -> None:
        """A section heading, linked from the navigation bar as `nav` (default: the heading itself)."""
        anchor = _slug(nav or text, {a for a, _ in self.toc})
        self.toc.append((anchor, nav or text))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(text)}</h2>')

    def subheading(self, text: str) -> None:
        self.parts.append(f"<h3>{html.escape(text)}</h3>")

    def text(self, text: str, muted: bool = False) -> None:
        cls = ' class="muted"' if muted else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def details(self, summary: str, text: str, open: bool = False) -> None:
        """Collapsible preformatted text (configurations, logs)."""
        flag = " open" if open else ""
        self.parts.append(f"<details{flag}><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")

    def cards(self, items: Sequence[tuple[str, str]]) -> None:
        """Headline figures as (label, value) tiles."""
        tiles = "".join(
            f'<div class="card"><span class="value">{html.escape(v)}</span><span class="label">{html.escape(k)}</span></div>'
            for k, v in items
        )
        self.parts.append(f'<div class="cards">{tiles}</div>')

    def table(self, rows: list[dict[str, Any]], key: str | None = None, formats: dict[str, str] | None = None) -> None:
        """An HTML table of `rows` (recorded in report.json under `key`); `formats` maps a column to a format
        string such as "{:.1f}" (default: 3 decimals below 10, fewer above)."""
        if key is not None:
            self.data[key] = rows
        if not rows:
            self.parts.append("<p><em>(none)</em></p>")
            return
        cols = list(dict.fromkeys(c for row in rows for c in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        formats = formats or {}
        body = "".join("<tr>" + "".join(_td(row.get(c), formats.get(c)) for c in cols) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    @contextmanager
    def block(self, cls: str) -> Iterator[None]:
        """Wrap what is added inside in a `<div class=cls>`: "gallery" (a grid of videos), "row" (side by side)."""
        self.parts.append(f'<div class="{html.escape(cls)}">')
        try:
            yield
        finally:
            self.parts.append("</div>")

    # ---------------------------------------------------------------- media
    def figure(self, name: str, fig, caption: str = "", dpi: int = 100) -> Path:
        """Save a matplotlib figure as `media/NAME.png` and show it."""
        path = self.media_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi, facecolor="white")
        rel = path.relative_to(self.out_dir).as_posix()
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure class="plot"><img src="{rel}" alt="{html.escape(caption or name)}">{cap}</figure>')
        return path

    def video(
        self,
        name: str,
        video: torch.Tensor,
        caption: str = "",
        fps: int = 8,
        scale: int = 4,
        tags: Sequence[tuple[str, bool | None]] = (),
    ) -> Path:
        """Save a `[C,T,H,W]` clip, upscaled `scale` times (nearest), as a looping video and show it.

        `tags` are short (text, ok) labels under the caption, green when ok, red when not, grey for None.
        """
        if scale > 1:
            video = video.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
        path = self.media_dir / f"{name}.{self.video_format}"
        rel = path.relative_to(self.out_dir).as_posix()
        alt = html.escape(caption or name)
        width = int(video.shape[-1])
        if self.video_format == "mp4":
            # 4:2:0 (odd sizes are padded): browsers do not decode H.264's 4:4:4 profile
            write_video(path, video, fps=fps, pix_fmt="yuv420p")
            media = (
                f'<video src="{rel}" width="{width}" autoplay loop muted playsinline preload="auto" '
                f'aria-label="{alt}"></video>'
            )
        else:
            write_video(path, video, fps=fps)
            media = f'<img src="{rel}" width="{width}" alt="{alt}">'
        labels = "".join(
            f'<span class="tag {"na" if ok is None else "ok" if ok else "bad"}">{html.escape(t)}</span>' for t, ok in tags
        )
        tag_html = f'<div class="tags">{labels}</div>' if labels else ""
        self.parts.append(f"<figure>{media}<figcaption>{html.escape(caption)}{tag_html}</figcaption></figure>")
        return path

    def record(self, key: str, value: Any) -> None:
        self.data[key] = value

    # ---------------------------------------------------------------- output
    def write(self) -> Path:
        nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.toc)
        subtitle = f'<p class="subtitle">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='icon' href='data:,'>"  # no favicon request
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
            f"<header><div class='wrap'><h1>{html.escape(self.title)}</h1>{subtitle}"
            + (f"<nav>{nav}</nav>" if nav else "")
            + "</div></header><main class='wrap'>\n"
            + "\n".join(self.parts)
            + "\n</main></body></html>\n"
        )
        index = self.out_dir / "index.html"
        index.write_text(page)
        (self.out_dir / "report.json").write_text(json.dumps(self.data, indent=2, default=str))
        return index


STYLE = """
:root{--fg:#1d2330;--muted:#5d6677;--line:#dde1e8;--soft:#f5f6f8;--accent:#3366cc;--ok:#17692e;--okbg:#ddf2e2;
--bad:#b3261e;--badbg:#fde3e1}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
margin:0;background:#fff}
header{background:var(--soft);border-bottom:1px solid var(--line);padding:1.4em 0 .9em}
.wrap{max-width:1120px;margin:0 auto;padding:0 2em}
main.wrap{padding-bottom:4em}
h1{font-size:1.65em;margin:0 0 .15em}
.subtitle{color:var(--muted);margin:0 0 .6em}
nav{display:flex;flex-wrap:wrap;gap:.3em 1.2em;font-size:.9em}
nav a,a{color:var(--accent);text-decoration:none}
nav a:hover{text-decoration:underline}
h2{margin:2.2em 0 .6em;padding-bottom:.25em;border-bottom:2px solid var(--line);font-size:1.3em}
h3{margin:1.4em 0 .4em;font-size:1.05em}
p{max-width:52em}
.muted{color:var(--muted);font-size:.92em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:1.6em 0 .4em}
.card{border:1px solid var(--line);border-radius:10px;padding:.55em 1.1em .6em;min-width:9.5em;background:#fff;
box-shadow:0 1px 2px rgba(0,0,0,.04)}
.card .value{display:block;font-size:1.55em;font-weight:650;font-variant-numeric:tabular-nums}
.card .label{display:block;color:var(--muted);font-size:.85em}
table{border-collapse:collapse;margin:.8em 0 1.2em;font-size:.9em}
th{background:var(--soft);text-align:left;font-weight:600}
td,th{border:1px solid var(--line);padding:4px 11px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
figure{margin:0}
figure.plot{margin:.6em 0 1.2em}
figure.plot img{max-width:100%;height:auto;display:block}
figure.plot figcaption{color:var(--muted);font-size:.88em;margin-top:.3em}
main>figure,.row>figure{display:inline-block;margin:.4em 0 1em}
main>figure img,main>figure video{max-width:100%;height:auto;image-rendering:pixelated;display:block}
main>figure figcaption{color:var(--muted);font-size:.88em;margin-top:.3em}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:14px;margin:.6em 0 1.2em}
.gallery figure{padding:8px;border:1px solid var(--line);border-radius:10px;background:var(--soft)}
.gallery img,.gallery video{width:100%;height:auto;image-rendering:pixelated;display:block;border-radius:4px;
background:#000}
.gallery figcaption{font-size:.84em;line-height:1.35;margin-top:.45em}
.tags{margin-top:.3em}
.tag{display:inline-block;padding:0 7px;border-radius:9px;font-size:.82em;margin:2px 3px 0 0;white-space:nowrap}
.tag.ok{background:var(--okbg);color:var(--ok)}
.tag.bad{background:var(--badbg);color:var(--bad)}
.tag.na{background:var(--line);color:var(--muted)}
.row{display:flex;flex-wrap:wrap;gap:8px 36px;align-items:flex-start}
.row>figure.plot{flex:1 1 420px}
pre{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:.8em 1em;overflow:auto;
font-size:.82em;line-height:1.4;max-height:32em;margin:.4em 0}
details{margin:.5em 0;border:1px solid var(--line);border-radius:8px;padding:.45em .9em}
details pre{border:none;background:none;padding:.2em 0;margin:0}
summary{cursor:pointer;font-weight:600}
"""


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    return slug


def _td(value: Any, fmt: str | None = None) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    text = fmt.format(value) if fmt and numeric and value == value else _cell(value)
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return html.escape(str(value))
