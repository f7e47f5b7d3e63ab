"""convkit layers under torch.nn.parallel.DistributedDataParallel (gloo, 2 processes on this
machine): a few SGD steps, each rank on its half of the global batch, end at the weights one
process reaches on the whole batch (equal within float32 rounding)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import convkit
import convkit.nn as cnn

WORLD = 2
STEPS = 4
GLOBAL_BATCH = 8
LR = 0.1

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def small_model():
    """conv + relu + pool + linear, all but the linear on convkit's kernels."""
    torch.manual_seed(0)
    return torch.nn.Sequential(cnn.Conv2d(3, 6, 3, padding=1, algo="im2col"), cnn.ReLU(), cnn.MaxPool2d(2),
                               cnn.Conv2d(6, 4, 1, algo="1x1"), cnn.ReLU(), cnn.AvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 5))


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 3, 12, 12, generator=g), torch.randint(0, 5, (GLOBAL_BATCH,), generator=g))
            for _ in range(STEPS)]


def sgd_steps(model, data, rank=0, world=1):
    """STEPS steps of SGD with momentum; rank r trains on the r-th contiguous slice of each global
    batch. DDP averages the ranks' gradients, and the mean of the ranks' mean losses (equal
    slices) is the global batch's mean loss, so every rank should take one process's steps."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    per = GLOBAL_BATCH // world
    for x, y in data:
        xs, ys = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        loss = torch.nn.functional.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank, world, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    convkit.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(small_model())
        with convkit.use_backend("cpu"):
            sgd_steps(model, batches(), rank, world)
        torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks leave together: a rank that tears gloo down while the other (rank 0 hosts
        # the TCP store) is still talking to it can abort the process at exit.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one_process(tmp_path):
    mp.spawn(ddp_worker, args=(WORLD, free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    with convkit.use_backend("cpu"):
        ref = sgd_steps(small_model(), batches()).state_dict()
    start = small_model().state_dict()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == ref.keys()
        for k in ref:
            assert not torch.equal(got[k], start[k]), f"{k} did not train"
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {k}")
