"""Shot-boundary detection: hard cuts (adaptive HSV content change) and gradual transitions
(fades, dissolves: a run of frames that are linear blends of the frames around them).

`CutFeatures` takes analysis-size frames in chunks as they are decoded and keeps only a few
numbers per frame; `detect_cuts` turns those numbers into cuts afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB_FACTOR = 4  # gradual-transition features run on frames pooled 4x: blends are global, motion blurs away


@dataclass
class CutConfig:
    """Detector settings. Content values are mean absolute HSV differences on a 0-255 scale."""

    # hard cuts: like PySceneDetect's AdaptiveDetector
    adaptive_threshold: float = 3.0  # content change / mean change of the `window` frames either side
    min_content: float = 8.0  # and at least this much absolute change
    window: int = 2
    # gradual transitions (fades, dissolves)
    blend_lag: int = 4  # h: frame t is compared with the blend of frames t-h and t+h
    blend_linearity: float = 0.3  # residual / span change below this = a linear blend
    blend_min_change: float = 6.0  # span change (0-255 RGB) a transition must reach
    blend_ratio: float = 3.0  # and this multiple of the span change in the shots around it
    blend_min_frames: int = 2  # shortest run of blend frames that counts
    blank_std: float = 4.0  # frames with less spatial std than this (0-255) are blank (black)
    min_gap: int = 2  # cuts closer than this many frames are one cut


@dataclass
class Cut:
    """A shot boundary. `frame` is the first frame of the new shot for a hard cut and the middle
    of the transition for a gradual one; frames [start, end) belong to neither shot."""

    frame: int
    seconds: float
    kind: str  # "hard" | "gradual"
    start: int
    end: int

    def as_dict(self) -> dict:
        return {"frame": self.frame, "seconds": self.seconds, "kind": self.kind, "start": self.start, "end": self.end}


class CutFeatures:
    """Per-frame numbers for cut detection, computed chunk by chunk on uint8 RGB frames [n, h, w, 3]."""

    def __init__(self, blend_lag: int = 4):
        self.h = blend_lag
        self.content: list[np.ndarray] = []  # HSV mean |f_t - f_{t-1}|; frame 0 gets 0
        self.span: list[np.ndarray] = []  # RGB-thumb mean |f_{t+h} - f_{t-h}|
        self.resid: list[np.ndarray] = []  # RGB-thumb mean |f_t - (f_{t-h} + f_{t+h}) / 2|
        self.std: list[np.ndarray] = []  # spatial std of the luma thumb
        self._prev_hsv: np.ndarray | None = None
        self._tail = np.empty((0, 0), np.int16)  # last 2h thumbs, for spans reaching into the next chunk
        self._next_centre = blend_lag
        self.num_frames = 0

    def push(self, frames: np.ndarray) -> None:
        n, h, w, _ = frames.shape
        if h % THUMB_FACTOR or w % THUMB_FACTOR:
            raise ValueError(f"analysis size {h}x{w} must be a multiple of {THUMB_FACTOR}")
        flat = np.ascontiguousarray(frames).reshape(n * h, w, 3)
        hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV).reshape(n, h * w * 3)
        prev = self._prev_hsv if self._prev_hsv is not None else hsv[0]
        diff = np.empty(n, np.float32)
        diff[0] = cv2.absdiff(hsv[0], prev).sum(dtype=np.uint64)
        if n > 1:
            diff[1:] = cv2.absdiff(hsv[1:], hsv[:-1]).reshape(n - 1, -1).sum(axis=1, dtype=np.uint64)
        self.content.append(diff / (h * w * 3))
        self._prev_hsv = hsv[-1].copy()

        th, tw = h // THUMB_FACTOR, w // THUMB_FACTOR
        thumbs = cv2.resize(flat, (tw, n * th), interpolation=cv2.INTER_AREA).reshape(n, th, tw, 3)
        luma = cv2.cvtColor(thumbs.reshape(n * th, tw, 3), cv2.COLOR_RGB2GRAY).reshape(n, -1).astype(np.float32)
        self.std.append(luma.std(axis=1))

        thumbs = thumbs.reshape(n, -1).astype(np.int16)
        buf = np.concatenate([self._tail, thumbs]) if len(self._tail) else thumbs
        self.num_frames += n
        self._spans(buf, first=self.num_frames - len(buf))
        self._tail = buf[-2 * self.h :]

    def _spans(self, buf: np.ndarray, first: int) -> None:
        """Span and residual for every centre c whose frames c-h and c+h are now known."""
        h = self.h
        lo, hi = self._next_centre - first, len(buf) - h  # buf positions of the centres to do
        if hi <= lo:
            return
        left, mid, right = buf[lo - h : hi - h], buf[lo:hi], buf[lo + h : hi + h]
        self.span.append(np.abs(right - left).mean(axis=1, dtype=np.float32))
        self.resid.append(np.abs(2 * mid - left - right).mean(axis=1, dtype=np.float32) / 2)
        self._next_centre += hi - lo

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-frame arrays of equal length; span features are 0 where the lag reaches past the ends."""
        n = self.num_frames
        out = {
            "content": _cat(self.content),
            "std": _cat(self.std),
            "span": np.zeros(n, np.float32),
            "resid": np.zeros(n, np.float32),
        }
        span, resid = _cat(self.span), _cat(self.resid)
        out["span"][self.h : self.h + len(span)] = span
        out["resid"][self.h : self.h + len(resid)] = resid
        return out


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def detect_cuts(features: dict[str, np.ndarray], fps: float, cfg: CutConfig | None = None) -> list[Cut]:
    """Hard and gradual cuts from `CutFeatures.arrays()`, sorted by frame."""
    cfg = cfg or CutConfig()
    gradual = _gradual(features, cfg)
    hard = [t for t in _hard(features["content"], cfg) if not any(c.start - cfg.min_gap <= t <= c.end + cfg.min_gap for c in gradual)]
    cuts = gradual + [Cut(t, t / fps, "hard", t, t) for t in hard]
    for c in gradual:
        c.seconds = c.frame / fps
    return sorted(cuts, key=lambda c: c.frame)


