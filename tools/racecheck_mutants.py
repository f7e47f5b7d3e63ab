#!/usr/bin/env python3
"""Barrier mutants for the race detector: deletes each __syncthreads() of the CUDA kernels in turn,
builds the emulator with its race detector (the `make racecheck-build` configuration, in a copy of
the sources), runs every convolution algorithm's passes on small shapes on 'cudasim', and says
whether the detector reported the mutant (racecheck: a race; initcheck: an unwritten shared read)
or missed it. A barrier whose deletion nobody notices is either redundant or untested.

    python tools/racecheck_mutants.py [--files csrc/cuda/gemm.cuh ...] [--work /tmp/rc-mutants]

Needs the project's venv (pybind11, torch) and a C++ compiler; takes about a minute a mutant on
two cores (only the mutated file's translation units recompile).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every algorithm's passes: direct (general, grad weight, depthwise), im2col and 1x1 (the GEMM),
# implicit GEMM (its cp.async pipeline, its register-staged one, its tensor-core kernel in
# float16), grad bias (conv.cu), in float32 on 'cudasim' (but for the last).
EXERCISE = r"""
import sys, torch, convkit, convkit.functional as CF, convkit.cuda_settings as cs
assert convkit._backend.module("cudasim").sim_racecheck_built()
torch.manual_seed(0)
cases = [((2, 8, 9, 9), (16, 8, 3, 3), dict(padding=1), ("direct", "im2col", "implicit_gemm", "igemm-registers", "igemm-half")),
         ((2, 16, 8, 8), (70, 16, 1, 1), dict(), ("1x1", "im2col")),
         ((2, 8, 9, 9), (8, 1, 3, 3), dict(padding=1, groups=8), ("direct",)),
         ((1, 4, 11, 11), (6, 4, 5, 5), dict(stride=2, padding=2), ("direct",))]
with convkit.use_backend("cudasim"):
    for xs, ws, kw, algos in cases:
        x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
        for algo in algos:
            cs.set_variant("igemm_pipeline=registers" if algo == "igemm-registers" else "auto")
            half = algo == "igemm-half"  # the tensor-core kernel
            algo = "implicit_gemm" if algo.startswith("igemm") else algo
            if half:
                x, w, b = x.half(), w.half(), b.half()
            try:
                y = CF.conv2d(x, w, b, algo=algo, **kw)
                dy = torch.randn_like(y)
                CF.conv2d_backward_input(dy, w, xs, algo=algo, **kw)
                CF.conv2d_backward_weight(dy, x, ws, algo=algo, **kw)
                CF.conv2d_backward_bias(dy)
            except RuntimeError as e:
                msg = str(e)
                i = min(j for j in (msg.find("racecheck:"), msg.find("initcheck:"), len(msg)) if j >= 0)
                print("REPORTED", msg[i:i + 400])
                sys.exit(0)
print("MISSED")
"""


def barriers(path):
    with open(path) as f:
        return [i for i, line in enumerate(f, 1) if re.search(r"\b__syncthreads\(\)\s*;", line)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="*", help="CUDA sources to mutate [every csrc/cuda file with a barrier]")
    ap.add_argument("--work", default="/tmp/rc-mutants", help="where the copy of the sources and its build go")
    args = ap.parse_args()
    files = args.files or sorted(os.path.relpath(os.path.join(ROOT, "csrc", "cuda", f), ROOT)
                                 for f in os.listdir(os.path.join(ROOT, "csrc", "cuda"))
                                 if f.endswith((".cu", ".cuh")) and barriers(os.path.join(ROOT, "csrc", "cuda", f)))
    src, build = os.path.join(args.work, "src"), os.path.join(args.work, "build")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    for item in ("CMakeLists.txt", "csrc"):
        (shutil.copytree if os.path.isdir(os.path.join(ROOT, item)) else shutil.copy)(
            os.path.join(ROOT, item), os.path.join(src, item))
    py = sys.executable
    pybind11_dir = subprocess.check_output([py, "-m", "pybind11", "--cmakedir"], text=True).strip()
    subprocess.check_call(["cmake", "-S", src, "-B", build, "-DCONVKIT_SIM_RACECHECK=ON", "-DCONVKIT_CUDA=OFF",
                           "-DCMAKE_BUILD_TYPE=RelWithDebInfo", f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={build}/lib",
                           f"-DPython_EXECUTABLE={py}", f"-Dpybind11_DIR={pybind11_dir}"], stdout=subprocess.DEVNULL)
    env = dict(os.environ, CONVKIT_SIM_RACECHECK="1", PYTHONPATH=ROOT)
    rows = []
    for rel in files:
        path = os.path.join(src, rel)
        with open(path) as f:
            original = f.read()
        for line in barriers(path):
            lines = original.split("\n")
            lines[line - 1] = re.sub(r"__syncthreads\(\)\s*;", ";  /* barrier deleted */", lines[line - 1], count=1)
            with open(path, "w") as f:
                f.write("\n".join(lines))
            try:
                subprocess.check_call(["cmake", "--build", build, "--target", "_cudasim", "--parallel"],
                                      stdout=subprocess.DEVNULL)
                so = [n for n in os.listdir(os.path.join(build, "lib")) if n.startswith("_cudasim")][0]
                env["CONVKIT_CUDASIM_SO"] = os.path.join(build, "lib", so)
                out = subprocess.run([py, "-c", EXERCISE], env=env, capture_output=True, text=True, timeout=900)
                verdict = (out.stdout.strip().splitlines() or ["ERROR " + out.stderr.strip()[-300:]])[-1]
            finally:
                with open(path, "w") as f:
                    f.write(original)
            rows.append((f"{rel}:{line}", verdict))
            print(f"{rel}:{line}  {verdict}", flush=True)
    missed = [r for r, v in rows if not v.startswith("REPORTED")]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} deleted barriers reported" +
          (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
