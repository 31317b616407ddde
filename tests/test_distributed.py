"""Training across ranks, for real: 2 CPU processes (gloo) under DDP and DeepSpeed ZeRO 1-3 compute what one process
computes with the same global batch; sharded checkpoints export and resume on another number of ranks (or another
strategy); two "nodes" started by torchrun rendezvous on 127.0.0.1. Nothing is mocked: every run is `vidiff train` in
its own processes.

Tolerance: the ranks' gradients are averaged by an all-reduce, whose summation order differs from one process's
backward over the whole batch, so losses and weights agree to float32 rounding, not bit for bit. Measured here:
at most 6e-8 in the logged loss and 1.7e-7 in any EMA weight after 24 steps (every test here prints its gaps
under `pytest -s`); the tests allow 1e-6 and 1e-5.
"""

import csv
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import TINY_UNET, tiny_latent_cache

from vidiff.config import load_config
from vidiff.errors import ConfigError, VidiffError
from vidiff.training.strategy import DistributedConfig, deepspeed_config, launched_layout
from vidiff.training.train_stage import TrainRunConfig, train_stage

LOSS_TOL, WEIGHT_TOL = 1e-6, 1e-5
STEPS = 24  # a few dozen: past the warm-up, through 8 epochs' checkpoints and both kinds of batch
TINY_DIT = [
    "stage.latent_channels=4", "stage.latent_frames=2", "stage.latent_height=4", "stage.latent_width=4",
    "stage.denoiser.kind=dit", "stage.denoiser.dit.in_channels=4", "stage.denoiser.dit.patch_size=[1,2,2]",
    "stage.denoiser.dit.hidden_size=32", "stage.denoiser.dit.depth=2", "stage.denoiser.dit.num_heads=2",
    "stage.denoiser.dit.text_dim=32", "text.width=32", "text.heads=2",
    "stage.sampling.steps=4", "train.batch_size=4", "train.image_batch_size=4", "train.steps_per_epoch=3",
    "train.optim.warmup_steps=2", "train.log_every=1", "train.compile=false",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_latent_cache(tmp_path_factory.mktemp("cache"))


def _train(out: Path, cache: Path, steps: int, *extra: str, model=TINY_UNET) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vidiff", "train", "--config", str(_empty_config(cache)),
           *model, f"data.latents={cache}", f"out_dir={out}", f"train.max_steps={steps}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _empty_config(cache: Path) -> Path:
    """A YAML file with no settings: the tests give every key as an override, from the dataclasses' defaults."""
    path = cache.parent / "defaults.yaml"
    path.write_text("{}\n")
    return path


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _losses(run: Path) -> dict[int, float]:
    """The logged loss per step, over every session of the run (a resume logs into a new version folder)."""
    out = {}
    for f in sorted((run / "logs").glob("version_*/metrics.csv")):
        out.update({int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f.open()) if r.get("train/loss")})
    return out


def _assert_same_run(a: Path, b: Path, steps: int) -> None:
    la, lb = _losses(a), _losses(b)
    assert sorted(la) == sorted(lb) == list(range(steps))
    loss_gap = max(abs(la[k] - lb[k]) for k in la)
    assert loss_gap <= LOSS_TOL, f"loss curves differ by {loss_gap}"
    wa, wb = (load_file(r / "export" / "base" / "model.safetensors") for r in (a, b))
    assert wa.keys() == wb.keys()
    weight_gap = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert weight_gap <= WEIGHT_TOL, f"exported EMA weights differ by {weight_gap}"
    print(f"{b.name}: loss within {loss_gap:.1e}, EMA weights within {weight_gap:.1e} of {a.name}")  # pytest -s


@pytest.fixture(scope="module")
def one_process(cache, tmp_path_factory):
    """The reference: one process, the whole global batch, STEPS steps (an uninterrupted run)."""
    out = tmp_path_factory.mktemp("one") / "run"
    _ok(_train(out, cache, STEPS))
    return out


