"""The toy-world oracle: reads colour, shape and motion of the object in a video, checks them against a
prompt, and scores how consistent the object stays over time."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from einops import rearrange

from vidiff.errors import VidiffError
from vidiff.toyworld.world import ATTRIBUTES, COLORS, SHAPES, coverage, parse_prompt

_PALETTE = np.array(list(COLORS.values()), np.float64) / 255.0
_PALETTE_NAMES = list(COLORS)
# RGB -> (Y, Cb, Cr) rows, BT.601
_YCC = np.array([[0.299, 0.587, 0.114], [-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]])


def _as_frames(video) -> np.ndarray:
    """[C,T,H,W] float in [-1,1] (tensor or array) or [T,H,W,3] uint8 -> [T,H,W,3] float64 in [0,1]."""
    if isinstance(video, torch.Tensor):
        video = video.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(video)
    if arr.ndim == 4 and arr.dtype == np.uint8 and arr.shape[-1] == 3:
        frames = arr.astype(np.float64) / 255.0
    elif arr.ndim == 4 and arr.shape[0] == 3:
        frames = np.clip((rearrange(arr.astype(np.float64), "c t h w -> t h w c") + 1) / 2, 0, 1)
    else:
        raise VidiffError(
            f"oracle expects a video [C,T,H,W] with C == 3 (or [T,H,W,3] uint8), got {arr.shape}"
        )
    if min(frames.shape[1:3]) < 16:
        raise VidiffError(
            f"oracle needs frames of at least 16x16 pixels, got {frames.shape[1]}x{frames.shape[2]}"
        )
    return frames


def _design(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    x, y = (xs.ravel() + 0.5) / width - 0.5, (ys.ravel() + 0.5) / height - 0.5
    return np.stack([np.ones_like(x), x, y], 1)


def fit_background(frame: np.ndarray, keep: float = 0.6, iters: int = 3) -> np.ndarray:
    """Background [H,W,3] under the object: a plane per channel (plain or linear-gradient backgrounds),
    refit on the `keep` share of pixels it explains best (the object covers far less than 1 - keep).
    A quadratic would bend towards an object that fills a stretch of the border."""
    h, w, _ = frame.shape
    a = _design(h, w)
    y = frame.reshape(-1, 3)
    idx = np.arange(h * w)
    n_keep = int(keep * h * w)
    for _ in range(iters):
        sub = a[idx]
        # normal equations: a 3x3 solve, far cheaper than lstsq's SVD on every frame
        coef = np.linalg.solve(sub.T @ sub + 1e-9 * np.eye(3), sub.T @ y[idx])
        resid = np.linalg.norm(y - a @ coef, axis=1)
        idx = np.argpartition(resid, n_keep)[:n_keep]
    return (a @ coef).reshape(h, w, 3)


@dataclass
class FrameReading:
    present: bool
    area: float  # pixels of coverage
    cx: float  # centroid, pixels
    cy: float
    rgb: np.ndarray  # object colour in [0,1]
    shape_iou: dict  # soft IoU with each shape template of the same area and centroid
    fill: float  # coverage area / bounding-box area (circle ~0.79, square ~1, triangle ~0.5)


class Oracle:
    """Reads the object's attributes and checks them against a prompt.

    Thresholds: a pixel belongs to the object in proportion to how far it lies from the background
    towards the object's colour; the object must cover >= `min_area` of the frame and its best shape
    template must reach soft IoU >= `min_iou` for the frame to count as showing one object. Motion is
    the centroid's least-squares travel over the clip, in fractions of the frame; below `still_travel`
    it is "still". Videos are read on at most `max_frames` evenly spaced frames. Shape templates are
    compared sharp and Gaussian-blurred by each sigma in `blurs` (pixels). Coverage weighs chroma
    differences by `chroma_weight` against luma, because yuv420p video keeps chroma at half resolution.
    """

    def __init__(
        self,
        min_area=0.005,
        max_area=0.5,
        min_iou=0.5,
        min_contrast=0.15,
        still_travel=0.08,
        max_frames=16,
        blurs=(0.0, 0.6, 1.0),
        chroma_weight=0.3,
    ):
        self.blurs, self.chroma_weight = tuple(blurs), chroma_weight
        self.min_area, self.max_area, self.min_iou = min_area, max_area, min_iou
        self.min_contrast, self.still_travel, self.max_frames = min_contrast, still_travel, max_frames

    # ------------------------------------------------------------ per frame

    def read_frame(self, frame: np.ndarray) -> FrameReading:
        h, w, _ = frame.shape
        bg = fit_background(frame)
        diff = frame - bg
        dist = np.linalg.norm(diff, axis=-1)
        # the object's colour: median over the pixels that differ most from the background
        q = np.quantile(dist, 0.98)
        core = dist >= 0.6 * q
        rgb = np.median(frame[core], axis=0)
        ref = np.median(bg[core], axis=0)
        axis = rgb - ref
        contrast = float(np.linalg.norm(axis))
        if contrast < 1e-6:
            alpha = np.zeros((h, w))
        else:
            # coverage = projection onto the colour axis, in a metric that trusts luma over chroma:
            # codecs keep luma at full resolution but halve chroma (yuv420p), smearing shape edges
            g = _YCC.T @ np.diag([1.0, self.chroma_weight, self.chroma_weight]) @ _YCC
            alpha = np.clip(diff @ (g @ axis) / (axis @ g @ axis), 0, 1)
            # only pixels that move towards the object's colour, not any colour change
            off_axis = np.linalg.norm(diff - alpha[..., None] * axis, axis=-1)
            alpha = np.where((off_axis < 0.5 * contrast) & (dist > 0.05), alpha, 0.0)
        area = float(alpha.sum())
        if area <= 1e-6:
            return FrameReading(False, 0.0, w / 2, h / 2, rgb, dict.fromkeys(SHAPES, 0.0), 0.0)
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        cx, cy = float((alpha * xs).sum() / area), float((alpha * ys).sum() / area)
        ious = {}
        for shape in SHAPES:
            # a template with the object's area (size = circle-equivalent diameter); blurred copies
            # too, so a codec- or model-softened square still matches a square better than a circle
            t = coverage(shape, cx, cy, 2 * np.sqrt(area / np.pi), h, w)[0].astype(np.float32)
            best = 0.0
            for sigma in self.blurs:
                tb = cv2.GaussianBlur(t, (0, 0), sigma) if sigma > 0 else t
                best = max(best, float(np.minimum(alpha, tb).sum() / max(np.maximum(alpha, tb).sum(), 1e-9)))
            ious[shape] = best
        mask = alpha > 0.5
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) if len(rows) else 0
        fill = float(mask.sum() / box) if box else 0.0
        present = (
            self.min_area * h * w <= area <= self.max_area * h * w
            and contrast >= self.min_contrast
            and max(ious.values()) >= self.min_iou
        )
        return FrameReading(bool(present), area, cx, cy, rgb, ious, fill)

    def centres(self, video) -> list[tuple[float, float] | None]:
        """The object's centroid (x, y) in pixels in each frame of `video` ([C, T, H, W] in [-1, 1]); None in a frame
        where no object is seen (vidiff.toyworld: the object tracked frame by frame)."""
        readings = [self.read_frame(frame) for frame in _as_frames(video)]
        return [(r.cx, r.cy) if r.present else None for r in readings]

    # ------------------------------------------------------------ per video

    def read(self, video) -> dict:
        """What the oracle sees: predicted color, shape, motion (None for one frame), consistency, details."""
        frames = _as_frames(video)
        t, h, w, _ = frames.shape
        sel = np.unique(np.linspace(0, t - 1, min(t, self.max_frames)).round().astype(int))
        readings = [self.read_frame(frames[i]) for i in sel]
        present = np.array([r.present for r in readings])
        use = [r for r in readings if r.present] or readings
        rgb = np.median(np.stack([r.rgb for r in use]), axis=0)
        color = _PALETTE_NAMES[int(np.argmin(np.linalg.norm(_PALETTE - rgb, axis=1)))]
        mean_iou = {s: float(np.mean([r.shape_iou[s] for r in use])) for s in SHAPES}
        shape = max(mean_iou, key=mean_iou.get)

        motion, travel = None, (0.0, 0.0)
        if t > 1:
            idx = np.array([i for i, r in zip(sel, readings, strict=True) if r.present] or sel)
            pts = [r for r in readings if r.present] or readings
            if len(idx) >= 2:
                tt = idx / (t - 1)
                dx = np.polyfit(tt, [r.cx / w for r in pts], 1)[0]
                dy = np.polyfit(tt, [r.cy / h for r in pts], 1)[0]
                travel = (float(dx), float(dy))
            dx, dy = travel
            if max(abs(dx), abs(dy)) < self.still_travel:
                motion = "still"
            elif abs(dx) >= abs(dy):
                motion = "right" if dx > 0 else "left"
            else:
                motion = "down" if dy > 0 else "up"

        consistency = self._consistency(readings, present)
        return {
            "color": color,
            "shape": shape,
            "motion": motion,
            "consistency": consistency,
            "details": {
                "rgb": [round(float(v) * 255) for v in rgb],
                "shape_iou": {k: round(v, 3) for k, v in mean_iou.items()},
                "fill": round(float(np.mean([r.fill for r in use])), 3),
                "travel": [round(v, 3) for v in travel],
                "presence": float(present.mean()),
                "frames_read": len(sel),
            },
        }

    @staticmethod
    def _consistency(readings, present) -> float:
        """presence x colour stability x size stability, each in [0, 1]; small wobble is free."""
        pres = float(present.mean())
        seen = [r for r in readings if r.present]
        if len(seen) < 2:
            return pres
        rgb = np.stack([r.rgb for r in seen])
        color_dev = float(np.linalg.norm(rgb - np.median(rgb, axis=0), axis=1).mean())
        areas = np.array([r.area for r in seen])
        area_cv = float(areas.std() / areas.mean())
        # antialiasing and codecs wobble the area by ~perimeter/area, which grows as objects shrink
        free_cv = max(0.05, 0.5 / np.sqrt(areas.mean()))
        color_stab = float(np.clip(1 - max(0.0, color_dev - 0.05) / 0.25, 0, 1))
        size_stab = float(np.clip(1 - max(0.0, area_cv - free_cv) / 0.3, 0, 1))
        return pres * color_stab * size_stab

    def score(self, video, prompt: str) -> dict:
        """Does `video` match `prompt`? color/shape/motion: True/False, or None where the prompt does not
        name that attribute (or, for motion, the video is a single frame); consistency in [0, 1];
        `predicted` and `expected` hold the attribute values; `details` what the oracle measured."""
        return self.compare(self.read(video), prompt)

    @staticmethod
    def compare(seen: dict, prompt: str) -> dict:
        """`score` from a reading already made by `read` (score one reading against many prompts)."""
        want = parse_prompt(prompt)
        out = {}
        for key in ATTRIBUTES:
            out[key] = None if want[key] is None or seen[key] is None else seen[key] == want[key]
        out["consistency"] = seen["consistency"]
        out["predicted"] = {k: seen[k] for k in ATTRIBUTES}
        out["expected"] = want
        out["details"] = seen["details"]
        return out


def summarize_scores(per_video: list[dict]) -> dict:
    """The one aggregation of oracle scores: what `vidiff eval`, the demo and the scripts report.

    `per_video`: one row per video with color/shape/motion True, False or None (as `Oracle.score` gives)
    and its consistency. Returns `<attr>_accuracy` (the share right among the videos whose prompt names
    that attribute; None if none does) and `<attr>_n` (how many those are), `all_correct` (the share of
    videos with every named attribute right, among those that name any), `consistency` (the mean; None
    for no videos), `n_videos`, and `per_video` itself.
    """
    out: dict = {}
    for a in ATTRIBUTES:
        scored = [bool(v[a]) for v in per_video if v[a] is not None]
        out[f"{a}_accuracy"] = sum(scored) / len(scored) if scored else None
        out[f"{a}_n"] = len(scored)
    named = [[v[a] for a in ATTRIBUTES if v[a] is not None] for v in per_video]
    out["all_correct"] = sum(all(n) for n in named if n) / max(1, sum(1 for n in named if n))
    out["consistency"] = sum(v["consistency"] for v in per_video) / len(per_video) if per_video else None
    out["n_videos"] = len(per_video)
    out["per_video"] = per_video
    return out
