"""Curation against ground truth: the scoring functions, and the toy world's acceptance figures."""

import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.curation_accuracy import match_cuts, scores, static_counts

ROOT = Path(__file__).resolve().parents[1]


def _toyworld():
    toyworld = pytest.importorskip("vidiff.toyworld")
    if not hasattr(toyworld, "write_raw_video"):
        pytest.skip("vidiff.toyworld has no write_raw_video yet")
    return toyworld


def test_match_cuts_counts_each_truth_once():
    truth = [
        {"type": "hard", "frame": 30, "start": 30, "end": 30},
        {"type": "crossfade", "frame": 70, "start": 60, "end": 70},
    ]
    pred = [
        {"frame": 31, "start": 31, "end": 31},  # hard, off by one: a hit
        {"frame": 29, "start": 29, "end": 29},  # a second detection of the same cut: a false positive
        {"frame": 64, "start": 57, "end": 73},  # inside the dissolve: a hit
        {"frame": 120, "start": 120, "end": 120},  # nothing there
    ]
    assert match_cuts(pred, truth) == {"true": 2, "predicted": 4, "matched": 2}
    s = scores([match_cuts(pred, truth)], [])
    assert s["cut_precision"] == 0.5 and s["cut_recall"] == 1.0 and s["cut_f1"] == pytest.approx(2 / 3)
    assert match_cuts([{"frame": 33, "start": 33, "end": 33}], truth[:1])["matched"] == 0


def test_static_counts_use_majority_overlap_and_skip_unscored_clips():
    rows = [
        {"start_frame": 0, "end_frame": 40, "status": "dropped", "reason": "static"},  # 30 of 40 static: tp
        {"start_frame": 40, "end_frame": 80, "status": "kept", "reason": ""},  # tn
        {"start_frame": 80, "end_frame": 120, "status": "dropped", "reason": "static"},  # fp
        {"start_frame": 120, "end_frame": 160, "status": "kept", "reason": ""},  # fn
        {"start_frame": 160, "end_frame": 170, "status": "dropped", "reason": "short_shot"},  # not scored
    ]
    assert static_counts(rows, [[0, 30], [120, 160], [160, 170]]) == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}


def test_toy_world_cut_f1_and_static_precision_recall(tmp_path):
    _toyworld()
    from data_tools.curation_accuracy import evaluate_toyworld

    s = evaluate_toyworld(num_videos=8, work_dir=tmp_path, workers=2)
    assert s["cuts_true"] >= 40 and s["static_clips_true"] >= 10
    assert s["cut_f1"] >= 0.98, s
    assert s["static_recall"] >= 0.95 and s["static_precision"] >= 0.95, s


@pytest.mark.slow
def test_evaluation_command_prints_the_figures(tmp_path):
    _toyworld()
    cmd = [sys.executable, "-m", "data_tools.curation_accuracy", "--videos", "4", "--work-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "F1" in done.stdout and "static: precision" in done.stdout
