"""Video files in and out: read clips (decord, PyAV fallback), write mp4/GIF, map frames <-> [C,T,H,W] tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidiff.errors import VideoReadError, VidiffError

BACKENDS = ("decord", "pyav")
# Set VIDIFF_VIDEO_BACKEND=pyav (or decord) to force one reader everywhere.
BACKEND_ENV = "VIDIFF_VIDEO_BACKEND"
# Containers decord reads reliably; anything else (gif, webm oddities) goes straight to PyAV.
_DECORD_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"}


@dataclass
class VideoInfo:
    """What a container says about a video, at its full size; `codec` is empty when the reader does not say."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    duration: float
    codec: str = ""


# ---------------------------------------------------------------- tensor <-> uint8


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[C,T,H,W] float in [-1,1] -> [T,H,W,3] uint8. Values are clamped, then rounded to the nearest level."""
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[0] not in (1, 3):
        shape = tuple(getattr(video, "shape", ()))
        raise VidiffError(f"to_uint8 expects a [C,T,H,W] tensor with C in (1, 3), got shape {shape}")
    x = video.detach().to("cpu", torch.float32)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1, -1)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(rearrange(x, "c t h w -> t h w c").numpy())


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """[T,H,W,3] uint8 -> [C,T,H,W] float32 in [-1,1]; exact inverse of `to_uint8` on these values."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VidiffError(f"from_uint8 expects [T,H,W,3] uint8 frames, got {frames.shape} {frames.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32)
    return rearrange(x / 127.5 - 1.0, "t h w c -> c t h w").contiguous()


# ---------------------------------------------------------------- probing


def _check_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise VideoReadError(f"{p}: is a directory, not a video file; pass a video file inside it")
    if not p.is_file():
        raise VideoReadError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise VideoReadError(f"{p}: file is empty (0 bytes); re-export or re-download it")
    return p


def probe_video(path) -> VideoInfo:
    """Frame count, fps and size of a video, read with PyAV (safe on corrupt files, unlike decord)."""
    import av

    p = _check_path(path)
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{p}: has no video stream; pass a video file")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            width, height = stream.codec_context.width, stream.codec_context.height
            num_frames = int(stream.frames or 0)
            if num_frames <= 0:
                # Containers without a frame index (GIF, some mkv/webm): count packets.
                num_frames = sum(1 for pkt in container.demux(stream) if pkt.size)
    except VideoReadError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoReadError(
            f"{p}: cannot be opened as a video ({_short(exc)}); the file is truncated, corrupt or not a video"
        ) from None
    if num_frames <= 0 or width <= 0 or height <= 0:
        raise VideoReadError(f"{p}: contains no decodable frames; the file is truncated or corrupt")
    if fps <= 0:
        fps = 25.0  # containers without timing info; the conventional default
    return VideoInfo(str(p), num_frames, fps, width, height, num_frames / fps)


def _short(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc).strip()
    msg = msg.splitlines()[0] if msg else type(exc).__name__
    return msg[:200]


# ---------------------------------------------------------------- reading


def frame_indices(
    num_frames: int, src_fps: float, start=0, end=None, stride=1, fps=None, path="video"
) -> np.ndarray:
    """Source frame indices for range [start, end), resampled to `fps` (if given) and then strided."""
    end = num_frames if end is None else int(end)
    start = int(start)
    if start < 0 or end < 0:
        raise VideoReadError(f"{path}: negative frame range [{start}, {end}); use indices >= 0")
    if start >= num_frames:
        raise VideoReadError(
            f"{path}: start frame {start} is past the end; the video has {num_frames} frames"
        )
    if end > num_frames:
        raise VideoReadError(
            f"{path}: frame range [{start}, {end}) is past the end; the video has {num_frames} frames"
        )
    if end <= start:
        raise VideoReadError(f"{path}: empty frame range [{start}, {end}); need start < end")
    if stride < 1:
        raise VideoReadError(f"{path}: stride must be >= 1, got {stride}")
    if fps is not None:
        if fps <= 0:
            raise VideoReadError(f"{path}: target fps must be > 0, got {fps}")
        step = src_fps / float(fps)  # source frames per output frame
        n_out = max(1, int(np.floor((end - start) / step + 1e-9)))
        idx = start + np.floor(np.arange(n_out) * step + 1e-9).astype(np.int64)
        idx = idx[idx < end]
    else:
        idx = np.arange(start, end, dtype=np.int64)
    return idx[::stride]


def _resize(frames: np.ndarray, size) -> np.ndarray:
    import cv2

    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise VidiffError(f"size must be (H, W) with positive values, got {size}")
    if frames.shape[1:3] == (h, w):
        return frames
    down = h * w < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if down else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def _read_decord(path: Path, idx: np.ndarray) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    if int(idx.max()) >= len(vr):
        raise IndexError(f"decord sees {len(vr)} frames")
    return vr.get_batch(idx.tolist()).asnumpy()


