"""The summary benchmarks/gpu_check.sh prints last: reads what a call of the check left in its
output folder (steps.tsv, meta.txt, sanitizer-probe.txt, smoke.txt, pytest-cuda.xml,
sanitizer-<tool>.txt, the bench JSONs) and writes summary.txt. Standard library only.

  python benchmarks/gpu_check_summary.py DIR           # print the summary, write DIR/summary.txt
  python benchmarks/gpu_check_summary.py --slug NAME   # "NVIDIA H100 80GB HBM3" -> h100
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

SANITIZER_TOOLS = ("racecheck", "memcheck", "initcheck", "synccheck")


def slug(gpu_name: str) -> str:
    """A short file-name-safe name of a GPU: its model token ("NVIDIA H100 80GB HBM3" -> "h100",
    "NVIDIA A100-SXM4-80GB" -> "a100"), else the whole name slugified."""
    words = re.findall(r"[a-z0-9]+", gpu_name.lower())
    words = [w for w in words if w not in ("nvidia", "tesla", "geforce", "quadro")]
    for w in words:
        if re.fullmatch(r"[a-z]+\d+[a-z]*", w):
            return w
    return "-".join(words[:3]) or "gpu"


def read_steps(out_dir: str) -> Dict[str, Dict[str, str]]:
    """steps.tsv: one line per step: name, status (ok, FAILED, TIMEOUT, skipped, dry-run), exit
    status, seconds, note."""
    steps: Dict[str, Dict[str, str]] = {}
    path = os.path.join(out_dir, "steps.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 4:
                    steps[parts[0]] = {"status": parts[1], "rc": parts[2], "seconds": parts[3],
                                       "note": parts[4] if len(parts) > 4 else ""}
    return steps


def parse_junit(path: str) -> Optional[Dict[str, int]]:
    """Counts from a pytest JUnit XML file: tests, failures, errors, skipped, passed."""
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    c = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in c:
            c[k] += int(s.get(k, 0) or 0)
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    failed = []
    for s in suites:
        for tc in s.iter("testcase"):
            if tc.find("failure") is not None or tc.find("error") is not None:
                failed.append(f"{tc.get('classname', '')}::{tc.get('name', '')}")
    c["failed_names"] = failed
    return c


_AT = re.compile(r"^=+\s+at (.+)$")


def _frame_name(text: str) -> Optional[str]:
    """The function of a device frame line, in either format compute-sanitizer has used:
    "kernel<float>(float*)+0x150 in file.cu:12" or "0x150 in file.cu:12:kernel(float*)"."""
    text = text.strip()
    if text.startswith("0x"):
        m = re.match(r"0x[0-9a-fA-F]+ in \S*?:\d+:(.+)$", text)
        name = m.group(1) if m else None
    else:
        name = re.split(r"\+0x[0-9a-fA-F]+| in ", text)[0]
    if not name:
        return None
    return name.split("(")[0].strip() or None


def parse_sanitizer(path: str) -> Optional[Dict[str, object]]:
    """From a compute-sanitizer log: the error count of its "ERROR SUMMARY" line (None when
    missing: the run crashed or timed out), the kernels named in error reports (device frames),
    the first error line, and gpu_sanitize.py's own last line."""
    if not os.path.exists(path):
        return None
    errors = None
    kernels: List[str] = []
    first = None
    script = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.search(r"ERROR SUMMARY: (\d+) error", line)
            if m:
                errors = int(m.group(1))
                continue
            m = re.search(r"RACECHECK SUMMARY: .*?\((\d+) errors?", line)
            if m and errors is None:
                errors = int(m.group(1))
            if line.startswith("gpu_sanitize: ") and " cases: " in line:
                script = line[len("gpu_sanitize: "):]
            m = _AT.match(line)
            if m and "Host Frame" not in line:
                name = _frame_name(m.group(1))
                if name and name not in kernels and len(kernels) < 6:
                    kernels.append(name)
            elif first is None and line.startswith("=========") and not line.startswith("========= ERROR SUMMARY") \
                    and re.search(r"(Invalid|Race|hazard|Uninitialized|Barrier|error|Error)", line) \
                    and "COMPUTE-SANITIZER" not in line:
                first = line.lstrip("= ").strip()
    return {"errors": errors, "kernels": kernels, "first": first, "script": script}


