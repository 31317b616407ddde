"""The curation job: raw videos in; clips, per-source results and a manifest out.

`process_source` is the one per-video function; the local engine runs it in forked worker
processes, the Ray engine as Ray tasks. Each finished source leaves `OUT/sources/<key>.json`
(written atomically), so a rerun skips it and a killed job loses only the sources in flight.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.analyze import AnalysisConfig, analyze
from data_tools.captions import Captioner, caption_for, read_sidecar
from data_tools.clips import ClipConfig, keyframe_indices, plan_segments, write_clip
from vidiff.errors import VidiffError
from vidiff.manifest import write_manifest

VIDEO_SUFFIXES = {
    ".mp4",
    ".mov",
    ".mkv",
    ".avi",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".ts",
    ".3gp",
}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
RESULT_VERSION = 1


@dataclass
class CurateConfig:
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    # local engine: a source still running after this long is an error (0: never)
    source_timeout_s: float = 3600.0


# --------------------------------------------------------------------------- inputs and keys


def collect_sources(inputs: list[str]) -> list[str]:
    """Absolute paths of the videos named by `inputs`: files, folders (searched recursively for video
    suffixes) and list files (.txt/.lst/.list, one path per line, relative to the list). A path that
    does not exist is kept, so it becomes an error row rather than vanishing."""
    out: list[str] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            out.extend(
                str(f.resolve())
                for f in sorted(p.rglob("*"))
                if f.suffix.lower() in VIDEO_SUFFIXES and f.is_file()
            )
        elif p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line).expanduser()
                    out.append(str((q if q.is_absolute() else p.parent / q).resolve()))
        else:
            out.append(str(p.resolve()))
    return list(dict.fromkeys(out))


def source_key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def config_hash(cfg: CurateConfig, captioner: str | None) -> str:
    text = json.dumps(
        {"cfg": dataclasses.asdict(cfg), "captioner": captioner, "v": RESULT_VERSION}, sort_keys=True
    )
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _fingerprint(path: str) -> list:
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [None, None]


def result_path(out_dir: str | Path, path: str) -> Path:
    return Path(out_dir) / "sources" / f"{source_key(path)}.json"


def load_result(out_dir: str | Path, path: str, chash: str) -> dict | None:
    """The finished result for `path`, or None if missing, damaged, or made from other settings/bytes."""
    try:
        result = json.loads(result_path(out_dir, path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if (
        result.get("config") != chash
        or result.get("fingerprint") != _fingerprint(path)
        or result.get("source") != path
    ):
        return None
    return result


def remove_stale_temps(out_dir: Path) -> int:
    """Delete half-written files (".NAME.PID.tmp...") left by a killed process; keep a live one's."""
    removed = 0
    for folder in (out_dir, out_dir / "sources", out_dir / "clips"):
        for tmp in folder.glob(".*.tmp*") if folder.is_dir() else ():
            pid = tmp.name.split(".tmp")[0].rsplit(".", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # no fsync: after a power cut a result may be empty, and an unreadable result is redone anyway
    with open(tmp, "w") as f:
        json.dump(data, f, allow_nan=True)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the per-video function


def process_source(
    path: str,
    cfg: CurateConfig,
    out_dir: str | Path,
    chash: str,
    captioner: Captioner | None = None,
) -> dict:
    """Analyse one source, plan and (optionally) write its clips, and save its result file.

    Never raises for a bad source: the result then holds one row with status "error".
    """
    t0 = time.perf_counter()
    result = {"source": path, "config": chash, "fingerprint": _fingerprint(path), "version": RESULT_VERSION}
    try:
        result.update(_curate_one(path, cfg, Path(out_dir), captioner))
    except Exception as exc:  # one bad file must never stop the job; the reason goes in the manifest
        message = str(exc) if isinstance(exc, VidiffError) else f"internal error: {type(exc).__name__}: {exc}"
        result.update(error_result(path, message))
    result["seconds"] = time.perf_counter() - t0
    _write_json_atomic(result_path(out_dir, path), result)
    return result


def error_result(path: str, message: str) -> dict:
    row = {
        name: None
        for name in ("path", "start_frame", "end_frame", "start_s", "end_s", "fps", "width", "height")
    }
    row.update(
        id=f"{_stem(path)}_{source_key(path)[:8]}_error",
        source=path,
        num_frames=0,
        shot=None,
        motion=math.nan,
        status="error",
        reason=message,
        caption="",
    )
    return {"error": message, "frames": 0, "duration": 0.0, "cuts": [], "rows": [row]}


def _stem(path: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(path).stem)[:60]


def _curate_one(path: str, cfg: CurateConfig, out_dir: Path, captioner: Captioner | None) -> dict:
    from data_tools.motion import clip_motion

    a = analyze(path, cfg.analysis)
    info, fps = a.info, a.info.fps
    sidecar = read_sidecar(path)
    prefix = f"{_stem(path)}_{source_key(path)[:8]}"
    keyframes = None
    rows = []
    for seg in plan_segments(a.num_frames, a.cuts, fps, cfg.clips):
        motion = clip_motion(a.pairs, seg.start, seg.end)
        status, reason = seg.status, seg.reason
        if status == "kept" and motion < cfg.analysis.motion.static_threshold:
            status, reason = "dropped", "static"
        caption = caption_for(sidecar, seg.start, seg.end)
        clip_id = f"{prefix}_{seg.start:07d}_{seg.end:07d}"
        clip_path = None
        if status == "kept":
            if not caption and captioner is not None:
                caption = str(captioner(path, seg.start, seg.end, fps) or "")
            if cfg.clips.write:
                if keyframes is None:
                    keyframes = keyframe_indices(path, fps)
                clip_path = str((out_dir / "clips" / f"{clip_id}.mp4").resolve())
                try:
                    write_clip(path, clip_path, seg.start, seg.end, fps, keyframes, a.num_frames, cfg.clips)
                except VidiffError as exc:
                    status, reason, clip_path = "error", str(exc), None
        rows.append(
            dict(
                id=clip_id,
                source=path,
                path=clip_path,
                start_frame=seg.start,
                end_frame=seg.end,
                start_s=seg.start / fps,
                end_s=seg.end / fps,
                fps=fps,
                width=info.width,
                height=info.height,
                num_frames=seg.end - seg.start,
                shot=seg.shot,
                motion=motion,
                status=status,
                reason=reason,
                caption=caption,
            )
        )
    return {
        "error": None,
        "frames": a.num_frames,
        "duration": a.num_frames / fps,
        "cuts": [c.as_dict() for c in a.cuts],
        "rows": rows,
    }


# --------------------------------------------------------------------------- engines


def _run_local(pending, cfg, out_dir, chash, captioner, workers, on_result) -> None:
    """`workers` long-lived worker processes, one source at a time each. A worker that dies (a
    decoder segfault, the OOM killer) or hangs past source_timeout_s costs its source an error row
    and is replaced; the job goes on. Workers are spawned, not forked: a fork copies the parent's
    thread-pool locks (OpenCV, libav) and can deadlock the child."""
    if workers <= 0:
        for path in pending:
            on_result(process_source(path, cfg, out_dir, chash, captioner))
        return
    pool = _Pool(workers, (cfg, str(out_dir), chash, captioner))
    queue = list(pending)
    try:
        while queue or pool.busy:
            while queue and pool.idle():
                pool.submit(queue.pop(0))
            for path, died in pool.wait(timeout=1.0):
                if died is None:
                    on_result(
                        load_result(out_dir, path, chash)
                        or _save_error(path, f"{path}: its result vanished", out_dir, chash)
                    )
                else:
                    on_result(
                        _save_error(
                            path,
                            f"{path}: the worker reading it died ({died}); the file likely crashes the decoder",
                            out_dir,
                            chash,
                        )
                    )
            if cfg.source_timeout_s > 0:
                for path in pool.kill_overdue(cfg.source_timeout_s):
                    message = f"{path}: timed out after {cfg.source_timeout_s:g}s; raise source_timeout_s or check the file"
                    on_result(_save_error(path, message, out_dir, chash))
    finally:
        pool.close()


class _Pool:
    """Worker processes, each fed one source path at a time over its own pipe."""

    def __init__(self, size: int, args: tuple):
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")
        self._args = args
        self._workers = [self._start() for _ in range(size)]  # [process, conn, path or None, started]

    def _start(self) -> list:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, *self._args), daemon=True)
        proc.start()
        child.close()
        return [proc, parent, None, 0.0]

    @property
    def busy(self) -> bool:
        return any(w[2] is not None for w in self._workers)

    def idle(self) -> bool:
        return any(w[2] is None for w in self._workers)

    def submit(self, path: str) -> None:
        w = next(w for w in self._workers if w[2] is None)
        w[1].send(path)
        w[2], w[3] = path, time.monotonic()

    def wait(self, timeout: float) -> list[tuple[str, str | None]]:
        """(path, None) for each finished source; (path, how) for each whose worker died."""
        from multiprocessing.connection import wait

        busy = [w for w in self._workers if w[2] is not None]
        ready = set(wait([w[1] for w in busy] + [w[0].sentinel for w in busy], timeout=timeout))
        done = []
        for k, w in enumerate(self._workers):
            if w[2] is None:
                continue
            if w[1] in ready and w[1].poll():
                try:
                    w[1].recv()
                    done.append((w[2], None))
                    w[2] = None
                    continue
                except (EOFError, OSError):
                    pass
            if w[0].sentinel in ready or not w[0].is_alive():
                w[0].join()
                code = w[0].exitcode
                done.append(
                    (w[2], f"signal {-code}" if code is not None and code < 0 else f"exit code {code}")
                )
                self._workers[k] = self._start()
        return done

    def kill_overdue(self, limit: float) -> list[str]:
        overdue = []
        for k, w in enumerate(self._workers):
            if w[2] is not None and time.monotonic() - w[3] > limit:
                w[0].kill()
                w[0].join()
                overdue.append(w[2])
                self._workers[k] = self._start()
        return overdue

    def close(self) -> None:
        for proc, conn, path, _ in self._workers:
            if path is None and proc.is_alive():
                try:
                    conn.send(None)  # finish cleanly
                except OSError:
                    pass
        for proc, conn, path, _ in self._workers:
            proc.join(timeout=5 if path is None else 0)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()


