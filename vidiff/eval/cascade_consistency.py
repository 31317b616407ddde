"""Does a cascade's final video still show what its base stage made? (issue 21)

For each prompt the cascade runs once; its base stage's video and its last stage's video are kept. The final video
is brought back to the base stage's grid (every k-th frame, k x k pixel block means: how SR training made its
low-res inputs, `vidiff.training.latent_cache.degrade`) and compared with the base video (PSNR), and the toy-world
oracle reads both (colour, shape, motion), optionally toy FVD too. Targets: PSNR >= 24 dB on average, each oracle
accuracy of the final videos within 0.05 of the base videos'.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from vidiff.errors import VidiffError
from vidiff.pipelines.lowres import downsample_grid

PSNR_TARGET_DB = 24.0
ORACLE_TOLERANCE = 0.05
ORACLE_KEYS = ("color_accuracy", "shape_accuracy", "motion_accuracy", "all_correct", "consistency")


def to_base_grid(video: Tensor, frames_factor: int, space_factor: int) -> Tensor:
    """`video` [..., C, T, H, W] on a grid `frames_factor` x finer in time and `space_factor` x in height and width,
    brought back: every `frames_factor`-th frame (first and last of 1 + k(n - 1) frames) and block means."""
    h, w = video.shape[-2:]
    if (video.shape[-3] - 1) % frames_factor or h % space_factor or w % space_factor:
        raise VidiffError(
            f"a video of {video.shape[-3]} frames of {h}x{w} is not on a grid {frames_factor}x finer in time and "
            f"{space_factor}x in space than a base grid (frames - 1 and the sides must divide by those factors)"
        )
    return downsample_grid(video, frames_factor, space_factor)


def generate_base_and_final(
    checkpoint: str | Path, prompts: Sequence[str], seed: int = 0, device: str = "cpu", progress: bool = False,
    overrides: Sequence[str] = (),
    stages: Sequence[str] | None = None,
) -> tuple[list[Tensor], list[Tensor], tuple[int, int], tuple[int, int]]:
    """Prompt i with seed `seed + i` through the cascade's leading `stages` (all by default) once, as `vidiff
    generate` does (`overrides` as its --set): the base stage's videos and the last stage's ([C, T, H, W] in
    [-1, 1]), the (frames, space) factors between them and the frame rates (base, final)."""
    from vidiff.pipelines.text_to_video import TextToVideo

    pipe = TextToVideo(checkpoint, device=device, stages=stages, overrides=overrides)
    if len(pipe.cascade.stages) < 2:
        raise VidiffError(
            f"{checkpoint} runs one stage here ({pipe.stage.config.name}); consistency compares a cascade's base stage "
            "with its last stage: pass a cascade folder (`vidiff cascade --stage BASE --stage TSR --stage SSR`) and "
            "at least two of its stages"
        )
    base, final = [], []
    for i, prompt in enumerate(tqdm(prompts, desc="cascade", unit="video", disable=not progress)):
        videos = pipe.stage_videos([prompt], seed=seed + i)
        base.append(videos[0][0].cpu())
        final.append(videos[-1][0].cpu())
    fps = (pipe.stage.config.fps, pipe.cascade.fps)
    return base, final, pipe.cascade.factors(), fps


def consistency_scores(
    prompts: Sequence[str],
    base: Sequence[Tensor],
    final: Sequence[Tensor],
    factors: tuple[int, int],
    fvd: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """PSNR of each final video on the base grid against its base video, the oracle on both sets (and toy FVD with
    `fvd`), the oracle's differences and whether the targets hold."""
    from vidiff.eval.oracle_metric import oracle_metric
    from vidiff.eval.psnr import psnr

    if not prompts or not len(prompts) == len(base) == len(final):
        raise VidiffError(f"consistency needs one base and one final video per prompt; got {len(prompts)} prompts, "
                          f"{len(base)} base and {len(final)} final videos")
    back = [to_base_grid(f, *factors) for f in final]
    for i, (b, f) in enumerate(zip(base, back, strict=True)):
        if b.shape != f.shape:
            raise VidiffError(f"video {i}: the final video on the base grid is {list(f.shape)}, the base video "
                              f"{list(b.shape)}; the cascade's factors {factors} do not map one onto the other")
    db = [float(psnr(f[None], b[None])[0]) for b, f in zip(base, back, strict=True)]
    # the final videos also as brought back: what the oracle reads at the base stage's size, so that a difference
    # from the base videos is one of content, not of how well the oracle sees at either size
    sets = (("base", base), ("final", final), ("final_on_base_grid", back))
    oracle = {name: oracle_metric([(f"{name}_{i:04d}", v, p) for i, (v, p) in enumerate(zip(videos, prompts, strict=True))],
                                  progress=progress)
              for name, videos in sets}

    def difference(name: str) -> dict[str, float]:
        return {k: oracle[name][k] - oracle["base"][k] for k in ORACLE_KEYS
                if oracle[name].get(k) is not None and oracle["base"].get(k) is not None}

    def within(diff: dict[str, float]) -> bool:
        return all(abs(diff[k]) <= ORACLE_TOLERANCE for k in ("color_accuracy", "shape_accuracy", "motion_accuracy")
                   if k in diff)

    diff, diff_back = difference("final"), difference("final_on_base_grid")
    result: dict[str, Any] = {
        "n_videos": len(prompts),
        "psnr_db": sum(db) / len(db), "psnr_db_min": min(db), "psnr_db_each": db,
        "share_at_target": sum(d >= PSNR_TARGET_DB for d in db) / len(db),
        "oracle": {name: {k: o.get(k) for k in ORACLE_KEYS} for name, o in oracle.items()},
        "per_video": {name: o["per_video"] for name, o in oracle.items()},
        "oracle_difference": diff,
        "oracle_difference_on_base_grid": diff_back,
        "targets": {"psnr_db": PSNR_TARGET_DB, "oracle_tolerance": ORACLE_TOLERANCE},
    }
    result["meets_psnr_target"] = result["psnr_db"] >= PSNR_TARGET_DB
    result["meets_oracle_target"] = within(diff)
    result["meets_oracle_target_on_base_grid"] = within(diff_back)
    if fvd:
        from vidiff.eval.toy_fvd import toy_fvd

        result["fvd_toy"] = {name: toy_fvd(list(videos), progress=progress)["fvd_toy"]
                             for name, videos in (("base", base), ("final", final))}
    return result


def evaluate_cascade(
    checkpoint: str | Path,
    prompts: Sequence[str],
    seed: int = 0,
    fvd: bool = False,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    overrides: Sequence[str] = (),
    stages: Sequence[str] | None = None,
) -> dict[str, Any]:
    """`generate_base_and_final`, then `consistency_scores`; with `out_dir`, the videos go there too as mp4
    (base/NNNN.mp4, final/NNNN.mp4) with prompts.jsonl, and the result as consistency.json."""
    base, final, factors, fps = generate_base_and_final(checkpoint, prompts, seed, device, progress, overrides, stages)
    result = {"checkpoint": str(checkpoint), "prompts": list(prompts), "seed": seed, "overrides": list(overrides),
              "stages": list(stages) if stages else None,
              "factors": {"frames": factors[0], "space": factors[1]}, "fps": {"base": fps[0], "final": fps[1]},
              **consistency_scores(prompts, base, final, factors, fvd, progress)}
    if out_dir is not None:
        write_pairs(out_dir, prompts, base, final, fps, seed)
        (Path(out_dir) / "consistency.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def write_pairs(out_dir: str | Path, prompts: Sequence[str], base: Sequence[Tensor], final: Sequence[Tensor],
                fps: tuple[int, int], seed: int) -> None:
    from vidiff.video import write_video

    out = Path(out_dir)
    records = []
    for i, prompt in enumerate(prompts):
        for name, videos, rate in (("base", base, fps[0]), ("final", final, fps[1])):
            (out / name).mkdir(parents=True, exist_ok=True)
            write_video(out / name / f"{i:04d}.mp4", videos[i], fps=rate)
        records.append({"file": f"{i:04d}.mp4", "prompt": prompt, "seed": seed + i})
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def format_consistency(result: dict[str, Any]) -> str:
    """The figures as a short table: PSNR on the base grid, the oracle on base and final, toy FVD if measured."""
    o, d = result["oracle"], result["oracle_difference"]
    lines = [
        f"{result['n_videos']} videos; final output brought back to the base grid "
        f"({result['factors']['frames']}x frames, {result['factors']['space']}x pixels)",
        f"  PSNR against the base output: {result['psnr_db']:.2f} dB mean, {result['psnr_db_min']:.2f} dB min, "
        f"{100 * result['share_at_target']:.0f} % of videos >= {PSNR_TARGET_DB:.0f} dB "
        f"(target: mean >= {PSNR_TARGET_DB:.0f} dB: {'met' if result['meets_psnr_target'] else 'NOT met'})",
        f"  {'oracle':<16}{'base':>8}{'final':>8}{'final - base':>14}{'final on base grid':>20}{'- base':>8}",
    ]
    back, db = o["final_on_base_grid"], result["oracle_difference_on_base_grid"]
    for k in ORACLE_KEYS:
        if k not in d or k not in db:
            continue
        lines.append(f"  {k.replace('_accuracy', ''):<16}{o['base'][k]:>8.2f}{o['final'][k]:>8.2f}{d[k]:>+14.2f}"
                     f"{back[k]:>20.2f}{db[k]:>+8.2f}")
    verdict = {True: "met", False: "NOT met"}
    lines.append(f"  oracle within {ORACLE_TOLERANCE} of the base (colour, shape, motion): final "
                 f"{verdict[result['meets_oracle_target']]}, on the base grid "
                 f"{verdict[result['meets_oracle_target_on_base_grid']]}")
    if "fvd_toy" in result:
        lines.append(f"  toy FVD: base {result['fvd_toy']['base']:.1f}, final {result['fvd_toy']['final']:.1f}")
    return "\n".join(lines)
