"""Cut-detection accuracy on the degraded-footage set, ours beside PySceneDetect's detectors.

    python -m data_tools.evaluate --degraded [--set degraded/] [--split heldout] [--json scores.json]

Builds the set if the folder has none (`data_tools.degraded`), curates every file with our job, runs
PySceneDetect's AdaptiveDetector and ContentDetector at their defaults (`pip install scenedetect`;
results are cached beside the set) and prints hard-cut precision / recall / F1 per degradation and
per family, over all files and over the files made from real footage alone, plus our gradual-
transition and static-clip figures. Without `--degraded` it scores toy-world raw videos
(`data_tools.curation_accuracy`).

Hard-cut scoring: a predicted cut within `HARD_TOLERANCE` frames of a true hard cut is a hit (one to
one). PySceneDetect has no cut kinds, so each of its cuts counts as a hard cut; ours counts only the
cuts it calls hard (a true hard cut we call a dissolve is a miss). A predicted cut inside a true
gradual transition is left out of the hard-cut figures (it is scored by the gradual ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from data_tools.curation_accuracy import (
    GRADUAL_TOLERANCE,
    curated_result,
    match_cuts,
    prf,
    static_counts,
    static_prf,
)

DETECTORS = ("ours", "adaptive", "content")


def set_files(folder: str | Path, split: str = "heldout") -> list[Path]:
    """The set's videos (those with truth beside them) in `split` ("tune", "heldout" or "all")."""
    out = []
    for path in sorted(Path(folder).glob("*.mp4")):
        truth = path.with_suffix(".json")
        if truth.exists() and (split == "all" or json.loads(truth.read_text())["split"] == split):
            out.append(path)
    return out


def hard_counts(predicted: list[int], transitions: list[dict]) -> dict:
    """Hard-cut hits among `predicted` frames, leaving out predictions inside true gradual transitions."""
    gradual = [t for t in transitions if t["type"] != "hard"]
    inside = lambda f: any(t["start"] - GRADUAL_TOLERANCE <= f <= t["end"] + GRADUAL_TOLERANCE for t in gradual)  # noqa: E731
    scored = [{"frame": f} for f in predicted if not inside(f)]
    return match_cuts(scored, [t for t in transitions if t["type"] == "hard"])


def ours(files: list[Path], work: Path, workers: int, cfg=None) -> dict[str, dict]:
    """Per file: our cuts (Cut.as_dict) and manifest rows, from one curation run over `files`."""
    from data_tools.curate import curate

    curate([str(p) for p in files], work, cfg, workers=workers, progress=True)
    out = {}
    for p in files:
        result = curated_result(work, p)
        out[p.name] = {"cuts": result["cuts"], "rows": result["rows"]}
    return out


def pyscenedetect(files: list[Path], name: str, cache: Path) -> dict[str, list[int]]:
    """Per file: the first frames of the scenes after the first, from PySceneDetect's `name` detector."""
    try:
        import scenedetect
        from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video
    except ImportError:
        raise SystemExit("the comparison needs PySceneDetect: pip install scenedetect (or .[bench])") from None
    make = {"adaptive": AdaptiveDetector, "content": ContentDetector}[name]
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for p in files:
        stamp = [scenedetect.__version__, p.stat().st_size, p.stat().st_mtime_ns]
        saved = cache / f"{p.stem}.{name}.json"
        if saved.exists() and json.loads(saved.read_text())["stamp"] == stamp:
            out[p.name] = json.loads(saved.read_text())["cuts"]
            continue
        video = open_video(str(p), backend="pyav")
        manager = SceneManager()  # auto_downscale on: its default
        manager.add_detector(make())
        manager.detect_scenes(video)
        starts = [start for start, _ in manager.get_scene_list()[1:]]
        cuts = [s.frame_num if hasattr(s, "frame_num") else s.get_frames() for s in starts]  # 0.7 renamed it
        saved.write_text(json.dumps({"stamp": stamp, "cuts": cuts}))
        out[p.name] = cuts
    return out


