"""Motion scores: flow at ~2 fps, normalised to frame widths per second, never across a cut."""

import cv2
import numpy as np
import pytest

from data_tools.motion import FlowSampler, MotionConfig, clip_motion, sample_step


def _texture(h, w, seed=0):
    """Structure at several scales, as in real images (coarse-to-fine flow needs the coarse part)."""
    rng = np.random.default_rng(seed)
    img = sum(
        cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), s) * s
        for s in (1.5, 4.0, 10.0)
    )
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def _panning(n, h=72, w=128, speed=1.0, noise=2.0, seed=0):
    """A texture sliding right by `speed` px per frame, with sensor noise."""
    big = _texture(h, w + int(n * speed) + 8, seed)
    rng = np.random.default_rng(seed + 1)
    frames = []
    for t in range(n):
        shift = t * speed
        m = np.float32([[1, 0, shift - int(n * speed)], [0, 1, 0]])
        f = cv2.warpAffine(big, m, (big.shape[1], h))[:, :w] + rng.normal(0, noise, (h, w))
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.mark.parametrize("method, speed", [("dis", 0.5), ("dis", 1.5), ("farneback", 0.5)])
def test_score_is_speed_in_frame_widths_per_second(method, speed):
    # 1.5 px/frame is 18 px between samples: DIS's pyramid follows it, Farneback's (3 levels) does not
    fps, w = 24.0, 128
    frames = _panning(60, w=w, speed=speed)
    s = FlowSampler(fps, MotionConfig(method=method))
    for i in range(0, 60, 16):
        s.push(frames[i : i + 16])
    pairs = s.arrays()
    assert s.step == 12 and len(pairs) == 4
    assert np.all(pairs[:, 1] - pairs[:, 0] == 12)
    expected = speed * fps / w
    assert clip_motion(pairs, 0, 60) == pytest.approx(expected, rel=0.2)


def test_still_grainy_frames_score_near_zero_with_edge_weighting():
    rng = np.random.default_rng(0)
    base = _texture(72, 128)
    frames = np.stack(
        [np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(48)]
    )
    frames[:, :, :40] = np.clip(128 + rng.normal(0, 3, (48, 72, 40)), 0, 255).astype(
        np.uint8
    )  # a flat, noisy wall
    scores = {}
    for statistic in ("edge_mean", "mean"):
        sampler = FlowSampler(24.0, MotionConfig(statistic=statistic))
        sampler.push(frames)
        scores[statistic] = clip_motion(sampler.arrays(), 0, 48)
    assert scores["edge_mean"] < 0.2 * MotionConfig().static_threshold
    assert scores["mean"] > 2 * scores["edge_mean"]  # flow noise on the flat wall is what weighting removes


def test_pairs_across_a_cut_are_never_used():
    # shot A is still, shot B pans fast; the cut at frame 30 is not on the 12-frame sample grid
    still = np.repeat(_texture(72, 128, seed=3)[None].astype(np.uint8), 30, axis=0)
    moving = _panning(42, speed=1.5, seed=4)
    frames = np.concatenate([still, moving])
    s = FlowSampler(24.0, MotionConfig())
    s.push(frames)
    pairs = s.arrays()
    assert clip_motion(pairs, 0, 30) < 1e-3  # pairs (0,12), (12,24) only
    assert clip_motion(pairs, 30, 72) == pytest.approx(1.5 * 24 / 128, rel=0.15)  # (36,48), (48,60) only
    straddling = [p for p in pairs if p[0] < 30 <= p[1]]
    assert (
        len(straddling) == 1 and abs(straddling[0][2] - 1.5 * 24 / 128) > 0.1
    )  # (24,36) is garbage, and unused


def test_clip_without_a_full_pair_has_no_score():
    pairs = np.array([[0, 12, 0.5], [12, 24, 0.5]])
    assert np.isnan(clip_motion(pairs, 3, 14))
    assert np.isnan(clip_motion(np.zeros((0, 3)), 0, 10))


def test_sample_step_is_about_half_a_second():
    assert sample_step(25.0, 2.0) == 12
    assert sample_step(30000 / 1001, 2.0) == 15
    assert sample_step(1.0, 2.0) == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method"):
        MotionConfig(method="lucas")
    with pytest.raises(ValueError, match="statistic"):
        MotionConfig(statistic="max")