def _f(x, spec: str, missing: str = "—") -> str:
    return missing if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


_REF_LABELS = {("cudnn", False): "cudnn fp32", ("cudnn", True): "cudnn tf32", ("cudnn", None): "cudnn",
               ("cupy-im2col-cublas", False): "cupy", ("cupy-im2col-cublas", True): "cupy tf32",
               ("cupy-im2col-cublas", None): "cupy"}


def _ref(s) -> str:
    return _REF_LABELS.get((s.get("ref"), s.get("ref_tf32")), str(s.get("ref")))


def conv_lines(summary: List[dict]) -> List[str]:
    """The convolutions' geometric means as a few lines: per batch, reference and pass, convkit's
    best algorithm per layer and each algorithm (ours/ref, < 1: convkit faster), the best's
    fractions of the ceiling; then CuPy's im2col + cuBLAS against cuDNN."""
    conv = [s for s in summary if s.get("op") == "conv2d"]
    out: List[str] = []
    timed = [s for s in conv if s.get("kind") in ("algo", "best")]
    if timed:
        out.append("conv ours/ref, geomean over layers (< 1: convkit faster; n layers; best's % of ceiling):")
    keys = list(dict.fromkeys((s.get("batch"), s.get("ref"), s.get("ref_tf32"), s["pass"]) for s in timed))
    for b, ref, tf, p in keys:
        es = [s for s in timed if (s.get("batch"), s.get("ref"), s.get("ref_tf32"), s["pass"]) == (b, ref, tf, p)]
        best = [s for s in es if s.get("kind") == "best"]
        line = f"  b{b} {p:<10} vs {_ref({'ref': ref, 'ref_tf32': tf}):<10}"
        if best:
            bs = best[0]
            line += (f" best {bs['geomean_ratio']:.2f} (n={bs['n']}; ours {_f(bs.get('ours_pct_of_ceiling'), '.0f')}%,"
                     f" ref {_f(bs.get('ref_pct_of_ceiling'), '.0f')}%)")
        algos = [s for s in es if s.get("kind") == "algo"]
        if algos:
            line += "; " + ", ".join(f"{s['algo']} {s['geomean_ratio']:.2f}" for s in algos)
        out.append(line)
    vs = [s for s in conv if s.get("kind") == "ref-vs-ref" and s.get("geomean_ratio") is not None]
    if vs:
        out.append("cupy im2col+cublas time / cudnn time, geomean over layers: " + "; ".join(
            f"b{s.get('batch')} {s['pass']} vs {_ref(s)} {s['geomean_ratio']:.2f}" for s in vs))
    return out


