"""Image sets for joint image+video training, end to end at toy size: a folder (and a CSV) of toy-world stills whose
captions name colour and shape, with broken files among them -> `vidiff curate-images` -> `vidiff encode` (one-frame
latents) -> `vidiff train` with data.image_latents, whose image batches come from that set."""

import csv
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from training_helpers import TINY_UNET, tiny_latent_cache

from data_tools.images import ImageFilters, curate_images
from vidiff.cli import main
from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.images import fit_image, read_image
from vidiff.manifest import read_manifest, write_manifest
from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.toyworld import ToyWorldDataset, parse_prompt
from vidiff.training.batching import joint_indices
from vidiff.training.diffusion_module import DiffusionModule
from vidiff.training.latent_cache import encode_manifest, load_latent_cache
from vidiff.training.train_stage import TrainRunConfig, train_stage
from vidiff.video import to_uint8

STILLS = 6  # good toy-world stills in the folder
FILTERS = ["--min-side", "12", "--max-aspect", "2"]


def _save_still(path, item) -> None:
    Image.fromarray(to_uint8(item["video"])[0]).save(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Toy-world stills (20x24, captions in NAME.txt or NAME.json) and broken files; returns (folder, captions)."""
    folder = tmp_path_factory.mktemp("images") / "stills"
    folder.mkdir()
    ds = ToyWorldDataset(STILLS + 3, 1, 20, 24, image_share=1.0, seed=5)
    captions = {}
    for i in range(STILLS):
        item = ds[i]
        _save_still(folder / f"still_{i}.png", item)
        if i % 2:
            (folder / f"still_{i}.json").write_text(json.dumps({"caption": item["caption"]}))
        else:
            (folder / f"still_{i}.txt").write_text(item["caption"])
        captions[f"still_{i}"] = item["caption"]
    good = (folder / "still_0.png").read_bytes()
    (folder / "zero.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "text.jpg").write_text("not a picture\n")
    Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(folder / "tiny.png")
    _save_still(folder / "wide.png", ToyWorldDataset(1, 1, 12, 40, image_share=1.0, seed=6)[0])
    _save_still(folder / "latin1.png", ds[STILLS])
    (folder / "latin1.txt").write_bytes("a red café circle".encode("latin-1"))  # not UTF-8
    (folder / "notes.md").write_text("ignored: not an image suffix")
    return folder, captions


def _by_name(rows):
    return {r["source"].rsplit("/", 1)[-1]: r for r in rows}


def test_curate_images_folder_keeps_good_stills_and_turns_broken_files_into_rows(
    image_folder, tmp_path, capsys
):
    folder, captions = image_folder
    assert (
        main(["curate-images", str(folder), "--out", str(tmp_path / "cur"), "--no-progress", *FILTERS]) == 0
    )
    assert "kept: 6" in capsys.readouterr().out
    rows = _by_name(read_manifest(tmp_path / "cur" / "manifest.parquet"))
    assert set(rows) == {f"still_{i}.png" for i in range(STILLS)} | {
        "zero.png",
        "truncated.png",
        "text.jpg",
        "tiny.png",
        "wide.png",
        "latin1.png",
    }
    for i in range(STILLS):
        r = rows[f"still_{i}.png"]
        assert (r["status"], r["caption"], r["media_type"]) == ("kept", captions[f"still_{i}"], "image")
        assert (r["start_frame"], r["end_frame"], r["num_frames"], r["width"], r["height"]) == (
            0,
            1,
            1,
            24,
            20,
        )
        assert math.isnan(r["fps"]) and r["path"] is None
        named = parse_prompt(r["caption"])
        assert (
            named["color"] and named["shape"] and named["motion"] is None
        )  # a still's caption: colour and shape
    assert (rows["tiny.png"]["status"], rows["tiny.png"]["reason"]) == ("dropped", "too_small")
    assert (rows["wide.png"]["status"], rows["wide.png"]["reason"]) == ("dropped", "bad_aspect")
    for name, fragment in [
        ("zero.png", "empty (0 bytes)"),
        ("truncated.png", "truncated or corrupt"),
        ("text.jpg", "not an image Pillow can read"),
        ("latin1.png", "latin1.txt is not UTF-8"),
    ]:
        assert rows[name]["status"] == "error" and fragment in rows[name]["reason"], rows[name]["reason"]
    assert len({r["id"] for r in rows.values()}) == len(rows)
    summary = json.loads((tmp_path / "cur" / "summary.json").read_text())
    assert (summary["images"], summary["kept"], summary["errors"]) == (12, 6, 4)
    assert summary["dropped"] == {"bad_aspect": 1, "too_small": 1}


def test_curate_images_from_tables(image_folder, tmp_path):
    folder, captions = image_folder
    table = tmp_path / "laion.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["URL", "file", "TEXT"])  # LAION's caption column name, img2dataset's path column name
        w.writerow(["http://x/0.png", f"{folder.name}/still_0.png", "a caption from the table"])
        w.writerow(["", str(folder / "still_1.png"), captions["still_1"]])
        w.writerow(["", "stills/missing.png", "gone"])
        w.writerow(["", "https://example.com/cat.jpg", "a url"])
        w.writerow(["", "", "no path"])
        w.writerow(["", f"{folder.name}/still_0.png", "the same file again"])
        w.writerow(["", f"{folder.name}/zero.png", "broken"])
    (tmp_path / folder.name).symlink_to(folder)  # paths in a table are relative to the table
    summary = curate_images([str(table)], tmp_path / "cur", ImageFilters(12, 2.0), progress=False, jsonl=True)
    rows = read_manifest(tmp_path / "cur" / "manifest.jsonl")
    assert [r["status"] for r in rows] == ["kept", "kept", "error", "error", "error", "dropped", "error"]
    assert rows[0]["caption"] == "a caption from the table" and rows[1]["caption"] == captions["still_1"]
    assert "row 3" in rows[2]["reason"] and "no such file" in rows[2]["reason"]
    assert (
        "row 4" in rows[3]["reason"]
        and "is a URL" in rows[3]["reason"]
        and "img2dataset" in rows[3]["reason"]
    )
    assert "row 5" in rows[4]["reason"] and "empty" in rows[4]["reason"]
    assert rows[5]["reason"] == "duplicate" and rows[5]["source"] == rows[0]["source"]
    assert "row 7" in rows[6]["reason"] and "empty (0 bytes)" in rows[6]["reason"]
    assert summary["kept"] == 2 and all(r["media_type"] == "image" for r in rows)
    # the toy world's own captions.jsonl (`vidiff toyworld dataset --image-share 1`) is a table too
    from vidiff.toyworld import generate_dataset

    jsonl = generate_dataset(tmp_path / "toy", 3, height=16, width=16, image_share=1.0, seed=2)
    rows = read_manifest(
        curate_images([str(jsonl)], tmp_path / "cur2", ImageFilters(16), progress=False)["manifest"]
    )
    assert [r["status"] for r in rows] == ["kept"] * 3 and all(
        parse_prompt(r["caption"])["shape"] for r in rows
    )


def test_curate_images_refuses_inputs_it_cannot_start_from(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("a caption without an image")
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://x/1.jpg,a cat\n")
    nopath = tmp_path / "nopath.csv"
    nopath.write_text("name,caption\na.png,a cat\n")
    nocap = tmp_path / "nocap.csv"
    nocap.write_text("path,label\na.png,cat\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,caption\na.png,café\n".encode("latin-1"))
    headers = tmp_path / "headers.csv"
    headers.write_text("path,caption\n")
    for src, fragment in [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "empty", "no images"),
        (urls, "does not download images"),
        (nopath, r"no column of image paths \(its columns: name, caption\)"),
        (nocap, "no caption column"),
        (latin, "not UTF-8"),
        (headers, "has no rows"),
    ]:
        with pytest.raises(VidiffError, match=fragment):
            curate_images([str(src)], out, progress=False)
        assert not out.exists()  # nothing written
    with pytest.raises(VidiffError, match="--path-column 'image' is not a column"):
        curate_images([str(nopath)], out, path_column="image", progress=False)
    write_manifest([{"id": "v", "source": "/v.mp4", "status": "kept"}], out / "manifest.parquet")
    with pytest.raises(VidiffError, match="is a video manifest"):
        curate_images([str(tmp_path / "empty" / "a.txt")], out, progress=False)


def test_a_manifest_without_media_types_reads_as_videos(tmp_path):
    pq.write_table(
        pa.Table.from_pylist([{"id": "a", "source": "/a.mp4", "status": "kept"}]), tmp_path / "old.parquet"
    )
    (tmp_path / "old.jsonl").write_text(json.dumps({"id": "a", "source": "/a.mp4", "status": "kept"}) + "\n")
    for name in ("old.parquet", "old.jsonl"):
        assert [r["media_type"] for r in read_manifest(tmp_path / name)] == ["video"]
    rows = read_manifest(
        write_manifest([{"id": "a"}, {"id": "b", "media_type": "image"}], tmp_path / "new.parquet")
    )
    assert [r["media_type"] for r in rows] == ["video", "image"]


# --------------------------------------------------------------------------- encode and train


@pytest.fixture(scope="module")
def caches(tmp_path_factory, image_folder):
    """The tiny video cache of training_helpers, and the image set's manifest and cache (16x16, the same VAE)."""
    root = tmp_path_factory.mktemp("caches")
    videos = tiny_latent_cache(root)
    folder, _ = image_folder
    manifest = curate_images([str(folder)], root / "curated_images", ImageFilters(12, 2.0), progress=False)[
        "manifest"
    ]
    assert (
        main(
            [
                "encode",
                "--checkpoint",
                str(root / "vae"),
                "--manifest",
                manifest,
                "--out",
                str(root / "images"),
                "--height",
                "16",
                "--width",
                "16",
                "--frames",
                "5",
            ]
        )
        == 0
    )
    return root, videos, root / "images", manifest


def test_encode_writes_one_frame_latents_with_their_captions(caches):
    root, _, images, manifest = caches
    kept = read_manifest(manifest, status="kept")
    cache = load_latent_cache(images)
    assert len(cache.latents) == STILLS and cache.media_types == ["image"] * STILLS
    assert cache.captions == [r["caption"] for r in kept]
    vae = CausalVAE3D.from_pretrained(root / "vae").eval()
    pixels = torch.stack([fit_image(read_image(r["source"])[0], 16, 16)[0][:, None] for r in kept])
    with torch.no_grad():
        expected = vae.encode_latents(pixels)  # [B, 4, 1, 4, 4]: cover 16x16, centre crop, one latent frame
    torch.testing.assert_close(torch.stack(list(cache.latents)), expected, atol=1e-5, rtol=1e-5)
    # two ranks (each its share of the batches, merged by the last) write what one process writes
    one = encode_manifest(
        root / "vae", manifest, root / "one", num_frames=5, size=(16, 16), batch_size=4, progress=False
    )
    for rank in (0, 1):
        two = encode_manifest(
            root / "vae",
            manifest,
            root / "two",
            num_frames=5,
            size=(16, 16),
            batch_size=4,
            progress=False,
            rank=rank,
            world_size=2,
        )
    assert (one / "items.jsonl").read_text() == (two / "items.jsonl").read_text()
    assert all(
        json.loads(line)["media_type"] == "image" for line in (two / "items.jsonl").read_text().splitlines()
    )


def test_training_draws_image_batches_from_the_image_set(caches, tmp_path, monkeypatch):
    root, videos, images, _ = caches
    first_frames = [z for z in load_latent_cache(videos).latents if z.shape[1] == 1]
    assert first_frames  # the video cache has first-frame images too: the image set must win over them
    stills = load_latent_cache(images)
    seen = []
    step = DiffusionModule.training_step

    def spy(self, batch, batch_idx):
        seen.append(batch["latents"].clone())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DiffusionModule, "training_step", spy)
    cfg = load_config(
        TrainRunConfig,
        None,
        [
            *TINY_UNET,
            f"data.latents={videos}",
            f"data.image_latents={images}",
            "train.image_share=0.5",
            "train.max_steps=6",
            f"out_dir={tmp_path / 'run'}",
        ],
    )
    assert (train_stage(cfg, progress=False) / "pipeline.yaml").is_file()
    image_batches = [b for b in seen if b.shape[2] == 1]
    assert image_batches and len(image_batches) < len(seen)  # both kinds at image_share 0.5
    for batch in image_batches:
        for z in batch:
            match = [n for n, s in enumerate(stills.latents) if torch.equal(z, s)]
            assert match, "an image batch holds a latent that is not from the image set"
            assert parse_prompt(stills.captions[match[0]])["motion"] is None
            assert not any(torch.equal(z, f) for f in first_frames)


