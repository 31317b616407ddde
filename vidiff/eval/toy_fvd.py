"""Toy FVD: a Fréchet video distance whose features mean something on the toy world.

FVD's I3D features only mean something with the Kinetics-trained weights; with `--i3d random` an FVD
only ranks runs. On the toy world a meaningful feature space costs a few CPU minutes: a small
factorized (2D + 1D) 3D CNN, trained once on clips rendered by `vidiff.toyworld.ToyWorldDataset` to
name each clip's colour, shape and motion (three softmax heads over the toy world's COLORS, SHAPES and
MOTIONS). Its penultimate layer (`feature_dim`, 64 by default, so that ~70 videos already give a
full-rank covariance) feeds the Fréchet distance of `vidiff.eval.frechet`. A distance in this space
says how far the generated clips' colours, shapes, motions and looks are from real toy clips.

- The classifier trains on first use and is cached as the project's one model format
  (`config.yaml` + `model.safetensors`, model kind "toy_video_classifier", plus `train_summary.json`
  with its held-out accuracy) in `$VIDIFF_CACHE/toy_fvd/<settings hash>/` (default cache root
  `~/.cache/vidiff`); the hash covers every setting of the network and its training, so a changed
  setting trains a new one. A damaged cache entry is retrained with a log line; an explicit folder
  (`--toy-fvd-model DIR`) that is damaged is an error.
- The protocol: the first `frames` frames (9) of each clip, resized to `size` x `size` (32; bilinear,
  antialiased, stretching non-square frames), values in [-1, 1]. Shorter clips are an error.
- A real set is a folder or manifest of videos (as for FVD), saved toy-FVD statistics (.npz), or
  `toyworld:N`: N clips rendered with a fixed seed that the classifier never saw, passed through the
  same mp4 encoding (yuv420p, crf 18) as `vidiff generate`'s videos so that the codec is no difference.

Toy-FVD numbers compare only with toy-FVD numbers from the same classifier settings (the hash) and
protocol, never with FVD.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from tqdm.auto import tqdm

from vidiff.config import to_dict
from vidiff.errors import VidiffError
from vidiff.eval.frechet import BiasedEstimateWarning, GaussianStats, frechet_distance
from vidiff.models.pretrained import CONFIG_FILE, WEIGHTS_FILE, PretrainedMixin
from vidiff.toyworld.world import COLORS, MOTIONS, SHAPES

VERSION = 1  # part of the settings hash: bump when training code changes what a config trains
TRAIN_SEED = 9100  # training clips and initialisation
VAL_SEED = 9101  # held-out clips for the accuracy check
REAL_SEED = 9102  # `toyworld:N` real sets
SUMMARY_FILE = "train_summary.json"
TOYWORLD_PREFIX = "toyworld:"
DEFAULT_N_REAL = 256


def _log(message: str) -> None:
    print(f"toy FVD: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- configs


@dataclass
class ToyClassifierTrainConfig:
    steps: int = 2000  # optimiser steps, each on `batch_size` fresh clips; 600 left shape at chance (docs/evaluation.md)
    batch_size: int = 32
    lr: float = 2e-3  # AdamW peak learning rate (5% linear warm-up, cosine decay to 0)
    weight_decay: float = 0.01
    seed: int = TRAIN_SEED  # seeds the training clips (ToyWorldDataset) and the initialisation
    val_clips: int = 300  # held-out clips for the accuracy check after training
    val_seed: int = VAL_SEED
    chroma_p: float = 0.5  # share of training clips with halved chroma (as yuv420p video has)
    noise_std: float = 0.03  # max std of Gaussian noise added to training clips (values in [-1, 1])


@dataclass
class ToyVideoClassifierConfig:
    frames: int = 9  # clip length it trains on (and the toy-FVD protocol's frame count)
    size: int = 32  # frame side it trains on (and the protocol's resolution)
    widths: tuple[int, ...] = (24, 48, 96)  # channels of each stage; each stage halves H and W
    feature_dim: int = 64  # penultimate width: the toy-FVD feature dimension
    groups: int = 8  # GroupNorm groups (must divide every width)
    colors: tuple[str, ...] = tuple(COLORS)  # label order of the colour head
    shapes: tuple[str, ...] = SHAPES
    motions: tuple[str, ...] = MOTIONS
    train: ToyClassifierTrainConfig = field(default_factory=ToyClassifierTrainConfig)

    def __post_init__(self):
        if self.frames < 1 or self.size < 8 or self.feature_dim < 1 or not self.widths:
            raise VidiffError(
                f"toy classifier needs frames >= 1, size >= 8, feature_dim >= 1 and some widths; got "
                f"frames={self.frames}, size={self.size}, feature_dim={self.feature_dim}, widths={self.widths}"
            )
        bad = [w for w in self.widths if w < 1 or w % self.groups]
        if bad:
            raise VidiffError(
                f"toy classifier widths {bad} are not positive multiples of groups={self.groups}"
            )

    def vocab(self) -> dict[str, tuple[str, ...]]:
        return {"color": tuple(self.colors), "shape": tuple(self.shapes), "motion": tuple(self.motions)}


def tiny_config() -> ToyVideoClassifierConfig:
    """A classifier that trains in about a second: for tests and smoke runs only (its distances mean little)."""
    return ToyVideoClassifierConfig(
        widths=(8, 16), feature_dim=16, train=ToyClassifierTrainConfig(steps=12, batch_size=8, val_clips=24)
    )


def settings_hash(config: ToyVideoClassifierConfig) -> str:
    """12 hex digits naming every setting of the network and its training (and VERSION)."""
    blob = json.dumps({"version": VERSION, "config": to_dict(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root() -> Path:
    """`$VIDIFF_CACHE`, else `$XDG_CACHE_HOME/vidiff`, else `~/.cache/vidiff`."""
    if os.environ.get("VIDIFF_CACHE"):
        return Path(os.environ["VIDIFF_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vidiff"
    return Path.home() / ".cache" / "vidiff"


def default_model_dir(config: ToyVideoClassifierConfig | None = None) -> Path:
    """Where the classifier with these settings is cached: `<cache root>/toy_fvd/<settings hash>/`."""
    return cache_root() / "toy_fvd" / settings_hash(config or ToyVideoClassifierConfig())


# ---------------------------------------------------------------- the network


class _Factorized(nn.Module):
    """Spatial 3x3 conv (stride 2 in H, W), then temporal 3-tap conv; GroupNorm + SiLU after each."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.spatial = nn.Conv3d(c_in, c_out, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.temporal = nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0))
        self.norm2 = nn.GroupNorm(groups, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.norm1(self.spatial(x)))
        return F.silu(self.norm2(self.temporal(x)))


