"""Shots into clips: minimum length, splitting long shots, transition frames left out."""

import itertools

import pytest

from data_tools.clips import ClipConfig, plan_segments, shots
from data_tools.cuts import Cut


def _hard(t):
    return Cut(t, 0.0, "hard", t, t)


def test_shots_between_hard_and_gradual_cuts():
    cuts = [_hard(30), Cut(55, 0.0, "gradual", 50, 60), _hard(100)]
    assert shots(120, cuts) == [(0, 30), (30, 50), (60, 100), (100, 120)]
    assert shots(50, []) == [(0, 50)]
    assert shots(50, [Cut(45, 0.0, "gradual", 40, 50)]) == [(0, 40)]


def test_short_shots_are_dropped_and_long_ones_split_evenly():
    cfg = ClipConfig(min_seconds=1.0, max_seconds=4.0)
    segs = plan_segments(400, [_hard(10), _hard(110)], 25.0, cfg)
    assert [(s.start, s.end, s.status, s.reason) for s in segs] == [
        (0, 10, "dropped", "short_shot"),
        (10, 110, "kept", ""),  # exactly 4 s
        (110, 206, "kept", ""),  # 290 frames = 11.6 s -> 3 clips of ~3.9 s
        (206, 303, "kept", ""),
        (303, 400, "kept", ""),
    ]
    assert [s.shot for s in segs] == [0, 1, 2, 2, 2]


def test_split_when_equal_parts_would_be_too_short():
    # min 3 s, max 4 s: a 5 s shot cannot be two clips of >= 3 s, so one 4 s clip and a dropped tail
    segs = plan_segments(125, [], 25.0, ClipConfig(min_seconds=3.0, max_seconds=4.0))
    assert [(s.start, s.end, s.status) for s in segs] == [(0, 100, "kept"), (100, 125, "dropped")]


@pytest.mark.parametrize("length", [25, 99, 100, 101, 250, 1001, 4321])
def test_clips_cover_their_shot_within_bounds(length):
    cfg = ClipConfig(min_seconds=1.0, max_seconds=4.0)
    segs = plan_segments(length, [], 25.0, cfg)
    assert segs[0].start == 0 and segs[-1].end == length
    assert all(a.end == b.start for a, b in itertools.pairwise(segs))
    assert all(25 <= s.end - s.start <= 100 for s in segs if s.status == "kept")


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="min_seconds"):
        ClipConfig(min_seconds=5.0, max_seconds=2.0)
