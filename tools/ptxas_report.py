#!/usr/bin/env python3
"""The compiler's resource report for convkit's CUDA kernels: compiles every csrc/cuda/*.cu (and
the emulator's self-test kernels, csrc/sim/selftest/*.cu) for one architecture (sm_90 by
default) with `nvcc -Xptxas -v`, and prints one row per kernel instantiation: registers,
shared memory, spill stores and loads, stack frame, barriers, constant bank 0, flagging spills
and stack use (a local-memory array, or registers spilled to local memory: slow), and whether
the kernel's PTX uses tensor-core instructions (column tc; from a second, -ptx, compile of each
file). Needs nvcc, no GPU. Standard library only.

  python3 tools/ptxas_report.py                    # the table (make cuda-report)
  python3 tools/ptxas_report.py --json             # the same as JSON
  python3 tools/ptxas_report.py csrc/cuda/relu.cu --arch sm_90 --nvcc /usr/local/cuda/bin/nvcc

Exit status: 0, or 1 when a file does not compile (its errors are printed), 2 without nvcc.
The flags match the CMake build's (-std=c++17 -O3 --expt-relaxed-constexpr -I csrc).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import sys
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)' for '(\w+)'")
_PROPS = re.compile(r"ptxas info\s*: Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"ptxas info\s*: Used (\d+) registers")


def _int(pattern: str, text: str) -> Optional[int]:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def parse_ptxas(text: str, file: str = "") -> List[Dict[str, object]]:
    """Kernels (entry functions) from ptxas -v output, in order: mangled name, arch, registers,
    barriers, smem bytes, cmem[0] bytes, stack frame, spill stores and loads. Non-entry device
    functions (their own "Function properties" lines, for calls that were not inlined) are left
    out; a kernel that calls one shows a "cumulative stack size"."""
    kernels: List[Dict[str, object]] = []
    by_name: Dict[str, Dict[str, object]] = {}
    props_for: Optional[str] = None
    current: Optional[Dict[str, object]] = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = {"file": file, "mangled": m.group(1), "arch": m.group(2), "regs": None,
                       "barriers": None, "smem": 0, "cmem0": None, "stack": 0, "spill_stores": 0,
                       "spill_loads": 0, "cumulative_stack": None}
            kernels.append(current)
            by_name[m.group(1)] = current
            props_for = None
            continue
        m = _PROPS.search(line)
        if m:
            props_for = m.group(1)
            continue
        m = _FRAME.search(line)
        if m and props_for is not None:
            k = by_name.get(props_for)
            if k is not None:
                k["stack"], k["spill_stores"], k["spill_loads"] = (int(g) for g in m.groups())
            props_for = None
            continue
        m = _USED.search(line)
        if m and current is not None:
            current["regs"] = int(m.group(1))
            current["barriers"] = _int(r"used (\d+) barriers", line)
            current["smem"] = _int(r"(\d+) bytes smem", line) or 0
            current["cmem0"] = _int(r"(\d+) bytes cmem\[0\]", line)
            current["cumulative_stack"] = _int(r"(\d+) bytes cumulative stack size", line)
            current = None
    return kernels


def demangle(names: Sequence[str]) -> Dict[str, str]:
    """mangled -> readable, with cu++filt (CUDA's) or c++filt, whichever is there; unchanged
    without either."""
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if tool is None or not names:
        return {n: n for n in names}
    try:
        out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True,
                             text=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {n: n for n in names}
    if len(out) != len(names):
        return {n: n for n in names}
    return dict(zip(names, out))


def short_name(demangled: str) -> str:
    """`void convkit::cuda::relu_fwd_kernel<float, 4>(float const*, ...)` ->
    `relu_fwd_kernel<float, 4>`: the namespaces, return type and parameter list dropped."""
    s = demangled.strip().replace("(anonymous namespace)", "{anonymous}")
    if s.startswith("void "):
        s = s[5:]
    depth = 0
    for i, ch in enumerate(s):   # cut the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            s = s[:i]
            break
    depth = 0
    cut = 0
    for i, ch in enumerate(s):   # drop namespaces: the last '::' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and s.startswith("::", i):
            cut = i + 2
    return s[cut:]


# Tensor-core instructions in PTX: WMMA (wmma.mma), the warp-level mma.sync, Hopper's wgmma.
_TENSOR_CORE = re.compile(r"^\s*(?:@!?%p\d+\s+)?(wmma\.mma|mma\.sync|wgmma\.mma_async)\b", re.M)
_PTX_ENTRY = re.compile(r"^(?:\.visible\s+)?\.entry\s+(\S+?)\s*\(", re.M)


def tensor_core_entries(ptx: str) -> Dict[str, bool]:
    """For each kernel (.entry, by mangled name) of a PTX text: whether its body has a
    tensor-core instruction."""
    out: Dict[str, bool] = {}
    starts = [(m.start(), m.group(1)) for m in _PTX_ENTRY.finditer(ptx)]
    for i, (pos, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(ptx)
        out[name] = bool(_TENSOR_CORE.search(ptx, pos, end))
    return out


def compile_ptx(path: str, nvcc: str, arch: str, extra: Sequence[str]) -> Dict[str, bool]:
    """The file's PTX for `arch` (a second nvcc run): tensor_core_entries of it, {} on failure."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "k.ptx")
        cmd = [nvcc, "-std=c++17", "-O3", f"-arch={arch}", "--expt-relaxed-constexpr",
               "-I", os.path.join(ROOT, "csrc"), *extra, "-ptx", path, "-o", out]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return {}
        if p.returncode != 0:
            return {}
        with open(out) as f:
            return tensor_core_entries(f.read())


def compile_report(path: str, nvcc: str, arch: str, extra: Sequence[str]) -> Dict[str, object]:
    """Compile one .cu with ptxas -v, and to PTX for the tensor-core column; returns {"file",
    "ok", "kernels", "log"}."""
    cmd = [nvcc, "-std=c++17", "-O3", f"-arch={arch}", "--expt-relaxed-constexpr",
           "-I", os.path.join(ROOT, "csrc"), "-Xptxas", "-v", *extra, "-c", path, "-o", os.devnull]
    rel = os.path.relpath(path, ROOT)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"file": rel, "ok": False, "kernels": [], "log": "nvcc timed out after 900 s"}
    log = p.stdout + p.stderr
    kernels = parse_ptxas(log, rel)
    tc = compile_ptx(path, nvcc, arch, extra) if p.returncode == 0 else {}
    for k in kernels:
        k["tensor_cores"] = tc.get(str(k["mangled"]))
    return {"file": rel, "ok": p.returncode == 0, "kernels": kernels,
            "log": log if p.returncode != 0 else "", "command": " ".join(cmd)}