def bench_lines(path: str) -> List[str]:
    """The few numbers of a bench JSON worth reading first."""
    try:
        with open(path) as f:
            rep = json.load(f)
    except (OSError, ValueError) as e:
        return [f"unreadable ({e})"]
    rows = rep.get("rows", [])
    status: Dict[str, int] = {}
    for r in rows:
        status[r.get("status", "?")] = status.get(r.get("status", "?"), 0) + 1
    c = rep.get("ceilings", {})
    batch = rep.get("batches") or rep.get("batch")
    batch = ",".join(str(b) for b in batch) if isinstance(batch, list) else batch
    head = (f"{rep.get('dtype')}, batch {batch}: {len(rows)} rows ("
            + ", ".join(f"{n} {s}" for s, n in sorted(status.items())) + ")"
            + (f" in {rep['wall_s']} s" if rep.get("wall_s") is not None else "")
            + (f" (budget {rep['budget_s']:.0f} s)" if rep.get("budget_s") else "")
            + (f"; INTERRUPTED: {rep['interrupted']}" if rep.get("interrupted") else ""))
    out = [head]
    plan = rep.get("plan")
    if plan:
        samples = sorted({r.get("samples") for r in rows if r.get("samples")})
        out.append(f"plan: {plan.get('groups')} groups, {plan.get('callables')} timed callables x "
                   f"{plan.get('samples_per_callable')} samples, estimated {_f(plan.get('estimate_s'), '.0f')} s"
                   + (f"; samples taken per side: {samples[0]}..{samples[-1]}" if samples else ""))
    mm = [f"{c.get('matmul_dtype', '')} {c['matmul_gflops'] / 1e3:.1f}"] if c.get("matmul_gflops") else []
    for k, key in (("tf32", "matmul_tf32_gflops"), ("fp16", "matmul_fp16_gflops"),
                   ("bf16", "matmul_bf16_gflops")):
        if c.get(key):
            mm.append(f"{k} {c[key] / 1e3:.1f}")
    out.append(f"ceilings: copy {_f(c.get('copy_gbps'), '.0f')} GB/s; torch.mm TFLOP/s: " + ", ".join(mm))
    cup = (rep.get("references") or {}).get("cupy-im2col-cublas")
    if cup:
        out.append(f"CuPy im2col + cuBLAS reference: {cup.get('status')}"
                   + ((f" (CuPy {cup.get('version')}"
                       + (f", kernels built in {cup['compile_s']} s" if cup.get("compile_s") is not None else "")
                       + ")") if cup.get("status") == "ok" else f": {cup.get('reason')}"))
    summary = rep.get("summary", [])
    structured = any("kind" in s for s in summary)
    if structured:
        out += conv_lines(summary)
    for s in summary:
        if structured and s.get("op") == "conv2d":
            continue
        parts = []
        if s.get("geomean_ratio") is not None:
            parts.append(f"ours/ref {s['geomean_ratio']:.2f}")
        if s.get("ours_pct_of_ceiling") is not None:
            parts.append(f"ours {s['ours_pct_of_ceiling']:.0f}% of ceiling")
        if s.get("ref_pct_of_ceiling") is not None:
            parts.append(f"ref {s['ref_pct_of_ceiling']:.0f}%")
        out.append(f"{s['group']} (n={s['n']}): " + "; ".join(parts))
    for t in rep.get("totals", []):
        out.append(f"GoogLeNet convs+pools {t['pass']} batch {t.get('batch')}, convkit's best: "
                   f"{t['ours_ms']:.2f} ms vs cudnn fp32 {t['ref_ms']:.2f} ms ({t['ratio']:.2f}, {t['layers']} layers)")
    for t in rep.get("ref_totals", []):
        ref = _REF_LABELS.get((t.get("ref", "cudnn"), t.get("ref_tf32")), "torch")
        out.append(f"GoogLeNet convs+pools {t['pass']} batch {t.get('batch')} as {ref}: "
                   f"{t['ref_ms']:.2f} ms ({t['layers']} layers)")
    o = rep.get("call_overhead_us")
    if o:
        out.append("batch-1 call overhead: " + "; ".join(
            f"{op} convkit {_f(o[op].get('convkit'), '.1f')} µs vs torch {_f(o[op].get('torch'), '.1f')} µs"
            for op in ("relu", "max_pool2d") if op in o)
            + "".join(f"; {k} FAILED: {str(v)[:120]}" for k, v in o.get("errors", {}).items()))
    # failed cases and failed references, each once (a GPU case has a row per reference)
    bad: Dict[tuple, dict] = {}
    bad_ref: Dict[tuple, dict] = {}
    for r in rows:
        where = (r.get("layer"), r.get("pass"), r.get("batch"))
        if r.get("status") != "ok":
            bad.setdefault(where + (r.get("algo"),), r)
        if r.get("ref_status") not in (None, "ok"):
            bad_ref.setdefault(where + (r.get("ref"), r.get("ref_tf32")), r)
    for found, n, what, noun, detail in (
            (bad, 5, "FAILED", "cases",
             lambda r: f"algo={r['algo']}: {r.get('status')}: {str(r.get('error'))[:160]}"),
            (bad_ref, 3, "REFERENCE FAILED", "reference cases",
             lambda r: f"{_ref(r)}: {r.get('ref_status')}: {str(r.get('ref_error'))[:160]}")):
        rs = list(found.values())
        out += [f"{what} {r['layer']} {r['pass']} batch {r.get('batch')} {detail(r)}" for r in rs[:n]]
        if len(rs) > n:
            out.append(f"... and {len(rs) - n} more failed {noun}")
    return out


