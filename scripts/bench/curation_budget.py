"""Where our curation pipeline's time goes per frame, next to the decode-only ceiling of
scripts/bench/curation.py, and the best ours/ceiling ratio that work allows.

    python scripts/bench/curation_budget.py [--repeats 5] [--toy 4] [VIDEO ...]

Each analysis step runs alone on frames decoded beforehand (warm caches, no decoder beside it), so
its figure is a floor on what it costs inside the pipeline. Our pipeline decodes with our decoder,
which is one of the bench's two ceiling decoders, so ours costs at least ceiling + steps, and
ours / ceiling <= ceiling / (ceiling + steps); the 0.7 target needs steps <= 0.43 x ceiling.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curation import DECODERS, ROOT, decode_analysis, decode_pyav, ours  # noqa: E402

sys.path.insert(0, str(ROOT))
from data_tools.cuts import CutFeatures, detect_cuts  # noqa: E402
from data_tools.decode import analysis_size, iter_frames, probe_source  # noqa: E402
from data_tools.motion import FlowSampler, _dis_for, sample_step  # noqa: E402


def best_cpu(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--toy", type=int, default=4, help="toy-world raw videos (used when no VIDEO is given)")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # as inside analyze()
    with tempfile.TemporaryDirectory() as tmp:
        paths = list(args.videos)
        if not paths:
            from vidiff.toyworld import write_raw_video

            for k in range(args.toy):
                write_raw_video(Path(tmp) / f"raw{k}.mp4", seed=k)
                paths.append(str(Path(tmp) / f"raw{k}.mp4"))
        sources = []  # (fps, rgb chunks, gray chunks)
        for p in paths:
            info = probe_source(p)
            rgb = [c.copy() for c in iter_frames(p, analysis_size(info.width, info.height, 160))]
            gray = [
                cv2.cvtColor(c.reshape(-1, c.shape[2], 3), cv2.COLOR_RGB2GRAY).reshape(c.shape[:3])
                for c in rgb
            ]
            sources.append((info.fps, rgb, gray))
        frames = sum(len(c) for _, rgb, _ in sources for c in rgb)

        def gray_step():
            for _, rgb, _ in sources:
                for c in rgb:
                    cv2.cvtColor(c.reshape(-1, c.shape[2], 3), cv2.COLOR_RGB2GRAY)

        def hsv_only():
            for _, rgb, _ in sources:
                for c in rgb:
                    cv2.cvtColor(c.reshape(-1, c.shape[2], 3), cv2.COLOR_RGB2HSV)

        def cut_features():
            for fps, rgb, gray in sources:
                f = CutFeatures()
                for c, g in zip(rgb, gray, strict=True):
                    f.push(c, g)
                detect_cuts(f.arrays(), fps)

        def flow():
            for fps, _, gray in sources:
                s = FlowSampler(fps)
                for g in gray:
                    s.push(g)

        def dis_only():  # the optical flow solver alone on the same sample pairs, nothing else
            for fps, _, gray in sources:
                g = np.concatenate(gray)
                dis, step = _dis_for(g[0].shape), sample_step(fps, 2.0)
                for i in range(0, len(g) - step, step):
                    dis.calc(g[i], g[i + step], None)

        def decode_one_thread():  # not a ceiling of the bench: shows what frame threads cost here
            import av

            for p in paths:
                with av.open(p) as c:
                    for _ in c.decode(c.streams.video[0]):
                        pass

        us = {}
        for name, fn in {
            DECODERS[0]: lambda: decode_pyav(paths),
            DECODERS[1]: lambda: decode_analysis(paths),
            "(decode only, PyAV full size, one thread)": decode_one_thread,
            "ours: whole pipeline": lambda: ours(paths),
            "step: gray conversion": gray_step,
            "step: cut features + detect_cuts": cut_features,
            "  of which the HSV conversion": hsv_only,
            "step: motion (DIS + gradient-weighted score)": flow,
            "  of which DIS alone": dis_only,
        }.items():
            us[name] = best_cpu(fn, args.repeats) / frames * 1e6
    ceiling = min(us[d] for d in DECODERS)
    print(f"{len(paths)} videos, {frames} frames; CPU microseconds per frame (best of {args.repeats}):")
    for name, v in us.items():
        print(f"  {name:46s} {v:7.1f} us  ({v / ceiling:.2f} x ceiling)")
    steps = us["step: gray conversion"] + us["step: cut features + detect_cuts"]
    steps += us["step: motion (DIS + gradient-weighted score)"]
    least = us["  of which DIS alone"] + us["  of which the HSV conversion"]
    print(f"  ours / ceiling measured: {ceiling / us['ours: whole pipeline']:.2f} (target >= 0.7)")
    print(
        f"  bound from the steps' floors:        ceiling / (ceiling + steps)    = {ceiling / (ceiling + steps):.2f}"
    )
    print(
        f"  bound from DIS + HSV conversion only: ceiling / (ceiling + DIS + HSV) = {ceiling / (ceiling + least):.2f}"
    )


if __name__ == "__main__":
    main()
