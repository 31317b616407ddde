"""What a denoiser is conditioned on (`Cond`), the frozen open_clip text encoder that fills it, caption
dropout for classifier-free guidance, and a cache of text encodings to store beside latents."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.errors import VidiffError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- Cond


@dataclass
class Cond:
    """Conditioning for one batch; every field is batch-first with batch size B.

    text [B, L, D] float tokens; text_mask [B, L] bool (True = real token). A row whose mask is all
    False is unconditional (the denoiser then attends only to its learned null token).
    image_latent [B, C, 1, h, w] (image-to-video), lowres [B, C, T', H', W'] (super-resolution),
    noise_aug_level [B] (noise added to lowres), fps [B], frame_mask [B, T] bool (True = real frame).
    """

    text: Tensor
    text_mask: Tensor
    image_latent: Tensor | None = None
    lowres: Tensor | None = None
    noise_aug_level: Tensor | None = None
    fps: Tensor | None = None
    frame_mask: Tensor | None = None

    def __post_init__(self):
        if self.text.dim() != 3:
            raise VidiffError(f"Cond.text must be [B, L, D], got shape {tuple(self.text.shape)}")
        b, length = self.text.shape[:2]
        if tuple(self.text_mask.shape) != (b, length):
            raise VidiffError(
                f"Cond.text_mask must be [B, L] = {(b, length)} to match text, got {tuple(self.text_mask.shape)}"
            )
        if self.text_mask.dtype != torch.bool:
            self.text_mask = self.text_mask.bool()
        expect = {"image_latent": 5, "lowres": 5, "noise_aug_level": 1, "fps": 1, "frame_mask": 2}
        for name, ndim in expect.items():
            v = getattr(self, name)
            if v is None:
                continue
            if v.dim() != ndim or v.shape[0] != b:
                raise VidiffError(
                    f"Cond.{name} must have {ndim} dims with batch {b} first, got {tuple(v.shape)}"
                )
        if self.image_latent is not None and self.image_latent.shape[2] != 1:
            raise VidiffError(
                f"Cond.image_latent must be one frame [B, C, 1, h, w], got {tuple(self.image_latent.shape)}"
            )
        if self.frame_mask is not None and self.frame_mask.dtype != torch.bool:
            self.frame_mask = self.frame_mask.bool()

    @property
    def batch_size(self) -> int:
        return self.text.shape[0]

    def _fields(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _map(self, fn) -> Cond:
        return Cond(**{k: None if v is None else fn(k, v) for k, v in self._fields().items()})

    def to(self, device=None, dtype: torch.dtype | None = None) -> Cond:
        """Move to `device`; cast float fields (not masks) to `dtype`."""

        def move(_, v: Tensor) -> Tensor:
            if dtype is not None and v.is_floating_point():
                return v.to(device=device, dtype=dtype)
            return v.to(device=device)

        return self._map(move)

    def __getitem__(self, index) -> Cond:
        """Select batch rows (int, slice, index tensor or bool mask); an int keeps the batch dim."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda _, v: v[index])

    def repeat(self, n: int) -> Cond:
        """Repeat each row n times in place (row i becomes rows i*n .. i*n+n-1), e.g. n seeds per prompt."""
        return self._map(lambda _, v: v.repeat_interleave(n, dim=0))

    @staticmethod
    def cat(conds: list[Cond]) -> Cond:
        """Concatenate along the batch (e.g. [cond, cond.null_like()] for CFG); pads text to the longest L."""
        if not conds:
            raise VidiffError("Cond.cat needs at least one Cond")
        present = [tuple(k for k, v in c._fields().items() if v is not None) for c in conds]
        if len(set(present)) != 1:
            raise VidiffError(
                f"Cond.cat: the conds carry different optional fields {sorted(set(present))}; give all the same ones"
            )
        length = max(c.text.shape[1] for c in conds)
        out = {}
        for name in present[0]:
            parts = [getattr(c, name) for c in conds]
            if name in ("text", "text_mask"):
                parts = [
                    F.pad(p, (0, 0, 0, length - p.shape[1]) if p.dim() == 3 else (0, length - p.shape[1]))
                    for p in parts
                ]
            try:
                out[name] = torch.cat(parts, dim=0)
            except RuntimeError as exc:
                raise VidiffError(f"Cond.cat: field {name} has shapes that do not stack: {exc}") from None
        return Cond(**out)

    def null_like(self) -> Cond:
        """The same batch with no text (all tokens masked); image, low-res, fps and masks are kept."""
        return dataclasses.replace(
            self, text=torch.zeros_like(self.text), text_mask=torch.zeros_like(self.text_mask)
        )

    def drop_text(self, drop: Tensor) -> Cond:
        """Make rows where `drop` [B] bool is True unconditional."""
        keep = ~drop.to(device=self.text.device, dtype=torch.bool)
        return dataclasses.replace(
            self,
            text=self.text * keep[:, None, None].to(self.text.dtype),
            text_mask=self.text_mask & keep[:, None],
        )


def caption_dropout(cond: Cond, p: float, generator: torch.Generator | None = None) -> Cond:
    """Drop each row's text with probability p (classifier-free guidance training)."""
    if not 0.0 <= p <= 1.0:
        raise VidiffError(f"caption dropout probability must be in [0, 1], got {p}")
    if p == 0.0:
        return cond
    u = torch.rand(cond.batch_size, generator=generator, device=generator.device if generator else "cpu")
    return cond.drop_text(u < p)


# ---------------------------------------------------------------------------- text encoder


@dataclass
class TextEncoderConfig:
    """`model_name`: "toy" (small random tower) or any open_clip model name with a built-in BPE
    tokenizer (e.g. ViT-B-32, ViT-L-14, ViT-H-14). `pretrained`: a local weights file for it
    (never downloaded); without one the tower is randomly initialised from `seed`, and says so.
    `context_length`, `width`, `layers`, `heads` shape the toy tower only; `seed` fixes its random
    weights, so any process rebuilds the same tower from the config (check with `fingerprint()`).
    `frozen=False` lets the tower train (it is frozen by default)."""

    model_name: str = "toy"
    pretrained: str | None = None
    context_length: int = 32
    width: int = 64
    layers: int = 2
    heads: int = 2
    seed: int = 0
    frozen: bool = True


TOY_TOKEN_EMBEDDING_STD = 1.0


class _TextTower(nn.Module):
    """The parts of an open_clip text transformer that produce per-token features."""

    def __init__(self, token_embedding, positional_embedding, transformer, ln_final, attn_mask):
        super().__init__()
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        self.transformer = transformer
        self.ln_final = ln_final
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        mask = None if self.attn_mask is None else self.attn_mask[:n, :n]
        return self.ln_final(self.transformer(x, attn_mask=mask))


class TextEncoder(nn.Module):
    """Frozen open_clip text tower: prompts -> per-token features [B, L, D] and mask [B, L].

    Features are the final-layer tokens (after ln_final, before the pooled projection); the mask
    covers start token .. end token, since CLIP's causal attention leaves tokens after the end token
    meaningless. The learned null embedding for unconditional rows lives in the denoiser (it trains
    and is saved with it); here a dropped caption is just an all-False mask, see `Cond.drop_text`.
    """

    def __init__(self, config: TextEncoderConfig | None = None):
        super().__init__()
        import open_clip
        from open_clip.tokenizer import SimpleTokenizer

        self.config = config = config or TextEncoderConfig()
        name = config.model_name
        if name == "toy":
            self.tower = self._toy_tower(config)
            self.tokenizer = SimpleTokenizer(context_length=config.context_length)
            self.is_random = True
            log.warning(
                "text encoder: RANDOMLY INITIALISED toy tower (width %d, %d layers, context %d, seed %d), "
                "not a pretrained CLIP; fine for toy runs only",
                config.width,
                config.layers,
                config.context_length,
                config.seed,
            )
        else:
            model_cfg = open_clip.get_model_config(name) if ":" not in name else None
            if model_cfg is None:
                raise VidiffError(
                    f"text encoder: unknown open_clip model {name!r}; use a built-in name such as ViT-B-32 "
                    "or ViT-H-14 (see open_clip.list_models()), or 'toy'"
                )
            text_cfg = model_cfg.get("text_cfg", {})
            if "hf_model_name" in text_cfg or "hf_tokenizer_name" in text_cfg:
                raise VidiffError(
                    f"text encoder: {name} uses a Hugging Face text model/tokenizer, which would be downloaded; "
                    "pick a model with an open_clip text transformer (e.g. ViT-B-32, ViT-L-14, ViT-H-14)"
                )
            if config.pretrained is not None and not Path(config.pretrained).is_file():
                raise VidiffError(
                    f"text encoder: weights file {config.pretrained} does not exist; give the path of a local "
                    f"open_clip checkpoint for {name} (vidiff never downloads weights)"
                )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = open_clip.create_model(name, pretrained=config.pretrained)
            src = getattr(model, "text", model)
            if not hasattr(src, "token_embedding"):
                raise VidiffError(
                    f"text encoder: {name} has no open_clip text transformer; pick another model"
                )
            self.tower = _TextTower(
                src.token_embedding, src.positional_embedding, src.transformer, src.ln_final, src.attn_mask
            )
            del model
            self.tokenizer = open_clip.get_tokenizer(name)
            self.is_random = config.pretrained is None
            if self.is_random:
                log.warning(
                    "text encoder: %s with RANDOM weights (no pretrained= file given); outputs are meaningless text features",
                    name,
                )
            else:
                log.info("text encoder: %s weights from %s", name, config.pretrained)
        self.context_length = int(self.tower.positional_embedding.shape[0])
        self.dim = int(self.tower.positional_embedding.shape[1])
        self.frozen = config.frozen
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    @staticmethod
    def _toy_tower(config: TextEncoderConfig) -> _TextTower:
        from open_clip.transformer import TextTransformer

        # Seeded in its own RNG scope: another process rebuilds exactly this tower from the config.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            tt = TextTransformer(
                context_length=config.context_length,
                width=config.width,
                heads=config.heads,
                layers=config.layers,
                output_dim=None,
            )
            # open_clip's token-embedding init (std 0.02) is meant for training; frozen at that scale, the
            # random blocks swamp the word: "moving left" and "moving right" came out at cosine 0.96 on the
            # direction token. At std 1 the word's own token dominates (cosine ~0.3), so cross-attention can
            # tell prompts apart.
            nn.init.normal_(tt.token_embedding.weight, std=TOY_TOKEN_EMBEDDING_STD)
        return _TextTower(
            tt.token_embedding, tt.positional_embedding, tt.transformer, tt.ln_final, tt.attn_mask
        )

    def train(self, mode: bool = True):
        # a frozen tower stays in eval mode even inside a training module
        return super().train(mode and not self.frozen)

    def fingerprint(self) -> str:
        """A short hash of the weights: store it with latents/checkpoints to detect a different tower."""
        h = hashlib.sha256()
        for k, v in sorted(self.tower.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().contiguous().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def tokenize(self, prompts: list[str] | str) -> tuple[Tensor, Tensor]:
        """Token ids [B, L] and mask [B, L]; empty prompts are errors, too-long ones are truncated with a warning."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise VidiffError("text encoder: no prompts given; pass at least one non-empty prompt")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise VidiffError(f"text encoder: prompt {i} is empty ({p!r}); give a non-empty caption")
            n = len(self.tokenizer.encode(p)) + 2
            if n > self.context_length:
                warnings.warn(
                    f"prompt {i} has {n} tokens, more than the text context of {self.context_length}; "
                    f"it is truncated to {self.context_length}: {p[:60]!r}...",
                    stacklevel=2,
                )
        ids = self.tokenizer(prompts, context_length=self.context_length)
        eot = ids.argmax(dim=1)  # the end token has the largest id in CLIP's vocab
        mask = torch.arange(ids.shape[1])[None] <= eot[:, None]
        return ids, mask

    def forward(self, prompts: list[str] | str) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenize(prompts)
        device = self.tower.positional_embedding.device
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.tower(ids.to(device))
        return tokens, mask.to(device)

    def cond(self, prompts: list[str] | str, **fields) -> Cond:
        """A Cond for `prompts`, with any other fields (fps=..., image_latent=...) passed through."""
        tokens, mask = self(prompts)
        return Cond(text=tokens, text_mask=mask, **fields)


# ---------------------------------------------------------------------------- text cache


def encode_captions(
    encoder: TextEncoder, captions: list[str], batch_size: int = 256, dtype: torch.dtype = torch.float16
) -> dict[str, Tensor]:
    """Encode captions in batches -> {"text": [N, L, D], "text_mask": [N, L]}, L trimmed to the longest caption."""
    from tqdm import tqdm

    toks, masks = [], []
    for i in tqdm(
        range(0, len(captions), batch_size), desc="encode captions", disable=len(captions) <= batch_size
    ):
        t, m = encoder(captions[i : i + batch_size])
        toks.append(t.to(dtype).cpu())
        masks.append(m.cpu())
    text, mask = torch.cat(toks), torch.cat(masks)
    length = int(mask.sum(1).max())
    return {"text": text[:, :length].contiguous(), "text_mask": mask[:, :length].contiguous()}


def save_text_cache(path: str | Path, encoder: TextEncoder, captions: list[str], **kwargs) -> Path:
    """Encode `captions` and write them to a safetensors file with the encoder's name and fingerprint."""
    from safetensors.torch import save_file

    tensors = encode_captions(encoder, captions, **kwargs)
    meta = {
        "model_name": encoder.config.model_name,
        "fingerprint": encoder.fingerprint(),
        "captions": json.dumps(captions),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_text_cache(
    path: str | Path, encoder: TextEncoder | None = None
) -> tuple[dict[str, Tensor], list[str]]:
    """Read a text cache -> ({"text", "text_mask"}, captions); with `encoder`, check it made the cache."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VidiffError(f"text cache {path} does not exist; write it with save_text_cache")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if encoder is not None and meta.get("fingerprint") != encoder.fingerprint():
        raise VidiffError(
            f"text cache {path} was written by another text encoder ({meta.get('model_name')}, "
            f"{meta.get('fingerprint')}); re-encode the captions with this one ({encoder.fingerprint()})"
        )
    return tensors, json.loads(meta.get("captions", "[]"))