def test_zero2_on_two_cpu_ranks_computes_what_one_process_computes(cache, one_process, tmp_path):
    out = tmp_path / "zero2"
    _ok(_train(out, cache, STEPS, "train.strategy=zero2", "train.devices=2"))
    shards = sorted(p.name for p in (out / "checkpoints" / "last.ckpt" / "checkpoint").iterdir())
    assert shards == ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                      "zero_pp_rank_1_mp_rank_00_optim_states.pt"]  # a sharded ZeRO checkpoint, one shard per rank
    _assert_same_run(one_process, out, STEPS)
    # the shards read back whole: `vidiff export` of the checkpoint is the export the run wrote at its end
    from vidiff.training.export_checkpoint import export_checkpoint

    exported = load_file(export_checkpoint(out / "checkpoints" / "last.ckpt", tmp_path / "exported") / "base" /
                         "model.safetensors")
    trained = load_file(out / "export" / "base" / "model.safetensors")
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "zero1", "zero3", "zero3_offload"])
def test_every_strategy_on_two_ranks_computes_what_one_process_computes(cache, one_process, tmp_path, strategy):
    out = tmp_path / strategy
    _ok(_train(out, cache, STEPS, f"train.strategy={strategy}", "train.devices=2"))
    _assert_same_run(one_process, out, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_the_dit_under_zero_computes_what_one_process_computes(cache, tmp_path, strategy):
    one, ranks = tmp_path / "one", tmp_path / strategy
    _ok(_train(one, cache, STEPS, model=TINY_DIT))
    _ok(_train(ranks, cache, STEPS, f"train.strategy={strategy}", "train.devices=2", model=TINY_DIT))
    _assert_same_run(one, ranks, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("first,then", [
    (["train.strategy=zero2", "train.devices=2"], ["train.strategy=zero2", "train.devices=1"]),  # 2 -> 1 rank
    (["train.strategy=zero2", "train.devices=1"], ["train.strategy=zero2", "train.devices=2"]),  # 1 -> 2 ranks
    (["train.strategy=zero3", "train.devices=2"], ["train.strategy=auto", "train.devices=1"]),  # ZeRO-3 -> 1 process
    (["train.strategy=ddp", "train.devices=2"], ["train.strategy=zero3", "train.devices=2"]),  # DDP file -> ZeRO-3
], ids=["zero2-2to1", "zero2-1to2", "zero3-to-single", "ddp-to-zero3"])
def test_a_resume_on_another_layout_continues_the_uninterrupted_run(cache, one_process, tmp_path, first, then):
    out = tmp_path / "run"
    _ok(_train(out, cache, STEPS // 2, *first))
    result = _ok(_train(out, cache, STEPS, *then))
    assert "resuming from" in result.stdout or "ddp" in first[0]  # a ZeRO folder of another layout is read whole
    assert not (out / "checkpoints" / "last.full.ckpt").exists()  # the full copy goes once the new checkpoint is saved
    _assert_same_run(one_process, out, STEPS)


@pytest.mark.slow
def test_a_zero3_checkpoint_exports_to_a_folder_that_generate_reads(cache, tmp_path):
    out = tmp_path / "zero3"
    _ok(_train(out, cache, 6, "train.strategy=zero3", "train.devices=2"))
    export = tmp_path / "exported"
    _ok(subprocess.run([sys.executable, "-m", "vidiff", "export", "--checkpoint", str(out / "checkpoints/last.ckpt"),
                        "--out", str(export)], capture_output=True, text=True, timeout=300))
    trained, exported = (load_file(d / "base" / "model.safetensors") for d in (out / "export", export))
    assert trained.keys() == exported.keys() and all(torch.equal(trained[k], exported[k]) for k in trained)
    _ok(subprocess.run([sys.executable, "-m", "vidiff", "generate", "--checkpoint", str(export), "--prompt",
                        "a red circle moves left", "--out", str(tmp_path / "videos")], capture_output=True, text=True,
                       timeout=300))
    assert (tmp_path / "videos" / "0000.mp4").stat().st_size > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_started_by_torchrun_train_to_the_end(cache, one_process, tmp_path):
    out, port = tmp_path / "two_nodes", _free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
         str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "vidiff", "train", "--config",
         str(_empty_config(cache)), *TINY_UNET, f"data.latents={cache}", f"out_dir={out}",
         f"train.max_steps={STEPS}", "train.strategy=zero2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=900)
        assert node.returncode == 0, err[-3000:]
    _assert_same_run(one_process, out, STEPS)


def test_strategy_settings_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="auto, ddp, zero1, zero2, zero3, zero3_offload; got 'zero4'"):
        DistributedConfig(strategy="zero4")
    stage2 = tmp_path / "ds.json"
    stage2.write_text('{"zero_optimization": {"stage": 2}}')
    with pytest.raises(ConfigError, match="sets zero_optimization.stage=2 but train.strategy=zero3 is ZeRO stage 3"):
        deepspeed_config(DistributedConfig(strategy="zero3", deepspeed_config=str(stage2)))
    stage2.write_text('{"zero_optimization": {"stage": 2}, "bf16": {"enabled": true}}')
    with pytest.raises(ConfigError, match="sets 'bf16', which vidiff sets from the training config"):
        deepspeed_config(DistributedConfig(strategy="zero2", deepspeed_config=str(stage2)))
    stage2.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        deepspeed_config(DistributedConfig(strategy="zero2", deepspeed_config=str(stage2)))
    with pytest.raises(ConfigError, match="does not run DeepSpeed"):
        DistributedConfig(strategy="ddp", deepspeed_config=str(stage2))
    for name in ("zero1", "zero2", "zero3", "zero3_offload"):  # the shipped configs load and say their own stage
        assert deepspeed_config(DistributedConfig(strategy=name))["zero_optimization"]["stage"] == int(name[4])


def test_the_layout_comes_from_the_launcher_and_must_agree_with_it():
    torchrun = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}
    assert launched_layout(DistributedConfig(), torchrun) == (4, 2)
    assert launched_layout(DistributedConfig(devices=4, num_nodes=2), torchrun) == (4, 2)
    with pytest.raises(ConfigError, match="set train.devices=4 train.num_nodes=2"):
        launched_layout(DistributedConfig(devices=2, num_nodes=2), torchrun)
    slurm = {"SLURM_NTASKS": "16", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train"}
    assert launched_layout(DistributedConfig(), slurm) == (8, 2)
    assert launched_layout(DistributedConfig(devices=2), {}) == (2, 1)


def test_a_global_batch_that_does_not_split_over_the_ranks_fails_before_any_step(cache, tmp_path):
    config = load_config(TrainRunConfig, None, [*TINY_UNET, f"data.latents={cache}", f"out_dir={tmp_path / 'run'}",
                                                "train.devices=3", "train.strategy=ddp"])
    with pytest.raises(VidiffError, match="batch_size 4 does not split into 3 equal per-rank slices"):
        train_stage(config, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_resume_from_a_checkpoint_of_another_model_config_fails_before_any_step(cache, tmp_path):
    out = tmp_path / "run"
    train_stage(load_config(TrainRunConfig, None, [*TINY_UNET, f"data.latents={cache}", f"out_dir={out}",
                                                   "train.max_steps=1"]), progress=False)
    before = (out / "checkpoints" / "last.ckpt").read_bytes()
    wider = [o.replace("model_channels=16", "model_channels=24") for o in TINY_UNET]
    with pytest.raises(VidiffError, match="holds a checkpoint of another model .* resume with the config that run used"):
        train_stage(load_config(TrainRunConfig, None, [*wider, f"data.latents={cache}", f"out_dir={out}",
                                                       "train.max_steps=2"]), progress=False)
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == before  # nothing written is lost


@pytest.mark.slow
def test_the_vae_with_its_discriminator_trains_under_ddp_as_one_process_does(tmp_path):
    # two optimizers and two backward passes per step: DDP's processes without its wrapper, gradients averaged by
    # the module (vidiff.training.strategy.average_gradients); a deterministic forward (posterior mode, no latent
    # noise) so that one process and two ranks must agree
    tiny = ["model.block_out_channels=[8,8,16]", "model.latent_channels=4", "data.num_samples=8", "eval.num_samples=2",
            "train.batch_size=4", "train.warmup_steps=1", "train.checkpoint_every=2", "train.sample_posterior=false",
            "train.latent_noise=0", "loss.adv_weight=0.1", "loss.adv_start_step=1", "train.steps=4"]
    config = Path(__file__).resolve().parents[1] / "configs" / "toy" / "vae.yaml"
    for name, extra in (("one", []), ("ddp", ["train.devices=2", "train.strategy=ddp"])):
        _ok(subprocess.run([sys.executable, "-m", "vidiff", "train-vae", "--config", str(config), *tiny, *extra,
                            f"out_dir={tmp_path / name}"], capture_output=True, text=True, timeout=600))
    one, ddp = (load_file(tmp_path / n / "model.safetensors") for n in ("one", "ddp"))
    worst = max((one[k] - ddp[k]).abs().max().item() for k in one)
    assert worst <= 1e-4, f"the 2-rank VAE differs from the 1-process VAE by {worst}"  # measured: 4e-6


def test_zero_is_refused_for_the_vae_which_steps_two_optimizers():
    from vidiff.training.strategy import trainer_layout

    with pytest.raises(ConfigError, match="use train.strategy=ddp"):
        trainer_layout(DistributedConfig(strategy="zero2", devices=2), explicit_gradients=True)


def test_a_rank_reads_only_the_latents_of_its_slices_from_disk(cache, monkeypatch):
    from vidiff.models.text_encoder import TextEncoder
    from vidiff.training import latent_cache
    from vidiff.training.batching import JointBatchSampler, StepKeyedLoader
    from vidiff.training.train_stage import build_dataset

    config = load_config(TrainRunConfig, None, [*TINY_UNET, f"data.latents={cache}", "train.batch_size=2"])
    dataset, _ = build_dataset(config, TextEncoder(config.text))
    assert dataset.latents._files == {}  # building it read the shards' headers only, no tensor
    read = []
    real_open = latent_cache.safe_open
    monkeypatch.setattr(latent_cache, "safe_open", lambda path, fw: _recording(real_open(path, fw), read))
    frames = [shape[1] for shape in dataset.latents.shapes]
    sampler = JointBatchSampler([i for i, t in enumerate(frames) if t > 1], [i for i, t in enumerate(frames) if t == 1],
                                batch_size=2, image_share=0.5, seed=0, steps_per_epoch=4, rank=1, world_size=2)
    taken = [i for batch in sampler for i in batch]
    for _ in StepKeyedLoader(dataset, batch_sampler=sampler):
        pass
    assert sorted(read) == sorted(dataset.latents.refs[i][1] for i in taken)  # its slices' items, nothing else
    assert len(set(taken)) < len(dataset)  # and that is not the whole cache


def _recording(shard_file, log: list):
    class Recording:
        def get_tensor(self, key):
            log.append(key)
            return shard_file.get_tensor(key)

    return Recording()
