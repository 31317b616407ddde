"""`vidiff train-vae` on a manifest (data.manifest): end to end, exact resume with decoding in worker
processes, images as one-frame videos, and the clear errors of unusable manifests (nothing in out_dir lost)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.training.vae_config import VAETrainConfig

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "model.block_out_channels=[8,8,16]",
    "model.latent_channels=4",
    "data.num_frames=5",
    "data.height=16",
    "data.width=16",
    "eval.num_samples=2",
    "eval.real_clips=false",
    "train.batch_size=2",
    "train.warmup_steps=1",
    "train.checkpoint_every=2",
    "train.latent_noise=0.3",  # the keyed latent-noise draws
]


def _write_clip(path: Path, frames: int, seed: int, height: int = 24, width: int = 40) -> Path:
    from vidiff.toyworld import SceneSpec, render
    from vidiff.video import write_video

    return write_video(
        path, render(SceneSpec("red", "circle", "left"), frames, height, width, seed=seed), fps=8
    )


def _write_image(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(torch.full((20, 30, 3), 200, dtype=torch.uint8).numpy()).save(path)
    return path


def _manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A 12- and a 16-frame clip (the second a written clip file), a 3-frame clip (too short), a dropped row
    and an image."""
    d = tmp_path_factory.mktemp("footage")
    a, b, c = (_write_clip(d / f"v{i}.mp4", n, i) for i, n in enumerate((12, 16, 3)))
    rows = [
        {"id": "a", "source": str(a), "start_frame": 0, "end_frame": 12, "status": "kept"},
        # a written clip file holds source frames 20..35 as its frames 0..15
        {
            "id": "b",
            "source": "/elsewhere/raw.mp4",
            "path": str(b),
            "start_frame": 20,
            "end_frame": 36,
            "status": "kept",
        },
        {"id": "c", "source": str(c), "start_frame": 0, "end_frame": 3, "status": "kept"},
        {
            "id": "gone",
            "source": str(d / "missing.mp4"),
            "start_frame": 0,
            "end_frame": 9,
            "status": "dropped",
        },
        {
            "id": "img",
            "source": str(_write_image(d / "still.png")),
            "start_frame": 0,
            "end_frame": 1,
            "status": "kept",
            "media_type": "image",
        },
    ]
    return _manifest(d / "manifest.jsonl", rows)


def _cfg(out: Path, manifest: Path, steps: int, *extra: str) -> VAETrainConfig:
    return load_config(
        VAETrainConfig,
        ROOT / "configs/toy/vae.yaml",
        [*TINY, f"data.manifest={manifest}", f"train.steps={steps}", f"out_dir={out}", *extra],
    )


def test_items_windows_crops_and_images(manifest, tmp_path):
    from vidiff.training.vae_data import ManifestClips, load_manifest_data
    from vidiff.training.vae_module import KeyedBatchSampler

    data = load_manifest_data(manifest, 5, image_share=0.5)
    assert [s.name for s in data.videos] == ["row 1 (a)", "row 2 (b)"] and data.short == 1
    assert (data.videos[1].first, data.videos[1].last) == (0, 11)  # in the clip file's own frames
    assert [s.name for s in data.images] == ["row 5 (img)"] and not data.images_from_clips
    ds = ManifestClips(data, 5, 16, 16, (0.25, 1.0), seed=0)
    sampler = KeyedBatchSampler(range(2), range(2, 3), 2, image_share=0.5, steps_per_epoch=12, seed=0)
    shapes = []
    for batch in sampler:
        items = [ds[key]["video"] for key in batch]
        assert all(v.shape == items[0].shape for v in items)
        shapes.append(items[0].shape)
        if items[0].shape[1] == 1:  # the image: a one-frame video at the crop size, its flat grey kept
            assert torch.allclose(items[0], torch.full_like(items[0], 200 / 127.5 - 1), atol=1e-6)
    assert {tuple(s) for s in shapes} == {(3, 5, 16, 16), (3, 1, 16, 16)}
    assert torch.equal(ds[(7, 1, 0)]["video"], ds[(7, 1, 0)]["video"])  # a key always gives the same crop
    assert not torch.equal(ds[(7, 1, 0)]["video"], ds[(8, 1, 0)]["video"])
    # no image rows: single frames of every clip, the short one too, serve as images
    clips_only = _manifest(
        tmp_path / "clips.jsonl", [json.loads(r) for r in manifest.read_text().splitlines()[:3]]
    )
    data = load_manifest_data(clips_only, 5, image_share=0.5)
    assert data.images_from_clips and [(s.first, s.last) for s in data.images] == [(0, 11), (0, 15), (0, 2)]
    assert ManifestClips(data, 5, 16, 16, (0.25, 1.0), seed=0)[(0, 0, 2)]["video"].shape == (3, 1, 16, 16)


