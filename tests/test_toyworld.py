"""The toy world: vocabulary, captions, renderer, dataset, dataset writer and the raw curation test bed."""

import itertools
import json

import numpy as np
import pytest
import torch

from vidiff.errors import VidiffError
from vidiff.toyworld import (
    BACKGROUNDS,
    COLORS,
    MOTIONS,
    SHAPES,
    TRANSITIONS,
    Oracle,
    SceneSpec,
    ToyWorldDataset,
    caption,
    generate_dataset,
    parse_prompt,
    render,
    sample_spec,
    write_raw_video,
)
from vidiff.toyworld.world import background, coverage
from vidiff.video import probe_video, read_frames, read_video


def test_vocabulary_is_well_separated():
    assert len(COLORS) >= 6 and len(SHAPES) == 3 and len(BACKGROUNDS) >= 2
    assert MOTIONS == ("left", "right", "up", "down", "still")
    rgb = np.array(list(COLORS.values()), float)
    pair = [np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)]
    assert min(pair) > 120
    for name in BACKGROUNDS:
        bg = background(name, 16, 16).reshape(-1, 3)
        assert min(np.linalg.norm(bg[:, None] - rgb[None], axis=-1).min(0)) > 120, name


def test_captions_parse_back():
    for color, shape, motion in itertools.product(COLORS, SHAPES, MOTIONS):
        spec = SceneSpec(color, shape, motion)
        assert parse_prompt(caption(spec)) == {"color": color, "shape": shape, "motion": motion}
        assert parse_prompt(caption(spec, image=True)) == {"color": color, "shape": shape, "motion": None}
    assert caption(SceneSpec("red", "circle", "left")) == "a red circle moving left"
    assert caption(SceneSpec("green", "triangle", "still")) == "a green triangle staying still"
    assert parse_prompt("A dog running") == {"color": None, "shape": None, "motion": None}
    with pytest.raises(VidiffError, match="purple"):
        SceneSpec("purple", "circle", "left")


def test_shapes_have_equal_area():
    areas = [coverage(s, 32, 32, 20, 64, 64).sum() for s in SHAPES]
    assert max(areas) / min(areas) < 1.03
    assert abs(areas[0] - np.pi * 100) < 3


def test_render_range_determinism_and_seed():
    spec = SceneSpec("blue", "square", "right", "light", 0.35, 0.4, 0.3, 0.5)
    v = render(spec, 8, 32, 32, seed=1)
    assert v.shape == (3, 8, 32, 32) and v.dtype == torch.float32
    assert v.min() >= -1 and v.max() <= 1
    assert torch.equal(v, render(spec, 8, 32, 32, seed=1))
    assert not torch.equal(v, render(spec, 8, 32, 32, seed=2))  # seed jitters tints
    assert render(spec, 1, 48, 64).shape == (3, 1, 48, 64)
    with pytest.raises(VidiffError):
        render(spec, 0, 32, 32)


@pytest.mark.parametrize("motion", MOTIONS)
def test_objects_move_as_captioned_and_stay_in_frame(motion):
    rng = np.random.default_rng(11)
    for _ in range(25):
        spec = sample_spec(rng, motions=[motion])
        xs, ys = np.array([spec.x, spec.end_position()[0]]), np.array([spec.y, spec.end_position()[1]])
        a = coverage(spec.shape, xs * 64, ys * 64, spec.size * 64, 64, 64)
        # the whole object, one pixel clear of each edge, at both ends of its path
        assert abs(a[0].sum() - a[1].sum()) < 0.01 * a[0].sum()  # antialiasing wobble only
        assert (
            a[:, 0, :].max() == 0
            and a[:, -1, :].max() == 0
            and a[:, :, 0].max() == 0
            and a[:, :, -1].max() == 0
        )
        dx, dy = xs[1] - xs[0], ys[1] - ys[0]
        expect = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[motion]
        assert (np.sign(round(dx, 9)), np.sign(round(dy, 9))) == expect
        if motion != "still":
            assert max(abs(dx), abs(dy)) >= 0.2


