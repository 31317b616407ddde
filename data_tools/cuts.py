"""Shot-boundary detection: hard cuts and gradual transitions (dissolves, fades through black).

- Hard cuts: adaptive detection (as PySceneDetect's AdaptiveDetector) on three per-frame features:
  the mean HSV change from the previous frame, the colour change on a 4x coarser grid relative to the
  frames' brightness, and one minus the correlation of those coarse frames. A cut is a frame where one
  of them is `adaptive_threshold` times its mean over the frames around, and where the coarse frames'
  correlation breaks. Web video damages fine texture (blocking, ringing, noise, the sharper picture
  at each keyframe) and brightness, and leaves the coarse layout alone; a cut changes the layout.
  At keyframes, where a low bit rate makes the picture jump, the correlation must break further.
- Dissolves and fades: frame t is compared with frames t-h and t+h. In a blend, the pixels that
  changed between t-h and t+h sit half-way at t; under motion a pixel has either changed or not
  yet. `blend` = mean |change| over such half-way pixels, taken as a ratio to the same quantity in
  the shots around it; `linear` = the share of changed pixels that are half-way. Thresholds scale
  with the frames' brightness, so dark footage reads like bright footage.
- Fades through black: the frame's mean luma dips far below the frames on both sides.

`CutFeatures` consumes analysis-size frames chunk by chunk while they decode and keeps a few numbers
per frame; `detect_cuts` turns those numbers into cuts afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COARSE = 4  # `change` compares frames on a grid this many times coarser than the analysis size
COARSE_OFFSET = 2.0  # added to each pixel value in `change`'s denominator, so near-black frames stay finite
FLAT_STD = 2.0  # a coarse frame whose values vary less than this (std, 0-255) is flat: no layout to correlate
# blend features see a frame pair as if its brighter frame had this mean luma, brightening at most this much
BLEND_REFERENCE_LUMA = 100.0
BLEND_MAX_GAIN = 4.0


@dataclass
class CutConfig:
    """Detector settings. Pixel values are on a 0-255 scale."""

    # hard cuts
    adaptive_threshold: float = 3.0  # a feature's change / its mean change at the `window` frames either side
    window: int = 2  # frames either side whose mean change a hard cut is compared with
    # and the correlation of the coarse frames (4x coarser than the analysis size) before and after must be
    max_similarity: float = 0.95  # at most this,
    keyframe_max_similarity: float = 0.85  # or this at an intra-coded frame (PyAV says which; decord does not)
    # dissolves and fades
    blend_lag: int = 4  # h: frame t is compared with frames t-h and t+h
    change_threshold: int = 12  # a pixel "changed" if its luma moved more than this from t-h to t+h
    min_linear: float = 0.35  # share of changed pixels half-way at t
    min_blend: float = 0.7  # mean |change| over half-way pixels (per pixel of the frame)
    blend_ratio: float = 4.0  # and that many times the median of the shots around (2h..10h away)
    blend_frames: int = 3  # for at least this many frames in a row (a motion burst lasts one or two)
    # fades through black
    dip_ratio: float = 0.3  # mean luma below this share of the brightest frame within 1 s on each side
    min_gap: int = 2  # hard cuts closer than this are one cut; transitions closer than this merge
    # a hard cut inside a detected blend wins over it when its coarse change is this many times the blend's median
    step_dominance: float = 4.0

    def __post_init__(self):
        if self.blend_lag < 1 or self.window < 1:
            raise ValueError("cuts.blend_lag and cuts.window must be at least 1")


@dataclass
class Cut:
    """A shot boundary. `frame` is the first frame of the new shot for a hard cut and the middle of
    the transition for a gradual one; frames [start, end) belong to neither shot (empty if hard)."""

    frame: int
    seconds: float
    kind: str  # "hard" | "gradual"
    start: int
    end: int

    def as_dict(self) -> dict:
        return {
            "frame": self.frame,
            "seconds": self.seconds,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
        }


class CutFeatures:
    """Per-frame numbers for cut detection from uint8 RGB chunks [n, h, w, 3] and their luma [n, h, w]."""

    def __init__(self, cfg: CutConfig | None = None):
        self.cfg = cfg or CutConfig()
        self.h = self.cfg.blend_lag
        self._parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("content", "change", "similarity", "luma", "blend", "linear")
        }
        self._prev_hsv: np.ndarray | None = None
        self._prev_small: np.ndarray | None = None  # the last frame's coarse RGB and its sum
        # the last 2h luma frames and their means, for centres in the next chunk
        self._tail: tuple[np.ndarray, np.ndarray] | None = None
        self._next_centre = self.h
        self.num_frames = 0

    def push(self, frames: np.ndarray, gray: np.ndarray) -> None:
        n, h, w, _ = frames.shape
        hsv = cv2.cvtColor(np.ascontiguousarray(frames).reshape(n * h, w, 3), cv2.COLOR_RGB2HSV).reshape(
            n, -1
        )
        prev = self._prev_hsv if self._prev_hsv is not None else hsv[0]
        diff = np.empty(n, np.float64)
        diff[:1] = _row_sums(cv2.absdiff(hsv[0], prev).reshape(1, -1))
        if n > 1:
            diff[1:] = _row_sums(cv2.absdiff(hsv[1:], hsv[:-1]))
        self._parts["content"].append(diff / hsv.shape[1])
        self._prev_hsv = hsv[-1].copy()
        self._coarse_change(frames)

        flat = np.ascontiguousarray(gray).reshape(n, -1)
        luma = _row_sums(flat) / flat.shape[1]
        self._parts["luma"].append(luma)
        if self._tail is not None:
            flat, luma = np.concatenate([self._tail[0], flat]), np.concatenate([self._tail[1], luma])
        self.num_frames += n
        self._blends(flat, luma, first=self.num_frames - len(flat))
        self._tail = flat[-2 * self.h :].copy(), luma[-2 * self.h :]

    def _coarse_change(self, frames: np.ndarray) -> None:
        """`change`: colour change between consecutive frames on a 4x coarser grid, relative to their
        brightness: sum |frame - previous| / sum (frames + COARSE_OFFSET), both frames' sums averaged.
        The coarse grid averages away blocking, ringing and sensor noise, and a keyframe's sharper
        detail, all of which live in fine texture; the ratio does not move with a brightness gain or
        with black bars (which add nothing to either sum)."""
        n, h, w, _ = frames.shape
        ch, cw = max(1, h // COARSE), max(1, w // COARSE)
        # the rows of the stacked chunk fall into 4-row groups that never straddle two frames (h % 8 == 0);
        # two 2x area halvings are the 4x4 mean (up to rounding) at a quarter of one 4x resize's cost
        half = cv2.resize(np.ascontiguousarray(frames).reshape(n * h, w, 3), (w // 2, n * h // 2), interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(half, (cw, n * ch), interpolation=cv2.INTER_AREA)
        flat = coarse.reshape(n, -1)
        sums = _row_sums(flat)
        prev, prev_sum = self._prev_small if self._prev_small is not None else (flat[0], sums[0])
        diff = np.empty(n, np.float64)
        diff[:1] = _row_sums(cv2.absdiff(flat[0], prev).reshape(1, -1))
        prev_sums = np.concatenate([[prev_sum], sums[:-1]])
        if n > 1:
            diff[1:] = _row_sums(cv2.absdiff(flat[1:], flat[:-1]))
        self._parts["change"].append(diff / (0.5 * (sums + prev_sums) + COARSE_OFFSET * flat.shape[1]))
        # `similarity`: correlation of each coarse frame with the one before. A keyframe's refresh keeps
        # the picture's layout (close to 1); a cut replaces it. A flat frame (black, a fade's middle) has no
        # layout to compare: its pairs count as similar, and fades are left to the dip detector
        x = np.concatenate([prev[None], flat]).astype(np.float32)
        x -= x.mean(axis=1, keepdims=True)
        norm = np.sqrt(np.einsum("ij,ij->i", x, x))
        flat_frame = norm < FLAT_STD * np.sqrt(x.shape[1])
        similarity = np.einsum("ij,ij->i", x[1:], x[:-1]) / np.maximum(norm[1:] * norm[:-1], 1e-6)
        similarity[flat_frame[1:] | flat_frame[:-1]] = 1.0
        self._parts["similarity"].append(similarity)
        self._prev_small = (flat[-1].copy(), sums[-1])

    def _blends(self, buf: np.ndarray, means: np.ndarray, first: int) -> None:
        """Blend features for every centre c whose frames c-h and c+h are now known (uint8 OpenCV ops:
        this runs on every frame, so it must cost little next to decoding)."""
        h = self.h
        lo, hi = self._next_centre - first, len(buf) - h  # positions in buf of the centres to do
        if hi <= lo:
            return
        a, mid, b = buf[lo - h : hi - h], buf[lo:hi], buf[lo + h : hi + h]
        change = cv2.absdiff(b, a)
        off_line = cv2.convertScaleAbs(cv2.absdiff(mid, cv2.addWeighted(a, 0.5, b, 0.5, 0)), alpha=4.0)
        # luma-normalised: in dark footage every change is smaller by the footage's gain, so the thresholds
        # scale with the brighter of frames a and b (up to BLEND_MAX_GAIN), and so does the blend measure
        bright = np.maximum(means[lo - h : hi - h], means[lo + h : hi + h])
        gain = np.clip(BLEND_REFERENCE_LUMA / np.maximum(bright, 1.0), 1.0, BLEND_MAX_GAIN)
        # |change| is whole, so "> threshold" is "> floor(threshold)": one OpenCV compare per distinct floor
        # (one for a whole chunk of footage at normal brightness)
        floors = np.floor(self.cfg.change_threshold / gain).astype(np.int64)
        levels = np.unique(floors)
        if len(levels) == 1:
            changed = cv2.compare(change, int(levels[0]), cv2.CMP_GT)
        else:
            changed = np.empty_like(change)
            for level in levels:
                rows = floors == level
                changed[rows] = cv2.compare(change[rows], int(level), cv2.CMP_GT)
        halfway = cv2.bitwise_and(
            changed, cv2.compare(off_line, change, cv2.CMP_LT)
        )  # |mid - (a+b)/2| < |b-a|/4
        # masks are 0/255, so their row sums count pixels
        n_changed = _row_sums(changed) / 255
        self._parts["blend"].append(gain * _row_sums(cv2.bitwise_and(change, halfway)) / buf.shape[1])
        self._parts["linear"].append(_row_sums(halfway) / 255 / np.maximum(n_changed, 1))
        self._next_centre += hi - lo

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-frame arrays of equal length; blend features are 0 where t-h or t+h is outside the video."""
        n = self.num_frames
        out = {k: _cat(self._parts[k]) for k in ("content", "change", "similarity", "luma")}
        for k in ("blend", "linear"):
            values = _cat(self._parts[k])
            out[k] = np.zeros(n, np.float32)
            out[k][self.h : self.h + len(values)] = values
        return out