class ToyVideoClassifier(PretrainedMixin, nn.Module):
    """Clip [B, 3, T, H, W] in [-1, 1] -> colour, shape and motion logits; `features` gives the
    penultimate [B, feature_dim] (the toy-FVD features). Global average pooling over (T, H, W) lets
    it take any T >= 1 and H, W >= 2**len(widths), though it only saw `frames` x `size` x `size`."""

    config_class = ToyVideoClassifierConfig
    model_kind = "toy_video_classifier"
    written_by = (
        "vidiff.eval.toy_fvd.train_toy_classifier (`vidiff eval --metrics fvd_toy` trains one on first use)"
    )

    def __init__(self, config: ToyVideoClassifierConfig | None = None):
        super().__init__()
        self.config = config or ToyVideoClassifierConfig()
        c = self.config
        widths = (3, *c.widths)
        self.stages = nn.Sequential(
            *(_Factorized(a, b, c.groups) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.embed = nn.Linear(widths[-1], c.feature_dim)
        self.heads = nn.ModuleDict({a: nn.Linear(c.feature_dim, len(v)) for a, v in c.vocab().items()})
        self.summary: dict[str, Any] = {}  # train_summary.json of the folder it came from, if any
        self.source = "in memory"
        self.fingerprint = ""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3:
            raise VidiffError(f"toy classifier expects clips [B, 3, T, H, W], got shape {tuple(x.shape)}")
        return F.silu(self.embed(self.stages(x).mean(dim=(2, 3, 4))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {a: head(h) for a, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> list[dict[str, str]]:
        """Each clip's most likely colour, shape and motion names."""
        logits = self(x)
        vocab = self.config.vocab()
        idx = {a: logits[a].argmax(-1).tolist() for a in logits}
        return [{a: vocab[a][idx[a][i]] for a in logits} for i in range(x.shape[0])]

    def describe(self) -> dict[str, Any]:
        acc = self.summary.get("heldout_accuracy_mp4") or self.summary.get("heldout_accuracy")
        return {
            "source": self.source,
            "settings_hash": settings_hash(self.config),
            "fingerprint": self.fingerprint,
            "feature_dim": self.config.feature_dim,
            "heldout_accuracy": acc,
            "n_heldout": self.summary.get("n_heldout"),
        }


# ---------------------------------------------------------------- data and training


def _labels(data, indices: Iterable[int], vocab: dict[str, tuple[str, ...]]) -> tuple[torch.Tensor, dict]:
    clips, labels = [], {a: [] for a in vocab}
    for i in indices:
        spec, _, _ = data.item_spec(i)
        clips.append(data[i]["video"])
        for a in vocab:
            labels[a].append(vocab[a].index(getattr(spec, a)))
    return torch.stack(clips), {a: torch.tensor(v) for a, v in labels.items()}


def halve_chroma(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] RGB with Cb/Cr averaged over 2x2 blocks (BT.601), like yuv420p video; H, W even."""
    b, _, t, h, w = x.shape
    if h % 2 or w % 2:
        return x
    r, g, bl = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl
    chroma = rearrange(torch.stack([cb, cr], 1), "b c t h w -> (b t) c h w")
    chroma = F.interpolate(F.avg_pool2d(chroma, 2), scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = rearrange(chroma, "(b t) c h w -> b c t h w", b=b, t=t).unbind(1)
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return out.clamp(-1.0, 1.0)


def _augment(x: torch.Tensor, tc: ToyClassifierTrainConfig, gen: torch.Generator) -> torch.Tensor:
    if tc.chroma_p > 0:
        pick = torch.rand(x.shape[0], generator=gen) < tc.chroma_p
        if pick.any():
            x = x.clone()
            x[pick] = halve_chroma(x[pick])
    if tc.noise_std > 0:
        std = torch.rand(x.shape[0], 1, 1, 1, 1, generator=gen) * tc.noise_std
        x = (x + std * torch.randn(x.shape, generator=gen)).clamp(-1.0, 1.0)
    return x


def _write_mp4_reproducible(path: Path, clip: torch.Tensor) -> None:
    """`write_video(path, clip, fps=8)`'s encoding (libx264, crf 18, preset medium, yuv420p), made
    bit-reproducible, as a real set must be. libx264 as write_video calls it gives different bytes from
    run to run for some 32x32 toy clips; one encoder thread, explicit frame timestamps and no
    macroblock-tree rate control give the same bytes every time (decoded pixels differ from
    write_video's by ~1/3 of the codec's own error)."""
    from fractions import Fraction

    import av

    from vidiff.video import _pick_codec, to_uint8, write_video

    frames = to_uint8(clip)
    t, h, w, _ = frames.shape
    if _pick_codec() != "libx264" or h % 2 or w % 2:
        write_video(path, clip, fps=8)
        return
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18", "preset": "medium", "threads": "1", "x264-params": "mbtree=0"}
        for k, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 8)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _mp4_roundtrip(clips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each clip encoded as `vidiff generate` writes its videos and read back with `read_video`."""
    from vidiff.video import read_video

    with tempfile.TemporaryDirectory(prefix="vidiff-toyfvd-") as tmp:
        out = []
        for i, clip in enumerate(clips):
            path = Path(tmp) / f"{i:05d}.mp4"
            _write_mp4_reproducible(path, clip)
            out.append(read_video(path))
            path.unlink()
        return out


@torch.no_grad()
def heldout_accuracy(
    model: ToyVideoClassifier, n: int, seed: int = VAL_SEED, mp4: bool = False, batch_size: int = 64
) -> dict[str, float]:
    """Per-attribute accuracy on n clips of ToyWorldDataset(seed) at the model's frames and size
    (optionally after an mp4 round trip, the form generated videos come in)."""
    from vidiff.toyworld.dataset import ToyWorldDataset

    c = model.config
    data = ToyWorldDataset(n, c.frames, c.size, c.size, seed=seed)
    vocab = c.vocab()
    device = next(model.parameters()).device
    correct = dict.fromkeys(vocab, 0)
    for start in range(0, n, batch_size):
        x, y = _labels(data, range(start, min(n, start + batch_size)), vocab)
        if mp4:
            x = torch.stack(_mp4_roundtrip(list(x)))
        logits = model.eval()(x.to(device))
        for a in vocab:
            correct[a] += int((logits[a].argmax(-1).cpu() == y[a]).sum())
    return {a: correct[a] / n for a in vocab}


def train_toy_classifier(
    config: ToyVideoClassifierConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = _log,
    progress: bool = False,
) -> ToyVideoClassifier:
    """Train the classifier on fresh ToyWorldDataset clips (deterministic given the config), measure
    its held-out accuracy (clean and after an mp4 round trip) and, with `out_dir`, save it there
    (config.yaml + model.safetensors + train_summary.json)."""
    from vidiff.toyworld.dataset import ToyWorldDataset

    c = config or ToyVideoClassifierConfig()
    tc = c.train
    world = {"color": tuple(COLORS), "shape": SHAPES, "motion": MOTIONS}
    if c.vocab() != world:
        raise VidiffError(
            f"toy classifier vocabulary {c.vocab()} differs from the toy world's {world}; "
            "training renders the whole toy world, so keep the default colors/shapes/motions"
        )
    if tc.steps < 1 or tc.batch_size < 1 or tc.val_clips < 1:
        raise VidiffError(f"toy classifier training needs steps, batch_size, val_clips >= 1, got {tc}")
    log = log or (lambda _m: None)
    log(
        f"training the toy-video classifier ({tc.steps} steps of {tc.batch_size} clips, "
        f"{c.frames}x{c.size}x{c.size}){f' into {out_dir}' if out_dir else ''}"
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    data = ToyWorldDataset(tc.steps * tc.batch_size, c.frames, c.size, c.size, seed=tc.seed)
    vocab = c.vocab()
    warmup = max(1, tc.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, tc.steps - warmup)))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        model = ToyVideoClassifier(c).to(device).train()
        gen = torch.Generator().manual_seed(tc.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        losses = []
        for step in tqdm(range(tc.steps), desc="toy classifier", unit="step", disable=not progress):
            x, y = _labels(data, range(step * tc.batch_size, (step + 1) * tc.batch_size), vocab)
            x = _augment(x, tc, gen).to(device)
            logits = model(x)
            loss = sum(F.cross_entropy(logits[a], y[a].to(device)) for a in vocab)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    model.eval()
    train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    acc = heldout_accuracy(model, tc.val_clips, tc.val_seed)
    acc_mp4 = heldout_accuracy(model, tc.val_clips, tc.val_seed, mp4=True)
    model.summary = {
        "steps": tc.steps,
        "clips_seen": tc.steps * tc.batch_size,
        "train_wall_s": round(train_wall, 2),
        "train_cpu_s": round(train_cpu, 2),
        "torch_threads": torch.get_num_threads(),
        "final_loss": float(np.mean(losses[-max(1, tc.steps // 20) :])),
        "n_heldout": tc.val_clips,
        "heldout_accuracy": acc,
        "heldout_accuracy_mp4": acc_mp4,
        "settings_hash": settings_hash(c),
    }
    log(
        f"trained in {train_wall:.0f} s; held-out accuracy ({tc.val_clips} clips, mp4): "
        + ", ".join(f"{a} {100 * v:.1f}%" for a, v in acc_mp4.items())
    )
    return _save(model, Path(out_dir)).to(device) if out_dir is not None else model


def _save(model: ToyVideoClassifier, out: Path) -> ToyVideoClassifier:
    """Write into a temporary sibling, then rename: a reader never sees half a folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make a shared cache private
    try:
        model.save_pretrained(tmp)
        (tmp / SUMMARY_FILE).write_text(json.dumps(model.summary, indent=2) + "\n")
        fingerprint = _fingerprint(tmp / WEIGHTS_FILE)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        try:
            os.rename(tmp, out)
        except OSError:  # another process cached one first, or `out` is in the way
            if not (out / CONFIG_FILE).is_file():
                raise VidiffError(
                    f"cannot write the toy classifier to {out}: the path is in the way"
                ) from None
            return load_toy_classifier(out)  # theirs, so that every run uses the cached weights
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.source, model.fingerprint = str(out), fingerprint
    return model


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_toy_classifier(folder: str | Path) -> ToyVideoClassifier:
    """A classifier saved by `train_toy_classifier`; VidiffError if the folder is missing or damaged."""
    folder = Path(folder)
    model = ToyVideoClassifier.from_pretrained(folder)
    summary = folder / SUMMARY_FILE
    if summary.is_file():
        try:
            model.summary = json.loads(summary.read_text())
        except json.JSONDecodeError:
            raise VidiffError(
                f"{summary} is not valid JSON; delete the folder {folder} to retrain the classifier"
            ) from None
    model.source = str(folder)
    model.fingerprint = _fingerprint(folder / WEIGHTS_FILE)
    return model


def load_or_train_classifier(
    model_dir: str | Path | None = None,
    config: ToyVideoClassifierConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = _log,
    progress: bool = False,
) -> ToyVideoClassifier:
    """The toy-FVD classifier: loaded from `model_dir` (or the cache folder of `config`'s settings),
    trained and saved there first if it holds none.

    A damaged or mismatching cache entry is retrained (with a log line); a damaged explicit
    `model_dir` raises VidiffError.
    """
    config = config or ToyVideoClassifierConfig()
    explicit = model_dir is not None
    folder = Path(model_dir) if explicit else default_model_dir(config)
    if folder.exists() and not folder.is_dir():
        raise VidiffError(
            f"toy classifier folder {folder} is a file; pass a folder (or a new path to train into)"
        )
    if folder.is_dir() and any(folder.iterdir()):
        try:
            model = load_toy_classifier(folder)
            if explicit or to_dict(model.config) == to_dict(config):
                return model.to(device)
            why = f"its config.yaml does not hold the settings {settings_hash(config)}"
        except VidiffError as exc:
            if explicit:
                raise VidiffError(
                    f"toy classifier folder {folder} is damaged: {exc}. Delete it to retrain, or pass another folder"
                ) from None
            why = str(exc)
        (log or _log)(f"cached classifier {folder} is unusable ({why}); retraining")
        shutil.rmtree(folder)
    return train_toy_classifier(config, folder, device=device, log=log, progress=progress)


def as_classifier(
    classifier: ToyVideoClassifier | str | Path | None, device: str | torch.device = "cpu", **kwargs
) -> ToyVideoClassifier:
    if isinstance(classifier, ToyVideoClassifier):
        return classifier.to(device).eval()
    return load_or_train_classifier(classifier, device=device, **kwargs)


# ---------------------------------------------------------------- the metric


def protocol(classifier: ToyVideoClassifier) -> dict[str, Any]:
    c = classifier.config
    return {
        "num_frames": c.frames,
        "resolution": c.size,
        "frames": "first num_frames frames",
        "resize": "stretch (bilinear, antialiased)",
        "value_range": "[-1, 1]",
    }


def prepare(clip: torch.Tensor, frames: int, size: int, name: str = "clip") -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> [3, frames, size, size]: the first `frames` frames, resized."""
    if clip.ndim != 4 or clip.shape[0] != 3:
        raise VidiffError(f"{name}: expected an RGB clip [3, T, H, W], got shape {tuple(clip.shape)}")
    if clip.shape[1] < frames:
        raise VidiffError(
            f"{name}: has {clip.shape[1]} frames but toy FVD takes the first {frames} "
            "(the classifier's clip length); generate longer videos"
        )
    x = clip[:, :frames].float()
    if tuple(x.shape[-2:]) != (size, size):
        x = rearrange(x, "c t h w -> t c h w")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = rearrange(x, "t c h w -> c t h w")
    return x.clamp(-1.0, 1.0).contiguous()


@torch.no_grad()
def toy_features(
    clips: Iterable[torch.Tensor | tuple[str, torch.Tensor]] | torch.Tensor,
    classifier: ToyVideoClassifier,
    batch_size: int = 32,
    total: int | None = None,
    desc: str = "toy features",
    progress: bool = False,
) -> np.ndarray:
    """Penultimate features [N, feature_dim] (float64) of clips given as a [B, C, T, H, W] tensor or an
    iterable of [C, T, H, W] tensors or (name, tensor) pairs."""
    if isinstance(clips, torch.Tensor):
        if clips.ndim != 5:
            raise VidiffError(f"expected videos [B, C, T, H, W], got shape {tuple(clips.shape)}")
        total = clips.shape[0]
        clips = list(clips)
    c = classifier.config
    device = next(classifier.parameters()).device
    feats, batch = [], []

    def flush():
        feats.append(classifier.eval().features(torch.stack(batch).to(device)).double().cpu().numpy())
        batch.clear()

    with tqdm(total=total, desc=desc, unit="clip", disable=not progress) as bar:
        for k, item in enumerate(clips):
            name, clip = item if isinstance(item, tuple) else (f"video {k}", item)
            batch.append(prepare(clip, c.frames, c.size, name))
            if len(batch) == batch_size:
                bar.update(len(batch))
                flush()
        if batch:
            bar.update(len(batch))
            flush()
    if not feats:
        raise VidiffError(f"{desc}: no videos to compute features of")
    return np.concatenate(feats)


def parse_toyworld(real: Any) -> int | None:
    """N for a real set written `toyworld:N`, None for anything else."""
    if not isinstance(real, (str, Path)) or not str(real).startswith(TOYWORLD_PREFIX):
        return None
    n = str(real)[len(TOYWORLD_PREFIX) :]
    if not n.isdigit() or int(n) < 2:
        raise VidiffError(
            f"real set {real!s}: write toyworld:N with N >= 2 freshly rendered toy clips, e.g. toyworld:256"
        )
    return int(n)


def toyworld_clips(
    n: int, frames: int, size: int, seed: int = REAL_SEED, mp4: bool = True
) -> list[torch.Tensor]:
    """n toy clips [3, frames, size, size] from ToyWorldDataset(seed) (a seed the classifier never
    trained on), by default written as mp4 and read back like generated videos."""
    from vidiff.toyworld.dataset import ToyWorldDataset

    data = ToyWorldDataset(n, frames, size, size, seed=seed)
    clips = [data[i]["video"] for i in range(n)]
    return _mp4_roundtrip(clips) if mp4 else clips


def stats_meta(classifier: ToyVideoClassifier) -> dict[str, Any]:
    return {"metric": "fvd_toy", "protocol": protocol(classifier), "classifier": classifier.describe()}


def check_compatible(real: GaussianStats, classifier: ToyVideoClassifier, where: str) -> None:
    """Saved real statistics must be toy-FVD statistics of the same classifier weights and protocol."""
    meta = stats_meta(classifier)
    if real.meta.get("metric") != "fvd_toy":
        raise VidiffError(
            f"{where} holds {real.meta.get('metric', 'unknown')!r} statistics, not toy-FVD ones; pass "
            "--real toyworld:N, a folder or a manifest for fvd_toy"
        )
    if real.meta.get("protocol") != meta["protocol"]:
        raise VidiffError(
            f"{where} was computed with toy-FVD protocol {real.meta.get('protocol')}, this run uses "
            f"{meta['protocol']}; recompute it"
        )
    theirs = real.meta.get("classifier", {}).get("fingerprint")
    if theirs != classifier.fingerprint:
        raise VidiffError(
            f"{where} was computed with toy classifier weights {theirs}, this run uses "
            f"{classifier.fingerprint} ({classifier.source}); recompute it with the same classifier"
        )


def real_toy_stats(
    real: str | Path | GaussianStats | Sequence[torch.Tensor] | torch.Tensor | None,
    classifier: ToyVideoClassifier,
    *,
    n_real: int = DEFAULT_N_REAL,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[GaussianStats, str]:
    """Statistics of the real set and a label for it. `real`: None (`toyworld:<n_real>`), `toyworld:N`,
    a folder or manifest of videos, a toy-FVD statistics .npz, GaussianStats, or clips."""
    meta = stats_meta(classifier)
    c = classifier.config
    if real is None:
        real = f"{TOYWORLD_PREFIX}{n_real}"
    if isinstance(real, GaussianStats):
        check_compatible(real, classifier, "the real statistics")
        return real, str(real.meta.get("source", "given statistics"))
    if isinstance(real, (str, Path)):
        n = parse_toyworld(real)
        if n is not None:
            clips = toyworld_clips(n, c.frames, c.size)
            label = f"{real} (ToyWorldDataset seed {REAL_SEED}, {c.frames}x{c.size}x{c.size}, mp4 round trip)"
        elif Path(real).suffix == ".npz":
            stats = GaussianStats.load(real)
            check_compatible(stats, classifier, str(real))
            return stats, str(real)
        else:
            from vidiff.eval.run import real_videos

            refs = real_videos(real)
            clips = ((r.name, r.read(c.frames)) for r in refs)
            n, label = len(refs), str(real)
    else:
        clips, n, label = real, len(real), f"{len(real)} given clips"
    feats = toy_features(
        clips, classifier, batch_size, total=n, desc="toy features (real)", progress=progress
    )
    return GaussianStats.from_features(feats, meta={**meta, "source": label}, name=f"real set {label}"), label


def toy_fvd(
    videos: Sequence[torch.Tensor] | torch.Tensor | Iterable[tuple[str, torch.Tensor]],
    real: str | Path | GaussianStats | Sequence[torch.Tensor] | torch.Tensor | None = None,
    *,
    classifier: ToyVideoClassifier | str | Path | None = None,
    n_real: int = DEFAULT_N_REAL,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
    total: int | None = None,
) -> dict[str, Any]:
    """Toy FVD of `videos` ([C, T, H, W] clips in [-1, 1], or (name, clip) pairs) against `real`
    (default: `toyworld:<n_real>`; see `real_toy_stats`).

    `classifier`: a ToyVideoClassifier, a folder holding one (trained there if empty), or None for
    the cached default. Returns {"fvd_toy", "n_generated", "n_real", "feature_dim", "biased",
    "notes", "real", "protocol", "classifier"}; `biased` is true when either N is below the feature
    dimension (the covariance is then rank-deficient: compare only numbers with equal N).
    """
    model = as_classifier(classifier, device=device, progress=progress)
    r, label = real_toy_stats(real, model, n_real=n_real, batch_size=batch_size, progress=progress)
    if total is None and hasattr(videos, "__len__"):
        total = len(videos)
    g = toy_features(
        videos, model, batch_size, total=total, desc="toy features (generated)", progress=progress
    )
    gs = GaussianStats.from_features(g, name="generated set")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BiasedEstimateWarning)
        value = frechet_distance(gs, r, names=("generated set", "real set"))
    notes = [str(w.message) for w in caught if issubclass(w.category, BiasedEstimateWarning)]
    return {
        "fvd_toy": value,
        "n_generated": gs.n,
        "n_real": r.n,
        "feature_dim": gs.dim,
        "biased": bool(notes),
        "notes": notes,
        "real": label,
        "protocol": protocol(model),
        "classifier": model.describe(),
    }