def test_dataset_is_deterministic_and_mixes_images():
    ds = ToyWorldDataset(200, num_frames=6, height=32, width=32, image_share=0.3, seed=5)
    again = ToyWorldDataset(200, num_frames=6, height=32, width=32, image_share=0.3, seed=5)
    assert len(ds) == 200
    for i in (0, 17, 199):
        assert torch.equal(ds[i]["video"], again[i]["video"]) and ds[i]["caption"] == again[i]["caption"]
    other = ToyWorldDataset(200, num_frames=6, height=32, width=32, image_share=0.3, seed=6)
    assert sum(ds[i]["caption"] != other[i]["caption"] for i in range(20)) >= 10
    images = [i for i in range(200) if ds.item_spec(i)[1]]
    assert 0.2 < len(images) / 200 < 0.4
    item = ds[images[0]]
    assert item["video"].shape == (3, 1, 32, 32) and "moving" not in item["caption"]
    assert "still" not in item["caption"]
    with pytest.raises(IndexError):
        ds[200]
    with pytest.raises(VidiffError):
        ToyWorldDataset(10, image_share=1.5)


def test_dataset_batches_and_fixed_specs():
    specs = [SceneSpec("red", "circle", "left"), SceneSpec("cyan", "triangle", "still", "dusk")]
    ds = ToyWorldDataset(4, num_frames=4, height=16, width=16, specs=specs)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["video"].shape == (4, 3, 4, 16, 16)
    assert batch["caption"] == [caption(specs[0]), caption(specs[1])] * 2


def test_generate_dataset(tmp_path):
    jsonl = generate_dataset(tmp_path / "toy", 6, num_frames=8, image_share=0.34, seed=3)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 6
    oracle = Oracle()
    for row in rows:
        path = tmp_path / "toy" / row["path"]
        assert path.exists()
        assert row["caption"] == caption(SceneSpec(**row["spec"]), image=row["num_frames"] == 1)
        if row["num_frames"] > 1:
            assert path.suffix == ".mp4" and probe_video(path).num_frames == 8
            scored = oracle.score(read_video(path), row["caption"])
            assert scored["color"] and scored["shape"] and scored["motion"], (row, scored)
        else:
            assert path.suffix == ".png"


# ------------------------------------------------------------------ raw videos for curation


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "raw.mp4"
    truth = write_raw_video(path, seed=21, num_scenes=7, height=64, width=64)
    return path, truth


def test_raw_ground_truth_layout(raw):
    path, truth = raw
    assert json.loads(path.with_suffix(".json").read_text()) == truth
    assert probe_video(path).num_frames == truth["num_frames"]
    caps, trans = truth["captions"], truth["transitions"]
    assert len(caps) == 7 and len(trans) == 6
    assert {t["type"] for t in trans} == set(TRANSITIONS)
    assert any(t["similar"] for t in trans)
    assert truth["cuts"] == [t["frame"] for t in trans] == [c["start_frame"] for c in caps[1:]]
    for prev, t, nxt in zip(caps[:-1], trans, caps[1:], strict=True):
        assert prev["end_frame"] == t["start"] and t["end"] == nxt["start_frame"]
        length = t["end"] - t["start"]
        assert length == 0 if t["type"] == "hard" else 6 <= length <= 12
    assert caps[0]["start_frame"] == 0 and caps[-1]["end_frame"] == truth["num_frames"]
    still = [[c["start_frame"], c["end_frame"]] for c in caps if c["caption"].endswith("staying still")]
    assert truth["static_spans"] == still and still


def test_raw_content_matches_ground_truth(raw):
    path, truth = raw
    frames = read_frames(path).astype(np.float64)
    diff = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # diff[f-1]: frame f vs f-1
    shot_frames = [f for c in truth["captions"] for f in range(c["start_frame"] + 1, c["end_frame"])]
    within = np.median(diff[np.array(shot_frames) - 1])
    for t in truth["transitions"]:
        if t["type"] == "hard":
            assert diff[t["frame"] - 1] > 2 * within + 1, t
        elif t["type"] == "fade_black":
            mid = frames[t["start"] : t["end"]].mean(axis=(1, 2, 3)).min()
            assert mid < frames[t["start"] - 1].mean() and mid < 25, t
    # every shot shows what its caption says, read back from the mp4 by the oracle
    oracle = Oracle()
    for c in truth["captions"]:
        clip = read_video(path, start=c["start_frame"], end=c["end_frame"])
        scored = oracle.score(clip, c["caption"])
        assert scored["color"] and scored["shape"] and scored["motion"], (c, scored["predicted"])


