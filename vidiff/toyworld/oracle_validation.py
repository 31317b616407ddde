"""Measures the oracle itself: accuracy on held-out ground-truth toy videos (raw and after an mp4 round
trip), and agreement on pure noise and on shuffled prompts next to what chance predicts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vidiff.toyworld.oracle import Oracle, summarize_scores
from vidiff.toyworld.world import (
    ATTRIBUTES,
    COLORS,
    MOTIONS,
    SHAPES,
    caption,
    parse_prompt,
    render,
    sample_spec,
)

SIZES = ((16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (32, 48))
FRAMES = (1, 4, 8, 16)


def _agreement(readings, prompts) -> dict:
    """Per-attribute accuracy of `readings` against `prompts`, keyed by attribute for the report's table."""
    summary = summarize_scores([Oracle.compare(r, p) for r, p in zip(readings, prompts, strict=True)])
    return {key: summary[f"{key}_accuracy"] for key in ATTRIBUTES}


def _truth_agreement(prompts_a, prompts_b) -> dict:
    """How often two prompt lists name the same attribute value: what a perfect oracle would score."""
    out = {}
    for key in ATTRIBUTES:
        pairs = [
            (parse_prompt(a)[key], parse_prompt(b)[key]) for a, b in zip(prompts_a, prompts_b, strict=True)
        ]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        out[key] = float(np.mean([a == b for a, b in pairs])) if pairs else None
    return out


def validate_oracle(
    n: int = 300,
    seed: int = 2024,
    sizes=SIZES,
    frames=FRAMES,
    mp4_share: float = 0.34,
    n_noise: int = 100,
    oracle: Oracle | None = None,
    progress: bool = False,
) -> dict:
    """Held-out check of the oracle. Returns:
    heldout: per-attribute accuracy and mean consistency on n fresh random toy videos (sizes, frame counts
      and an mp4 share as given); heldout_mp4: the same restricted to the mp4 round-trip ones;
    shuffled: agreement of the same videos with a shuffled prompt list, beside shuffled_truth (what a
      perfect oracle scores on that pairing) and chance (sum over values of p_video * p_prompt);
    noise: agreement of iid and smoothed noise videos with random prompts, beside noise_chance (1/K)."""
    from vidiff.video import read_video, write_video

    oracle = oracle or Oracle()
    rng = np.random.default_rng(seed)
    readings, prompts, via_mp4 = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        for _ in tqdm(range(n), desc="oracle held-out", disable=not progress):
            spec = sample_spec(rng)
            h, w = sizes[int(rng.integers(len(sizes)))]
            t = int(frames[int(rng.integers(len(frames)))])
            video = render(spec, t, h, w, seed=int(rng.integers(2**31)))
            mp4 = t > 1 and rng.random() < mp4_share
            if mp4:
                write_video(clip, video, fps=8)
                video = read_video(clip)
            readings.append(oracle.read(video))
            prompts.append(caption(spec, image=t == 1))
            via_mp4.append(mp4)
    heldout = _agreement(readings, prompts)
    heldout["consistency"] = float(np.mean([r["consistency"] for r in readings]))
    idx = [i for i, m in enumerate(via_mp4) if m]
    heldout_mp4 = _agreement([readings[i] for i in idx], [prompts[i] for i in idx])
    heldout_mp4["n"] = len(idx)

    shuffled_prompts = [prompts[i] for i in rng.permutation(n)]
    chance = {}
    for key, values in (("color", COLORS), ("shape", SHAPES), ("motion", MOTIONS)):
        true = [parse_prompt(p)[key] for p in prompts]
        true = [v for v in true if v is not None]
        chance[key] = float(sum((true.count(v) / len(true)) ** 2 for v in values)) if true else None

    noise_readings, noise_prompts = [], []
    for i in range(n_noise):
        h, w = sizes[int(rng.integers(len(sizes)))]
        t = int(frames[int(rng.integers(len(frames)))])
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        if i % 2 == 0:
            video = torch.rand(3, t, h, w, generator=gen) * 2 - 1
        else:  # smooth blobs: structured, object-like noise
            low = torch.rand(1, 3 * t, 4, 4, generator=gen)
            video = (
                torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear").view(3, t, h, w) * 2 - 1
            )
        noise_readings.append(oracle.read(video))
        noise_prompts.append(caption(sample_spec(rng), image=t == 1))
    noise = _agreement(noise_readings, noise_prompts)
    noise["consistency"] = float(np.mean([r["consistency"] for r in noise_readings]))

    return {
        "n": n,
        "heldout": heldout,
        "heldout_mp4": heldout_mp4,
        "shuffled": _agreement(readings, shuffled_prompts),
        "shuffled_truth": _truth_agreement(prompts, shuffled_prompts),
        "chance": chance,
        "noise": noise,
        "noise_chance": {"color": 1 / len(COLORS), "shape": 1 / len(SHAPES), "motion": 1 / len(MOTIONS)},
        "n_noise": n_noise,
    }


def format_report(r: dict) -> str:
    """The result of `validate_oracle` as a small text table."""
    lines = [
        f"held-out videos: {r['n']} (of them {r['heldout_mp4']['n']} after an mp4 round trip); noise: {r['n_noise']}",
        f"{'':28s}{'color':>8s}{'shape':>8s}{'motion':>8s}",
    ]
    rows = [
        ("held-out, true prompt", r["heldout"]),
        ("  of which mp4 round trip", r["heldout_mp4"]),
        ("shuffled prompts", r["shuffled"]),
        ("  perfect oracle would get", r["shuffled_truth"]),
        ("  chance (sum p^2)", r["chance"]),
        ("noise, random prompt", r["noise"]),
        ("  chance (1/K)", r["noise_chance"]),
    ]
    for name, row in rows:
        lines.append(f"{name:28s}" + "".join(f"{row[k]:8.3f}" for k in ATTRIBUTES))
    lines.append(
        f"mean consistency: held-out {r['heldout']['consistency']:.3f}, noise {r['noise']['consistency']:.3f}"
    )
    return "\n".join(lines)
