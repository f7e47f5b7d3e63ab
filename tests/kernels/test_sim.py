"""Tests of the CUDA emulator (csrc/sim) through its self-test kernels (csrc/sim/selftest/sim_selftest.cu).

The well-defined kernels run on "cudasim" (the emulator) and on "cuda" when a GPU is present, so
the emulator is shown to agree with hardware: barrier reductions, per-block shared memory, the
built-in index variables, every warp operation (width < 32, partial masks) against a Python model
of PTX's shfl.sync rules, exact atomic totals across blocks and workers, launch limits. The
broken kernels (barrier divergence, warp deadlocks, misaligned load16, missing barrier) run on the
emulator only, which must report them. The shared-memory overrun needs the ASan build
(`make test-sanitize` sets CONVKIT_TEST_SANITIZE=1).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convkit import _backend

BACKENDS = ["cudasim", "cuda"]
FULL = 0xFFFFFFFF
ROOT = Path(__file__).resolve().parents[2]


def _module(backend):
    mod = _backend._load(backend)
    if mod is None:
        pytest.skip(f"convkit._{backend} is not built")
    if backend == "cuda" and (mod.device_count() == 0 or not torch.cuda.is_available()):
        pytest.skip("no CUDA device")
    return mod


class Dev:
    """Tensors on the backend's memory and the device/stream tail of every call (a non-default
    stream on the GPU)."""

    def __init__(self, backend):
        self.backend = backend
        self.mod = _module(backend)
        self.st = self.mod.selftest
        self.device = "cuda" if backend == "cuda" else "cpu"
        self.stream = torch.cuda.Stream() if backend == "cuda" else None

    @property
    def sim(self):
        return self.backend == "cudasim"

    def kw(self):
        if self.stream is None:
            return {"device": 0, "stream": 0}
        return {"device": torch.cuda.current_device(), "stream": self.stream.cuda_stream}

    def sync(self):
        if self.stream is not None:
            self.stream.synchronize()

    def full(self, shape, value, dtype):
        return torch.full(shape, value, dtype=dtype, device=self.device)

    def put(self, t):
        return t.to(self.device)


@pytest.fixture(params=BACKENDS)
def dev(request):
    return Dev(request.param)


@pytest.fixture
def sim():
    d = Dev("cudasim")
    seed, workers = d.mod.sim_seed(), d.mod.sim_num_workers()
    yield d
    d.mod.sim_set_seed(seed)
    d.mod.sim_set_num_workers(workers)


# ---- barriers and shared memory ----------------------------------------------------------------

@pytest.mark.parametrize("n,threads", [(1000, 256), (97, 32), (4096, 1024), (1, 1)])
def test_block_sum(dev, n, threads):
    x = torch.randint(-8, 8, (n,), generator=torch.Generator().manual_seed(n)).to(torch.float32)
    blocks = (n + threads - 1) // threads
    sums = dev.full((blocks,), float("nan"), torch.float32)
    dev.st.block_sum(dev.put(x).data_ptr(), sums.data_ptr(), n, threads, **dev.kw())
    dev.sync()
    padded = torch.zeros(blocks * threads)
    padded[:n] = x
    assert torch.equal(sums.cpu(), padded.view(blocks, threads).sum(1))  # small ints: exact


@pytest.mark.parametrize("M,N,K", [(112, 128, 256), (33, 17, 50), (1, 1, 1), (16, 16, 0)])
def test_tiled_matmul(dev, M, N, K):
    g = torch.Generator().manual_seed(M * N + K)
    a = torch.randint(-8, 8, (M, K), generator=g).to(torch.float32)
    b = torch.randint(-8, 8, (K, N), generator=g).to(torch.float32)
    c = dev.full((M, N), float("nan"), torch.float32)
    dev.st.tiled_matmul(dev.put(a).data_ptr(), dev.put(b).data_ptr(), c.data_ptr(), M, N, K, **dev.kw())
    dev.sync()
    assert torch.equal(c.cpu(), (a.double() @ b.double()).float())  # small ints: exact


@pytest.mark.parametrize("threads", [64, 96, 1024])
def test_neighbor_exchange_with_barrier(dev, threads):
    out = dev.full((threads,), -7, torch.int32)
    dev.st.neighbor_exchange(out.data_ptr(), threads, True, **dev.kw())
    dev.sync()
    t = torch.arange(threads)
    assert torch.equal(out.cpu(), (3 * ((t + 1) % threads) + 1).to(torch.int32))


def _async_copy(dev, mode):
    x = torch.arange(1, 129, dtype=torch.float32)
    out = dev.full((256,), -7.0, torch.float32)
    dev.st.async_copy(dev.put(x).data_ptr(), out.data_ptr(), mode, **dev.kw())
    dev.sync()
    a, b = x[:64], x[64:].clone()
    b[::4] = 0.0  # every 4th thread's second copy is a zero fill
    return out.cpu().view(64, 4), a, b


def test_async_copy_lands_at_the_wait(dev):
    """cp.async (cuda/async_copy.cuh) after the wait and a barrier: every thread's copies, zero
    fills included, are visible to the block."""
    out, a, b = _async_copy(dev, 0)
    assert torch.equal(out[:, 0], a) and torch.equal(out[:, 1], b)
    assert torch.equal(out[:, 2], a.roll(-1)) and torch.equal(out[:, 3], b.roll(-1))


def test_async_copy_destination_is_poison_until_its_wait(sim):
    """The emulator lands an asynchronous copy at the wait that covers its group and keeps the
    destination poisoned (NaN) until then, so a kernel that reads a stage too early fails here
    instead of passing by luck (a GPU may or may not have delivered the data by then)."""
    out, a, b = _async_copy(sim, 1)
    assert torch.isnan(out[:, :2]).all(), "read before any wait: both copies still in flight"
    out, a, b = _async_copy(sim, 2)
    assert torch.equal(out[:, 0], a), "wait_prior(1) lands the older group"
    assert torch.isnan(out[:, 1]).all(), "... and leaves the newest one in flight"
    assert torch.equal(out[:, 3], b), "wait_prior(0) lands it"


@pytest.mark.racy
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 12345])
def test_missing_barrier_is_wrong_under_the_emulator(sim, seed):
    """Without the barrier a thread may read its neighbour's element before it is written: the
    emulator's shuffled schedule makes that happen (reads of unwritten shared memory give -1),
    deterministically for a seed; the twin with the barrier is right under the same seed."""
    threads = 64
    expected = (3 * ((torch.arange(threads) + 1) % threads) + 1).to(torch.int32)
    sim.mod.sim_set_seed(seed)
    out = torch.full((threads,), -7, dtype=torch.int32)
    sim.st.neighbor_exchange(out.data_ptr(), threads, False)
    assert not torch.equal(out, expected)
    assert (out == -1).any(), "the wrong elements are reads of unwritten (0xFF-filled) shared memory"
    again = torch.full((threads,), -7, dtype=torch.int32)
    sim.st.neighbor_exchange(again.data_ptr(), threads, False)
    assert torch.equal(out, again), "the same seed must give the same schedule"
    right = torch.full((threads,), -7, dtype=torch.int32)
    sim.st.neighbor_exchange(right.data_ptr(), threads, True)
    assert torch.equal(right, expected)


@pytest.mark.racy
def test_missing_barrier_default_seed(sim):
    """The seed the test suite runs with (CONVKIT_SIM_SEED unset: 0) catches the bug too."""
    sim.mod.sim_set_seed(int(os.environ.get("CONVKIT_SIM_SEED", "0"), 0))
    out = torch.full((128,), -7, dtype=torch.int32)
    sim.st.neighbor_exchange(out.data_ptr(), 128, False)
    assert (out == -1).any()


@pytest.mark.racy
def test_seeds_change_the_schedule(sim):
    results = set()
    for seed in range(6):
        sim.mod.sim_set_seed(seed)
        out = torch.zeros(64, dtype=torch.int32)
        sim.st.neighbor_exchange(out.data_ptr(), 64, False)
        results.add(tuple(out.tolist()))
    assert len(results) > 1


@pytest.mark.racy
def test_correct_kernels_agree_across_seeds_and_workers(sim):
    x = torch.randint(-8, 8, (3000,), generator=torch.Generator().manual_seed(1)).to(torch.float32)
    lanes = torch.arange(64, dtype=torch.int32) * 3 - 50
    ref = None
    for seed in (0, 1, 99, 2 ** 40 + 3):
        for workers in (1, 2, 3):
            sim.mod.sim_set_seed(seed)
            sim.mod.sim_set_num_workers(workers)
            sums = torch.full((12,), float("nan"))
            sim.st.block_sum(x.data_ptr(), sums.data_ptr(), 3000, 256)
            shfl = torch.zeros(64, dtype=torch.int32)
            sim.st.warp_shuffle("int32", "xor", lanes.data_ptr(), shfl.data_ptr(), 64, FULL, 5, 32)
            slots = _atomic_slots("cpu")
            sim.st.atomics(slots.data_ptr(), 9, 96)
            got = (sums.clone(), shfl.clone(), slots.clone())
            if ref is None:
                ref = got
            else:
                for a, b in zip(got, ref):
                    assert torch.equal(a, b), f"seed {seed}, {workers} workers"


@pytest.mark.racy
@pytest.mark.parametrize("blocks,threads", [(5, 96), (3, 1024), (40, 33)])
def test_shared_memory_per_block(dev, blocks, threads):
    n = blocks * threads
    out = dev.full((n,), -7, torch.int32)
    ui = dev.full((n,), 7, torch.int32)
    uf = dev.full((n,), 7.0, torch.float32)
    dev.st.shared_per_block(out.data_ptr(), ui.data_ptr(), uf.data_ptr(), blocks, threads, **dev.kw())
    dev.sync()
    b = torch.arange(blocks).repeat_interleave(threads)
    t = torch.arange(threads).repeat(blocks)
    assert torch.equal(out.cpu(), (b * 1000 + (t + 1) % threads + 2 * b).to(torch.int32))
    if dev.sim:  # unwritten shared memory is 0xFF bytes: -1 and NaN, in every block
        assert bool((ui == -1).all())
        assert bool(torch.isnan(uf).all())


@pytest.mark.parametrize("grid,block", [((3, 2, 2), (4, 3, 2)), ((1, 1, 1), (1024, 1, 1)), ((70, 1, 1), (1, 1, 64)),
                                        ((2, 3, 1), (33, 1, 1))])
def test_builtin_index_variables(dev, grid, block):
    nb = grid[0] * grid[1] * grid[2]
    nt = block[0] * block[1] * block[2]
    out = dev.full((nb, nt, 12), -1, torch.int32)
    dev.st.thread_ids(out.data_ptr(), grid, block, **dev.kw())
    dev.sync()
    bz, by, bx = torch.meshgrid(torch.arange(grid[2]), torch.arange(grid[1]), torch.arange(grid[0]), indexing="ij")
    tz, ty, tx = torch.meshgrid(torch.arange(block[2]), torch.arange(block[1]), torch.arange(block[0]), indexing="ij")
    exp = torch.empty(nb, nt, 12, dtype=torch.int32)
    exp[:, :, 0], exp[:, :, 1], exp[:, :, 2] = tx.reshape(1, -1), ty.reshape(1, -1), tz.reshape(1, -1)
    exp[:, :, 3], exp[:, :, 4], exp[:, :, 5] = bx.reshape(-1, 1), by.reshape(-1, 1), bz.reshape(-1, 1)
    exp[:, :, 6:9] = torch.tensor(block, dtype=torch.int32)
    exp[:, :, 9:12] = torch.tensor(grid, dtype=torch.int32)
    assert torch.equal(out.cpu(), exp)


@pytest.mark.parametrize("threads", [32, 96, 1000])
def test_syncthreads_count_and_or(dev, threads):
    g = torch.Generator().manual_seed(threads)
    for pred in (torch.ones(threads), torch.zeros(threads), (torch.rand(threads, generator=g) < 0.3)):
        pred = pred.to(torch.int32) * 5  # any non-zero value counts
        out = dev.full((threads, 3), -1, torch.int32)
        dev.st.barrier_reductions(dev.put(pred).data_ptr(), out.data_ptr(), threads, **dev.kw())
        dev.sync()
        c = int((pred != 0).sum())
        exp = torch.tensor([c, int(c == threads), int(c > 0)], dtype=torch.int32).expand(threads, 3)
        assert torch.equal(out.cpu(), exp)


# ---- warp operations ---------------------------------------------------------------------------

# (memory dtype, bit-view dtype) for each element type of warp_shuffle.
SHFL_TYPES = {"int32": (torch.int32, torch.int32), "uint32": (torch.int32, torch.int32),
              "int64": (torch.int64, torch.int64), "uint64": (torch.int64, torch.int64),
              "float32": (torch.float32, torch.int32), "float64": (torch.float64, torch.int64),
              "float16": (torch.float16, torch.int16), "bfloat16": (torch.bfloat16, torch.int16)}


def _shfl_values(dtype, n):
    t = torch.arange(n, dtype=torch.float64)
    if dtype in ("int32", "uint32"):
        return (t * 1000 + 7).to(torch.int32)
    if dtype in ("int64", "uint64"):
        return (t.to(torch.int64) << 35) + t.to(torch.int64) * 3 + 1  # both halves differ per lane
    if dtype in ("float32", "float64"):
        return ((t + 0.25) * torch.where(t.to(torch.int64) % 2 == 1, -1.0, 1.0)).to(SHFL_TYPES[dtype][0])
    return (t * 0.5 + 1).to(SHFL_TYPES[dtype][0])  # exact in float16 and bfloat16 for n <= 64


def shfl_source(op, lane, arg, width):
    """The lane lane reads in a shuffle (PTX shfl.sync with CUDA's c operand): segments of
    `width` lanes; a source outside the segment (up/down) or in a later one (xor) reads the
    lane's own value."""
    seg = 32 - width
    min_lane = lane & seg
    max_lane = min_lane | (31 & ~seg)
    b = arg & 31
    if op == "idx":
        return min_lane | (b & ~seg & 31)
    if op == "up":
        j = lane - b
        return j if j >= min_lane else lane
    j = lane + b if op == "down" else lane ^ b
    return j if j <= max_lane else lane


SHFL_OPS = {"idx": "__shfl_sync", "up": "__shfl_up_sync", "down": "__shfl_down_sync", "xor": "__shfl_xor_sync"}

SHFL_CASES = [
    ("idx", FULL, 0, 32), ("idx", FULL, 5, 32), ("idx", FULL, 3, 8), ("idx", FULL, 33, 16), ("idx", FULL, 7, 1),
    ("up", FULL, 1, 32), ("up", FULL, 3, 8), ("up", FULL, 31, 32), ("up", FULL, 0, 32),
    ("down", FULL, 1, 32), ("down", FULL, 5, 16), ("down", FULL, 2, 4), ("down", FULL, 16, 32),
    ("xor", FULL, 1, 32), ("xor", FULL, 16, 32), ("xor", FULL, 5, 4), ("xor", FULL, 12, 8), ("xor", FULL, 31, 32),
    ("xor", 0x0000FFFF, 1, 32), ("down", 0x0000FFFF, 1, 16), ("idx", 0x0F0F0F0F, 1, 8), ("idx", 0x55555555, 2, 32),
    ("up", 0xFFFF0000, 2, 16),
    # sources outside the mask: an error under the emulator, undefined on a GPU
    ("down", 0x0000FFFF, 1, 32), ("xor", 0x0F0F0F0F, 4, 32), ("idx", 0x000000FE, 0, 32), ("xor", 0xF0F0F0F0, 4, 32),
]


@pytest.mark.parametrize("dtype", list(SHFL_TYPES))
@pytest.mark.parametrize("op,mask,arg,width", SHFL_CASES)
def test_warp_shuffle(dev, dtype, op, mask, arg, width):
    if dtype in ("float16", "bfloat16") and not dev.st.has_half():
        pytest.skip("no half types in this build")
    threads = 64
    mem, bits = SHFL_TYPES[dtype]
    x = _shfl_values(dtype, threads)
    sentinel = torch.full((threads,), 0x5A, dtype=torch.int8).view(-1)  # untouched lanes keep this
    out = torch.zeros(threads, dtype=mem)
    out.view(torch.int8).fill_(0x5A)
    out = dev.put(out)
    outside = {(lane, shfl_source(op, lane, arg, width)) for lane in range(32) if (mask >> lane) & 1}
    outside = {(lane, j) for lane, j in outside if not (mask >> j) & 1}
    if outside and dev.sim:
        # the emulator names the first such lane of the warp that completes the shuffle first
        with pytest.raises(RuntimeError) as info:
            dev.st.warp_shuffle(dtype, op, dev.put(x).data_ptr(), out.data_ptr(), threads, mask, arg, width, **dev.kw())
        msg = str(info.value)
        assert msg.startswith(f"{SHFL_OPS[op]} in warp_shuffle_kernel block (0,0,0) thread ("), msg
        assert re.search(r"\(warp [01] lane (\d+)\) at sim_selftest\.cu:\d+: source lane (\d+) is not in mask "
                         + f"{mask:#x}$", msg), msg
        lane, j = map(int, re.search(r"lane (\d+)\) at .*source lane (\d+)", msg).groups())
        assert (lane, j) == min(outside), msg
        return
    dev.st.warp_shuffle(dtype, op, dev.put(x).data_ptr(), out.data_ptr(), threads, mask, arg, width, **dev.kw())
    dev.sync()
    got = out.cpu().view(bits)
    xb = x.view(bits)
    untouched = out.cpu().clone().view(torch.int8).fill_(0x5A).view(bits)[0]
    del sentinel
    for t in range(threads):
        lane = t & 31
        if not (mask >> lane) & 1:
            assert got[t] == untouched, f"lane {t} is outside the mask but was written"
            continue
        j = shfl_source(op, lane, arg, width)
        if (mask >> j) & 1:  # else undefined on a GPU
            assert got[t] == xb[(t & ~31) + j], f"{op} lane {t}: got {got[t]}, expected lane {j}'s value"


def _vote_ref(op, x, mask, threads):
    out = torch.full((threads,), 0x5A5A5A5A, dtype=torch.int64)
    for w0 in range(0, threads, 32):
        members = [w0 + i for i in range(32) if (mask >> i) & 1 and w0 + i < threads]
        vals = {t: int(x[t]) for t in members}
        for t in members:
            if op == "ballot":
                r = sum(1 << (m - w0) for m in members if vals[m] != 0)
            elif op == "any":
                r = int(any(vals[m] != 0 for m in members))
            elif op == "all":
                r = int(all(vals[m] != 0 for m in members))
            elif op == "syncwarp":
                r = vals[t]
            elif op == "match_any":
                r = sum(1 << (m - w0) for m in members if vals[m] == vals[t])
            elif op == "reduce_add":
                r = sum(vals.values())
            elif op == "reduce_min":
                r = min(vals.values())
            else:
                r = max(vals.values())
            out[t] = r
    return (out & 0xFFFFFFFF).to(torch.int64).apply_(lambda v: v - (1 << 32) if v >= 1 << 31 else v).to(torch.int32)


@pytest.mark.parametrize("op", ["ballot", "any", "all", "syncwarp", "match_any", "reduce_add", "reduce_min",
                                "reduce_max"])
@pytest.mark.parametrize("mask", [FULL, 0x0000FFFF, 0xF0F0F0F0, 0x80000001, 0x00000004])
def test_warp_vote(dev, op, mask):
    threads = 64
    g = torch.Generator().manual_seed(mask & 0xFFFF)
    for x in (torch.randint(-3, 4, (threads,), generator=g), torch.ones(threads), torch.zeros(threads)):
        x = x.to(torch.int32)
        out = dev.full((threads,), 0x5A5A5A5A, torch.int32)
        dev.st.warp_vote(op, dev.put(x).data_ptr(), out.data_ptr(), threads, mask, **dev.kw())
        dev.sync()
        assert torch.equal(out.cpu(), _vote_ref(op, x, mask, threads)), f"{op} mask {mask:#x} on {x.tolist()}"


# ---- atomics ---------------------------------------------------------------------------------------

def _atomic_slots(device):
    slots = torch.zeros(16, dtype=torch.int64, device=device)
    slots[13] = -1  # the unsigned-min slot starts at ~0
    return slots


def _atomic_expected(blocks, threads, has_half):
    n = blocks * threads
    g = list(range(n))
    u32 = lambda v: v & 0xFFFFFFFF  # noqa: E731
    return {
        "i32_add": sum(v % 7 - 3 for v in g), "u32_add": u32(sum(g)), "u64_add": sum(v << 33 for v in g) % 2 ** 64,
        "f32_add": float(sum(v % 5 for v in g)), "f64_add": sum(v * 0.5 for v in g), "i32_sub": -sum(v % 3 for v in g),
        "i32_max": max(v * 7919 % 10007 for v in g), "i32_min": min([0] + [-(v * 31 % 1009) for v in g]),
        "u64_cas": sum(v + 1 for v in g), "u32_or": u32(sum(1 << s for s in {v % 32 for v in g})),
        "u32_xor": __import__("functools").reduce(lambda a, b: a ^ b, g, 0), "u32_inc": n % 1001,
        "i64_max": (n - 1) << 40, "u64_min": 15,
        "f16_add": float(blocks) if has_half else 0.0, "bf16_add": float(blocks) if has_half else 0.0,
    }


def _atomic_got(slots):
    s = slots.cpu()
    i32, f32, f64, f16 = s.view(torch.int32), s.view(torch.float32), s.view(torch.float64), s.view(torch.float16)
    u = lambda v: int(v) % 2 ** 32  # noqa: E731
    return {
        "i32_add": int(i32[0]), "u32_add": u(i32[2]), "u64_add": int(s[2]) % 2 ** 64, "f32_add": float(f32[6]),
        "f64_add": float(f64[4]), "i32_sub": int(i32[10]), "i32_max": int(i32[12]), "i32_min": int(i32[14]),
        "u64_cas": int(s[8]), "u32_or": u(i32[18]), "u32_xor": u(i32[20]), "u32_inc": u(i32[22]),
        "i64_max": int(s[12]), "u64_min": int(s[13]) % 2 ** 64, "f16_add": float(f16[56]),
        "bf16_add": float(s.view(torch.bfloat16)[60]),
    }


@pytest.mark.parametrize("blocks,threads", [(37, 128), (200, 64), (1, 1024)])
def test_atomics_exact_totals(dev, blocks, threads):
    workers = (1, 2, 4) if dev.sim else (None,)
    for w in workers:
        if w is not None:
            old = dev.mod.sim_num_workers()
            dev.mod.sim_set_num_workers(w)
        try:
            slots = _atomic_slots(dev.device)
            dev.st.atomics(slots.data_ptr(), blocks, threads, **dev.kw())
            dev.sync()
        finally:
            if w is not None:
                dev.mod.sim_set_num_workers(old)
        assert _atomic_got(slots) == _atomic_expected(blocks, threads, dev.st.has_half()), f"{w} workers"


# ---- launch limits -----------------------------------------------------------------------------

@pytest.mark.parametrize("grid,block,smem,why", [
    ((1, 1, 1), (1025, 1, 1), 0, "1025 threads"),
    ((1, 1, 1), (8, 8, 17), 0, "1088 threads"),
    ((1, 1, 1), (1, 1, 65), 0, "blockdim.z"),
    ((1, 65536, 1), (32, 1, 1), 0, "griddim.y"),
    ((1, 1, 65536), (32, 1, 1), 0, "griddim.z"),
    ((2 ** 31, 1, 1), (32, 1, 1), 0, "griddim.x"),
    ((1, 1, 1), (32, 1, 1), 64 * 1024, "dynamic shared memory"),
])
def test_refused_launches(dev, grid, block, smem, why):
    out = dev.full((1,), 0, torch.int32)
    with pytest.raises(RuntimeError) as info:
        dev.st.launch_config(out.data_ptr(), grid, block, smem, False, **dev.kw())
        dev.sync()
    msg = str(info.value)
    assert "launch_config_kernel" in msg, msg
    if dev.sim:
        assert why in msg.lower() and "refused" in msg, msg
    dev.sync()
    assert int(out.cpu()[0]) == 0, "a refused launch ran"


@pytest.mark.parametrize("grid,block,smem", [((1, 65535, 1), (1, 1, 1), 0), ((2, 1, 1), (32, 32, 1), 0),
                                             ((1, 1, 1), (1, 1, 64), 48 * 1024)])
def test_accepted_launches(dev, grid, block, smem):
    out = dev.full((1,), 0, torch.int32)
    dev.st.launch_config(out.data_ptr(), grid, block, smem, False, **dev.kw())
    dev.sync()
    assert int(out.cpu()[0]) == 1


@pytest.mark.parametrize("smem", [64 * 1024, 227 * 1024])
def test_dynamic_shared_memory_opt_in(dev, smem):
    out = dev.full((1,), 0, torch.int32)
    dev.st.launch_config(out.data_ptr(), (1, 1, 1), (64, 1, 1), smem, True, **dev.kw())
    dev.sync()
    assert int(out.cpu()[0]) == 1


@pytest.mark.parametrize("smem,optin,ok", [
    (0, 0, True), (8 * 1024, 0, True),         # 40 KiB static + 8 KiB = 48 KiB: fits
    (12 * 1024, 0, False),                      # 52 KiB without opt-in
    (100 * 1024, 1, True), (101 * 1024, 1, False),  # the opt-in is the dynamic maximum
    (150 * 1024, 2, False),                     # 40 + 190 KiB opted in > 227 KiB: refused
])
def test_static_plus_dynamic_shared_memory(dev, smem, optin, ok):
    out = dev.full((1,), 0, torch.int32)
    if ok:
        dev.st.static_plus_dynamic_shared(out.data_ptr(), smem, optin, **dev.kw())
        dev.sync()
        assert int(out.cpu()[0]) == 1
    else:
        with pytest.raises(RuntimeError) as info:
            dev.st.static_plus_dynamic_shared(out.data_ptr(), smem, optin, **dev.kw())
            dev.sync()
        if dev.sim:
            assert "static_shared_kernel" in str(info.value), info.value


def test_opt_in_over_the_device_maximum(sim):
    out = torch.zeros(1, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="opt-in maximum"):
        sim.st.launch_config(out.data_ptr(), (1, 1, 1), (32, 1, 1), 228 * 1024, True)


# ---- errors the emulator must report (broken kernels: never on a GPU) ----------------------------

@pytest.mark.parametrize("mode,words", [(0, ["has exited"]), (1, ["sim_selftest.cu:"])])
@pytest.mark.parametrize("threads", [64, 1024])
def test_barrier_divergence_is_an_error(sim, mode, words, threads):
    out = torch.full((threads,), -7, dtype=torch.int32)
    with pytest.raises(RuntimeError) as info:
        sim.st.barrier_divergence(out.data_ptr(), 1, threads, mode)
    msg = str(info.value)
    assert "barrier divergence in barrier_divergence_kernel block (0,0,0)" in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("blocks", [7, 64])
def test_error_in_one_block_of_many(sim, workers, blocks):
    """Blocks run on several OS threads; only the last one has the bug, and it is the one the
    error names, whichever worker ran it. The emulator keeps working afterwards."""
    sim.mod.sim_set_num_workers(workers)
    threads = 128
    out = torch.zeros(blocks * threads, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=rf"barrier divergence in barrier_divergence_kernel block \({blocks - 1},0,0\)"):
        sim.st.barrier_divergence(out.data_ptr(), blocks, threads, 0)
    x = torch.ones(blocks * threads)
    sums = torch.zeros(blocks)
    sim.st.block_sum(x.data_ptr(), sums.data_ptr(), blocks * threads, threads)
    assert bool((sums == threads).all())


@pytest.mark.parametrize("mode,words", [
    (0, ["__shfl_down_sync", "have exited"]),
    (1, ["deadlock", "__shfl_down_sync", "__syncthreads()", "never arrive"]),
    (2, ["__shfl_xor_sync", "does not have", "48 threads"]),
    (3, ["__shfl_sync", "does not include the calling lane"]),
])
def test_warp_op_errors_not_hangs(sim, mode, words):
    out = torch.zeros(48, dtype=torch.int32)
    with pytest.raises(RuntimeError) as info:
        sim.st.warp_deadlock(out.data_ptr(), mode)
    msg = str(info.value)
    assert "warp_deadlock_kernel block (0,0,0)" in msg, msg
    for w in words:
        assert w in msg, msg


def test_misaligned_load16_is_an_error(sim):
    x = torch.arange(16, dtype=torch.float32)
    y = torch.zeros(8, dtype=torch.float32)
    base = x.data_ptr() % 16 // 4  # floats from x to the previous 16-byte boundary
    ok = (4 - base) % 4
    sim.st.misaligned_load16(x.data_ptr(), y.data_ptr(), ok)
    assert torch.equal(y[:4], x[ok:ok + 4])
    with pytest.raises(RuntimeError) as info:
        sim.st.misaligned_load16(x.data_ptr(), y.data_ptr(), ok + 1)
    msg = str(info.value)
    assert "misaligned address in misaligned_load16_kernel block (0,0,0) thread (0,0,0): load16" in msg, msg
    assert hex(x.data_ptr() + 4 * (ok + 1)) in msg, msg


def test_aligned_load16_on_both(dev):
    x = dev.put(torch.arange(16, dtype=torch.float32))
    y = dev.full((4,), 0.0, torch.float32)
    off = (4 - x.data_ptr() % 16 // 4) % 4
    dev.st.misaligned_load16(x.data_ptr(), y.data_ptr(), off, **dev.kw())
    dev.sync()
    assert torch.equal(y.cpu(), x.cpu()[off:off + 4])


def test_emulator_recovers_after_errors(sim):
    """An error abandons the block's fibers mid-run; their stacks are reused by the next launch."""
    out = torch.zeros(1024, dtype=torch.int32)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            sim.st.barrier_divergence(out.data_ptr(), 1, 1024, 0)
        with pytest.raises(RuntimeError):
            sim.st.warp_deadlock(out.data_ptr(), 1)
        sim.st.neighbor_exchange(out.data_ptr(), 1024, True)
        assert out[5] == 3 * 6 + 1


def test_shared_out_of_bounds_in_bounds(dev):
    out = dev.full((64,), -7, torch.int32)
    dev.st.shared_out_of_bounds(out.data_ptr(), 0, **dev.kw())
    dev.sync()
    assert torch.equal(out.cpu(), torch.arange(64, dtype=torch.int32))


@pytest.mark.skipif(os.environ.get("CONVKIT_TEST_SANITIZE") != "1",
                    reason="needs the AddressSanitizer build of _cudasim (make test-sanitize)")
def test_asan_catches_shared_out_of_bounds():
    """Reading one element past a shared array aborts with ASan's report (in a subprocess: ASan
    ends the process)."""
    _module("cudasim")
    code = ("import torch; from convkit import _backend; m = _backend._load('cudasim'); "
            "out = torch.zeros(64, dtype=torch.int32); m.selftest.shared_out_of_bounds(out.data_ptr(), 1)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode != 0, r.stderr[-2000:]
    assert "AddressSanitizer: heap-buffer-overflow" in r.stderr, r.stderr[-2000:]
    assert "shared_out_of_bounds_kernel" in r.stderr, r.stderr[-3000:]


@pytest.mark.racy
def test_env_seed_and_threads(sim):
    """CONVKIT_SIM_SEED and CONVKIT_SIM_THREADS set the emulator's seed and workers at load: a
    correct kernel gives the same result under any seed, the broken one a seed-dependent one."""
    code = ("import torch; from convkit import _backend; m = _backend._load('cudasim'); st = m.selftest\n"
            "print(m.sim_seed(), m.sim_num_workers())\n"
            "g = torch.Generator().manual_seed(0); a = torch.randint(-8, 8, (40, 50), generator=g).float()\n"
            "b = torch.randint(-8, 8, (50, 30), generator=g).float(); c = torch.zeros(40, 30)\n"
            "st.tiled_matmul(a.data_ptr(), b.data_ptr(), c.data_ptr(), 40, 30, 50)\n"
            "o = torch.zeros(64, dtype=torch.int32); st.neighbor_exchange(o.data_ptr(), 64, False)\n"
            "print(int(torch.equal(c, a @ b)), o.tolist())\n")
    results = {}
    for seed in ("1", "7"):
        env = dict(os.environ, CONVKIT_SIM_SEED=seed, CONVKIT_SIM_THREADS="3")
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        lines = r.stdout.splitlines()
        assert lines[0] == f"{seed} 3", lines
        assert lines[1].startswith("1 "), "the correct kernel is right under every seed"
        results[seed] = lines[1]
    assert results["1"] != results["7"], "the missing-barrier kernel's result depends on the seed"


def test_counters(sim):
    sim.mod.sim_reset_counters()
    out = torch.zeros(256, dtype=torch.int32)
    sim.st.neighbor_exchange(out.data_ptr(), 256, True)
    x = torch.arange(64, dtype=torch.int32)
    sim.st.warp_shuffle("int32", "down", x.data_ptr(), out.data_ptr(), 64, FULL, 1, 32)
    c = sim.mod.sim_counters()
    assert c["launches"] == 2 and c["blocks"] == 2 and c["threads"] == 256 + 64
    assert c["barriers"] == 1 and c["warp_ops"] == 2
    assert c["switches"] >= 256 + 64


# ---- WMMA (nvcuda::wmma; the emulator's csrc/sim/simt_wmma.h) ------------------------------------

_WMMA_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "tf32": torch.float32}


def _wmma(dev, type_, a, b, c, a_col=False, b_col=False, mode=0):
    if not dev.st.has_half():
        pytest.skip("this build has no half types (no WMMA)")
    K = a.shape[1]
    da, db = dev.put(a), dev.put(b)
    dat, dbt = dev.put(a.t().contiguous()), dev.put(b.t().contiguous())
    dc, d = dev.put(c), dev.full((16, 16), float("nan"), torch.float32)
    dev.st.wmma_gemm(type_, a_col, b_col, mode, da.data_ptr(), dat.data_ptr(), db.data_ptr(), dbt.data_ptr(),
                     dc.data_ptr(), d.data_ptr(), K, **dev.kw())
    dev.sync()
    return d.cpu()


def _tf32(x, mode):
    """float32 -> tf32 bits: "rna" (round to nearest, ties away; __float_to_tf32) or "trunc"."""
    u = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    special = (u & 0x7F800000) == 0x7F800000
    r = ((u + 0x1000) if mode == "rna" else u) & 0xFFFFE000
    r = torch.where(special, u, r)
    return ((r + 2**31) % 2**32 - 2**31).to(torch.int32).view(torch.float32)


@pytest.mark.parametrize("type_", list(_WMMA_DTYPES))
@pytest.mark.parametrize("a_col,b_col", [(False, False), (False, True), (True, False), (True, True)])
def test_wmma_gemm_small_integers(dev, type_, a_col, b_col):
    """D = A x B + C through wmma fragments in every layout: exact on small integers."""
    g = torch.Generator().manual_seed(1)
    dt = _WMMA_DTYPES[type_]
    a = torch.randint(-4, 5, (16, 48), generator=g).to(dt)
    b = torch.randint(-4, 5, (48, 16), generator=g).to(dt)
    c = torch.randint(-9, 10, (16, 16), generator=g).float()
    d = _wmma(dev, type_, a, b, c, a_col, b_col)
    assert torch.equal(d.double(), a.double() @ b.double() + c.double())


def test_wmma_float_to_tf32_rounds_to_nearest_ties_away(dev):
    """__float_to_tf32 keeps 10 mantissa bits, rounding to nearest with ties away from zero: A
    times the identity returns A's rounded values exactly (ties, both signs, included)."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(16, 16, generator=g)
    bits = a.view(torch.int32)
    bits[0] = (bits[0] & ~0x1FFF) | 0x1000          # exact ties: away from zero
    bits[1] = (bits[1] & ~0x1FFF) | 0x0FFF          # just below a tie: down
    a = bits.view(torch.float32)
    a[2] = -a[2].abs()
    d = _wmma(dev, "tf32", a, torch.eye(16), torch.zeros(16, 16), mode=1)
    assert torch.equal(d, _tf32(a, "rna"))
    assert not torch.equal(d, _tf32(a, "trunc"))


def test_wmma_tf32_unconverted_inputs_are_truncated(sim):
    """The tensor cores read a tf32 element's top 19 bits: an input not converted first is
    truncated, not rounded (the emulator models that)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(16, 16, generator=g)
    assert torch.equal(_wmma(sim, "tf32", a, torch.eye(16), torch.zeros(16, 16)), _tf32(a, "trunc"))


def test_wmma_assumed_fragment_layout_fails(sim):
    """A kernel that fills a fragment as if it knew which slot holds which element: a __half A
    (each element in two slots) is refused by mma_sync when the slots disagree; a bfloat16 A
    (one slot each) gives results that change with the seed, and are wrong under some."""
    g = torch.Generator().manual_seed(4)
    a = torch.randint(-4, 5, (16, 16), generator=g)
    eye, zero = torch.eye(16), torch.zeros(16, 16)
    with pytest.raises(RuntimeError, match="differ"):
        _wmma(sim, "float16", a.half(), eye.half(), zero, mode=2)
    results = []
    for seed in (0, 1, 2):
        sim.mod.sim_set_seed(seed)
        results.append(_wmma(sim, "bfloat16", a.bfloat16(), eye.bfloat16(), zero, mode=2))
    assert not all(torch.equal(r, results[0]) for r in results[1:])
    assert any(not torch.equal(r, a.float()) for r in results)
    # loaded properly, every seed gives the right answer
    for seed in (0, 1, 2):
        sim.mod.sim_set_seed(seed)
        assert torch.equal(_wmma(sim, "bfloat16", a.bfloat16(), eye.bfloat16(), zero), a.float())