def flags(k: Dict[str, object]) -> str:
    out = []
    if k["spill_stores"] or k["spill_loads"]:
        out.append("SPILLS")
    if k["stack"]:
        out.append("stack")
    return ",".join(out)


def table(kernels: List[Dict[str, object]]) -> str:
    header = ["file", "kernel", "regs", "smem B", "spill st B", "spill ld B", "stack B", "bar", "tc", "flags"]
    tc = {True: "yes", False: "no", None: "?"}
    body = [[os.path.basename(str(k["file"])), str(k["name"]), str(k["regs"]), str(k["smem"]),
             str(k["spill_stores"]), str(k["spill_loads"]), str(k["stack"]),
             "" if k["barriers"] is None else str(k["barriers"]), tc[k.get("tensor_cores")], flags(k)]
            for k in kernels]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    right = [False, False, True, True, True, True, True, True, False, False]

    def line(cells):
        return "  ".join(c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(cells, widths, right)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="the .cu files [csrc/cuda/*.cu, csrc/sim/selftest/*.cu]")
    ap.add_argument("--arch", default="sm_90", help="the target [sm_90]")
    ap.add_argument("--nvcc", default=None, help="nvcc to use [$NVCC, nvcc on PATH, /usr/local/cuda/bin/nvcc]")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="files compiled at once")
    ap.add_argument("--full-names", action="store_true", help="whole demangled names (parameter lists too)")
    ap.add_argument("-X", dest="extra", action="append", default=[], metavar="FLAG",
                    help="one more nvcc flag (repeatable), e.g. -X=-maxrregcount=64")
    args = ap.parse_args(argv)

    nvcc = args.nvcc or os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc and os.access("/usr/local/cuda/bin/nvcc", os.X_OK):
        nvcc = "/usr/local/cuda/bin/nvcc"
    if not nvcc:
        print("ptxas_report: nvcc not found (PATH, $NVCC, /usr/local/cuda/bin)", file=sys.stderr)
        return 2
    files = args.files or sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")) +
                                 glob.glob(os.path.join(ROOT, "csrc", "sim", "selftest", "*.cu")))
    if not files:
        print("ptxas_report: no .cu files in csrc/cuda", file=sys.stderr)
        return 0
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(lambda f: compile_report(os.path.abspath(f), nvcc, args.arch, args.extra),
                                files))
    kernels = [k for r in results for k in r["kernels"]]
    names = demangle([str(k["mangled"]) for k in kernels])
    for k in kernels:
        k["demangled"] = names[str(k["mangled"])]
        k["name"] = k["demangled"] if args.full_names else short_name(k["demangled"])
    failed = [r for r in results if not r["ok"]]
    if args.json:
        json.dump({"arch": args.arch, "nvcc": nvcc, "kernels": kernels,
                   "failed": [{"file": r["file"], "log": r["log"]} for r in failed]},
                  sys.stdout, indent=1)
        print()
    else:
        print(f"ptxas resource usage, {args.arch}, {len(kernels)} kernels in "
              f"{len(results) - len(failed)} of {len(results)} files ({nvcc})")
        print(table(kernels))
        spilling = [k for k in kernels if k["spill_stores"] or k["spill_loads"]]
        stack = [k for k in kernels if k["stack"] and not (k["spill_stores"] or k["spill_loads"])]
        if spilling:
            print(f"\n{len(spilling)} kernel(s) SPILL registers to local memory: "
                  + ", ".join(str(k["name"]) for k in spilling))
        if stack:
            print(f"{len(stack)} kernel(s) use a stack frame without spilling (a local array indexed "
                  f"at run time?): " + ", ".join(str(k["name"]) for k in stack))
        if not spilling and not stack:
            print("\nno spills, no stack frames")
        on_tc = [str(k["name"]) for k in kernels if k.get("tensor_cores")]
        print(f"tensor-core instructions (tc: wmma.mma, mma.sync or wgmma in the kernel's PTX) in "
              f"{len(on_tc)} kernel(s)" + (": " + ", ".join(on_tc) if on_tc else ""))
    for r in failed:
        print(f"\nptxas_report: {r['file']} does not compile:\n{r['log']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