def _log_tail(path: str, n: int) -> List[str]:
    """The last n non-empty lines of a log (a failed step's reason), shortened; the
    sanitizer's own "=========" lines left out."""
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        lines = [line.rstrip() for line in f if line.strip() and not line.startswith("=========")]
    return [line[:160] for line in lines[-n:]]


def _step_line(steps, name: str) -> str:
    s = steps.get(name)
    if not s:
        return "not run"
    txt = s["status"]
    if s["status"] not in ("skipped", "dry-run"):
        txt += f" in {s['seconds']} s"
        if s["rc"] not in ("0", ""):
            txt += f" (exit {s['rc']})"
    if s.get("note"):
        txt += f" — {s['note']}"
    return txt


def summarize_dir(out_dir: str) -> str:
    steps = read_steps(out_dir)
    meta = {}
    meta_path = os.path.join(out_dir, "meta.txt")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    meta[k] = v
    call = meta.get("call")
    lines = [f"== convkit GPU check{' (call ' + call + ')' if call else ''}: {meta.get('gpu', '?')}, "
             f"{meta.get('date', '?')}, commit {meta.get('commit') or '?'} =="]
    lines.append(f"build      {_step_line(steps, 'build')}")
    if steps.get("build", {}).get("status") not in (None, "ok", "dry-run", "skipped"):
        lines.append("           the build failed: the end of build.log is above; nothing else ran")
    if call == "bench":
        return "\n".join(lines + _bench_section(out_dir, steps) + [_time_line(steps, meta)]) + "\n"
    probe = steps.get("sanitizer-probe")
    if probe:
        if probe["status"] == "REFUSED":
            lines.append(f"sanitizer  CANNOT RUN HERE — {probe['note']} (racecheck and memcheck skipped)")
        else:
            lines.append(f"sanitizer  probe: {_step_line(steps, 'sanitizer-probe')}")
    if "smoke" in steps:
        script = None
        path = os.path.join(out_dir, "smoke.txt")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                for line in f:
                    if line.startswith("gpu_sanitize: ") and " cases: " in line:
                        script = line.strip()[len("gpu_sanitize: "):]
        txt = f"smoke      {script + ' — ' if script else ''}{_step_line(steps, 'smoke')}"
        lines.append(txt)
        if not script and steps["smoke"]["status"] not in ("skipped", "dry-run"):
            lines += [f"             | {t}" for t in _log_tail(path, 3)]
        lines += [f"             {t}" for t in _fail_lines(path, 6)]
    first = True
    for tool in SANITIZER_TOOLS:
        step = f"sanitizer-{tool}"
        info = parse_sanitizer(os.path.join(out_dir, f"sanitizer-{tool}.txt"))
        if step not in steps and info is None:
            continue   # a tool this call does not run
        label = "sanitizer  " if first else "           "
        first = False
        st = steps.get(step, {}).get("status")
        if info is None or st in (None, "skipped", "dry-run"):
            lines.append(f"{label}{tool}: {_step_line(steps, step)}")
            continue
        if info["errors"] is None:
            verdict = "NO ERROR SUMMARY (crashed or timed out: " + \
                " / ".join(_log_tail(os.path.join(out_dir, f"sanitizer-{tool}.txt"), 2)) + ")"
        elif info["errors"] == 0:
            verdict = "0 errors"
        else:
            verdict = f"{info['errors']} ERRORS"
        txt = f"{label}{tool}: {verdict}"
        if info["script"]:
            txt += f"; gpu_sanitize: {info['script']}"
        elif info["errors"] is not None:
            txt += "; gpu_sanitize did not finish: " + " / ".join(
                _log_tail(os.path.join(out_dir, f"sanitizer-{tool}.txt"), 2))
        txt += f" — {_step_line(steps, step)}"
        lines.append(txt)
        lines += [f"             {t}" for t in _fail_lines(os.path.join(out_dir, f"sanitizer-{tool}.txt"), 4)]
        if info["errors"]:
            if info["first"]:
                lines.append(f"             first: {info['first'][:150]}")
            if info["kernels"]:
                lines.append(f"             in: {', '.join(k[:80] for k in info['kernels'])}")
    junit = parse_junit(os.path.join(out_dir, "pytest-cuda.xml"))
    t = _step_line(steps, "tests")
    if junit:
        verdict = "PASS" if junit["failures"] == 0 and junit["errors"] == 0 else "FAIL"
        t = (f"{verdict}: {junit['passed']} passed, {junit['failures']} failed, {junit['errors']} "
             f"errors, {junit['skipped']} skipped — {t}")
    lines.append(f"tests      {t}")
    if junit and junit["failed_names"]:
        for n in junit["failed_names"][:8]:
            lines.append(f"           failed: {n}")
        if len(junit["failed_names"]) > 8:
            lines.append(f"           ... {len(junit['failed_names']) - 8} more (pytest-cuda.log)")
    lines += _bench_section(out_dir, steps)
    lines.append(_time_line(steps, meta))
    return "\n".join(lines) + "\n"