def _row_sums(x: np.ndarray) -> np.ndarray:
    """Sum of each row of a 2D uint8 array, as float64. OpenCV's reduce is ~20x faster than numpy's
    uint8 sums; its int32 result holds rows of up to 8M values."""
    if len(x) == 0:
        return np.zeros(0, np.float64)
    if x.shape[1] < 2**31 // 255:
        return cv2.reduce(x, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.float64)
    return x.sum(axis=1, dtype=np.uint64).astype(np.float64)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def detect_cuts(features: dict[str, np.ndarray], fps: float, cfg: CutConfig | None = None) -> list[Cut]:
    """Hard and gradual cuts from `CutFeatures.arrays()`, sorted by frame."""
    cfg = cfg or CutConfig()
    n = len(features["content"])
    dips = _dips(features["luma"], fps, cfg)
    gradual = _merge(sorted(_blends(features, cfg) + dips, key=lambda c: c.start), cfg.min_gap)
    gradual = [c for c in gradual if c.start > 0 and c.end < n]  # a fade in/out at the ends is no cut
    hard = []
    for t in _hard(features, cfg):
        near = [c for c in gradual if c.start - cfg.min_gap <= t <= c.end + cfg.min_gap]
        if not near:
            hard.append(t)
        elif not any(d.start < c.end and c.start < d.end for d in dips for c in near) and _step_dominates(
            features["change"], t, near, cfg
        ):
            # camera motion or a light change just before a cut can pass for a blend; a blend spreads its
            # change over its frames, so one frame that changes far more than the rest is a hard cut (a fade
            # through black is exempt: its frames around black change by large ratios of little light)
            hard.append(t)
            gradual = [c for c in gradual if c not in near]
    for c in gradual:
        c.seconds = c.frame / fps
    return sorted(gradual + [Cut(t, t / fps, "hard", t, t) for t in hard], key=lambda c: c.frame)


