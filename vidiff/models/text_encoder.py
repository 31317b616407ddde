"""The frozen open_clip text encoder that fills `Cond.text`, and a cache of text encodings to store
beside latents."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from vidiff.errors import VidiffError
from vidiff.models.cond import Cond
from vidiff.models.pretrained import PretrainedMixin

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- text encoder


@dataclass
class TextEncoderConfig:
    """The text tower: an open_clip text transformer, or a small random "toy" one. Weights are never
    downloaded; a tower without a weights file is random, and says so when it is built."""

    model_name: str = "toy"  # "toy", or an open_clip model with a BPE tokenizer (e.g. ViT-B-32, ViT-H-14)
    pretrained: str | None = None  # local weights file for model_name; None: random weights from seed
    context_length: int = 32  # toy tower only: tokens per caption (longer ones are truncated, with a warning)
    width: int = 64  # toy tower only: feature width (the denoiser's text_dim must match)
    layers: int = 2  # toy tower only
    heads: int = 2  # toy tower only
    seed: int = 0  # seeds random weights, so every process rebuilds the same tower (see fingerprint())
    # False: the weights take gradients and follow .train(); `vidiff train` encodes the captions once,
    # so there the tower stays as it is either way
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


class TextEncoder(PretrainedMixin, nn.Module):
    """Frozen open_clip text tower: prompts -> per-token features [B, L, D] and mask [B, L].

    Features are the final-layer tokens (after ln_final, before the pooled projection); the mask
    covers start token .. end token, since CLIP's causal attention leaves tokens after the end token
    meaningless. The learned null embedding for unconditional rows lives in the denoiser (it trains
    and is saved with it); here a dropped caption is just an all-False mask, see `Cond.drop_text`.
    """

    config_class = TextEncoderConfig
    model_kind = "text_encoder"
    written_by = "`vidiff train` (the text_encoder/ folder of its export)"

    def __init__(self, config: TextEncoderConfig | None = None, announce: bool = True):
        """`announce=False` skips the log lines about where the weights come from (for weights that
        `from_pretrained` loads from a saved folder right after)."""
        super().__init__()
        import open_clip
        from open_clip.tokenizer import SimpleTokenizer

        self.config = config = config or TextEncoderConfig()
        name = config.model_name
        if name == "toy":
            self.tower = self._toy_tower(config)
            self.tokenizer = SimpleTokenizer(context_length=config.context_length)
            self.is_random = True
            if announce:
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
            if announce and self.is_random:
                log.warning(
                    "text encoder: %s with RANDOM weights (no pretrained= file given); outputs are meaningless text features",
                    name,
                )
            elif announce:
                log.info("text encoder: %s weights from %s", name, config.pretrained)
        self.context_length = int(self.tower.positional_embedding.shape[0])
        self.dim = int(self.tower.positional_embedding.shape[1])
        self.frozen = config.frozen
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    @classmethod
    def from_config(cls, config: TextEncoderConfig) -> TextEncoder:
        """The tower's shape from `config`, for weights that load from a saved folder next: the file named by
        config.pretrained (on the machine that saved it) need not exist here."""
        encoder = cls(dataclasses.replace(config, pretrained=None), announce=False)
        encoder.config, encoder.is_random = config, config.model_name == "toy" or config.pretrained is None
        return encoder

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
