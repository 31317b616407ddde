"""The toy world's vocabulary and renderer: palette, shapes, motions, backgrounds, scene specs and captions."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
from einops import rearrange

from vidiff.errors import VidiffError

# Saturated colours, pairwise >= ~150 apart in RGB and far from every background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (45, 85, 235),
    "yellow": (240, 220, 40),
    "magenta": (215, 50, 215),
    "cyan": (40, 215, 225),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "still")
ATTRIBUTES = ("color", "shape", "motion")  # what a prompt names and the oracle checks
# name -> (top-left RGB, bottom-right RGB, gradient direction): plain or linear gradients, low saturation.
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], str]] = {
    "dark": ((20, 20, 26), (20, 20, 26), "none"),
    "light": ((238, 236, 228), (176, 182, 196), "vertical"),
    "dusk": ((58, 40, 86), (22, 52, 66), "diagonal"),
}
# Equal-area shapes (so area says nothing about shape); sizes in units of the circle's diameter.
_SQUARE_SIDE = float(np.sqrt(np.pi) / 2)
_TRIANGLE_SIDE = float(np.sqrt(np.pi / np.sqrt(3)))
# Half-extents (left, right, up, down) of each shape around its centre (the centroid for the triangle).
_T_H = _TRIANGLE_SIDE * np.sqrt(3) / 2
EXTENTS = {
    "circle": (0.5, 0.5, 0.5, 0.5),
    "square": (_SQUARE_SIDE / 2,) * 4,
    "triangle": (_TRIANGLE_SIDE / 2, _TRIANGLE_SIDE / 2, 2 * _T_H / 3, _T_H / 3),
}
_DIRECTION = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}


@dataclass
class SceneSpec:
    """One object on one background. Positions are fractions of width/height (centre of the shape at
    the first frame); `size` is the circle-equivalent diameter as a fraction of min(H, W); `speed` is
    the distance travelled over the whole clip as a fraction of the frame, so a clip rendered with
    more frames shows the same path at a higher frame rate."""

    color: str
    shape: str
    motion: str
    background: str = "dark"
    size: float = 0.35
    speed: float = 0.3
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self):
        for name, value, allowed in (
            ("color", self.color, tuple(COLORS)),
            ("shape", self.shape, SHAPES),
            ("motion", self.motion, MOTIONS),
            ("background", self.background, tuple(BACKGROUNDS)),
        ):
            if value not in allowed:
                raise VidiffError(f"unknown toy-world {name} {value!r}; choose one of {allowed}")

    def to_dict(self) -> dict:
        return asdict(self)

    def end_position(self) -> tuple[float, float]:
        dx, dy = _DIRECTION[self.motion]
        return self.x + dx * self.speed, self.y + dy * self.speed


def sample_spec(
    rng: np.random.Generator,
    colors=None,
    shapes=None,
    motions=None,
    backgrounds=None,
    size_range=(0.28, 0.45),
    speed_range=(0.2, 0.6),
    margin: float = 0.03,
) -> SceneSpec:
    """A random scene whose object stays inside a square frame, `margin` from its edges, along its path."""
    color = str(rng.choice(list(colors or COLORS)))
    shape = str(rng.choice(list(shapes or SHAPES)))
    motion = str(rng.choice(list(motions or MOTIONS)))
    background = str(rng.choice(list(backgrounds or BACKGROUNDS)))
    size = float(rng.uniform(*size_range))
    left, right, up, down = (e * size + margin for e in EXTENTS[shape])
    room_x, room_y = 1 - left - right, 1 - up - down
    dx, dy = _DIRECTION[motion]
    room = room_x if dx else room_y if dy else 0.0
    if motion != "still" and room < speed_range[0]:
        raise VidiffError(
            f"a {shape} of size {size:.2f} has room to travel {room:.2f} of the frame moving {motion}, "
            f"less than the minimum speed {speed_range[0]:.2f}; use smaller objects or slower/shorter scenes"
        )
    speed = float(rng.uniform(speed_range[0], min(speed_range[1], room))) if motion != "still" else 0.0
    # pick the start so that start and end both fit
    lo_x, hi_x = left + max(0, -dx) * speed, 1 - right - max(0, dx) * speed
    lo_y, hi_y = up + max(0, -dy) * speed, 1 - down - max(0, dy) * speed
    x, y = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
    return SceneSpec(color, shape, motion, background, size, speed, x, y)


def caption(spec: SceneSpec, image: bool = False) -> str:
    """'a red circle moving left', 'a green triangle staying still'; images drop the motion: 'a red circle'."""
    base = f"a {spec.color} {spec.shape}"
    if image:
        return base
    return f"{base} staying still" if spec.motion == "still" else f"{base} moving {spec.motion}"


_MOTION_RE = re.compile(r"\bmoving\s+(left|right|up|down)\b|\b(still)\b")


def parse_prompt(text: str) -> dict:
    """Colour, shape and motion named in a prompt, or None for each one it does not name."""
    words = re.findall(r"[a-z]+", text.lower())
    color = next((w for w in words if w in COLORS), None)
    shape = next((w for w in words if w in SHAPES), None)
    m = _MOTION_RE.search(text.lower())
    motion = None if m is None else (m.group(1) or "still")
    return {"color": color, "shape": shape, "motion": motion}


# ---------------------------------------------------------------- rendering


def coverage(shape: str, cx, cy, size_px, height: int, width: int) -> np.ndarray:
    """Antialiased coverage [N,H,W] in [0,1] of shapes centred at pixel coords (cx, cy) arrays of length N."""
    cx = np.asarray(cx, np.float64).reshape(-1, 1, 1)
    cy = np.asarray(cy, np.float64).reshape(-1, 1, 1)
    s = np.asarray(size_px, np.float64).reshape(-1, 1, 1)
    xs = np.arange(width, dtype=np.float64).reshape(1, 1, -1) + 0.5
    ys = np.arange(height, dtype=np.float64).reshape(1, -1, 1) + 0.5
    px, py = xs - cx, ys - cy
    if shape == "circle":
        d = np.sqrt(px**2 + py**2) - s / 2
    elif shape == "square":
        d = np.maximum(np.abs(px), np.abs(py)) - s * _SQUARE_SIDE / 2
    elif shape == "triangle":
        a = s * _TRIANGLE_SIDE
        h = a * np.sqrt(3) / 2
        top = -2 * h / 3
        d = np.maximum(
            py - h / 3,
            np.maximum(-np.sqrt(3) / 2 * px - (py - top) / 2, np.sqrt(3) / 2 * px - (py - top) / 2),
        )
    else:
        raise VidiffError(f"unknown toy-world shape {shape!r}; choose one of {SHAPES}")
    # signed distance -> area of a 1-pixel box filter, approximately
    return np.clip(0.5 - d, 0.0, 1.0)


def background(name: str, height: int, width: int, tint=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Background image [H,W,3] float in [0,255]."""
    if name not in BACKGROUNDS:
        raise VidiffError(f"unknown toy-world background {name!r}; choose one of {tuple(BACKGROUNDS)}")
    c0, c1, kind = BACKGROUNDS[name]
    ys = (np.arange(height) + 0.5)[:, None] / height
    xs = (np.arange(width) + 0.5)[None, :] / width
    w = {"none": np.zeros((height, width)), "vertical": ys + 0 * xs, "diagonal": (xs + ys) / 2}[kind]
    c0, c1 = np.asarray(c0, np.float64), np.asarray(c1, np.float64)
    img = c0 + (c1 - c0) * w[..., None]
    return np.clip(img + np.asarray(tint, np.float64), 0, 255)


