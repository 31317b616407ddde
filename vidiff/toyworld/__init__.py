"""The synthetic shapes world (our MNIST): seeded captioned clips, long raw videos for curation, and an oracle."""

from vidiff.toyworld.dataset import ToyWorldDataset, generate_dataset
from vidiff.toyworld.oracle import Oracle, summarize_scores
from vidiff.toyworld.raw import TRANSITIONS, write_raw_video
from vidiff.toyworld.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLORS,
    MOTIONS,
    SHAPES,
    SceneSpec,
    caption,
    parse_prompt,
    render,
    render_frames,
    sample_spec,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "COLORS",
    "MOTIONS",
    "Oracle",
    "SHAPES",
    "SceneSpec",
    "TRANSITIONS",
    "ToyWorldDataset",
    "caption",
    "generate_dataset",
    "parse_prompt",
    "render",
    "render_frames",
    "sample_spec",
    "summarize_scores",
    "write_raw_video",
]