def _read_pyav(path: Path, idx: np.ndarray) -> np.ndarray:
    import av

    wanted: dict[int, list[int]] = {}
    for pos, i in enumerate(idx.tolist()):
        wanted.setdefault(i, []).append(pos)
    out: list[np.ndarray | None] = [None] * len(idx)
    last = int(idx.max())
    n = -1
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    arr = frame.to_ndarray(format="rgb24")
                    for pos in wanted[n]:
                        out[pos] = arr
                if n >= last:
                    break
        except av.error.FFmpegError as exc:
            raise VideoReadError(
                f"{path}: decoding failed after {n + 1} frames ({_short(exc)}); the file is truncated or corrupt"
            ) from None
    if any(o is None for o in out):
        raise VideoReadError(
            f"{path}: only {n + 1} frames could be decoded but frame {last} was requested; the file is truncated or corrupt"
        )
    return np.stack(out)


def read_frames(path, start=0, end=None, stride=1, fps=None, size=None, backend=None) -> np.ndarray:
    """Frames [T,H,W,3] uint8 for range [start, end) (end exclusive), optional target fps, stride, size=(H, W).

    backend: None (decord, then PyAV if decord fails), "decord" or "pyav"; env VIDIFF_VIDEO_BACKEND sets the default.
    """
    info = probe_video(path)  # validates the file with PyAV first: decord can crash on corrupt input
    p = Path(info.path)
    idx = frame_indices(info.num_frames, info.fps, start, end, stride, fps, path=p)
    backend = backend or os.environ.get(BACKEND_ENV) or None
    if backend is not None and backend not in BACKENDS:
        raise VidiffError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    frames = None
    if backend == "decord" or (backend is None and p.suffix.lower() in _DECORD_SUFFIXES):
        try:
            frames = _read_decord(p, idx)
        except Exception as exc:  # decord raises bare DECORDError/RuntimeError on anything odd
            if backend == "decord":
                raise VideoReadError(
                    f"{p}: decord cannot read it ({_short(exc)}); try backend='pyav'"
                ) from None
    if frames is None:
        frames = _read_pyav(p, idx)
    if size is not None:
        frames = _resize(frames, size)
    return np.ascontiguousarray(frames)


def read_video(path, start=0, end=None, stride=1, fps=None, size=None, backend=None) -> torch.Tensor:
    """Clip [C,T,H,W] float32 in [-1,1]; arguments as `read_frames`."""
    return from_uint8(read_frames(path, start, end, stride, fps, size, backend))


# ---------------------------------------------------------------- writing


def _as_frames(video) -> np.ndarray:
    if isinstance(video, torch.Tensor):
        return to_uint8(video)
    arr = np.asarray(video)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise VidiffError(
            f"write_video expects a [C,T,H,W] float tensor in [-1,1] or [T,H,W,3] uint8 frames, got {arr.shape} {arr.dtype}"
        )
    return np.ascontiguousarray(arr)


def _pick_codec() -> str:
    import av

    for name in ("libx264", "libopenh264", "h264", "mpeg4"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:
                continue
    raise VidiffError(
        "the installed PyAV has no usable video encoder (tried libx264, libopenh264, h264, mpeg4)"
    )


def write_video(path, video, fps: float = 8, crf: int = 18, pix_fmt: str | None = None) -> Path:
    """Write [C,T,H,W] float in [-1,1] or [T,H,W,3] uint8 to `.mp4` (H.264) or `.gif`, chosen by suffix.

    mp4 uses yuv420p (plays everywhere) when H and W are even; odd sizes use yuv444p so the exact size
    is kept with no padding (PyAV/decord/ffmpeg read it; some browsers do not). `crf` 0..51, lower is better.
    """
    frames = _as_frames(video)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".gif":
        _write_gif(p, frames, fps)
    elif suffix in (".mp4", ".m4v", ".mov", ".mkv"):
        _write_mp4(p, frames, fps, crf, pix_fmt)
    else:
        raise VidiffError(f"{p}: unsupported output suffix {p.suffix!r}; use .mp4 or .gif")
    return p


def _write_mp4(p: Path, frames: np.ndarray, fps: float, crf: int, pix_fmt: str | None) -> None:
    import av

    t, h, w, _ = frames.shape
    codec = _pick_codec()
    h264 = codec in ("libx264", "h264")
    if pix_fmt is None:
        pix_fmt = "yuv420p" if (h % 2 == 0 and w % 2 == 0) or not h264 else "yuv444p"
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        # Encoders without 4:4:4 (mpeg4, openh264): pad one edge pixel by repetition.
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        t, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(p), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if h264:
            stream.options = {"crf": str(int(crf)), "preset": "medium"}
        else:
            stream.bit_rate = max(200_000, 8 * h * w * int(np.ceil(fps)))
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_gif(p: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    duration_ms = max(20, int(round(1000 / fps)))  # browsers clamp shorter GIF delays
    images[0].save(p, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, disposal=1)
