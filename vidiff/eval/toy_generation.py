"""Generate videos for toy-world prompts from a text-to-video export and score them with the oracle:
how the demo and the experiment scripts measure a trained base stage."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def generate_per_prompt(
    export: str | Path, prompts: list[str], out_dir: str | Path, seeds_per_prompt: int = 1, seed: int = 0
) -> tuple[list[Path], list[str]]:
    """`seeds_per_prompt` videos per prompt in `out_dir` (with its prompts.jsonl); returns their paths and the
    prompts, each repeated `seeds_per_prompt` times. Videos already there for the same prompts are reused."""
    from vidiff.pipelines.text_to_video import generate_videos

    out = Path(out_dir)
    expanded = [p for p in prompts for _ in range(seeds_per_prompt)]
    if (out / "prompts.jsonl").is_file():
        records = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
        if [r["prompt"] for r in records] == expanded:
            return [out / r["file"] for r in records], expanded
    return generate_videos(export, expanded, out, seed=seed), expanded


def generate_and_score(
    export: str | Path, prompts: list[str], out_dir: str | Path, seeds_per_prompt: int = 1, seed: int = 0
) -> tuple[list[torch.Tensor], list[str], dict]:
    """`generate_per_prompt`, then the oracle's scores of the videos against their prompts.

    Returns the videos ([C, T, H, W] in [-1, 1]), the expanded prompts and `oracle_metric`'s result.
    """
    from vidiff.eval.oracle_metric import oracle_metric
    from vidiff.video import read_video

    paths, expanded = generate_per_prompt(export, prompts, out_dir, seeds_per_prompt, seed)
    videos = [read_video(p) for p in paths]
    scores = oracle_metric(
        [(p.name, v, prompt) for p, v, prompt in zip(paths, videos, expanded, strict=True)], progress=False
    )
    return videos, expanded, scores
