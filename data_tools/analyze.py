"""The per-source analysis pass: one decode at the analysis size feeding cut features and flow."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from data_tools.cuts import Cut, CutConfig, CutFeatures, detect_cuts
from data_tools.decode import analysis_size, iter_frames, open_source, quiet_ffmpeg
from data_tools.motion import FlowSampler, MotionConfig
from vidiff.video import VideoInfo


@dataclass
class AnalysisConfig:
    width: int = 160  # analysis width in pixels (height follows the aspect ratio; both multiples of 8)
    backend: str = "pyav"  # "pyav" | "decord" (falls back to PyAV for files it cannot open)

    def __post_init__(self):
        if self.backend not in ("pyav", "decord"):
            raise ValueError(f"analysis.backend must be 'pyav' or 'decord', not {self.backend!r}")
        if self.width < 16:
            raise ValueError(f"analysis.width must be at least 16, not {self.width}")

    cuts: CutConfig = field(default_factory=CutConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)


@dataclass
class Analysis:
    info: VideoInfo
    num_frames: int  # frames actually decoded
    cuts: list[Cut]
    pairs: np.ndarray  # [n, 3] flow sample pairs: frame a, frame b, motion score
    features: dict[str, np.ndarray]


def analyze(path: str, cfg: AnalysisConfig | None = None) -> Analysis:
    """Decode `path` once at the analysis size; return its cuts and flow samples.

    Raises VideoReadError for a source that cannot be read in full.
    """
    cfg = cfg or AnalysisConfig()
    quiet_ffmpeg()
    threads = cv2.getNumThreads()
    # one source is one core's work (engines run sources in parallel); OpenCV's thread pool on
    # per-chunk calls this small costs more CPU than it saves (64-px chunks: ~20% more)
    cv2.setNumThreads(1)
    try:
        return _analyze(path, cfg)
    finally:
        cv2.setNumThreads(threads)


def _analyze(path: str, cfg: AnalysisConfig) -> Analysis:
    container, info = open_source(path)
    with container:
        size = analysis_size(info.width, info.height, cfg.width)
        features = CutFeatures(cfg.cuts)
        flow = FlowSampler(info.fps, cfg.motion)
        keyframes: list[bool] = []
        for chunk in iter_frames(path, size, cfg.backend, opened=(container, info), keyframes=keyframes):
            n, h, w, _ = chunk.shape
            gray = cv2.cvtColor(chunk.reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, h, w)
            features.push(chunk, gray)
            flow.push(gray)
    arrays = features.arrays()
    if len(keyframes) == features.num_frames:  # PyAV says which frames are intra-coded; decord does not
        arrays["keyframe"] = np.array(keyframes, bool)
    return Analysis(info, features.num_frames, detect_cuts(arrays, info.fps, cfg.cuts), flow.arrays(), arrays)
