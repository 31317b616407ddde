"""Score curation against ground truth: cut precision/recall/F1 and static-clip precision/recall.

`python -m data_tools.curation_accuracy --videos 12` writes toy-world raw videos (which carry their truth in
NAME.json), curates them and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HARD_TOLERANCE = 1  # frames a hard cut may be off
GRADUAL_TOLERANCE = 2  # frames a detected transition may lie outside the true blended frames


def match_cuts(predicted: list[dict], transitions: list[dict]) -> dict:
    """One-to-one matching of detected cuts (`Cut.as_dict()`) to true transitions
    ({type, frame, start, end}: hard cuts have start == end == frame)."""
    used: set[int] = set()
    hits = 0
    for t in sorted(transitions, key=lambda t: t["frame"]):
        lo, hi = (
            (t["frame"] - HARD_TOLERANCE, t["frame"] + HARD_TOLERANCE)
            if t["start"] == t["end"]
            else (
                t["start"] - GRADUAL_TOLERANCE,
                t["end"] + GRADUAL_TOLERANCE,
            )
        )
        for k, c in enumerate(predicted):
            if k not in used and lo <= c["frame"] <= hi:
                used.add(k)
                hits += 1
                break
    return {"true": len(transitions), "predicted": len(predicted), "matched": hits}


def static_counts(rows: list[dict], static_spans: list[list[int]]) -> dict:
    """Clips whose motion was scored (kept, or dropped as static), labelled static when more than
    half their frames lie in a true static span."""
    tp = fp = fn = tn = 0
    for r in rows:
        if r["status"] == "error" or (r["status"] == "dropped" and r["reason"] != "static"):
            continue
        s, e = r["start_frame"], r["end_frame"]
        inside = sum(max(0, min(e, b) - max(s, a)) for a, b in static_spans)
        truth = inside * 2 > e - s
        pred = r["reason"] == "static"
        tp += truth and pred
        fp += pred and not truth
        fn += truth and not pred
        tn += not truth and not pred
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def prf(cut_counts: list[dict]) -> tuple[float, float, float]:
    """Precision, recall and F1 of pooled `match_cuts` counts."""
    m = sum(c["matched"] for c in cut_counts)
    p = m / max(1, sum(c["predicted"] for c in cut_counts))
    r = m / max(1, sum(c["true"] for c in cut_counts))
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def static_prf(static: list[dict]) -> dict:
    """Precision and recall of pooled `static_counts`, with the number of truly static clips."""
    tp, fp, fn = (sum(s[k] for s in static) for k in ("tp", "fp", "fn"))
    return {"precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "clips": tp + fn}


def scores(cut_counts: list[dict], static: list[dict]) -> dict:
    """Pool per-video counts into precision, recall and F1."""
    p, r, f1 = prf(cut_counts)
    st = static_prf(static)
    return {
        "cut_precision": p,
        "cut_recall": r,
        "cut_f1": f1,
        "static_precision": st["precision"],
        "static_recall": st["recall"],
        "cuts_true": sum(c["true"] for c in cut_counts),
        "static_clips_true": st["clips"],
        "clips_scored": sum(sum(s.values()) for s in static),
    }


def curated_result(out_dir: str | Path, source: str | Path) -> dict:
    """The per-source result a finished curation run in `out_dir` wrote for `source`; an error if it failed."""
    from data_tools.curate import result_path

    result = json.loads(result_path(out_dir, str(Path(source).resolve())).read_text())
    if result["error"]:
        raise RuntimeError(f"{source} failed to curate: {result['error']}")
    return result


def evaluate_sources(out_dir: str | Path, sources: list[str]) -> dict:
    """Scores of a finished curation run in `out_dir` over `sources` with truth in NAME.json."""
    cut_counts, static = [], []
    for src in sources:
        truth = json.loads(Path(src).with_suffix(".json").read_text())
        result = curated_result(out_dir, src)
        cut_counts.append(match_cuts(result["cuts"], truth["transitions"]))
        static.append(static_counts(result["rows"], truth["static_spans"]))
    return scores(cut_counts, static)


def evaluate_toyworld(
    num_videos: int = 12, work_dir: str | Path | None = None, seed: int = 0, workers: int = 0, cfg=None
) -> dict:
    """Write `num_videos` toy-world raw videos, curate them, score against their truth."""
    from data_tools.curate import curate
    from vidiff.toyworld import write_raw_video

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work_dir or tmp)
        videos = root / "raw"
        videos.mkdir(parents=True, exist_ok=True)
        sources = []
        for k in range(num_videos):
            path = videos / f"raw{seed + k:04d}.mp4"
            if not path.exists() or not path.with_suffix(".json").exists():
                write_raw_video(path, seed=seed + k)
            sources.append(str(path))
        curate(sources, root / "curated", cfg, workers=workers, progress=False)
        return evaluate_sources(root / "curated", sources)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.curation_accuracy", description=__doc__)
    p.add_argument("--videos", type=int, default=12, help="number of toy-world raw videos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None, help="keep the videos and the curation output here")
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    s = evaluate_toyworld(args.videos, args.work_dir, args.seed, args.workers)
    print(
        f"toy world, {args.videos} raw videos (seed {args.seed}), {s['cuts_true']} true cuts, {s['clips_scored']} clips scored"
    )
    print(f"cuts:   precision {s['cut_precision']:.3f}  recall {s['cut_recall']:.3f}  F1 {s['cut_f1']:.3f}")
    print(
        f"static: precision {s['static_precision']:.3f}  recall {s['static_recall']:.3f}  ({s['static_clips_true']} static clips)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
