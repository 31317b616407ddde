"""FVD: I3D weight loading (TorchScript detector and piergiaj state dict), the protocol, monotonicity, bad input."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidiff.errors import VidiffError
from vidiff.eval.frechet import BiasedEstimateWarning, GaussianStats
from vidiff.eval.fvd import FVDProtocol, check_compatible, fvd, i3d_features, load_i3d, random_i3d, stats_meta
from vidiff.eval.i3d import InceptionI3D

SMALL = FVDProtocol(num_frames=16, resolution=32, batch_size=8)  # low resolution keeps CPU tests fast
WIDTH = 0.25  # a thinned I3D: same graph, 1/16 of the compute


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small convolutions on a shared, oversubscribed CPU run ~10x faster single-threaded.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class StyleGANVLikeDetector(torch.nn.Module):
    """Mimics the calling convention of StyleGAN-V's i3d_torchscript.pt: flags for [0,255] input,
    resizing to 224 and returning pre-softmax features."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ):
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=[x.shape[2], 224, 224], mode="trilinear", align_corners=False)
        logits = self.net(x)
        if return_features:
            return logits
        return torch.softmax(logits, dim=1)


def _clips(n=16, t=16, h=32, w=32, seed=0):
    """Fixed clips: a coloured blob moving on a gradient, random colour, start and velocity per clip."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    clips = []
    for _ in range(n):
        color = torch.rand(3, generator=g) * 2 - 1
        start, vel = torch.rand(2, generator=g), (torch.rand(2, generator=g) - 0.5) * 0.6
        bg = (yy * (torch.rand(1, generator=g) - 0.5)).expand(3, h, w)
        frames = []
        for k in range(t):
            cy, cx = start + vel * k / t
            blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
            frames.append(bg * (1 - blob) + color[:, None, None] * blob)
        clips.append(torch.stack(frames, dim=1))
    return torch.stack(clips).clamp(-1, 1)


def _noise(x, s):
    return (x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)


def _blur(x, sigma):
    if sigma == 0:
        return x
    r = int(3 * sigma) + 1
    k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    b, c, t, h, w = x.shape
    y = x.reshape(b * c * t, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(b, c, t, h, w)


def _shuffle(x, frac):
    """Permute a fraction `frac` of the frame positions of every clip (a cyclic shift among them)."""
    g = torch.Generator().manual_seed(2)
    out = x.clone()
    t = x.shape[2]
    k = round(frac * t)
    if k < 2:
        return out
    for i in range(x.shape[0]):
        pos = torch.randperm(t, generator=g)[:k]
        out[i, :, pos] = x[i, :, pos.roll(1)]
    return out


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return InceptionI3D(width=WIDTH).eval()


def test_state_dict_and_torchscript_paths_give_identical_features(tmp_path, net):
    from safetensors.torch import save_file

    torch.save(net.state_dict(), tmp_path / "i3d_state.pt")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "i3d_dp.pth"
    )
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "i3d.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # torch.jit.script is deprecated but still how the detector was made
        torch.jit.script(StyleGANVLikeDetector(net)).save(str(tmp_path / "i3d_torchscript.pt"))
    x = _clips(n=3)
    torch.jit.trace(net, x[:1]).save(str(tmp_path / "i3d_traced.pt"))

    with torch.no_grad():
        reference = net(x).double().numpy()
    loaded = {
        name: load_i3d(tmp_path / name)
        for name in ("i3d_state.pt", "i3d_dp.pth", "i3d.safetensors", "i3d_torchscript.pt", "i3d_traced.pt")
    }
    assert (
        loaded["i3d_torchscript.pt"].kind == "torchscript" and loaded["i3d_torchscript.pt"]._stylegan_v_call
    )
    assert loaded["i3d_state.pt"].kind == "state_dict"
    for name, det in loaded.items():
        feats = i3d_features(x, det, SMALL, progress=False)
        assert feats.shape == (3, 400), name
        np.testing.assert_allclose(feats, reference, rtol=1e-5, atol=1e-6, err_msg=name)
    # A different network gives different features, so the comparison above can fail.
    other = random_i3d(seed=1, width=WIDTH)
    assert not np.allclose(i3d_features(x, other, SMALL, progress=False), reference, atol=1e-3)


@pytest.fixture(scope="module")
def real_set():
    det = random_i3d(seed=0, width=WIDTH)
    real = _clips(n=16, seed=3)
    return det, real, GaussianStats.from_features(i3d_features(real, det, SMALL, progress=False))


@pytest.mark.parametrize(
    "distort,levels",
    [(_noise, [0.0, 0.05, 0.15, 0.4]), (_blur, [0.0, 0.6, 1.2, 2.5]), (_shuffle, [0.0, 0.25, 0.5, 1.0])],
    ids=["noise", "blur", "shuffle"],
)
def test_fvd_grows_monotonically_with_distortion_strength(distort, levels, real_set):
    det, real, real_stats = real_set
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasedEstimateWarning)  # N=16 < 400 dims: fine for a ranking
        for level in levels:
            values.append(
                fvd(i3d_features(distort(real, level), det, SMALL, progress=False), real_stats)["fvd"]
            )
    assert values[0] == pytest.approx(0.0, abs=1e-6 * max(values))
    assert all(a < b for a, b in zip(values[:-1], values[1:], strict=True)), values


def test_protocol_resizes_and_crops_frames():
    clip = torch.rand(3, 24, 40, 60) * 2 - 1
    stretched = FVDProtocol(resolution=32).prepare(clip)
    cropped = FVDProtocol(resolution=32, resize="center_crop").prepare(clip)
    strided = FVDProtocol(num_frames=4, frame_stride=5, resolution=32).prepare(clip)
    assert stretched.shape == cropped.shape == (3, 16, 32, 32) and strided.shape == (3, 4, 32, 32)
    # centre crop keeps the aspect ratio: it equals scaling 40x60 -> 32x48 and cutting columns 8..40
    ref = F.interpolate(clip[:, :16].transpose(0, 1), size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(cropped, ref[:, :, :, 8:40].transpose(0, 1))
    torch.testing.assert_close(strided[:, 1], FVDProtocol(resolution=32).prepare(clip[:, 5:])[:, 0])
    with pytest.raises(VidiffError, match="resize mode"):
        FVDProtocol(resize="pad")


def test_sets_of_different_sizes_and_lengths_are_brought_to_the_protocol():
    det = random_i3d(width=WIDTH)
    clips = [("a", torch.rand(3, 16, 32, 32) * 2 - 1), ("b", torch.rand(3, 24, 48, 40) * 2 - 1)]
    assert i3d_features(iter(clips), det, SMALL, progress=False).shape == (2, 400)
    with pytest.raises(VidiffError, match="short.mp4: has 8 frames but the FVD protocol needs 16"):
        i3d_features(iter([("short.mp4", torch.zeros(3, 8, 32, 32))]), det, SMALL, progress=False)


def test_missing_and_corrupt_weights_give_clear_errors(tmp_path, net):
    with pytest.raises(VidiffError, match="i3d_torchscript.pt"):
        load_i3d(None)
    with pytest.raises(VidiffError, match="does not exist"):
        load_i3d(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VidiffError, match="corrupt or not a weight file"):
        load_i3d(tmp_path / "junk.pt")
    torch.save(net.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(VidiffError, match="corrupt or not a weight file"):
        load_i3d(tmp_path / "truncated.pt")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(VidiffError, match="do not match the InceptionI3d layout"):
        load_i3d(tmp_path / "other.pt")


def test_fvd_reports_n_and_bias_and_checks_saved_stats(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.warns(BiasedEstimateWarning):
        out = fvd(rng.standard_normal((10, 400)), rng.standard_normal((12, 400)))
    assert out["n_generated"] == 10 and out["n_real"] == 12 and out["feature_dim"] == 400 and out["biased"]
    with pytest.raises(VidiffError, match="at least 2 samples"):
        fvd(rng.standard_normal((1, 8)), rng.standard_normal((12, 8)))
    det = random_i3d(width=WIDTH)
    saved = GaussianStats.from_features(rng.standard_normal((20, 8)), meta=stats_meta(det, SMALL))
    saved = GaussianStats.load(saved.save(tmp_path / "real.npz"))
    check_compatible(saved, stats_meta(det, SMALL), "real.npz")  # same settings: accepted
    with pytest.raises(VidiffError, match="protocol"):
        check_compatible(saved, stats_meta(det, FVDProtocol()), "real.npz")
    with pytest.raises(VidiffError, match="I3D weights"):
        check_compatible(saved, stats_meta(random_i3d(seed=5, width=WIDTH), SMALL), "real.npz")
