"""Toy-world prompts for evaluating a trained model: a held-out split of (colour, shape, direction)
combinations that training never shows, and a sample of the combinations it does show."""

from __future__ import annotations

import itertools

import numpy as np

from vidiff.toyworld.world import COLORS, MOTIONS, SHAPES, SceneSpec, caption

DIRECTIONS = tuple(m for m in MOTIONS if m != "still")  # left, right, up, down
HOLDOUT_PER_MOTION = 3  # (colour, shape) pairs per direction held out of training
TRAIN_PROMPTS_TO_SCORE = 12


def holdout_triples(seed: int, per_motion: int = HOLDOUT_PER_MOTION) -> list[tuple[str, str, str]]:
    """Held-out (colour, shape, direction) triples: no colour or shape is held out twice per direction."""
    rng = np.random.default_rng(seed + 17)
    out = []
    for motion in DIRECTIONS:
        colors = list(rng.permutation(list(COLORS)))[:per_motion]
        shapes = list(rng.permutation(list(SHAPES)))
        out += [(str(c), str(shapes[i % len(shapes)]), motion) for i, c in enumerate(colors)]
    return out


def prompt_of(color: str, shape: str, motion: str) -> str:
    """The caption training clips of that combination carry, e.g. 'a red circle moving left'."""
    return caption(SceneSpec(color, shape, motion))


def heldout_prompts(holdout: list[tuple[str, str, str]]) -> list[str]:
    return [prompt_of(*t) for t in holdout]


def train_prompts(
    seed: int, holdout: list[tuple[str, str, str]], n: int = TRAIN_PROMPTS_TO_SCORE
) -> list[str]:
    """`n` prompts drawn (by `seed`) from the moving combinations that are not held out."""
    rng = np.random.default_rng(seed + 29)
    held = {tuple(t) for t in holdout}
    pool = [t for t in itertools.product(COLORS, SHAPES, DIRECTIONS) if t not in held]
    pick = rng.choice(len(pool), n, replace=False)
    return [prompt_of(*pool[i]) for i in pick]