def _hard(content: np.ndarray, cfg: CutConfig) -> list[int]:
    n, w = len(content), cfg.window
    if n < 2:
        return []
    padded = np.pad(content, w, mode="edge")
    padded[w] = 0.0  # frame 0 has no predecessor
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1)
    around = (win.sum(axis=1) - win[:, w]) / (2 * w)
    ratio = np.where(around > 1e-3, content / np.maximum(around, 1e-3), np.where(content >= cfg.min_content, 255.0, 0.0))
    hits = np.flatnonzero((ratio >= cfg.adaptive_threshold) & (content >= cfg.min_content))
    out: list[int] = []
    for t in hits.tolist():
        if t == 0:
            continue
        if out and t - out[-1] < cfg.min_gap:
            if content[t] > content[out[-1]]:
                out[-1] = t
            continue
        out.append(t)
    return out


def _gradual(features: dict[str, np.ndarray], cfg: CutConfig) -> list[Cut]:
    span, resid, std = features["span"], features["resid"], features["std"]
    n, h = len(span), cfg.blend_lag
    if n < 2 * h + 1:
        return []
    blank = std < cfg.blank_std
    linear = (span >= cfg.blend_min_change) & (resid <= cfg.blend_linearity * span)
    for t in np.flatnonzero(linear):
        # a steady pan is "linear" too; a transition stands out from the shots around it
        linear[t] = span[t] >= cfg.blend_ratio * _surround_median(span, t, 3 * h, 12 * h)
    # a fade to black, the black frames and the fade back in are one transition
    marked = linear | blank
    cuts: list[Cut] = []
    for s, e in _runs(marked):
        if not linear[s:e].any() or linear[s:e].sum() < cfg.blend_min_frames:
            continue
        start, end = max(0, s - h), min(n, e + h)
        if blank[s:e].all():
            continue
        cuts.append(Cut((start + end) // 2, 0.0, "gradual", start, end))
    return _merge(cuts, cfg.min_gap)


def _merge(cuts: list[Cut], gap: int) -> list[Cut]:
    out: list[Cut] = []
    for c in cuts:
        if out and c.start <= out[-1].end + gap:
            last = out[-1]
            last.end = max(last.end, c.end)
            last.frame = (last.start + last.end) // 2
            continue
        out.append(c)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _surround_median(x: np.ndarray, t: int, near: int, far: int) -> float:
    """Median of x over [t-far, t-near] and [t+near, t+far]: what the shots around t look like."""
    n = len(x)
    vals = np.concatenate([x[max(0, t - far) : max(0, t - near + 1)], x[min(n, t + near) : min(n, t + far + 1)]])
    return float(np.median(vals)) if vals.size else 0.0
