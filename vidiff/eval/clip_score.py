"""CLIP similarity (CLIP-SIM) of videos to their prompts, with any open_clip model loaded from local weights.

Per video: the mean over frames of cos(image embedding of the frame, text embedding of the prompt);
the set's score is the mean over videos, reported raw and as 100 * max(mean, 0).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from vidiff.errors import VidiffError

HOW_TO_GET_CLIP = (
    "pass --clip-model NAME (an open_clip architecture, e.g. ViT-B-32; or a custom one via "
    "--clip-config CONFIG.json) and --clip-weights PATH to that model's weights file (e.g. "
    "open_clip_pytorch_model.bin or .safetensors). vidiff never downloads weights; `--clip-weights "
    "random` gives a randomly initialised model for smoke tests only"
)

# A deliberately tiny CLIP for tests and toy runs (about 3.4M parameters, mostly the token table).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_model_config(name: str, config: dict[str, Any] | str | Path) -> str:
    """Make an open_clip architecture `name` from a config dict or JSON file; returns the name."""
    import open_clip

    if not isinstance(config, dict):
        path = Path(config)
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VidiffError(f"CLIP config {path} could not be read as JSON ({exc})") from None
    config = config.get("model_cfg", config)  # open_clip_config.json files nest it
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise VidiffError(
            f"CLIP config for {name!r} lacks {missing}; an open_clip model config has embed_dim, vision_cfg, text_cfg"
        )
    # open_clip registers architectures from JSON files; a private temp folder keeps ours apart.
    folder = Path(tempfile.mkdtemp(prefix="vidiff_clip_cfg_"))
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{name}.json")
    return name


@dataclass
class ClipScorer:
    """A loaded open_clip model with its tokenizer and image preprocessing."""

    model: torch.nn.Module
    tokenizer: Any
    name: str
    weights: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def random(self) -> bool:
        return self.weights == "random"

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "weights": self.weights, "image_size": self.image_size}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> normalised [N, 3, S, S]: shorter side to S (bicubic), centre crop."""
        x = (frames.float() + 1.0) / 2.0
        h, w = x.shape[-2:]
        s = self.image_size
        scale = s / min(h, w)
        size = (max(s, round(h * scale)), max(s, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (size[0] - s) // 2, (size[1] - s) // 2
        x = x[:, :, top : top + s, left : left + s]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(frames).to(self.device)).float(), dim=-1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def load_clip(
    name: str | None,
    weights: str | Path | None,
    config: dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "cpu",
) -> ClipScorer:
    """Build open_clip model `name` and load `weights` from a local file ("random": random init)."""
    import open_clip

    if not name or weights is None:
        raise VidiffError(f"CLIP-SIM needs a CLIP model and its weights: {HOW_TO_GET_CLIP}")
    if name.startswith("hf-hub:"):
        raise VidiffError(
            f"CLIP model {name!r} would be downloaded from the Hugging Face hub; {HOW_TO_GET_CLIP}"
        )
    if config is not None:
        register_model_config(name, config)
    if not name.startswith("local-dir:") and name not in open_clip.list_models():
        raise VidiffError(
            f"unknown open_clip model {name!r}; use one of open_clip.list_models() (e.g. ViT-B-32) or "
            "give its architecture with --clip-config CONFIG.json"
        )
    pretrained = None
    if str(weights) != "random":
        if not Path(weights).is_file():
            raise VidiffError(f"CLIP weights file {weights} does not exist; {HOW_TO_GET_CLIP}")
        pretrained = str(weights)
    try:
        model = open_clip.create_model(
            name, pretrained=pretrained, device=device, pretrained_image=False, pretrained_text=False
        )
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # damaged files and mismatched architectures surface as many exception types
        raise VidiffError(
            f"could not load CLIP model {name!r} from {weights} ({type(exc).__name__}: {str(exc)[:300]}); the file "
            f"is corrupt or belongs to another architecture. {HOW_TO_GET_CLIP}"
        ) from None
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = size if isinstance(size, int) else int(size[0])
    mean, std = _normalisation(name, cfg)
    return ClipScorer(
        model=model.eval(),
        tokenizer=tokenizer,
        name=name,
        weights=str(weights),
        image_size=size,
        mean=mean,
        std=std,
    )


def _normalisation(name: str, cfg: dict) -> tuple[tuple, tuple]:
    """Pixel mean/std. Weights loaded from a file carry no preprocessing config, so take the one every
    known pretrained tag of the architecture agrees on (SigLIP: 0.5; most others: OpenAI's)."""
    import open_clip

    found = set()
    for tag in open_clip.list_pretrained_tags_by_model(name):
        tag_cfg = open_clip.get_pretrained_cfg(name, tag)
        if "mean" in tag_cfg and "std" in tag_cfg:
            found.add((tuple(tag_cfg["mean"]), tuple(tag_cfg["std"])))
    if len(found) == 1:
        return found.pop()
    return tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)), tuple(
        cfg.get("std", open_clip.OPENAI_DATASET_STD)
    )


@torch.no_grad()
def video_prompt_similarity(
    scorer: ClipScorer, video: torch.Tensor, prompt: str, frame_batch: int = 64
) -> float:
    """Mean over frames of cos(frame, prompt) for one clip [C, T, H, W] in [-1, 1]."""
    text = scorer.encode_text([prompt])[0]
    frames = rearrange(video, "c t h w -> t c h w")
    sims = [
        scorer.encode_frames(frames[i : i + frame_batch]) @ text
        for i in range(0, frames.shape[0], frame_batch)
    ]
    return float(torch.cat(sims).mean())


def clip_similarity(
    scorer: ClipScorer,
    items: Iterable[tuple[str, torch.Tensor, str]],
    total: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """CLIP-SIM over (name, clip [C, T, H, W], prompt) items: the raw mean and 100 * max(mean, 0)."""
    per_video = []
    for name, video, prompt in tqdm(items, total=total, desc="CLIP-SIM", unit="video", disable=not progress):
        if video.ndim != 4 or video.shape[0] != 3:
            raise VidiffError(f"{name}: expected an RGB clip [3, T, H, W], got shape {tuple(video.shape)}")
        if not prompt or not prompt.strip():
            raise VidiffError(
                f"{name}: the prompt is empty; CLIP-SIM needs the prompt each video was generated from"
            )
        per_video.append(
            {"file": name, "prompt": prompt, "clipsim": video_prompt_similarity(scorer, video, prompt)}
        )
    if not per_video:
        raise VidiffError("CLIP-SIM: no videos to score")
    mean = sum(v["clipsim"] for v in per_video) / len(per_video)
    return {
        "clipsim_mean_cosine": mean,
        "clipsim_x100": 100.0 * max(mean, 0.0),
        "n_videos": len(per_video),
        "clip": scorer.describe(),
        "per_video": per_video,
    }