def _step_dominates(change: np.ndarray, t: int, spans: list[Cut], cfg: CutConfig) -> bool:
    others = np.concatenate([change[c.start : c.end] for c in spans])
    others = np.delete(others, np.flatnonzero(np.concatenate([np.arange(c.start, c.end) for c in spans]) == t))
    return others.size > 0 and change[t] >= cfg.step_dominance * float(np.median(others))


def _hard(features: dict[str, np.ndarray], cfg: CutConfig) -> list[int]:
    content, change, similarity = features["content"], features["change"], features["similarity"]
    if len(content) < 2:
        return []
    dissimilarity = 1.0 - similarity
    # the adaptive test on any of three features: HSV content sees colour changes at equal brightness; the
    # coarse change and the layout's dissimilarity see cuts in dark footage, whose hue and saturation are
    # mostly noise, and cuts between shots that share a background
    ratio = np.maximum.reduce(
        [_adaptive_ratio(content, cfg), _adaptive_ratio(change, cfg), _adaptive_ratio(dissimilarity, cfg)]
    )
    # and the picture's layout must break: blocking, a keyframe's refresh, noise and a brightness gain
    # leave the coarse frames correlated; a keyframe (where low bit rates jump) must break it further
    limit = np.full(len(content), cfg.max_similarity)
    key = features.get("keyframe")
    if key is not None:
        limit[key] = cfg.keyframe_max_similarity
    out: list[int] = []
    for t in np.flatnonzero((ratio >= cfg.adaptive_threshold) & (similarity <= limit)).tolist():
        if t == 0:
            continue
        if out and t - out[-1] < cfg.min_gap:
            if dissimilarity[t] > dissimilarity[out[-1]]:
                out[-1] = t
            continue
        out.append(t)
    return out


