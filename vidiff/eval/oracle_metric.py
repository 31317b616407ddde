"""The toy-world oracle as a metric: per-attribute accuracy against the prompts, and temporal consistency."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from vidiff.errors import VidiffError
from vidiff.toyworld.world import ATTRIBUTES


def oracle_metric(
    items: Iterable[tuple[str, torch.Tensor, str]],
    oracle=None,
    total: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score (name, clip [C, T, H, W], prompt) items with `vidiff.toyworld.Oracle`.

    `<attr>_accuracy` averages over the videos whose prompt names that attribute (None if none does);
    `all_correct` is the share of videos with every named attribute right; `consistency` is the mean
    of the oracle's per-video temporal consistency (presence x colour stability x size stability).
    """
    if oracle is None:
        from vidiff.toyworld import Oracle

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
    out: dict[str, Any] = {}
    for a in ATTRIBUTES:
        scored = [bool(v[a]) for v in per_video if v[a] is not None]
        out[f"{a}_accuracy"] = sum(scored) / len(scored) if scored else None
        out[f"{a}_n"] = len(scored)
    named = [[v[a] for a in ATTRIBUTES if v[a] is not None] for v in per_video]
    out["all_correct"] = sum(all(n) for n in named if n) / max(1, sum(1 for n in named if n))
    out["consistency"] = sum(v["consistency"] for v in per_video) / len(per_video)
    out["n_videos"] = len(per_video)
    out["per_video"] = per_video
    return out
