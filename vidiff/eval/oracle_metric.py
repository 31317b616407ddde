"""The toy-world oracle as a metric: per-attribute accuracy against the prompts, and temporal consistency."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from vidiff.errors import VidiffError
from vidiff.toyworld.oracle import Oracle, summarize_scores
from vidiff.toyworld.world import ATTRIBUTES


def oracle_metric(
    items: Iterable[tuple[str, torch.Tensor, str]],
    oracle=None,
    total: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score (name, clip [C, T, H, W], prompt) items with `vidiff.toyworld.Oracle`; the figures are
    `vidiff.toyworld.oracle.summarize_scores`'s.

    `<attr>_accuracy` averages over the videos whose prompt names that attribute (None if none does);
    `all_correct` is the share of videos with every named attribute right; `consistency` is the mean
    of the oracle's per-video temporal consistency (presence x colour stability x size stability);
    `per_video` rows hold file, prompt, consistency, each attribute's verdict and `predicted`.
    """
    if oracle is None:
        oracle = Oracle()
    per_video = []
    for name, video, prompt in tqdm(items, total=total, desc="oracle", unit="video", disable=not progress):
        if not prompt or not prompt.strip():
            raise VidiffError(f"{name}: the prompt is empty; the oracle checks videos against their prompts")
        try:
            s = oracle.score(video, prompt)
        except VidiffError as exc:
            raise VidiffError(f"{name}: {exc}") from None
        row = {"file": name, "prompt": prompt, "consistency": float(s["consistency"])}
        row.update({a: s[a] for a in ATTRIBUTES})
        row["predicted"] = s["predicted"]
        per_video.append(row)
    if not per_video:
        raise VidiffError("oracle: no videos to score")
    return summarize_scores(per_video)
