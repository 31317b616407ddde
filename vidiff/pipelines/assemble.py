"""`vidiff cascade`: one cascade pipeline folder from trained stage exports (each a pipeline folder written by
`vidiff train`), in cascade order; everything is checked before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vidiff.errors import VidiffError
from vidiff.pipelines.cascade import check_chain
from vidiff.pipelines.pipeline_folder import Pipeline, load_pipeline, save_pipeline


def assemble_cascade(exports: Sequence[str | Path], out: str | Path) -> Path:
    """Write the stages of `exports` (base first, then super-resolution stages) as one pipeline folder `out`,
    holding the VAE and the text encoder once and each stage's sampling settings. Refused, naming the input and the
    fix: exports of different VAEs or text encoders, two stages of one name, stages that do not chain. On failure
    nothing is left at `out` (an earlier folder there stays as it was)."""
    if not exports:
        raise VidiffError("no stages given; pass --stage EXPORT once per stage, in cascade order (base first)")
    exports, out = [Path(e) for e in exports], Path(out)
    for e in exports:
        if e.resolve() == out.resolve():
            raise VidiffError(f"--out {out} is the stage export {e}; write the cascade to a new folder")
    pipes = [load_pipeline(e) for e in exports]  # each export's own stages fit its VAE and text encoder
    _check_shared_parts(exports, pipes)
    sources = [str(e) for e, p in zip(exports, pipes, strict=True) for _ in p.stages]
    stages = [s for p in pipes for s in p.stages]
    seen: dict[str, str] = {}
    for stage, source in zip(stages, sources, strict=True):
        name = stage.config.name
        if name in seen:
            raise VidiffError(
                f"{seen[name]} and {source} both hold a stage named {name!r}; a cascade stores each stage in a folder "
                f"of its name: set stage.name to another name in one of them ({name}/config.yaml of its export)"
            )
        seen[name] = source
    check_chain([s.config for s in stages], f"cascade {out}", sources, base_first=True)
    sampling = {k: v for p in pipes for k, v in p.index.sampling.items()}
    first = pipes[0]
    # the cascade's task is its first stage's: text-to-video, or image-to-video after an image-to-video stage (the
    # super-resolution stages after it take the previous stage's video either way)
    return save_pipeline(out, exports[0] / first.index.vae, first.text_encoder, [(s, None) for s in stages],
                         first.index.task, sampling)


def _check_shared_parts(exports: list[Path], pipes: list[Pipeline]) -> None:
    """Every export holds the first one's VAE (by its hash) and text encoder (by its name and weights)."""
    vae_hash, first = pipes[0].vae.fingerprint(), exports[0]
    text = _text_identity(pipes[0])
    for export, pipe in zip(exports[1:], pipes[1:], strict=True):
        other = pipe.vae.fingerprint()
        if other != vae_hash:
            raise VidiffError(
                f"{export} was trained on another VAE (hash {other}) than {first} (hash {vae_hash}); a cascade holds one "
                f"VAE and every stage works on its latents: retrain the stage on a latent cache encoded with "
                f"{first / pipes[0].index.vae} (`vidiff encode --checkpoint` that folder)"
            )
        if _text_identity(pipe) != text:
            raise VidiffError(
                f"{export}'s text encoder ({_text_identity(pipe)}) differs from {first}'s ({text}); a cascade's "
                "stages share one text encoder: train every stage with the same `text:` settings and weights"
            )


def _text_identity(pipe: Pipeline) -> str:
    return f"{pipe.text_encoder.config.model_name}, weights {pipe.text_encoder.fingerprint()}"