def _adaptive_ratio(x: np.ndarray, cfg: CutConfig) -> np.ndarray:
    """x[t] over the mean of x at the `window` frames either side of t."""
    w = cfg.window
    padded = np.pad(x, w, mode="edge")
    padded[w] = 0.0  # frame 0 has no predecessor
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1)
    around = (win.sum(axis=1) - win[:, w]) / (2 * w)
    eps = 1e-3 * max(float(x.max()), 1e-6)
    return np.where(around > eps, x / np.maximum(around, eps), np.where(x > eps, 255.0, 0.0))


def _blends(features: dict[str, np.ndarray], cfg: CutConfig) -> list[Cut]:
    blend, linear = features["blend"], features["linear"]
    h, n = cfg.blend_lag, len(blend)
    candidate = (linear >= cfg.min_linear) & (blend >= cfg.min_blend)
    for t in np.flatnonzero(candidate):
        # a smooth pan can look like a blend too; a transition stands out from the shots around it
        around = np.concatenate(
            [blend[max(0, t - 10 * h) : max(0, t - 2 * h + 1)], blend[t + 2 * h : t + 10 * h + 1]]
        )
        candidate[t] = around.size > 0 and blend[t] >= cfg.blend_ratio * max(float(np.median(around)), 0.1)
    runs = [(s, e) for s, e in _runs(candidate) if e - s >= cfg.blend_frames]
    return [Cut((s + e) // 2, 0.0, "gradual", max(0, s - h), min(n, e + h)) for s, e in runs]


def _dips(luma: np.ndarray, fps: float, cfg: CutConfig) -> list[Cut]:
    """Fades through black: frames far darker than the brightest frame within a second on each side,
    widened over the ramps down and up."""
    n, w = len(luma), max(2, int(round(fps)))
    if n < 3:
        return []
    padded = np.pad(luma, w, constant_values=0.0)
    win = np.lib.stride_tricks.sliding_window_view(padded, w)
    before, after = win[:n].max(axis=1), win[w + 1 : w + 1 + n].max(axis=1)
    dark = luma < cfg.dip_ratio * np.minimum(before, after)
    cuts = []
    for s, e in _runs(dark):
        eps = 0.5 + 0.02 * float(min(before[s], after[e - 1]))
        while s > 0 and luma[s - 1] > luma[s] + eps:
            s -= 1
        while e < n and luma[e] > luma[e - 1] + eps:
            e += 1
        cuts.append(Cut((s + e) // 2, 0.0, "gradual", s, e))
    return cuts


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
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))
