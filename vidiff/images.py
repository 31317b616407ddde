"""Still images in, for image-to-video (`vidiff animate --image picture.png`).

`read_image` reads PNG / JPEG / WebP (and anything else Pillow reads) into a [3,H,W] float tensor in
[-1,1], the same convention as `vidiff.video.from_uint8`, and returns a short note for every conversion
it made (transparency flattened onto white, grayscale expanded, 16-bit reduced, EXIF orientation, ...).
`fit_image` resizes such an image to cover a stage's size and centre-crops it.

Bit depth: 16-bit grayscale PNGs (Pillow modes I;16 / I) are reduced here with rounding, value/257.
16-bit RGB / RGBA PNGs are reduced by Pillow itself while decoding (it keeps the high byte, value//256,
at most one 8-bit level below rounding); we note it, as the full 16 bits never reach us.

Every failure a user can cause (missing, empty, not an image, truncated, a video, too small) raises
`VidiffError` naming the path and the fix.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from vidiff.errors import VidiffError
from vidiff.video import from_uint8

MIN_SIDE = 8
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
# Exceptions Pillow raises on corrupt or truncated data (UnidentifiedImageError is an OSError).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_GRAY16_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------- reading


def read_image(path) -> tuple[torch.Tensor, list[str]]:
    """Read a still image as a [3,H,W] float32 tensor in [-1,1], plus a note for each conversion made."""
    rgb, notes = decode_image(path)
    p = Path(path)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise VidiffError(
            f"{p}: the image is {w}x{h} (width x height), too small to animate; give an image of at least "
            f"{MIN_SIDE}x{MIN_SIDE} pixels, ideally at least the stage's size"
        )
    return from_uint8(rgb[None])[:, 0], notes


def decode_image(path) -> tuple[np.ndarray, list[str]]:
    """Fully decode a still image to [H,W,3] uint8 (any size), plus a note for each conversion made; every
    failure is a VidiffError naming the path (curation sorts images by size itself)."""
    notes: list[str] = []
    return _decode(_check_image_path(path), notes), notes


def _check_image_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise VidiffError(f"{p}: no such file; check the path to the image")
    if p.is_dir():
        raise VidiffError(
            f"{p}: is a directory, not an image; pass an image file (PNG, JPEG, WebP) inside it"
        )
    if not p.is_file():
        raise VidiffError(f"{p}: not a regular file; pass an image file (PNG, JPEG, WebP)")
    if p.suffix.lower() in VIDEO_SUFFIXES:
        raise _video_error(p)
    if p.stat().st_size == 0:
        raise VidiffError(f"{p}: file is empty (0 bytes); re-export or re-download the image")
    return p


def _video_error(p: Path) -> VidiffError:
    return VidiffError(
        f"{p} is a video, not a still image; give one frame, e.g. `ffmpeg -i {p} -frames:v 1 frame.png`"
    )


def _decode(p: Path, notes: list[str]) -> np.ndarray:
    """Open, fully decode and convert to [H,W,3] uint8, turning every Pillow failure into a VidiffError."""
    try:
        with Image.open(p) as im:
            return _to_rgb8(im, notes)
    except UnidentifiedImageError:
        if _is_video(p):
            raise _video_error(p) from None
        raise VidiffError(
            f"{p}: not an image Pillow can read; give a PNG, JPEG or WebP file (convert it to PNG first)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise VidiffError(f"{p}: the image is too large to read safely ({exc}); downscale it first") from None
    except _PIL_ERRORS as exc:
        raise VidiffError(
            f"{p}: the image is truncated or corrupt ({_short(exc)}); re-export or re-download it"
        ) from None


def _is_video(p: Path) -> bool:
    """True when FFmpeg opens `p` as a video container (not as a single still image or a text file)."""
    try:
        import av

        with av.open(str(p)) as container:
            name = container.format.name
            return (
                bool(container.streams.video) and not name.endswith("_pipe") and name not in {"image2", "tty"}
            )
    except Exception:  # any failure just means "not a video we recognise"
        return False


def _short(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()
    return msg[0][:200] if msg else type(exc).__name__


def _to_rgb8(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Frame 0, upright, loaded, as [H,W,3] uint8; appends a note for each conversion."""
    n_frames = getattr(im, "n_frames", 1)
    if n_frames > 1:
        notes.append(f"animated image ({n_frames} frames): its first frame is used")
    high_byte_16 = _pillow_reduces_16bit(im)
    im.load()  # decode now, inside the caller's try, so truncation surfaces here
    if high_byte_16:
        notes.append(f"16-bit {im.mode} PNG reduced to 8 bits by Pillow (high byte kept)")
    im = _apply_exif_orientation(im, notes)
    if im.mode in _GRAY16_MODES:
        return _gray16_to_rgb8(np.asarray(im), notes)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return _flatten_onto_white(im, notes)
    return _convert_to_rgb(im, notes)


