"""`vidiff encode` on N ranks: each writes its share into a part folder, resumably, and the last to finish merges
them into the cache one process writes, file for file."""

import json
import os
import subprocess
import sys

import pytest
import torch
from cli import ROOT, run_vidiff

from vidiff.errors import VidiffError
from vidiff.training import encode_ranks
from vidiff.training.latent_cache import encode_manifest, encode_toyworld, load_latent_cache

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = {"num_frames": 9, "size": (16, 16), "image_share": 0.3, "seed": 2, "batch_size": 2, "progress": False}


def _same_cache(a, b):
    """Same tensors, captions and order as load_latent_cache reads them, and the same files byte for byte."""
    ca, cb = load_latent_cache(a), load_latent_cache(b)
    assert ca.captions == cb.captions and len(ca.latents) == len(cb.latents)
    assert all(torch.equal(x, y) for x, y in zip(ca.latents, cb.latents, strict=True))
    assert (ca.lowres is None) == (cb.lowres is None)
    if ca.lowres is not None:
        assert all(torch.equal(x, y) for x, y in zip(ca.lowres, cb.lowres, strict=True))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())  # the parts, the plan and the lock are gone
    for n in names:
        if n != "meta.json":  # the same but for where the cache is
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert json.loads((a / "meta.json").read_text()) == json.loads((b / "meta.json").read_text())


def test_two_ranks_write_the_one_process_cache(tiny_vae_dir, toy_manifest, tmp_path):
    # windows, images and crops all decided from (seed, index); 3 ranks over 2-window batches, one rank left idle
    kw = {"num_frames": 5, "size": (16, 16), "windows_per_clip": 3, "image_share": 0.5, "crop": (8, 8),
          "batch_size": 2, "progress": False}
    one = encode_manifest(tiny_vae_dir, toy_manifest, tmp_path / "one", **kw)
    for rank in (2, 0, 1):
        out = encode_manifest(tiny_vae_dir, toy_manifest, tmp_path / "ranks", rank=rank, world_size=4, **kw)
    assert not (out / "meta.json").exists()  # rank 3 has not run: no merge yet
    encode_manifest(tiny_vae_dir, toy_manifest, out, rank=3, world_size=4, **kw)
    _same_cache(one, out)


def test_sr_cache_merges_with_its_residual_std(tiny_vae_dir, tmp_path):
    kw = {**TOY, "image_share": 0.0, "lowres": "space", "resample": "pixel"}
    one = encode_toyworld(tiny_vae_dir, 5, tmp_path / "one", **kw)
    for rank in (1, 0):
        encode_toyworld(tiny_vae_dir, 5, tmp_path / "ranks", rank=rank, world_size=2, **kw)
    assert "lowres_residual_std" in json.loads((one / "meta.json").read_text())
    _same_cache(one, tmp_path / "ranks")


def test_a_rerun_skips_written_parts(tiny_vae_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(encode_ranks, "CHUNK_ITEMS", 1)  # a part file per batch, so one can go missing
    one = encode_toyworld(tiny_vae_dir, 8, tmp_path / "one", **TOY)
    out = tmp_path / "ranks"
    encode_toyworld(tiny_vae_dir, 8, out, rank=0, world_size=2, **TOY)
    part = encode_ranks.part_dir(out, 0, 2)
    files = sorted(part.glob("batches-*.safetensors"))
    assert [f.name for f in files] == ["batches-0000000-0000001.safetensors", "batches-0000001-0000002.safetensors"]
    stamp = files[0].stat().st_mtime_ns
    files[1].unlink()  # as if rank 0 had stopped after its first batch
    encode_toyworld(tiny_vae_dir, 8, out, rank=0, world_size=2, **TOY)
    assert files[0].stat().st_mtime_ns == stamp and files[1].is_file()  # only the missing batch again
    encode_toyworld(tiny_vae_dir, 8, out, rank=1, world_size=2, **TOY)
    _same_cache(one, out)
    stamp = (out / "meta.json").stat().st_mtime_ns
    encode_toyworld(tiny_vae_dir, 8, out, rank=1, world_size=2, **TOY)
    assert (out / "meta.json").stat().st_mtime_ns == stamp  # complete: nothing again


def test_other_settings_into_unfinished_parts_are_refused(tiny_vae_dir, tmp_path):
    out = tmp_path / "c"
    encode_toyworld(tiny_vae_dir, 4, out, rank=0, world_size=2, **TOY)
    for change in ({"seed": 3}, {"world_size": 3}, {"world_size": 1}, {"batch_size": 1}):
        kw = {**TOY, "rank": 0, "world_size": 2, **change}
        with pytest.raises(VidiffError, match=rf"{out}.*other settings.*delete .*parts.json"):
            encode_toyworld(tiny_vae_dir, 4, out, **kw)


def test_rank_outside_the_world_is_refused(tiny_vae_dir, tmp_path):
    with pytest.raises(VidiffError, match="0 <= rank < world size"):
        encode_toyworld(tiny_vae_dir, 4, tmp_path / "c", rank=2, world_size=2, **TOY)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(("flags", "env", "expect"), [
    ((None, None), {}, (0, 1)),
    ((1, 4), {"RANK": "0", "WORLD_SIZE": "2"}, (1, 4)),  # flags win
    ((None, 1), {"RANK": "1", "WORLD_SIZE": "2"}, (0, 1)),  # --world-size 1: one process, whatever the launcher
    ((None, None), {"RANK": "3", "WORLD_SIZE": "8", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, (3, 8)),
    ((None, None), {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "enc"}, (1, 2)),
    ((None, None), {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "interactive"}, (0, 1)),
])
def test_rank_from_flags_then_torchrun_then_slurm(flags, env, expect):
    assert encode_ranks.resolve_rank(*flags, env=env)[:2] == expect


@pytest.mark.parametrize(("flags", "match"), [((2, 2), "0 <= rank"), ((1, None), "together"), ((None, 2), "together")])
def test_bad_rank_flags_name_the_fix(flags, match):
    with pytest.raises(VidiffError, match=match):
        encode_ranks.resolve_rank(*flags, env={})


def test_cli_ranks_as_two_processes(tiny_vae_dir, tmp_path):
    """Two real processes at once, one told its rank by flags and one by torchrun's variables; whichever finishes
    last merges."""
    args = ["encode", "--checkpoint", tiny_vae_dir, "--out", tmp_path / "ranks", "--toyworld", "5", "--frames", "9",
            "--height", "16", "--width", "16", "--seed", "2", "--batch-size", "2", "--image-share", "0.3"]
    one = encode_toyworld(tiny_vae_dir, 5, tmp_path / "one", **TOY)
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vidiff", *map(str, args)]
    procs = [subprocess.Popen([*cmd, "--rank", "0", "--world-size", "2"], cwd=ROOT, env=base, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE),
             subprocess.Popen(cmd, cwd=ROOT, env={**base, "RANK": "1", "WORLD_SIZE": "2"}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = "".join(o for o, _ in outs)
    assert "rank 1 of 2 (torchrun's RANK/WORLD_SIZE)" in said and "latent cache:" in said, said
    _same_cache(one, tmp_path / "ranks")
    r = run_vidiff(*args, "--rank", "2", "--world-size", "2")
    assert r.returncode == 2 and "ranks are numbered 0..1" in r.stderr
