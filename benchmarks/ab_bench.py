"""`convkit bench` on two builds, alternated, with the summary geomeans side by side.

    python benchmarks/ab_bench.py TREE_A TREE_B [--rounds 2] [--out DIR] -- [convkit bench args]

Each TREE is a source tree with convkit's compiled modules built in place. The runs alternate
(A, B, A, B, ...) so that machine load falls on both alike; every run measures convkit against
torch side by side, so each of its ratios is already load-corrected, and the table gives, per
summary group (conv fwd with algo=auto, pools, ReLU, ...), the median over the rounds of each
build's geometric-mean ratio to torch and B's over A's. The JSON of every run is kept in --out.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="ab-bench-out")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = {"A": [], "B": []}
    for r in range(args.rounds):
        for key, tree in (("A", args.tree_a), ("B", args.tree_b)):
            path = os.path.join(args.out, f"{key}{r}.json")
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), CONVKIT_POISON="0")
            cmd = [sys.executable, "-m", "convkit", "bench", "--no-progress", "--json", os.path.abspath(path)] + extra
            print(f"round {r} {key}: {' '.join(cmd[1:])}  (in {tree})", flush=True)
            subprocess.run(cmd, env=env, cwd=os.path.abspath(tree), check=True, stdout=subprocess.DEVNULL)
            with open(path) as f:
                rep = json.load(f)
            results[key].append({s["group"]: s["geomean_ratio"] for s in rep["summary"]})
            results[key][-1]["__load"] = rep.get("loadavg_start")
    groups = [g for g in results["A"][0] if not g.startswith("__") and all(g in x for x in results["A"] + results["B"])]
    print(f"\n{'summary group (geomean of convkit/torch)':<44} {'A':>7} {'B':>7} {'B/A':>6}")
    for g in groups:
        a = statistics.median(x[g] for x in results["A"])
        b = statistics.median(x[g] for x in results["B"])
        print(f"{g:<44} {a:7.3f} {b:7.3f} {b / a:6.3f}")
    print("load at start of each run:", [x["__load"] for x in results["A"] + results["B"]])


if __name__ == "__main__":
    main()
