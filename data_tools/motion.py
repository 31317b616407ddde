"""Motion scores from dense optical flow (OpenCV DIS or Farneback) between frames sampled at ~2 fps.

Flow is computed while the source streams past, between consecutive samples; a clip's score only
uses sample pairs that lie wholly inside the clip, so no pair ever straddles a cut. Magnitudes are
in frame widths per second at the analysis size, so the threshold does not depend on resolution
or frame rate.

The default statistic averages the flow magnitude weighted by image gradient: in flat regions flow
is unobservable (the aperture problem) and a flow solver returns noise there, which in plain means
makes a still, grainy shot look as busy as a small moving object. "mean" is the plain average.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BAR_LEVEL = 10  # edge rows / columns no brighter than this (0-255) are black bars


@dataclass
class MotionConfig:
    sample_fps: float = 2.0  # flow is computed between frames about 1/sample_fps seconds apart
    method: str = "dis"  # "dis" (ultrafast preset) | "farneback"
    statistic: str = "edge_mean"  # "edge_mean" (gradient-weighted mean magnitude) | "mean" (plain mean)
    edge_floor: float = 20.0  # Sobel gradient magnitude treated as noise (weights are gradient - floor)
    static_threshold: float = 0.01  # clips scoring below this (frame widths per second) are static

    def __post_init__(self):
        if self.method not in ("dis", "farneback"):
            raise ValueError(f"motion.method must be 'dis' or 'farneback', not {self.method!r}")
        if self.statistic not in ("edge_mean", "mean"):
            raise ValueError(f"motion.statistic must be 'edge_mean' or 'mean', not {self.statistic!r}")
        if self.sample_fps <= 0:
            raise ValueError(f"motion.sample_fps must be positive, not {self.sample_fps}")


def sample_step(fps: float, sample_fps: float) -> int:
    """Frames between flow samples: about fps / sample_fps, at least 1."""
    return max(1, int(round(fps / sample_fps)))


class FlowSampler:
    """Feeds on analysis-size luma frames [n, h, w] chunk by chunk; keeps one score per sample pair."""

    def __init__(self, fps: float, cfg: MotionConfig | None = None):
        self.cfg = cfg or MotionConfig()
        self.fps = fps
        self.step = sample_step(fps, self.cfg.sample_fps)
        self.pairs: list[tuple[int, int, float]] = []  # (frame a, frame b, score of flow a -> b)
        self._prev: tuple[int, np.ndarray, tuple[int, int, int, int]] | None = None  # index, frame, content box
        self._next_index = 0
        self._dis = None

    def push(self, frames: np.ndarray) -> None:
        first = self._next_index
        self._next_index += len(frames)
        for k in range(-first % self.step, len(frames), self.step):
            gray, box = frames[k], content_box(frames[k])
            if self._prev is not None:
                a, prev, prev_box = self._prev
                # black bars (letterbox, pillarbox) are cut away: flow along their edges reads a still
                # shot as moving (toy-world letterboxed stills scored 20-50x their true motion)
                top, bottom = min(box[0], prev_box[0]), max(box[1], prev_box[1])
                left, right = min(box[2], prev_box[2]), max(box[3], prev_box[3])
                crop = (slice(top, bottom), slice(left, right))
                self.pairs.append((a, first + k, self._score(prev[crop], gray[crop], first + k - a)))
            self._prev = (first + k, gray, box)

    def _edge_weight(self, img: np.ndarray) -> np.ndarray | None:
        """max(gradient - edge_floor, 0); a pair's weight max(max(ga, gb) - floor, 0) is the larger
        of its two frames' weights."""
        if self.cfg.statistic != "edge_mean":
            return None
        grad = _gradient(img)
        grad -= self.cfg.edge_floor
        return cv2.threshold(grad, 0.0, 0.0, cv2.THRESH_TOZERO, dst=grad)[1]

    def _score(self, a: np.ndarray, b: np.ndarray, gap: int) -> float:
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        if self.cfg.method == "dis":
            if self._dis is None:
                self._dis = _dis_for(a.shape)
            flow = self._dis.calc(a, b, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mag = cv2.magnitude(flow[..., 0], flow[..., 1])
        if self.cfg.statistic == "mean":
            value = float(mag.mean())
        else:
            weight = cv2.max(self._edge_weight(a), self._edge_weight(b))
            total = cv2.sumElems(weight)[0]
            # no texture: nothing seen moving
            value = float(mag.ravel().dot(weight.ravel())) / total if total > 0 else 0.0
        return value / a.shape[1] * self.fps / gap  # frame widths per second

    def arrays(self) -> np.ndarray:
        """[n, 3] float64: frame a, frame b, score."""
        return np.asarray(self.pairs, np.float64).reshape(-1, 3)


def content_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of `gray` inside black bars: the edge rows and columns whose brightest pixel
    is at most BAR_LEVEL. The whole frame when that would leave less than half of either side (a dark frame)."""
    h, w = gray.shape
    rows = np.flatnonzero(cv2.reduce(gray, 1, cv2.REDUCE_MAX).ravel() > BAR_LEVEL)
    cols = np.flatnonzero(cv2.reduce(gray, 0, cv2.REDUCE_MAX).ravel() > BAR_LEVEL)
    if len(rows) == 0 or len(cols) == 0:
        return 0, h, 0, w
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if bottom - top < h // 2 or right - left < w // 2:
        return 0, h, 0, w
    return top, bottom, left, right


def _dis_for(shape: tuple[int, ...]) -> cv2.DISOpticalFlow:
    """DIS, ultrafast preset (on the toy world it separates still from moving clips as well as the
    fast preset, at a third of the cost). Its finest scale is 2, a quarter of the frame; on frames
    under ~80 px that falls below its coarsest scale and DIS runs 3-4x slower, so small frames stop
    one scale finer."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    if min(shape[:2]) / 4 < 20:
        dis.setFinestScale(1)
    return dis


def _gradient(img: np.ndarray) -> np.ndarray:
    return cv2.magnitude(cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3))


def clip_motion(pairs: np.ndarray, start: int, end: int) -> float:
    """Mean score of the sample pairs inside frames [start, end); NaN if the clip holds none."""
    if len(pairs) == 0:
        return float("nan")
    inside = (pairs[:, 0] >= start) & (pairs[:, 1] < end)
    return float(pairs[inside, 2].mean()) if inside.any() else float("nan")