def path(spec: SceneSpec, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalized centre (x, y) per frame; a single frame shows the middle of the path."""
    t = np.full(1, 0.5) if num_frames == 1 else np.linspace(0.0, 1.0, num_frames)
    x1, y1 = spec.end_position()
    return spec.x + (x1 - spec.x) * t, spec.y + (y1 - spec.y) * t


def render_frames(
    spec: SceneSpec, num_frames: int, height: int, width: int, seed: int = 0, noise: float = 0.0
):
    """Float frames [T,H,W,3] in [0,255]. `seed` jitters the exact tints (+-10 levels); `noise` adds
    Gaussian sensor noise with that std in levels."""
    if num_frames < 1 or height < 8 or width < 8:
        raise VidiffError(f"render needs num_frames >= 1 and H, W >= 8, got T={num_frames}, {height}x{width}")
    rng = np.random.default_rng(seed)
    bg = background(
        spec.background, height, width, tint=rng.uniform(-8, 8) * np.ones(3) + rng.uniform(-3, 3, 3)
    )
    color = np.clip(np.asarray(COLORS[spec.color], np.float64) + rng.uniform(-10, 10, 3), 0, 255)
    xs, ys = path(spec, num_frames)
    alpha = coverage(spec.shape, xs * width, ys * height, spec.size * min(height, width), height, width)[
        ..., None
    ]
    frames = bg[None] * (1 - alpha) + color * alpha
    if noise > 0:
        frames = frames + rng.normal(0, noise, frames.shape)
    return np.clip(frames, 0, 255)


def render(
    spec: SceneSpec, num_frames: int, height: int, width: int, seed: int = 0, noise: float = 0.0
) -> torch.Tensor:
    """Video [C,T,H,W] float32 in [-1,1] of `spec`; deterministic given (spec, sizes, seed)."""
    frames = render_frames(spec, num_frames, height, width, seed, noise)
    x = torch.from_numpy(frames.astype(np.float32) / 127.5 - 1.0)
    return rearrange(x, "t h w c -> c t h w").contiguous()
