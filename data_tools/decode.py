"""One streaming decode of a source at a small analysis size: probe, then frames in chunks.

PyAV is the default: frame-threaded decoding without the deblocking filter, scaled by one reused
swscale context; measured faster than decord's resizing reader (scripts/bench/curation.py).
decord is an option, falling back to PyAV for files it cannot open. Both raise VideoReadError
naming the file and the problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vidiff.errors import VideoReadError
from vidiff.video import VideoInfo

# A source may decode a few frames fewer than its container claims (edit lists, a dropped tail
# B-frame); more than this share missing means the file is truncated.
MISSING_FRAMES_TOLERANCE = 0.02
# Frame threads pay off only on large frames: on small ones handing frames between threads costs
# more than the decoding it spreads (64x64 H.264: 1.6x the CPU and wall time of one thread;
# 176x144: 1.1-1.6x).
FRAME_THREADS_MIN_PIXELS = 320 * 240
INTRA_PICTURE = 1  # AVPictureType's I: an intra-coded frame (key_frame is only set on IDR frames)


def quiet_ffmpeg() -> None:
    """Silence decord's libav chatter. PyAV is left alone: it ignores libav's log by default, and
    setting any level installs a Python log callback that deadlocks with frame-threaded decoding
    (a decoder thread logging a corrupt packet waits for the GIL that the decoding call holds)."""
    try:
        import decord.logging

        decord.logging.set_level(decord.logging.QUIET)
    except ImportError:  # pragma: no cover - decord is a core dependency
        pass


def probe_source(path: str | Path) -> VideoInfo:
    """Read the container header of `path`; raise VideoReadError for anything that is not a video."""
    container, info = open_source(path)
    container.close()
    return info


def open_source(path: str | Path):
    """(open PyAV container, VideoInfo) for `path`; the caller closes the container."""
    import av

    path = str(path)
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise VideoReadError(f"{path}: is a folder, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoReadError(f"{path}: not readable (permission denied); fix its permissions")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes); re-download or remove it")
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoReadError(
            f"{path}: not a readable video ({_short(exc)}); the file may be truncated or not a video"
        ) from None
    try:
        info = _info(container, path)
    except BaseException:
        container.close()
        raise
    return container, info


def _info(container, path: str) -> VideoInfo:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no"]
        raise VideoReadError(
            f"{path}: has no video stream (found {', '.join(kinds)} streams); pass video files only"
        )
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if fps <= 0:
        raise VideoReadError(
            f"{path}: has no frame rate in its header; remux it (ffmpeg -i IN -c copy OUT.mp4)"
        )
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    num_frames = int(stream.frames) or int(round(duration * fps))
    width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    if width <= 0 or height <= 0 or num_frames <= 0:
        raise VideoReadError(f"{path}: video stream has no frames or no size; the file is damaged")
    return VideoInfo(
        path, num_frames, fps, width, height, duration or num_frames / fps, stream.codec_context.name
    )


def analysis_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(h, w) near `target_width` keeping the aspect ratio; sides are multiples of 8, never upscaled
    past the source by more than that rounding."""
    w = max(8, min(target_width, width) // 8 * 8)
    h = max(8, int(round(height * w / width / 8)) * 8)
    return h, w


def iter_frames(
    path: str,
    size: tuple[int, int],
    backend: str = "pyav",
    chunk: int = 32,
    opened=None,
    keyframes: list[bool] | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 RGB chunks [n, h, w, 3] of every frame of `path`, resized to `size` = (h, w).

    Raises VideoReadError if decoding fails part-way (a corrupt middle) or ends early (truncated).
    `opened` = open_source(path)'s result saves opening the file again (the caller closes it).
    `keyframes`: a list that PyAV's reader fills with one flag per frame, true for intra-coded frames
    (decord does not say; the list stays empty).
    """
    if backend == "decord":
        try:
            yield from _iter_decord(path, size, chunk)
            return
        except _OpenFailed:
            pass  # let PyAV try containers decord cannot open
    elif backend != "pyav":
        raise VideoReadError(f"unknown decode backend {backend!r}; use 'pyav' or 'decord'")
    if opened is None:
        container, info = open_source(path)
        with container:
            yield from _iter_pyav(container, info, size, chunk, keyframes)
    else:
        yield from _iter_pyav(*opened, size, chunk, keyframes)


class _OpenFailed(Exception):
    pass


def _iter_decord(path: str, size: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    import decord

    h, w = size
    try:
        reader = decord.VideoReader(path, width=w, height=h, num_threads=0)
    except (decord.DECORDError, RuntimeError) as exc:
        raise _OpenFailed(str(exc)) from None
    total = len(reader)
    buf = np.empty((chunk, h, w, 3), np.uint8)
    n = done = 0
    try:
        for _ in range(total):
            buf[n] = reader.next().asnumpy()
            n += 1
            if n == chunk:
                yield buf
                done += n
                n = 0
                buf = np.empty_like(buf)
    except StopIteration:
        pass
    except (decord.DECORDError, RuntimeError):
        # decord's own message is a C++ check with a clock time in it: say what it means instead
        raise VideoReadError(
            f"{path}: decoding failed around frame {done + n} of {total} (invalid data); the file is corrupt or truncated"
        ) from None
    if n:
        yield buf[:n]
    _check_count(path, done + n, total)


def _iter_pyav(
    container, info: VideoInfo, size: tuple[int, int], chunk: int, keyframes: list[bool] | None = None
) -> Iterator[np.ndarray]:
    import av
    from av.video.reformatter import VideoReformatter

    h, w = size
    buf = np.empty((chunk, h, w, 3), np.uint8)
    n = done = 0
    # one scaler for the whole file: frame.reformat() would build a new swscale context per frame
    scaler = VideoReformatter()
    stream = container.streams.video[0]
    if info.width * info.height >= FRAME_THREADS_MIN_PIXELS:
        stream.thread_type = "AUTO"
    if info.width >= 2 * w:
        # deblocking is ~15% of H.264 decoding, and invisible once frames are scaled down 2x+
        stream.codec_context.options = {"skip_loop_filter": "all", "flags2": "+fast"}
    try:
        for frame in container.decode(stream):
            # threads=1: swscale's own threads cost more than they save on analysis-size frames
            # (64 px: 35 -> 8 us a frame; 640x272 -> 160 px: 157 -> 125 us)
            rgb = scaler.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA", threads=1)
            # straight from the plane into the chunk: to_ndarray() allocates and copies once more
            buf[n] = np.frombuffer(rgb.planes[0], np.uint8).reshape(h, -1)[:, : 3 * w].reshape(h, w, 3)
            if keyframes is not None:
                keyframes.append(frame.key_frame or int(frame.pict_type) == INTRA_PICTURE)
            n += 1
            if n == chunk:
                yield buf
                done += n
                n = 0
                buf = np.empty_like(buf)
    except (av.FFmpegError, OSError) as exc:
        raise VideoReadError(
            f"{info.path}: decoding failed around frame {done + n} of {info.num_frames} ({_short(exc)}); the file is corrupt or truncated"
        ) from None
    if n:
        yield buf[:n]
    _check_count(info.path, done + n, info.num_frames)


def _check_count(path: str, decoded: int, expected: int) -> None:
    if decoded == 0:
        raise VideoReadError(f"{path}: no frame could be decoded; the file is damaged")
    if decoded < expected * (1 - MISSING_FRAMES_TOLERANCE) - 1:
        raise VideoReadError(
            f"{path}: truncated: decoded {decoded} of {expected} frames; re-download or re-encode it"
        )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[-160:] if len(text) > 160 else text
