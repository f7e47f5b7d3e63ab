"""Per-call cost of convkit's ordinary path, two builds side by side in one run.

    python benchmarks/percall_ab.py TREE_A TREE_B [--rounds 7] [--calls 2000] [--json out.json]

Each TREE is a source tree with its compiled modules built in place (convkit/_cpu*.so); a worker
process per tree imports that tree's convkit (first on sys.path) and times, on the 'cpu' backend
and one thread, the calls where Python dominates: batch-1 conv2d forward (3x3, 16 -> 16 channels,
9x9), forward + backward through autograd, max and average pooling, ReLU and in-place ReLU, and a
NumPy conv2d. The driver alternates the two workers round by round (A, B, A, B, ...) so that both
see the same machine load, and prints the median microseconds per call of each and B / A.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
import convkit, convkit.functional as CF
assert convkit.__file__.startswith(sys.argv[1]), convkit.__file__
torch.set_num_threads(1)
convkit.set_num_threads(1)
calls = int(sys.argv[2])
x = torch.randn(1, 16, 9, 9)
w = torch.randn(16, 16, 3, 3)
xg = x.clone().requires_grad_()
wg = w.clone().requires_grad_()
xn, wn = x.numpy(), w.numpy()
r = torch.randn(1, 16, 9, 9)

def fwd_bwd():
    CF.conv2d(xg, wg, padding=1).sum().backward()

fns = {
    "conv2d fwd": lambda: CF.conv2d(x, w, padding=1),
    "conv2d fwd+bwd": fwd_bwd,
    "max_pool2d": lambda: CF.max_pool2d(x, 3, 2, ceil_mode=True),
    "avg_pool2d": lambda: CF.avg_pool2d(x, 3, 1, 1),
    "relu": lambda: CF.relu(x),
    "relu_": lambda: CF.relu_(r),
    "numpy conv2d": lambda: CF.conv2d(xn, wn, padding=1),
}
for fn in fns.values():
    for _ in range(50):
        fn()
for line in sys.stdin:
    out = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out[name] = (time.perf_counter() - t0) / calls * 1e6
    print(json.dumps(out), flush=True)
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--json")
    args = ap.parse_args()
    env = dict(os.environ, CONVKIT_POISON="0", OMP_NUM_THREADS="1")
    workers = {}
    for key, tree in (("A", args.tree_a), ("B", args.tree_b)):
        workers[key] = subprocess.Popen([sys.executable, "-c", WORKER, os.path.abspath(tree), str(args.calls)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd="/")
    samples = {"A": [], "B": []}
    for _ in range(args.rounds):
        for key in ("A", "B"):
            workers[key].stdin.write("go\n")
            workers[key].stdin.flush()
            samples[key].append(json.loads(workers[key].stdout.readline()))
    for w in workers.values():
        w.stdin.close()
        w.wait()
    rows = []
    print(f"{'call':<16} {'A us':>8} {'B us':>8} {'B/A':>6}   (median of {args.rounds} rounds x {args.calls} calls)")
    for name in samples["A"][0]:
        a = statistics.median(s[name] for s in samples["A"])
        b = statistics.median(s[name] for s in samples["B"])
        rows.append({"call": name, "a_us": round(a, 2), "b_us": round(b, 2), "ratio": round(b / a, 3)})
        print(f"{name:<16} {a:8.2f} {b:8.2f} {b / a:6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tree_a": args.tree_a, "tree_b": args.tree_b, "rounds": args.rounds, "calls": args.calls,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
