"""Hostile input to the CPU kernels (issue 12): nothing a caller passes may crash, hang, corrupt or
silently mislead convkit. Each case that could crash or hang runs in a subprocess with a time
limit (a segfault or a hang fails the test instead of the suite) and compares with torch where
torch answers.

Covered here: strides, padding and dilation far beyond the input on every algorithm and pass
(work and memory follow input and output), pools with windows far larger than the input,
allocation failure inside a parallel region (ConvkitMemoryError naming the bytes), Ctrl-C
during a long convolution (KeyboardInterrupt promptly, later calls fine), a forked child calling
convkit, per-thread scratch released after a large call, Winograd keeping +-Inf where the direct
sum does, and set_num_threads' bounds in the C++ module.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit._backend
import convkit.functional as CF

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif("cpu" not in convkit.available_backends(), reason="no CPU module")


def run_isolated(code: str, timeout: float = 60, prelude: bool = True):
    """Runs PRELUDE (with prelude) and `code` in a fresh Python (this checkout's convkit first on the path) and returns its
    stdout; a crash, a hang past `timeout` or a non-zero exit fails with its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    try:
        src = (PRELUDE if prelude else "") + textwrap.dedent(code)
        p = subprocess.run([sys.executable, "-c", src], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {timeout} s (a hang); output so far:\n{e.stdout}\n{e.stderr}")
    assert p.returncode == 0, f"exit status {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-4000:]}"
    return p.stdout


PRELUDE = """
import gc, os, sys, time
import torch, torch.nn.functional as F
import convkit, convkit.functional as CF
convkit.set_num_threads(2)

def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)

def passes(x, w, b, algo, **kw):
    # forward, grad input, grad weight and grad bias through convkit's autograd
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    y = CF.conv2d(x, w, b, algo=algo, **kw)
    g = torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape) % 7 - 3
    y.backward(g)
    return y.detach(), x.grad, w.grad, b.grad

def check(xs, ws, algos, **kw):
    torch.manual_seed(0)
    x = torch.randn(*xs, dtype=torch.float64)
    w = torch.randn(*ws, dtype=torch.float64)
    b = torch.randn(ws[0], dtype=torch.float64)
    ref = None
    for algo in algos:
        t0 = time.perf_counter()
        try:
            got = passes(x, w, b, algo, **kw)
        except convkit.ConvkitMemoryError as e:
            # an explicit algo whose workspace (growing with the output: huge padding at stride 1
            # makes a huge output) is over the cap is refused; auto takes one that fits
            assert algo != "auto" and "workspace cap" in str(e), (algo, kw, str(e))
            continue
        dt = time.perf_counter() - t0
        assert dt < 10, (algo, kw, dt)
        if ref is None:
            xr, wr, br = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
            y = F.conv2d(xr, wr, br, **kw)
            y.backward(torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape) % 7 - 3)
            ref = (y.detach(), xr.grad, wr.grad, br.grad)
        for a, r in zip(got, ref):
            close(a, r)
"""


# ---- work and memory follow input and output, not stride, padding or dilation ----------------

def test_issue_reproducers_match_torch():
    """The issue's three reproducers (bad_alloc abort, segfault through a zero-byte scratch, a
    grad input walking 2**40 phases), every algorithm that applies, forward and backward."""
    run_isolated("""
    algos = ["auto", "direct", "blocked", "im2col"]
    check((1, 1, 1, 1), (16, 1, 1, 1), algos, stride=32768, padding=32768)
    check((1, 1, 2, 1), (1, 1, 1, 1), algos, stride=(2**31, 2**32), padding=(2**31 - 1, 2**31))
    check((1, 2, 5, 5), (16, 2, 3, 3), algos, stride=2**20, padding=1)
    """, timeout=120)


def test_huge_stride_padding_dilation_every_algo():
    """Shapes whose padded copies would be gigabytes (stride, padding, dilation in the millions,
    one axis at a time and both), with groups: every applicable algorithm and pass against
    torch, each well under the time limit."""
    run_isolated("""
    big = 2**20
    cases = [
        ((2, 4, 6, 5), (8, 2, 3, 2), dict(stride=(big, 1), padding=(big, 1), groups=2)),
        ((1, 3, 4, 7), (16, 3, 2, 3), dict(stride=(1, big), padding=(0, big))),
        ((1, 2, 5, 5), (16, 2, 3, 3), dict(stride=3, padding=(big, 2), dilation=(big // 2, 1))),
        ((2, 2, 3, 3), (4, 2, 2, 2), dict(stride=1, padding=200, dilation=300)),
        ((1, 1, 3, 3), (2, 1, 1, 1), dict(stride=(big, big), padding=(3, big * 4))),
        ((1, 2, 2, 3), (16, 2, 40, 30), dict(padding=(39, 29))),   # kernel far larger than the input
    ]
    for xs, ws, kw in cases:
        check(xs, ws, ["auto", "direct", "blocked", "im2col"], **kw)
    # winograd (3x3, stride 1): huge padding is a huge output, so only a moderate one here
    check((1, 4, 5, 4), (16, 4, 3, 3), ["winograd", "blocked"], padding=(40, 3))
    """, timeout=120)


def test_pool_windows_far_larger_than_the_input():
    run_isolated("""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    for k, s, p in [(2**20 + 1, 1, 2**19), (2**20, 2**20, 2**19), (9, 2**30, 4), ((2**24 + 1, 3), (1, 2**28), (2**23, 1))]:
        for fn, cfn in [(F.max_pool2d, CF.max_pool2d), (F.avg_pool2d, CF.avg_pool2d)]:
            xr = x.clone().requires_grad_(True)
            xc = x.clone().requires_grad_(True)
            ref, got = fn(xr, k, s, p), cfn(xc, k, s, p)
            close(got, ref)
            ref.sum().backward()
            got.sum().backward()
            close(xc.grad, xr.grad)
    """)


# ---- errors inside parallel regions ------------------------------------------------------------

def test_allocation_failure_is_a_memory_error_naming_the_bytes():
    """A per-thread scratch that cannot be had (address space capped with RLIMIT_AS) raises
    convkit's ConvkitMemoryError (a MemoryError and a RuntimeError) with the byte count, from
    inside the kernel's parallel region, and the module keeps working."""
    out = run_isolated("""
    import resource
    from convkit._errors import ConvkitError, ConvkitMemoryError
    x = torch.randn(1, 16, 1024, 1024)          # 64 MiB: direct pads it per thread
    w = torch.randn(4, 16, 3, 3)
    small = CF.conv2d(x[:, :, :64, :64], w, padding=1, algo="direct")   # threads and pools exist now
    y = torch.empty(1, 4, 1024, 1024)
    vm = int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize")][0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (24 << 20), resource.RLIM_INFINITY))
    try:
        CF.conv2d(x, w, padding=1, algo="direct")
        raise SystemExit("no error")
    except ConvkitMemoryError as e:
        assert isinstance(e, MemoryError) and isinstance(e, RuntimeError) and isinstance(e, ConvkitError)
        print("MSG", e)
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    close(CF.conv2d(x[:, :, :64, :64].double(), w.double(), padding=1, algo="direct"),
          F.conv2d(x[:, :, :64, :64].double(), w.double(), padding=1))
    """)
    msg = out.split("MSG", 1)[1]
    assert "bytes" in msg and "direct" in msg, msg


# ---- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_interrupts_a_long_convolution():
    """SIGINT a fifth of the way into a convolution that takes D >= ~1 s (the batch is doubled
    until it does): KeyboardInterrupt well within the rest of the call (under max(0.4 D, 0.25 s);
    measured 30-90 ms; a kernel that did not poll would take the remaining 0.8 D), then the module computes correctly again. Blocked, direct and im2col (the GEMM)."""
    out = run_isolated("""
    import signal, threading
    shapes = {"blocked": (96, 96, 11, 64), "direct": (64, 64, 11, 64), "im2col": (128, 256, 5, 48)}
    for algo, (C, K, R, HW) in shapes.items():
        w = torch.randn(K, C, R, R, dtype=torch.float64)
        n = 1
        while True:
            x = torch.randn(n, C, HW, HW, dtype=torch.float64)
            t0 = time.perf_counter()
            CF.conv2d(x, w, padding=R // 2, algo=algo)
            D = time.perf_counter() - t0
            if D >= 1.0 or n >= 32:
                break
            n *= 2
        sent = []
        def interrupt():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
        timer = threading.Timer(0.2 * D, interrupt)
        timer.start()
        try:
            for _ in range(5):  # (should a loaded machine run the first call faster than D / 5)
                CF.conv2d(x, w, padding=R // 2, algo=algo)
            timer.join()
            raise SystemExit(f"{algo}: finished without the interrupt (D = {D:.2f} s)")
        except KeyboardInterrupt:
            late = time.perf_counter() - sent[0]
        timer.join()
        print(algo, "n", n, "D", round(D, 3), "LATE", round(late, 4))
        assert late < max(0.4 * D, 0.25), (algo, D, late)
        xs, ws = torch.randn(2, 8, 9, 9, dtype=torch.float64), torch.randn(16, 8, 3, 3, dtype=torch.float64)
        close(CF.conv2d(xs, ws, padding=1, algo=algo), F.conv2d(xs, ws, padding=1))
    """, timeout=120)
    assert out.count("LATE") == 3


# ---- fork ----------------------------------------------------------------------------------------

def test_forked_child_does_not_hang():
    """The parent runs convkit on 2 threads (libgomp's pool exists), forks; the child calls a
    convolution with 2 threads set and exits 0 within the time limit (it runs single-threaded:
    the pool did not survive the fork)."""
    run_isolated("""
    import os, time
    import numpy as np
    import convkit, convkit.functional as CF
    import convkit._backend
    convkit.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    ref = CF.conv2d(x, w, padding=1, algo="blocked")
    pid = os.fork()
    if pid == 0:
        ok = True
        for algo in ("blocked", "direct", "im2col", "winograd"):
            y = CF.conv2d(x, w, padding=1, algo=algo)
            ok &= bool(np.allclose(y, ref, rtol=1e-4, atol=1e-3))
        ok &= convkit._backend.module("cpu").get_num_threads() == 1
        os._exit(0 if ok else 3)
    deadline = time.time() + 30
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        raise SystemExit("the forked child hung")
    # the parent still has its threads
    assert convkit._backend.module("cpu").get_num_threads() == 2
    np.testing.assert_allclose(CF.conv2d(x, w, padding=1, algo="direct"), ref, rtol=1e-4, atol=1e-3)
    """, prelude=False)


# ---- scratch released ----------------------------------------------------------------------

def test_large_call_leaves_no_large_scratch():
    """direct pads a 64 MiB image per thread; after the call and gc the process's RSS is within
    10% of what it was before, and the module holds no buffer of 32 MiB or more."""
    out = run_isolated("""
    def rss():
        return int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS")][0]) * 1024
    cpu = convkit._backend.module("cpu")
    x = torch.randn(1, 16, 1024, 1024)
    w = torch.randn(4, 16, 3, 3)
    CF.conv2d(x[:, :, :32, :32], w, padding=1, algo="direct")
    gc.collect()
    before = rss()
    y = CF.conv2d(x, w, padding=1, algo="direct")
    del y
    gc.collect()
    after = rss()
    print("RSS", before, after, cpu.scratch_bytes())
    assert after < before * 1.10, (before, after)
    assert cpu.scratch_bytes() < (32 << 20), cpu.scratch_bytes()
    """)
    assert "RSS" in out


# ---- numerics --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_winograd_keeps_inf_where_the_direct_sum_does(dtype):
    torch.manual_seed(0)
    x = torch.rand(2, 8, 13, 11, dtype=dtype) + 0.5
    w = torch.rand(16, 8, 3, 3, dtype=dtype) + 0.5        # positive: an Inf input gives Inf, not NaN
    b = torch.rand(16, dtype=dtype)
    x[0, 1, 4, 5] = float("inf")
    x[1, 3, 0, 0] = float("-inf")
    x[1, 5, 12, 10] = float("inf")
    x[0, 2, 7, 2] = float("nan")
    for pad in (0, 1, 2):
        ref = F.conv2d(x, w, b, padding=pad)
        got = CF.conv2d(x, w, b, padding=pad, algo="winograd")
        assert torch.equal(torch.isinf(got), torch.isinf(ref)) and torch.equal(torch.isnan(got), torch.isnan(ref))
        assert torch.equal(got[torch.isinf(ref)], ref[torch.isinf(ref)])
        fin = torch.isfinite(ref)
        torch.testing.assert_close(got[fin], ref[fin], rtol=1e-4, atol=1e-4)
    # grad input: Inf in dy
    dy = torch.rand(2, 16, 13, 11, dtype=dtype)
    dy[1, 7, 6, 6] = float("inf")
    ref = torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1)
    got = CF.conv2d_backward_input(dy, w, x.shape, padding=1, algo="winograd")
    assert torch.isinf(ref).any()
    assert torch.equal(torch.isinf(got), torch.isinf(ref)) and torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.equal(got[torch.isinf(ref)], ref[torch.isinf(ref)])
    fin = torch.isfinite(ref)
    torch.testing.assert_close(got[fin], ref[fin], rtol=1e-4, atol=1e-4)


def test_set_num_threads_bounds():
    cpu = convkit._backend.module("cpu")
    before = cpu.get_num_threads()
    for bad in (-1, 1025, 2**31 - 1):
        with pytest.raises(ValueError) as e:
            cpu.set_num_threads(bad)
        assert isinstance(e.value, RuntimeError) and "1024" in str(e.value)
    assert cpu.get_num_threads() == before
    cpu.set_num_threads(1024)
    cpu.set_num_threads(before)
