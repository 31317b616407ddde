"""Captions for clips: from a sidecar file beside the source, else from a pluggable captioner.

Sidecars, looked up beside `NAME.mp4` in this order:
- `NAME.json` with `"captions": [{"start_frame", "end_frame", "caption"}, ...]` (spans; a clip gets
  the caption of the span it overlaps most) or `"caption": "..."` (one caption for every clip);
- `NAME.txt`: its whole text is the caption of every clip.

A captioning model plugs in as any object satisfying `Captioner` (below). It is called only for
kept clips that the sidecar left without a caption. With `--workers N` or Ray it runs inside the
workers, so it must be picklable (load weights lazily on first call, from a local path).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from vidiff.errors import VidiffError


@runtime_checkable
class Captioner(Protocol):
    """Return a caption for frames [start_frame, end_frame) of `source` ('' for none).

    Read the frames you need with `vidiff.video.read_frames(source, start_frame, end_frame, ...)`.
    """

    def __call__(self, source: str, start_frame: int, end_frame: int, fps: float) -> str: ...


@dataclass
class Span:
    start: int
    end: int  # exclusive
    caption: str


def read_sidecar(source: str | Path) -> list[Span] | str | None:
    """Spans from NAME.json, one caption from NAME.json/NAME.txt, or None when there is no sidecar."""
    source = Path(source)
    js, txt = source.with_suffix(".json"), source.with_suffix(".txt")
    if js.is_file():
        try:
            data = json.loads(js.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VidiffError(f"caption sidecar {js} is not valid JSON ({exc}); fix or remove it") from None
        if isinstance(data, dict) and isinstance(data.get("captions"), list):
            try:
                return [
                    Span(int(c["start_frame"]), int(c["end_frame"]), str(c["caption"]))
                    for c in data["captions"]
                ]
            except (KeyError, TypeError, ValueError):
                raise VidiffError(
                    f"caption sidecar {js}: each item of 'captions' needs start_frame, end_frame and caption"
                ) from None
        if isinstance(data, dict) and isinstance(data.get("caption"), str):
            return data["caption"].strip()
    if txt.is_file():
        return txt.read_text(errors="replace").strip()
    return None


def caption_for(sidecar: list[Span] | str | None, start: int, end: int) -> str:
    """The sidecar's caption for clip [start, end): the most-overlapping span's, or ''."""
    if sidecar is None:
        return ""
    if isinstance(sidecar, str):
        return sidecar
    best, best_overlap = "", 0
    for span in sidecar:
        overlap = min(end, span.end) - max(start, span.start)
        if overlap > best_overlap:
            best, best_overlap = span.caption, overlap
    return best


def load_captioner(spec: str) -> Captioner:
    """`package.module:name` -> a captioner: the class it names, instantiated with no arguments, or
    the callable itself."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise VidiffError(f"captioner {spec!r} must look like package.module:ClassOrFunction")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise VidiffError(f"captioner {spec!r} cannot be imported ({exc}); check the module path") from None
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise VidiffError(
            f"captioner {spec!r} is not callable as (source, start_frame, end_frame, fps) -> str"
        )
    return obj
