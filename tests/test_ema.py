"""EMA weights follow the model with the warm-up decay and are carried in the state dict."""

import torch

from vidiff.training.ema import EMA


def test_ema_tracks_and_warms_up():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = ema.shadow.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first decay = min(0.9, 1/10) = 0.1: moves 90% of the way
    assert torch.allclose(ema.shadow.weight, start + 0.9, atol=1e-6)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.shadow.weight, model.weight, atol=1e-5)
    assert int(ema.num_updates) == 201
    assert "shadow.weight" in ema.state_dict()
    assert not any(p.requires_grad for p in ema.shadow.parameters())


def _sharded_ema_rank(rank: int, port: int, out) -> None:
    import math

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(1)), torch.nn.Parameter(torch.randn(3, 5))])
    full, sharded = EMA(model, decay=0.9), EMA(model, decay=0.9)

    def partition_like_zero3():  # DeepSpeed's rule: ceil(numel / N) elements per rank, the last range zero-padded
        for p in model:
            size = math.ceil(p.numel() / 2)
            padded = torch.zeros(2 * size)
            padded[: p.numel()] = p.detach().reshape(-1)
            p.ds_tensor = padded[rank * size : (rank + 1) * size]

    partition_like_zero3()
    sharded.shard_like(model)
    for step in range(5):
        with torch.no_grad():
            for p in model:
                p.add_(0.1 * (step + 1))
        partition_like_zero3()
        full.update(model)
        sharded.update(model)
    gathered = sharded.state_dict()
    out.put((rank, all(torch.allclose(gathered[k], v) for k, v in full.state_dict().items())))
    dist.destroy_process_group()


def test_an_ema_kept_as_zero3_partitions_gathers_to_the_full_ema():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_sharded_ema_rank, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results == {0: True, 1: True}  # a 1-element weight too: rank 1 holds only padding of it