def test_one_cache_of_clips_and_stills_uses_the_stills(caches, tmp_path):
    root, _, _, manifest = caches
    rows = read_manifest(root / "manifest.jsonl") + read_manifest(manifest, status="kept")
    both = write_manifest(rows, tmp_path / "both.jsonl")
    cache = load_latent_cache(
        encode_manifest(
            root / "vae", both, tmp_path / "c", num_frames=5, size=(16, 16), image_share=0.5, progress=False
        )
    )
    frames = [z.shape[1] for z in cache.latents]
    videos, stills, image_set = joint_indices(frames, cache.media_types)
    assert (
        len(videos) == 6 and frames.count(1) == 3 + STILLS
    )  # first frames of half the clips, and the stills
    assert [cache.media_types[i] for i in stills] == ["image"] * STILLS and image_set
    assert joint_indices([2, 1, 1], ["video"] * 3)[1:] == ([1, 2], False)
    with pytest.raises(VidiffError, match="holds 6 image rows, but an SR stage trains on videos only"):
        encode_manifest(
            root / "vae",
            manifest,
            tmp_path / "sr",
            num_frames=9,
            size=(16, 16),
            lowres="frames",
            progress=False,
        )


def test_an_image_set_of_another_vae_size_or_kind_is_refused(caches, tmp_path):
    root, videos, images, manifest = caches
    torch.manual_seed(1)  # other weights than the VAE of the video cache
    other = CausalVAE3D(
        VAEConfig(
            latent_channels=4,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            mid_layers=1,
            temporal_compression=4,
            spatial_compression=4,
        )
    )
    other.save_pretrained(tmp_path / "vae2")
    wrong_vae = encode_manifest(
        tmp_path / "vae2", manifest, tmp_path / "i2", num_frames=5, size=(16, 16), progress=False
    )
    wrong_size = encode_manifest(
        root / "vae", manifest, tmp_path / "i3", num_frames=5, size=(32, 32), progress=False
    )
    for image_latents, fragment in [
        (wrong_vae, "by another, in"),
        (wrong_size, r"image latent cache .* holds latents of size \[\(8, 8\)\]"),
        (videos, "holds 6 video items"),
    ]:
        cfg = load_config(
            TrainRunConfig,
            None,
            [
                *TINY_UNET,
                f"data.latents={videos}",
                f"data.image_latents={image_latents}",
                "train.image_share=0.5",
                "train.max_steps=1",
                f"out_dir={tmp_path / 'run'}",
            ],
        )
        with pytest.raises(VidiffError, match=fragment):
            train_stage(cfg, progress=False)