def evaluate_degraded(
    folder: str | Path, split: str = "heldout", detectors=DETECTORS, workers: int = 2, cfg=None
) -> dict:
    """Counts per file and detector; `summarize` pools them."""
    files = set_files(folder, split)
    if not files:
        raise SystemExit(f"{folder}: no {split} files of the degraded set; build it: python -m data_tools.degraded --out {folder}")
    truths = {p.name: json.loads(p.with_suffix(".json").read_text()) for p in files}
    predicted: dict[str, dict[str, list[int]]] = {}
    records: dict[str, dict] = {p.name: {"truth": truths[p.name]} for p in files}
    if "ours" in detectors:
        with tempfile.TemporaryDirectory() as tmp:
            result = ours(files, Path(tmp), workers, cfg)
        predicted["ours"] = {k: [c["frame"] for c in r["cuts"] if c["kind"] == "hard"] for k, r in result.items()}
        for k, r in result.items():
            t = truths[k]
            gradual = [c for c in r["cuts"] if c["kind"] != "hard"]
            records[k]["gradual"] = match_cuts(gradual, [x for x in t["transitions"] if x["type"] != "hard"])
            if t["kind"] == "toy":
                records[k]["static"] = static_counts(r["rows"], t["static_spans"])
    for name in detectors:
        if name != "ours":
            predicted[name] = pyscenedetect(files, name, Path(folder) / "pyscenedetect")
    for name, per_file in predicted.items():
        for k, frames in per_file.items():
            records[k][name] = hard_counts(frames, truths[k]["transitions"])
    return records


def summarize(records: dict[str, dict], detectors=DETECTORS) -> dict:
    """Precision / recall / F1 pooled per degradation, per family, overall, and over real footage alone."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records.values():
        t = rec["truth"]
        for key in (f"degradation:{t['degradation']['name']}", f"family:{t['degradation']['family']}", "all",
                    f"footage:{t['kind']}"):
            groups[key].append(rec)
    out = {}
    for key, recs in groups.items():
        row = {"files": len(recs), "hard_cuts": sum(r[detectors[0]]["true"] for r in recs)}
        for name in detectors:
            row[name] = dict(zip(("precision", "recall", "f1"), prf([r[name] for r in recs]), strict=True))
        if "ours" in detectors:
            row["ours_gradual"] = dict(zip(("precision", "recall", "f1"), prf([r["gradual"] for r in recs]), strict=True))
            static = [r["static"] for r in recs if "static" in r]
            if static:
                row["ours_static"] = static_prf(static)
        out[key] = row
    return out


def format_table(summary: dict, detectors=DETECTORS) -> str:
    head = "| files | hard cuts | " + " | ".join(f"{d} P / R / F1" for d in detectors)
    extra = " | ours gradual F1 | ours static P / R |" if "ours" in detectors else " |"
    lines = [head + extra, "|" + "---|" * (2 + len(detectors) + (3 if "ours" in detectors else 1))]
    order = sorted(summary, key=lambda k: (k.split(":")[0] != "degradation", k.split(":")[0] != "family", k))
    for key in order:
        row = summary[key]
        cells = [key, str(row["hard_cuts"])]
        for d in detectors:
            s = row[d]
            cells.append(f"{s['precision']:.3f} / {s['recall']:.3f} / **{s['f1']:.3f}**")
        if "ours" in detectors:
            cells.append(f"{row['ours_gradual']['f1']:.3f}")
            st = row.get("ours_static")
            cells.append(f"{st['precision']:.3f} / {st['recall']:.3f}" if st else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--degraded", action="store_true", help="score the degraded-footage set")
    p.add_argument("--set", default="degraded", help="the set's folder (built there if empty)")
    p.add_argument("--split", default="heldout", choices=("heldout", "tune", "all"))
    p.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated: ours, adaptive, content")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the pooled figures here")
    p.add_argument("--videos", type=int, default=12, help="without --degraded: toy-world raw videos to score")
    p.add_argument("--seed", type=int, default=0, help="without --degraded: the first toy video's seed")
    args = p.parse_args(argv)
    if not args.degraded:
        from data_tools.curation_accuracy import main as toy_main

        return toy_main(["--videos", str(args.videos), "--seed", str(args.seed)])
    detectors = tuple(d.strip() for d in args.detectors.split(",") if d.strip())
    unknown = set(detectors) - set(DETECTORS)
    if unknown:
        raise SystemExit(f"--detectors: unknown {sorted(unknown)}; choose from {', '.join(DETECTORS)}")
    if not set_files(args.set, "all"):
        from data_tools.degraded import build

        build(args.set)
    records = evaluate_degraded(args.set, args.split, detectors, args.workers)
    summary = summarize(records, detectors)
    print(f"degraded set {args.set}, split {args.split}: {len(records)} files")
    print(format_table(summary, detectors))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