def _fail_lines(path: str, n: int) -> List[str]:
    """gpu_sanitize.py's FAIL lines (one per failed case), at most n."""
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        fails = [line.rstrip()[:160] for line in f if line.startswith("FAIL ")]
    return fails[:n] + ([f"... {len(fails) - n} more FAIL lines"] if len(fails) > n else [])


def _bench_step(json_name: str) -> str:
    """The step that wrote a bench JSON: DATE-GPU-b32.json -> bench-b32, ...-float16.json ->
    bench-float16; a JSON of another name (an older layout) -> bench."""
    m = re.search(r"-(b\d+|float16|bfloat16|float64)\.json$", json_name)
    return f"bench-{m.group(1)}" if m else "bench"


def _bench_section(out_dir: str, steps) -> List[str]:
    lines: List[str] = []
    jsons = sorted(p for p in glob.glob(os.path.join(out_dir, "*.json")))
    label = "bench      "
    for path in jsons:
        name = os.path.basename(path)
        lines.append(f"{label}{name}: {_step_line(steps, _bench_step(name))}")
        lines += [f"             {b}" for b in bench_lines(path)]
        label = "           "
    have = {_bench_step(os.path.basename(p)) for p in jsons}
    for step in [k for k in steps if k.startswith("bench")]:
        if step in have:
            continue
        ran = steps[step]["status"] not in ("skipped", "dry-run")
        lines.append(f"{label}{step}: {_step_line(steps, step)}" + (" (no JSON)" if ran else ""))
        label = "           "
        lines += [f"             | {t}" for t in _log_tail(os.path.join(out_dir, f"{step}.log"), 3)]
    return lines


def _time_line(steps, meta) -> str:
    total = sum(float(s["seconds"]) for s in steps.values() if s["seconds"].replace(".", "", 1).isdigit())
    return ("time       " + ", ".join(f"{k} {v['seconds']} s" for k, v in steps.items()
                                      if v["status"] not in ("skipped", "dry-run"))
            + f"; {total:.0f} s in all" + (f" (budget {meta['budget']} s)" if meta.get("budget") else ""))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--slug":
        print(slug(argv[1]))
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    text = summarize_dir(argv[0])
    with open(os.path.join(argv[0], "summary.txt"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