def test_crop_box_is_never_a_blown_up_patch():
    from vidiff.training.vae_data import crop_box

    for u in ([0, 0, 0], [0.999, 0.999, 0.999], [0.5, 0.3, 0.7]):
        top, left, h, w = crop_box(720, 1280, 32, 32, (0.25, 1.0), u)
        assert 180 <= h == w <= 720 and 0 <= top <= 720 - h and 0 <= left <= 1280 - w
    assert crop_box(40, 40, 32, 32, (0.25, 1.0), [0, 0.5, 0.5])[2:] == (32, 32)  # native size at the least
    assert crop_box(20, 30, 32, 32, (0.25, 1.0), [0, 0, 0])[2:] == (
        20,
        20,
    )  # smaller than the crop: all of it


def test_train_on_a_manifest_resumes_exactly_with_workers(manifest, tmp_path, monkeypatch):
    from vidiff.training.vae_module import VAEModule, train_vae

    extra = ["data.image_share=0.3", "data.num_workers=0"]
    full = train_vae(_cfg(tmp_path / "full", manifest, 4, *extra))
    summary = json.loads((full / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["data"]["clips"] == 2 and summary["data"]["skipped_short"] == 1
    assert "real_clips_psnr_db" not in summary  # eval.real_clips=false

    step = VAEModule.training_step

    def killed_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    # the interrupted run decodes in 2 worker processes, the uninterrupted one in the training process
    workers = ["data.image_share=0.3", "data.num_workers=2"]
    monkeypatch.setattr(VAEModule, "training_step", killed_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        train_vae(_cfg(tmp_path / "split", manifest, 4, *workers))
    monkeypatch.setattr(VAEModule, "training_step", step)
    assert torch.load(tmp_path / "split/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    resumed = train_vae(_cfg(tmp_path / "split", manifest, 4, *workers))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    moved = load_file(str(train_vae(_cfg(tmp_path / "one", manifest, 1, *extra)) / "model.safetensors"))
    assert any(not torch.equal(a[k], moved[k]) for k in a)  # training changed the weights


def test_heldout_manifest_psnr_and_fine_tuning(manifest, tmp_path):
    from vidiff.training.vae_module import train_vae

    first = train_vae(_cfg(tmp_path / "a", manifest, 1, "data.num_workers=0"))
    out = train_vae(
        _cfg(
            tmp_path / "b",
            manifest,
            1,
            "data.num_workers=0",
            f"eval.manifest={manifest}",
            f"train.init_from={first}",
        )
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["heldout_manifest_clips"] == 2 and 5 < summary["heldout_manifest_psnr_db"] < 60
    with pytest.raises(VidiffError, match=r"train.init_from=.*model.latent_channels=4 \(this run: 8\)"):
        train_vae(_cfg(tmp_path / "c", manifest, 1, f"train.init_from={first}", "model.latent_channels=8"))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing", "does not exist"),
        ("no_kept", "has no kept rows (1 dropped)"),
        ("missing_source", "1 of its 1 kept rows name files that do not exist"),
        ("all_short", "none of its 1 kept clips has data.num_frames=5 frames (the longest has 3)"),
    ],
)
def test_unusable_manifests_are_refused_before_anything_is_written(tmp_path, manifest, case, fragment):
    from vidiff.training.vae_module import train_vae

    short = json.loads(manifest.read_text().splitlines()[2])
    rows = {
        "no_kept": [{"source": short["source"], "start_frame": 0, "end_frame": 3, "status": "dropped"}],
        "missing_source": [
            {"source": str(tmp_path / "nope.mp4"), "start_frame": 0, "end_frame": 9, "status": "kept"}
        ],
        "all_short": [short],
    }
    path = tmp_path / "m.jsonl" if case == "missing" else _manifest(tmp_path / "m.jsonl", rows[case])
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run's file")
    with pytest.raises(VidiffError) as err:
        train_vae(_cfg(out, path, 1))
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_cli_trains_on_a_manifest(manifest, tmp_path):
    from vidiff.cli import main

    assert (
        main(
            [
                "train-vae",
                "--config",
                "configs/toy/vae.yaml",
                "--out",
                str(tmp_path / "cli"),
                *TINY,
                f"data.manifest={manifest}",
                "train.steps=1",
                "data.num_workers=1",
            ]
        )
        == 0
    )
    assert (tmp_path / "cli" / "model.safetensors").is_file()