def _pillow_reduces_16bit(im: Image.Image) -> bool:
    """True for 16-bit RGB(A)/LA PNGs, which Pillow decodes to 8 bits (raw mode such as 'RGB;16B')."""
    tile = getattr(im, "tile", None) or []
    rawmode = tile[0][3] if tile and isinstance(tile[0][3], str) else ""
    return im.mode in ("RGB", "RGBA", "LA") and rawmode.endswith(";16B")


def _apply_exif_orientation(im: Image.Image, notes: list[str]) -> Image.Image:
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return im
    notes.append(f"EXIF orientation {orientation} applied (image rotated/flipped upright)")
    return ImageOps.exif_transpose(im)


def _gray16_to_rgb8(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """16-bit grayscale -> 8-bit RGB with rounding: round(v / 257), exact for v = 257 * k."""
    v = values.astype(np.int64)
    if v.min() < 0 or v.max() > 65535:
        notes.append("32-bit grayscale values clipped to the 16-bit range 0..65535")
        v = v.clip(0, 65535)
    notes.append("16-bit grayscale image reduced to 8 bits (value / 257, rounded) and expanded to RGB")
    gray = ((v + 128) // 257).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _flatten_onto_white(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Composite an image with alpha (or palette / tRNS transparency) onto white: rgb*a + 255*(1-a)."""
    rgba = np.asarray(im.convert("RGBA")).astype(np.float32)
    rgb, alpha = rgba[..., :3], rgba[..., 3:] / 255.0
    kind = f"{im.mode} with transparency" if im.mode not in _ALPHA_MODES else im.mode
    if (alpha < 1).any():
        notes.append(f"{kind} flattened onto white")
    else:
        notes.append(f"{kind} is fully opaque: alpha channel dropped")
    if im.mode in ("LA", "La", "L", "1"):
        notes.append("grayscale expanded to RGB")
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.ascontiguousarray(out.round().clip(0, 255).astype(np.uint8))


def _convert_to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    if im.mode == "L":
        notes.append("grayscale expanded to RGB")
    elif im.mode == "1":
        notes.append("1-bit black-and-white image expanded to RGB")
    elif im.mode == "P":
        notes.append("palette (indexed-colour) image expanded to RGB")
    elif im.mode == "CMYK":
        notes.append("CMYK converted to RGB (no colour profile applied)")
    elif im.mode != "RGB":
        notes.append(f"{im.mode} image converted to RGB")
    return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy, as torch wants


# ---------------------------------------------------------------- fitting


def fit_image(image: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, str | None]:
    """Resize [3,H,W] to cover height x width keeping the aspect ratio, then centre-crop to exactly that.

    Bicubic, antialiased when downscaling, clamped to [-1,1]. Returns the image and a note of what was
    done, or None when it already had the size.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise VidiffError(f"fit_image expects a [3,H,W] image, got shape {tuple(image.shape)}")
    if height < 1 or width < 1:
        raise VidiffError(f"fit_image needs a positive target size, got height={height} width={width}")
    _, h, w = image.shape
    if (h, w) == (height, width):
        return image, None
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    steps = []
    if (new_h, new_w) != (h, w):
        image = _resize(image, new_h, new_w, downscale=scale < 1)
        steps.append(f"resized {w}x{h} -> {new_w}x{new_h} (width x height)")
    if (new_h, new_w) != (height, width):
        top, left = (new_h - height) // 2, (new_w - width) // 2
        image = image[:, top : top + height, left : left + width]
        steps.append(f"centre-cropped {new_w}x{new_h} -> {width}x{height} (width x height)")
    note = " and ".join(steps)
    return image.contiguous(), note


def _resize(image: torch.Tensor, height: int, width: int, downscale: bool) -> torch.Tensor:
    x = image.to(torch.float32)[None]
    x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=downscale)
    return x[0].clamp(-1, 1).to(image.dtype)
