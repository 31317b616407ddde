"""Long "raw" toy videos for testing curation: scenes spliced with hard cuts, fades and static
stretches, with a ground-truth JSON beside the mp4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vidiff.errors import VidiffError
from vidiff.toyworld.world import COLORS, SHAPES, SceneSpec, caption, render_frames, sample_spec

TRANSITIONS = ("hard", "crossfade", "fade_black")


def _scene_spec(
    rng, prev: SceneSpec | None, similar: bool, still: bool, n_frames: int, side: int, holdout=frozenset(),
    object_size: tuple[float, float] = (0.16, 0.3),
) -> SceneSpec:
    """A raw-video scene. Moving objects travel 0.5-1.5 px per frame, so motion is unambiguous;
    `similar` keeps the previous background and one of colour/shape (the hard cuts to detect);
    (colour, shape, motion) triples in `holdout` never appear (kept for evaluation)."""
    kwargs: dict = {"size_range": tuple(object_size)}
    if still:
        kwargs["motions"] = ["still"]
    else:
        kwargs["motions"] = ["left", "right", "up", "down"]
        kwargs["speed_range"] = (0.5 * n_frames / side, 1.5 * n_frames / side)
    if prev is not None and similar:
        kwargs["backgrounds"] = [prev.background]
        if rng.random() < 0.5:
            kwargs["colors"] = [prev.color]
            kwargs["shapes"] = [s for s in SHAPES if s != prev.shape]
        else:
            kwargs["shapes"] = [prev.shape]
            kwargs["colors"] = [c for c in COLORS if c != prev.color]
    for _ in range(100):
        try:
            spec = sample_spec(rng, **kwargs)
        except VidiffError:  # this draw's size leaves no room for the minimum speed: draw again
            continue
        if (spec.color, spec.shape, spec.motion) not in holdout:
            return spec
    raise VidiffError(
        f"raw video: scene of {n_frames} frames at {side}px cannot fit a moving object of size "
        f"{object_size}; use shorter scenes or smaller objects"
    )


def write_raw_video(
    path,
    seed: int = 0,
    num_scenes: int = 8,
    height: int = 64,
    width: int = 64,
    fps: int = 12,
    scene_frames: tuple[int, int] = (24, 48),
    fade_frames: tuple[int, int] = (6, 12),
    transition_probs: tuple[float, float, float] = (0.5, 0.25, 0.25),
    still_share: float = 0.3,
    similar_share: float = 0.35,
    noise: float = 2.0,
    crf: int = 18,
    holdout=frozenset(),
    object_size: tuple[float, float] = (0.16, 0.3),
) -> dict:
    """Write a long mp4 at `path` and its ground truth at `path.with_suffix(".json")`; returns the truth.

    All frame ranges are end-exclusive [start, end). Ground truth keys:
      cuts: first frame of each new shot (for a fade, the first frame after the fade);
      transitions: {type: hard|crossfade|fade_black, frame, start, end, similar} — [start, end) are the
        blended frames (start == end == frame for a hard cut); similar: same background as the shot before;
      static_spans: [start, end) where the object and camera are still (only sensor noise changes);
      captions: {start_frame, end_frame, caption} per shot (the shot's pure frames, fades excluded).
    `holdout`: (colour, shape, motion) triples no scene shows, e.g. prompts kept back for evaluation.
    `object_size`: range of the objects' circle-equivalent diameter, as a fraction of the frame side.
    """
    from vidiff.video import write_video

    if num_scenes < 1:
        raise VidiffError(f"write_raw_video needs num_scenes >= 1, got {num_scenes}")
    rng = np.random.default_rng(seed)
    side = min(height, width)
    lengths = rng.integers(scene_frames[0], scene_frames[1] + 1, num_scenes)
    kinds = [str(k) for k in rng.choice(TRANSITIONS, num_scenes - 1, p=list(transition_probs))]
    fades = [0 if k == "hard" else int(rng.integers(fade_frames[0], fade_frames[1] + 1)) for k in kinds]
    still = rng.random(num_scenes) < still_share
    similar = [False] + list(rng.random(num_scenes - 1) < similar_share)
    # every test bed with room for them has each transition kind, a static scene and a similar cut
    if num_scenes - 1 >= len(TRANSITIONS):
        for kind in TRANSITIONS:
            if kind not in kinds:
                # overwrite a transition whose kind is present more than once
                slot = next(j for j in rng.permutation(num_scenes - 1) if kinds.count(kinds[j]) > 1)
                kinds[slot] = kind
                fades[slot] = 0 if kind == "hard" else int(rng.integers(fade_frames[0], fade_frames[1] + 1))
    if num_scenes >= 3 and still_share > 0 and not still.any():
        still[rng.integers(num_scenes)] = True
    if num_scenes >= 3 and similar_share > 0 and not any(similar):
        similar[1 + rng.integers(num_scenes - 1)] = True

    # shot i's pure frames are [starts[i], ends[i]); transition i fills [ends[i], starts[i+1])
    starts, ends, cursor = [], [], 0
    for i in range(num_scenes):
        starts.append(cursor)
        ends.append(cursor + int(lengths[i]))
        cursor = ends[-1] + (fades[i] if i < num_scenes - 1 else 0)
    total = cursor

    specs, layers = [], []
    for i in range(num_scenes):
        lead = fades[i - 1] if i > 0 else 0
        tail = fades[i] if i < num_scenes - 1 else 0
        n = lead + int(lengths[i]) + tail
        spec = _scene_spec(rng, specs[-1] if specs else None, similar[i], bool(still[i]), n, side, frozenset(holdout), object_size)
        specs.append(spec)
        layers.append(
            (starts[i] - lead, render_frames(spec, n, height, width, seed=int(rng.integers(2**31))))
        )

    video = np.zeros((total, height, width, 3), np.float64)
    for i, (first, frames) in enumerate(layers):
        video[starts[i] : ends[i]] = frames[starts[i] - first : ends[i] - first]
    transitions = []
    for i, kind in enumerate(kinds):
        a_first, a = layers[i]
        b_first, b = layers[i + 1]
        lo, hi = ends[i], starts[i + 1]
        for f in range(lo, hi):
            w = (f - lo + 1) / (hi - lo + 1)  # weight of the incoming shot, strictly inside (0, 1)
            fa, fb = a[f - a_first], b[f - b_first]
            if kind == "crossfade":
                video[f] = (1 - w) * fa + w * fb
            else:  # through black: out over the first half, in over the second
                video[f] = fa * max(0.0, 1 - 2 * w) + fb * max(0.0, 2 * w - 1)
        transitions.append(
            {"type": kind, "frame": hi, "start": lo, "end": hi, "similar": bool(similar[i + 1])}
        )
    if noise > 0:
        video += rng.normal(0, noise, video.shape)
    frames = np.clip(np.round(video), 0, 255).astype(np.uint8)

    path = Path(path)
    write_video(path, frames, fps=fps, crf=crf)
    truth = {
        "video": path.name,
        "seed": seed,
        "num_frames": total,
        "fps": fps,
        "height": height,
        "width": width,
        "frame_ranges": "end-exclusive [start, end)",
        "cuts": [t["frame"] for t in transitions],
        "transitions": transitions,
        "static_spans": [[starts[i], ends[i]] for i in range(num_scenes) if still[i]],
        "captions": [
            {"start_frame": starts[i], "end_frame": ends[i], "caption": caption(specs[i])}
            for i in range(num_scenes)
        ],
        "scenes": [
            {
                "start_frame": starts[i],
                "end_frame": ends[i],
                "static": bool(still[i]),
                "spec": specs[i].to_dict(),
            }
            for i in range(num_scenes)
        ],
    }
    path.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    return truth
