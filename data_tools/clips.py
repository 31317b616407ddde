"""Shots into clips: split the frames between cuts into clips of a length range, and write a clip
as its own file (stream copy when it starts and ends on keyframes, else a PyAV re-encode)."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from data_tools.cuts import Cut
from vidiff.errors import VideoReadError


@dataclass
class ClipConfig:
    min_seconds: float = 1.0  # shots shorter than this are dropped ("short_shot")
    max_seconds: float = 10.0  # longer shots are split into equal clips no longer than this
    write: bool = False  # False: clips are references (source, start, end); True: clip files
    crf: int = 18  # x264 quality when a clip has to be re-encoded
    preset: str = "veryfast"  # x264 preset of a re-encode: speed against file size

    def __post_init__(self):
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"clips need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}"
            )


@dataclass
class Segment:
    """A span of source frames [start, end): a clip to keep, or one dropped with a reason."""

    start: int
    end: int
    shot: int
    status: str = "kept"  # "kept" | "dropped"
    reason: str = ""


def shots(num_frames: int, cuts: Sequence[Cut]) -> list[tuple[int, int]]:
    """Frame spans between cuts; a gradual transition's own frames belong to no shot."""
    out, start = [], 0
    for cut in sorted(cuts, key=lambda c: c.frame):
        end = cut.start if cut.kind == "gradual" else cut.frame
        if end > start:
            out.append((start, end))
        start = max(start, cut.end if cut.kind == "gradual" else cut.frame)
    if num_frames > start:
        out.append((start, num_frames))
    return out


def plan_segments(num_frames: int, cuts: Sequence[Cut], fps: float, cfg: ClipConfig) -> list[Segment]:
    """Every shot becomes clips of [min_seconds, max_seconds], or one dropped "short_shot" segment."""
    lo = max(1, math.ceil(cfg.min_seconds * fps - 1e-6))
    hi = max(lo, math.floor(cfg.max_seconds * fps + 1e-6))
    segments = []
    for k, (s, e) in enumerate(shots(num_frames, cuts)):
        length = e - s
        if length < lo:
            segments.append(Segment(s, e, k, "dropped", "short_shot"))
            continue
        n = math.ceil(length / hi)
        if length // n >= lo:  # n equal clips, none longer than hi
            bounds = [s + length * i // n for i in range(n + 1)]
        else:  # equal parts would be too short: full-length clips and a dropped tail
            bounds = [s + hi * i for i in range(length // hi + 1)]
        for a, b in itertools.pairwise(bounds):
            segments.append(Segment(a, b, k))
        if bounds[-1] < e:
            segments.append(Segment(bounds[-1], e, k, "dropped", "short_shot"))
    return segments


def keyframe_indices(path: str, fps: float) -> list[int]:
    """Frame indices of the keyframes of `path`, read from packet headers (no decoding)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        tb, t0 = stream.time_base, _start_pts(stream)
        return sorted(
            _index(p.pts, t0, tb, fps) for p in container.demux(stream) if p.is_keyframe and p.pts is not None
        )


def write_clip(
    source: str,
    dest: str | Path,
    start: int,
    end: int,
    fps: float,
    keyframes: Sequence[int],
    num_frames: int,
    cfg: ClipConfig,
) -> str:
    """Write frames [start, end) of `source` to `dest` (atomically); return "copy" or "encode"."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp{dest.suffix}")
    keys = set(keyframes)
    method = "copy" if start in keys and (end in keys or end >= num_frames) else "encode"
    try:
        if method == "copy":
            _stream_copy(source, tmp, start, end, fps)
        else:
            _reencode(source, tmp, start, end, fps, cfg)
        os.replace(tmp, dest)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        import av

        if isinstance(exc, (av.FFmpegError, OSError)):
            raise VideoReadError(
                f"{source}: writing clip frames {start}-{end} to {dest} failed: {exc}"
            ) from None
        raise
    return method


def _start_pts(stream) -> int:
    return stream.start_time if stream.start_time is not None else 0


def _index(pts: int, t0: int, tb, fps: float) -> int:
    return int(round(float((pts - t0) * tb) * fps))


def _stream_copy(source: str, dest: Path, start: int, end: int, fps: float) -> None:
    import av

    with av.open(source) as inp, av.open(str(dest), "w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        tb, t0 = stream.time_base, _start_pts(stream)
        inp.seek(t0 + int(start / fps / tb), stream=stream, backward=True)
        offset = None
        for packet in inp.demux(stream):
            if packet.pts is None or packet.dts is None:
                continue
            index = _index(packet.pts, t0, tb, fps)
            if packet.is_keyframe and index >= end:
                break
            if index < start or index >= end:
                continue  # leading pictures before the start keyframe
            if offset is None:
                offset = packet.dts
            packet.pts -= offset
            packet.dts -= offset
            packet.stream = ostream
            out.mux(packet)


def _reencode(source: str, dest: Path, start: int, end: int, fps: float, cfg: ClipConfig) -> None:
    import av

    with av.open(source) as inp, av.open(str(dest), "w") as out:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        tb, t0 = stream.time_base, _start_pts(stream)
        rate = stream.average_rate or Fraction(fps).limit_denominator(1001)
        ostream = out.add_stream("libx264", rate=rate)
        ostream.width = stream.codec_context.width // 2 * 2
        ostream.height = stream.codec_context.height // 2 * 2
        ostream.pix_fmt = "yuv420p"
        ostream.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        inp.seek(t0 + int(start / fps / tb), stream=stream, backward=True)
        written = 0
        for frame in inp.decode(stream):
            index = _index(frame.pts, t0, tb, fps) if frame.pts is not None else start + written
            if index < start:
                continue
            if index >= end:
                break
            frame = frame.reformat(width=ostream.width, height=ostream.height, format="yuv420p")
            frame.pts = written
            frame.time_base = Fraction(1, 1) / rate
            for packet in ostream.encode(frame):
                out.mux(packet)
            written += 1
        for packet in ostream.encode(None):
            out.mux(packet)