def _worker_main(conn, cfg, out_dir, chash, captioner) -> None:
    import cv2

    cv2.setNumThreads(1)  # the workers are the parallelism; OpenCV's pool would oversubscribe
    while True:
        try:
            path = conn.recv()
        except EOFError:  # the job is gone
            return
        if path is None:
            return
        process_source(path, cfg, out_dir, chash, captioner)
        conn.send(path)


def _save_error(path: str, message: str, out_dir, chash) -> dict:
    result = {"source": path, "config": chash, "fingerprint": _fingerprint(path), "version": RESULT_VERSION}
    result.update(error_result(path, message), seconds=0.0)
    _write_json_atomic(result_path(out_dir, path), result)
    return result


def _run_ray(pending, cfg, out_dir, chash, captioner, workers, on_result, address=None) -> str:
    try:
        import ray
    except ImportError:
        raise VidiffError("--engine ray needs Ray: pip install 'vidiff[ray]' (or pip install ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # workers must import data_tools even when it is not installed (a source checkout)
            root = str(Path(__file__).resolve().parents[1])
            pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            ray.init(
                num_cpus=workers if workers > 0 else None,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            )
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(process_source)
        refs = {task.remote(path, cfg, str(out_dir), chash, captioner): path for path in pending}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                path = refs.pop(ref)
                try:
                    result = ray.get(ref)
                    # on a cluster without shared storage the worker's file is elsewhere: keep a copy here
                    if load_result(out_dir, path, chash) is None:
                        _write_json_atomic(result_path(out_dir, path), result)
                except ray.exceptions.RayError as exc:
                    message = f"{path}: the Ray task reading it failed ({type(exc).__name__}); the file likely crashes the decoder"
                    result = _save_error(path, message, out_dir, chash)
                on_result(result)
        return ray.__version__
    finally:
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------- the job


def curate(
    inputs: list[str],
    out_dir: str | Path,
    cfg: CurateConfig | None = None,
    workers: int = 1,
    engine: str = "local",
    jsonl: bool = False,
    captioner: Captioner | None = None,
    captioner_name: str | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Run the job; return the summary. Finished sources (same settings, same file) are skipped."""
    from tqdm import tqdm

    cfg = cfg or CurateConfig()
    if engine not in ("local", "ray"):
        raise VidiffError(f"unknown engine {engine!r}; use 'local' or 'ray'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    sources = collect_sources(inputs)
    if not sources:
        raise VidiffError(f"no videos found in {', '.join(inputs)}; pass video files, folders or a .txt list")
    chash = config_hash(cfg, captioner_name or (type(captioner).__name__ if captioner else None))
    results = {p: load_result(out_dir, p, chash) for p in sources}
    pending = [p for p, r in results.items() if r is None]
    skipped = len(sources) - len(pending)

    t0 = time.perf_counter()
    bar = tqdm(
        total=len(sources),
        initial=skipped,
        desc="curate",
        unit="video",
        disable=not progress,
        file=sys.stderr,
    )

    def on_result(result: dict) -> None:
        results[result["source"]] = result
        bar.update(1)
        bar.set_postfix(kept=sum(r["status"] == "kept" for r in result["rows"]), refresh=False)

    engine_version = None
    try:
        if pending and engine == "ray":
            engine_version = _run_ray(
                pending, cfg, out_dir, chash, captioner, workers, on_result, ray_address
            )
        elif pending:
            _run_local(pending, cfg, out_dir, chash, captioner, workers, on_result)
    finally:
        bar.close()
    wall = time.perf_counter() - t0

    rows = [row for p in sources for row in results[p]["rows"]]
    manifest = write_manifest(rows, out_dir / "manifest.parquet")
    if jsonl:
        write_manifest(rows, out_dir / "manifest.jsonl")
    summary = summarize([results[p] for p in sources])
    summary.update(
        skipped=skipped,
        processed=len(pending),
        wall_seconds=wall,
        frames_per_second=sum(results[p]["frames"] for p in pending) / wall if pending and wall > 0 else None,
        manifest=str(manifest),
        engine=engine,
        engine_version=engine_version,
    )
    _write_json_atomic(out_dir / "summary.json", summary)
    return summary


def summarize(results: list[dict]) -> dict:
    rows = [row for r in results for row in r["rows"]]
    kept = [r for r in rows if r["status"] == "kept"]
    dropped = Counter(r["reason"] for r in rows if r["status"] == "dropped")
    return {
        "videos": len(results),
        "videos_failed": sum(r["error"] is not None for r in results),
        "clips_kept": len(kept),
        "clips_dropped": dict(sorted(dropped.items())),
        "clip_errors": sum(r["status"] == "error" for r in rows)
        - sum(r["error"] is not None for r in results),
        "hours_of_video": sum(r["duration"] for r in results) / 3600,
        "hours_kept": sum(r["end_s"] - r["start_s"] for r in kept) / 3600,
        "cuts": dict(Counter(c["kind"] for r in results for c in r["cuts"])),
    }


def format_summary(s: dict) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in s["clips_dropped"].items()) or "none"
    lines = [
        f"videos: {s['videos']} ({s['processed']} processed, {s['skipped']} already done, {s['videos_failed']} failed)",
        f"clips kept: {s['clips_kept']}  dropped: {dropped}"
        + (f"  clip errors: {s['clip_errors']}" if s["clip_errors"] else ""),
        f"hours of video: {s['hours_of_video']:.3f}  kept: {s['hours_kept']:.3f}",
        "cuts: " + (", ".join(f"{k} {v}" for k, v in sorted(s["cuts"].items())) or "none"),
        f"manifest: {s['manifest']}",
    ]
    if s.get("frames_per_second"):
        lines.append(f"speed: {s['frames_per_second']:.0f} frames/s over {s['wall_seconds']:.1f}s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def add_arguments(p) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="videos, folders, .txt lists; and key=value config overrides",
    )
    p.add_argument(
        "--out", required=True, help="output folder: manifest.parquet, sources/, clips/, summary.json"
    )
    p.add_argument("--config", default=None, help="YAML config (e.g. configs/curation.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. clips.max_seconds=5",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel sources (default: one per CPU core; 0: in this process)",
    )
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="local: a process pool; ray: Ray tasks"
    )
    p.add_argument(
        "--ray-address", default=None, help="connect to a running Ray cluster (default: start a local one)"
    )
    p.add_argument("--write-clips", action="store_true", help="write clip files instead of references")
    p.add_argument("--jsonl", action="store_true", help="also write manifest.jsonl")
    p.add_argument("--captioner", default=None, help="package.module:ClassOrFunction implementing Captioner")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args) -> dict:
    from data_tools.captions import load_captioner
    from vidiff.config import load_config

    inputs = [i for i in args.inputs if not _is_override(i)]
    overrides = [i for i in args.inputs if _is_override(i)] + list(args.set)
    if args.write_clips:
        overrides.append("clips.write=true")
    cfg = load_config(CurateConfig, args.config, overrides)
    captioner = load_captioner(args.captioner) if args.captioner else None
    summary = curate(
        inputs,
        args.out,
        cfg,
        workers=args.workers if args.workers is not None else (os.cpu_count() or 1),
        engine=args.engine,
        jsonl=args.jsonl,
        captioner=captioner,
        captioner_name=args.captioner,
        ray_address=args.ray_address,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    return summary


def _is_override(item: str) -> bool:
    return "=" in item and not os.path.exists(item)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m data_tools.curate", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_from_args(args)
    except VidiffError as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