def test_raw_static_spans_do_not_move(tmp_path):
    path = tmp_path / "clean.mp4"
    truth = write_raw_video(path, seed=4, num_scenes=5, noise=0.0, crf=10)
    frames = read_frames(path).astype(np.float64)
    diff = np.abs(np.diff(frames, axis=0)).max(axis=(1, 2, 3))
    static = {f for s, e in truth["static_spans"] for f in range(s + 1, e)}
    moving = {
        f
        for c in truth["captions"]
        if "moving" in c["caption"]
        for f in range(c["start_frame"] + 1, c["end_frame"])
    }
    assert static and moving
    assert max(diff[f - 1] for f in static) <= 6  # codec flicker only
    assert np.median([diff[f - 1] for f in moving]) > 40  # the object's edge sweeps over pixels


def test_cli_writes_raw_video(tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cli_raw.mp4"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidiff",
            "toyworld",
            "raw",
            "--out",
            str(out),
            "--scenes",
            "3",
            "--size",
            "32",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    truth = json.loads(out.with_suffix(".json").read_text())
    assert probe_video(out).num_frames == truth["num_frames"] and len(truth["cuts"]) == 2
    # the error path in-process (a second interpreter start costs seconds): one line, exit code 2
    from vidiff.cli import main

    assert main(["toyworld", "raw", "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert "x.txt" in err and "Traceback" not in err


def test_raw_video_never_shows_held_out_triples(tmp_path):
    from vidiff.toyworld import COLORS, SHAPES, parse_prompt, write_raw_video

    # hold out every moving red and every moving circle scene: plenty of combinations remain
    holdout = {(c, s, m) for c in COLORS for s in SHAPES for m in ("left", "right", "up", "down") if c == "red" or s == "circle"}
    truth = write_raw_video(tmp_path / "raw.mp4", seed=3, num_scenes=10, height=64, width=64, holdout=holdout)
    seen = [parse_prompt(c["caption"]) for c in truth["captions"]]
    assert len(seen) == 10
    assert not [p for p in seen if (p["color"], p["shape"], p["motion"]) in holdout]


def test_raw_video_object_sizes_and_a_clear_error_when_they_cannot_move(tmp_path):
    from vidiff.errors import VidiffError

    kw = dict(num_scenes=6, height=64, width=64, scene_frames=(16, 24), fade_frames=(4, 6))
    truth = write_raw_video(tmp_path / "big.mp4", seed=5, object_size=(0.3, 0.4), **kw)
    sizes = [s["spec"]["size"] for s in truth["scenes"]]
    assert all(0.3 <= s <= 0.4 for s in sizes)
    with pytest.raises(VidiffError, match="smaller objects"):
        write_raw_video(tmp_path / "huge.mp4", seed=5, object_size=(0.8, 0.9), **kw)
    assert not (tmp_path / "huge.mp4").exists()


def test_evaluation_prompts_hold_out_combinations_training_never_sees():
    from vidiff.toyworld.prompts import DIRECTIONS, heldout_prompts, holdout_triples, prompt_of, train_prompts

    assert DIRECTIONS == ("left", "right", "up", "down")
    holdout = holdout_triples(0)
    assert holdout == holdout_triples(0) and len(holdout) == 3 * len(DIRECTIONS)
    for d in DIRECTIONS:  # no colour or shape held out twice for one direction
        picked = [t for t in holdout if t[2] == d]
        assert len({c for c, _, _ in picked}) == 3 and len({s for _, s, _ in picked}) == 3
    held = heldout_prompts(holdout)
    train = train_prompts(0, holdout, 12)
    assert len(train) == len(set(train)) == 12 and not set(held) & set(train)
    assert prompt_of("red", "circle", "left") == "a red circle moving left"
    assert all(parse_prompt(p) == dict(zip(("color", "shape", "motion"), t, strict=True)) for p, t in zip(held, holdout, strict=True))
