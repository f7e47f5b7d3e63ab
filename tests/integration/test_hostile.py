"""Hostile input: nothing a caller passes may crash, hang, corrupt or silently mislead convkit.

Each case of tests/integration/hostile_cases.py runs on the 'cpu' and 'cudasim' backends in a worker process
that has torch and convkit imported already (tests/integration/hostile_worker.py): a case that kills the
worker (a segfault, an abort, an uncaught C++ exception) or runs past its time limit fails here
with what happened, and the next case gets a fresh worker. One worker per pytest process, so
under pytest-xdist each of its processes has its own.
"""
import json
import os
import select
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_cases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TIME_LIMIT = float(os.environ.get("CONVKIT_HOSTILE_TIMEOUT", "60"))  # seconds a case may take
START_LIMIT = 180.0  # importing torch and convkit on a loaded 2-core machine


class Worker:
    """One pre-imported worker process; `run` sends it a case and waits for its answer."""

    def __init__(self):
        self.proc = None

    def start(self):
        r, w = os.pipe()
        env = dict(os.environ, CONVKIT_POISON="1", PYTHONFAULTHANDLER="1")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "hostile_worker.py"), "--reply-fd", str(w)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     pass_fds=(w,), env=env, text=True, cwd=os.path.dirname(HERE))
        os.close(w)
        self.reply = os.fdopen(r, "r")
        self.stderr_fd = self.proc.stderr.fileno()
        os.set_blocking(self.stderr_fd, False)
        self.err = b""
        first = self._read(START_LIMIT)
        assert first == {"outcome": "ready"}, f"the worker did not start: {first}"

    def _drain_stderr(self):
        try:
            while True:
                chunk = os.read(self.stderr_fd, 65536)
                if not chunk:
                    break
                self.err = (self.err + chunk)[-8000:]
        except BlockingIOError:
            pass

    def _read(self, limit):
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return {"outcome": "hang", "detail": f"no answer within {limit:.0f} s"}
            ready, _, _ = select.select([self.reply, self.stderr_fd], [], [], min(left, 1.0))
            if self.stderr_fd in ready:
                self._drain_stderr()
            if self.reply in ready:
                line = self.reply.readline()
                if line:
                    return json.loads(line)
                self.proc.wait(10)
                self._drain_stderr()
                return {"outcome": "crash", "detail": f"worker exited with {self.proc.returncode}"}

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def run(self, name, backend):
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.err = b""
        self.proc.stdin.write(json.dumps({"case": name, "backend": backend}) + "\n")
        self.proc.stdin.flush()
        out = self._read(TIME_LIMIT)
        if out["outcome"] in ("hang", "crash"):
            self.stop()
            out["detail"] += "\n--- worker stderr ---\n" + self.err.decode(errors="replace")[-4000:]
        return out


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


# CONVKIT_TEST_BACKENDS picks a subset, as for the other suites (make test-sanitize: cudasim)
_WANTED = [b for b in os.environ.get("CONVKIT_TEST_BACKENDS", "").split(",") if b]
BACKENDS = [b for b in ("cpu", "cudasim") if not _WANTED or b in _WANTED]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(hostile_cases.CASES))
def test_hostile(worker, name, backend):
    if backend not in hostile_cases.CASES[name][1]:
        pytest.skip(f"{name} is a {'/'.join(hostile_cases.CASES[name][1])} case")
    if name in hostile_cases.FRESH:
        worker.stop()  # (the next run starts a new worker)
    out = worker.run(name, backend)
    assert out["outcome"] == "ok", f"{name} on {backend}: {out['outcome']}\n{out['detail']}"
