"""Still-image reading for image-to-video: formats, modes, conversions, errors, and fit_image."""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vidiff.errors import VidiffError
from vidiff.images import fit_image, read_image
from vidiff.video import from_uint8, write_video


def _level(v: int) -> float:
    """The [-1,1] value of an 8-bit level, computed in float32 exactly as vidiff.video.from_uint8 does."""
    return (torch.tensor(float(v)) / 127.5 - 1.0).item()


def _png16_rgb(path, pixels: np.ndarray) -> None:
    """Write an [H,W,3] uint16 array as a 16-bit RGB PNG (Pillow cannot write these itself)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def _noise(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- reading: formats and modes


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = _noise()
    pixels[0, 0], pixels[0, 1] = 0, 255
    p = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(p)
    image, notes = read_image(p)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert notes == []
    assert torch.equal(image, from_uint8(pixels[None])[:, 0])
    assert image[:, 0, 0].tolist() == [-1.0, -1.0, -1.0]
    assert image[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_rgba_transparent_becomes_white_and_opaque_keeps_colour(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (10, 20, 30, 0)  # fully transparent
    rgba[:, 4:] = (200, 100, 50, 255)  # opaque
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    image, notes = read_image(p)
    assert torch.all(image[:, :, :4] == 1.0)
    assert image[:, 0, 4].tolist() == [_level(200), _level(100), _level(50)]
    assert any("flattened onto white" in n for n in notes)


def test_half_transparent_is_blended_with_white(tmp_path):
    p = tmp_path / "half.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 128)).save(p)
    image, _ = read_image(p)
    assert image[0, 0, 0].item() == _level(round(255 * (1 - 128 / 255)))


def test_palette_with_transparency_and_la(tmp_path):
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (0, 0, 4, 8))
    pal.save(tmp_path / "pal.png", transparency=0)
    image, notes = read_image(tmp_path / "pal.png")
    assert image[:, 0, 0].tolist() == [-1.0, -1.0, 1.0]  # blue, opaque
    assert torch.all(image[:, :, 4:] == 1.0)  # transparent red -> white
    assert any("flattened onto white" in n for n in notes)

    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "la.png")
    image, notes = read_image(tmp_path / "la.png")
    assert torch.all(image == 1.0)
    assert "grayscale expanded to RGB" in notes


def test_grayscale_and_1bit_expand_to_three_equal_channels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    image, notes = read_image(tmp_path / "l.png")
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert torch.equal(image[0], torch.from_numpy(gray).float() / 127.5 - 1)
    assert notes == ["grayscale expanded to RGB"]

    Image.new("1", (8, 8), 1).save(tmp_path / "bw.png")
    image, notes = read_image(tmp_path / "bw.png")
    assert torch.all(image == 1.0)
    assert any("1-bit" in n for n in notes)


def test_16bit_grayscale_scales_by_257_with_rounding(tmp_path):
    values = np.zeros((8, 8), np.uint16)
    values[0, :5] = [0, 65535, 257 * 128, 257 * 128 + 128, 257 * 128 + 129]
    p = tmp_path / "g16.png"
    Image.fromarray(values).save(p)
    assert Image.open(p).mode.startswith("I")
    image, notes = read_image(p)
    row = image[0, 0, :5].tolist()
    assert row == [-1.0, 1.0, _level(128), _level(128), _level(129)]
    assert torch.equal(image[0], image[2])
    assert any("16-bit" in n and "8 bits" in n for n in notes)


def test_16bit_rgb_png_is_reduced_by_pillow_and_noted(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint16)
    pixels[0, 0] = (65535, 0, 257 * 128)
    p = tmp_path / "rgb16.png"
    _png16_rgb(p, pixels)
    image, notes = read_image(p)
    assert image[:, 0, 0].tolist() == [1.0, -1.0, _level(128)]
    assert any("16-bit RGB" in n for n in notes)


def test_jpeg_and_cmyk_jpeg(tmp_path):
    Image.new("RGB", (16, 16), (200, 40, 90)).save(tmp_path / "a.jpg", quality=95)
    image, notes = read_image(tmp_path / "a.jpg")
    assert notes == []
    assert torch.allclose(image[:, 8, 8], torch.tensor([_level(200), _level(40), _level(90)]), atol=0.05)

    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    image, notes = read_image(tmp_path / "cmyk.jpg")
    assert any("CMYK" in n for n in notes)
    assert torch.allclose(image[:, 8, 8], torch.tensor([1.0, -1.0, -1.0]), atol=0.05)  # red


def test_lossless_webp_is_exact(tmp_path):
    pixels = _noise(16, 16)
    p = tmp_path / "a.webp"
    Image.fromarray(pixels).save(p, lossless=True)
    image, notes = read_image(p)
    assert notes == []
    assert torch.equal(image, from_uint8(pixels[None])[:, 0])


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animated_image_uses_first_frame(tmp_path, suffix):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 255, 255), (0, 0, 0), (255, 0, 0))]
    p = tmp_path / f"anim{suffix}"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    image, notes = read_image(p)
    assert torch.all(image == 1.0)
    assert any("animated image (3 frames): its first frame is used" in n for n in notes)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)  # 20 wide, 10 high; left half red
    pixels[:, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.png"
    Image.fromarray(pixels).save(p, exif=exif)
    image, notes = read_image(p)
    assert image.shape == (3, 20, 10)
    assert torch.all(image[0, :10] == 1.0) and torch.all(image[0, 10:] == -1.0)  # red on top
    assert any("EXIF orientation 6" in n for n in notes)


# ---------------------------------------------------------------- reading: errors


def _raises(path, pattern: str):
    return pytest.raises(VidiffError, match=re.escape(str(path)) + ".*" + pattern)


def test_missing_file_directory_and_empty_file(tmp_path):
    with _raises(tmp_path / "nope.png", "no such file"):
        read_image(tmp_path / "nope.png")
    with _raises(tmp_path, "is a directory"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with _raises(tmp_path / "empty.png", "empty"):
        read_image(tmp_path / "empty.png")


def test_text_file_is_not_an_image(tmp_path):
    for name in ("notes.txt", "fake.png"):
        (tmp_path / name).write_text("this is not an image\n" * 20)
        with _raises(tmp_path / name, "not an image.*PNG"):
            read_image(tmp_path / name)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_image(tmp_path, fmt):
    full = tmp_path / f"full.{fmt}"
    Image.fromarray(_noise(64, 64)).save(full)
    data = full.read_bytes()
    p = tmp_path / f"cut.{fmt}"
    p.write_bytes(data[: len(data) // 2])
    with _raises(p, "truncated or corrupt"):
        read_image(p)


def test_too_small(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(p)
    with _raises(p, "too small to animate; give an image of at least 8x8 pixels"):
        read_image(p)
    Image.new("RGB", (40, 7)).save(p)
    with _raises(p, "too small"):
        read_image(p)


def test_video_given_as_image(tmp_path):
    mp4 = write_video(tmp_path / "clip.mp4", torch.zeros(3, 4, 16, 16), fps=4)
    with _raises(mp4, r"is a video, not a still image; give one frame, e.g. `ffmpeg -i .* -frames:v 1"):
        read_image(mp4)
    disguised = tmp_path / "clip.png"
    disguised.write_bytes(mp4.read_bytes())  # a video with an image's suffix: recognised by PyAV
    with _raises(disguised, "is a video, not a still image"):
        read_image(disguised)


# ---------------------------------------------------------------- fit_image


def test_fit_landscape_and_portrait():
    out, note = fit_image(torch.zeros(3, 480, 640), 32, 32)
    assert out.shape == (3, 32, 32)
    assert note == (
        "resized 640x480 -> 43x32 (width x height) and centre-cropped 43x32 -> 32x32 (width x height)"
    )
    out, note = fit_image(torch.zeros(3, 100, 50), 16, 24)
    assert out.shape == (3, 16, 24)
    assert "50x100 -> 24x48" in note


def test_fit_already_sized_returns_none():
    image = torch.rand(3, 16, 24) * 2 - 1
    out, note = fit_image(image, 16, 24)
    assert note is None and torch.equal(out, image)


def test_fit_crop_only_and_upscale():
    out, note = fit_image(torch.zeros(3, 48, 32), 32, 32)
    assert out.shape == (3, 32, 32) and note == "centre-cropped 32x48 -> 32x32 (width x height)"
    small = torch.rand(3, 12, 10) * 2 - 1
    out, note = fit_image(small, 64, 48)
    assert out.shape == (3, 64, 48)
    assert out.min() >= -1 and out.max() <= 1
    assert note.startswith("resized 10x12 -> ")


def test_fit_keeps_a_centred_feature_centred():
    image = -torch.ones(3, 48, 64)
    image[:, 16:32, 24:40] = 1.0  # 16x16 white square in the middle of a 64x48 image
    out, _ = fit_image(image, 32, 32)
    weight = (out[0] + 1).clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = (weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum()
    assert abs(cy - 15.5) <= 1 and abs(cx - 15.5) <= 1  # a 43 -> 32 crop is off by half a pixel
    assert out[0, 16, 16] > 0.9 and out[0, 2, 2] < -0.9
