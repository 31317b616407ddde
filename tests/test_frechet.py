"""Fréchet distance: closed forms, agreement with scipy's sqrtm, saved statistics, bad input."""

import numpy as np
import pytest

from vidiff.errors import VidiffError
from vidiff.eval.frechet import BiasedEstimateWarning, GaussianStats, frechet_distance, trace_sqrt_product


def _random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _random_cov(rng, d, n):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    return np.cov(x, rowvar=False)


def test_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 40
    q = _random_orthogonal(rng, d)
    a, b = rng.uniform(0.1, 5.0, d), rng.uniform(0.1, 5.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1 = GaussianStats(mu1, (q * a) @ q.T, n=1000)
    s2 = GaussianStats(mu2, (q * b) @ q.T, n=1000)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(s1, s2) == pytest.approx(expected, rel=1e-9)


def test_matches_scipy_sqrtm_on_random_full_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    for d in (8, 64, 200):
        c1, c2 = _random_cov(rng, d, 3 * d), _random_cov(rng, d, 3 * d)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        root = linalg.sqrtm(c1 @ c2)
        reference = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(root).real
        ours = frechet_distance(GaussianStats(mu1, c1, 3 * d), GaussianStats(mu2, c2, 3 * d))
        assert ours == pytest.approx(reference, rel=1e-6), d
        assert trace_sqrt_product(c1, c2) == pytest.approx(np.trace(root).real, rel=1e-8)


def test_distance_of_a_set_to_itself_is_zero_and_features_path_agrees():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 32)) * rng.uniform(0.5, 3, 32) + 4.0
    y = rng.standard_normal((300, 32))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9 * np.trace(np.cov(x, rowvar=False)))
    assert frechet_distance(x, y) == pytest.approx(
        frechet_distance(GaussianStats.from_features(x), GaussianStats.from_features(y)), rel=1e-12
    )
    assert frechet_distance(x, y) > 100  # the mean shift alone contributes 32 * 16


def test_stats_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(3)
    s = GaussianStats.from_features(rng.standard_normal((50, 6)), meta={"protocol": {"num_frames": 16}})
    path = s.save(tmp_path / "real.npz")
    t = GaussianStats.load(path)
    assert t.n == 50 and t.meta == {"protocol": {"num_frames": 16}}
    np.testing.assert_array_equal(t.mean, s.mean)
    np.testing.assert_array_equal(t.cov, s.cov)


def test_bad_input_gives_clear_errors(tmp_path):
    rng = np.random.default_rng(4)
    with pytest.raises(VidiffError, match="at least 2 samples"):
        frechet_distance(rng.standard_normal((1, 4)), rng.standard_normal((10, 4)))
    with pytest.raises(VidiffError, match="dimensions differ"):
        frechet_distance(rng.standard_normal((10, 4)), rng.standard_normal((10, 5)))
    with pytest.raises(VidiffError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), rng.standard_normal((10, 2)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(VidiffError, match="not a valid vidiff stats"):
        GaussianStats.load(bad)
    with pytest.raises(VidiffError, match="does not exist"):
        GaussianStats.load(tmp_path / "missing.npz")


def test_fewer_samples_than_dimensions_warns_and_still_computes():
    rng = np.random.default_rng(5)
    with pytest.warns(BiasedEstimateWarning, match="N=10 samples is below the feature dimension 20"):
        fd = frechet_distance(rng.standard_normal((10, 20)), rng.standard_normal((30, 20)) + 1.0)
    assert np.isfinite(fd) and fd > 0


def test_rank_deficient_covariances_match_the_eigenvalues_of_the_product():
    rng = np.random.default_rng(6)
    d = 40
    c1 = np.cov(rng.standard_normal((15, d)), rowvar=False)  # rank 14
    c2 = np.cov(rng.standard_normal((25, d)) * 2.0, rowvar=False)  # rank 24
    ev = np.linalg.eigvals(c1 @ c2).real
    reference = np.sqrt(np.clip(ev, 0, None)).sum()
    assert trace_sqrt_product(c1, c2) == pytest.approx(reference, rel=1e-6)
