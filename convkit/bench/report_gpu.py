"""The Markdown of a GPU run: the full table (one row per layer, batch, pass, algo and reference,
both sides' times, rates and fractions of the ceiling), and readme_report's short form for
README.md (geometric-mean matrices, per-layer TFLOP/s)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from convkit.bench.summary import ref_key
from convkit.bench.tables import (batches_text, commit_text, failure_lines, fmt, fmt_work, overhead_lines,
                                  pipe_table, plural, ref_label)

__all__ = ["markdown_gpu", "readme_report"]


def _ref_cell(r) -> str:
    return ref_label(r["ref"], r.get("ref_tf32")) if r["ref"] != "torch-cuda" else "torch-cuda"


def _tflops(gflops: Optional[float]) -> str:
    """A rate in TFLOP/s, three significant digits (0.123, 12.3, 123)."""
    if gflops is None:
        return "—"
    t = gflops / 1e3
    return f"{t:.0f}" if t >= 100 else f"{t:.3g}"


def _rate_cell(r, side: str) -> str:
    """TFLOP/s for a convolution, GB/s for a pool or ReLU; side "" (ours) or "ref_"."""
    if "macs" in r:
        v = r.get(side + "gflops")
        return "—" if v is None else f"{_tflops(v)} TFLOP/s"
    v = r.get(side + "gbps")
    return "—" if v is None else f"{v:,.0f} GB/s"


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0f}%"


def _ceiling_line(report: Dict[str, object]) -> str:
    c = report["ceilings"]
    t = report.get("timing", {})
    mm = f"torch.mm {c['matmul_n']}^3 {c['matmul_dtype']} {c['matmul_gflops'] / 1e3:.1f} TFLOP/s"
    extra = [f"{k} {c[key] / 1e3:.1f}" for k, key in (("tf32", "matmul_tf32_gflops"),
             ("fp16", "matmul_fp16_gflops"), ("bf16", "matmul_bf16_gflops")) if c.get(key)]
    return (f"Ceilings measured in the same run: {mm} with TF32 off (the FP32 ceiling)"
            + (f" ({', '.join(extra)} TFLOP/s)" if extra else "")
            + f"; copy {c['copy_gbps']:.0f} GB/s (read + write, best; median "
            f"{c.get('copy_gbps_median', 0):.0f}). L2 flushed before each sample (read of "
            f"{t.get('l2_flush_bytes', 0) / 2 ** 20:.0f} MiB).")


def _reference_lines(report: Dict[str, object]) -> List[str]:
    refs = report.get("references") or {}
    cup = refs.get("cupy-im2col-cublas")
    if not cup:
        return []
    if cup.get("status") == "ok":
        return ["", f"References: cuDNN (cudnn.benchmark picks its algorithm) with TF32 off and on; "
                f"im2col + cuBLAS through CuPy {cup.get('version')} (convkit/bench/cupy_ref.py: "
                f"our im2col/col2im kernels, cupy.matmul; TF32 {'on' if cup.get('tf32') else 'off'}); "
                f"torch's own kernels for pools and ReLU."]
    return ["", f"References: cuDNN with TF32 off and on; torch's own kernels for pools and ReLU. "
            f"The CuPy im2col + cuBLAS reference was skipped: {cup.get('reason')}."]


def markdown_gpu(report: Dict[str, object]) -> str:
    """markdown_report for a CUDA run: one row per (layer, batch, pass, algo, reference) with
    both sides' times, rates (TFLOP/s, GB/s) and fractions of the ceiling,
    then the summary, the totals, failures."""
    commit = commit_text(report)
    out = [
        f"convkit bench on {report['device']} ({report['gpu']}), batch {batches_text(report)}, "
        f"{report['dtype']}, torch {report['torch']}, CUDA {report.get('cuda')}, cuDNN "
        f"{report.get('cudnn')}, commit {commit}, {report['date']}.",
        "",
        _ceiling_line(report) + " "
        f"Times: CUDA events, median of up to {report['repeat']} samples per side after "
        f"{plural(report['warmup'], 'warm-up call')} (`samples` in the JSON; fewer under --budget), sides "
        f"interleaved. ratio < 1: convkit faster. Rate: TFLOP/s for convolutions (2 flops a "
        f"MAC; bwd_input and bwd_weight as many MACs as fwd, fwd+bwd 3x), GB/s for pools and "
        f"ReLU (bytes read + written); % ceil: of the copy bandwidth (pools, ReLU) or of torch.mm "
        f"with TF32 off (the cudnn tf32 reference: of torch.mm with TF32 on; "
        f"`ref_pct_of_fp32_ceiling` in the JSON has it against TF32 off). Spread: (slowest - "
        f"fastest sample) / median, the worse side. err: largest error against float64 over the "
        f"largest value (ref err: the reference's).",
    ]
    out += _reference_lines(report)
    out += overhead_lines(report)
    out.append("")
    header = ["layer", "batch", "pass", "algo", "ref", "work", "ours ms", "ref ms", "ours/ref",
              "ours rate", "ref rate", "ours % ceil", "ref % ceil", "spread", "err", "ref err"]
    right = [False, True, False, False, False] + [True] * 11
    body = []
    for r in report["rows"]:
        status = r["status"]
        spread = r.get("spread") if r.get("spread") is not None else r.get("ref_spread")
        ref_ms = (fmt(r.get("ref_ms"), ".4f") if r.get("ref_status", "ok") == "ok"
                  else f"**{r['ref_status']}**")
        body.append([
            r["layer"], str(r.get("batch")), r["pass"], r["algo"], _ref_cell(r), fmt_work(r),
            f"{r['ours_ms']:.4f}" if status == "ok" else f"**{status}**",
            ref_ms, fmt(r.get("ratio"), ".2f"), _rate_cell(r, ""), _rate_cell(r, "ref_"),
            _pct(r.get("pct_of_ceiling")), _pct(r.get("ref_pct_of_ceiling")),
            _pct(None if spread is None else 100 * spread),
            fmt(r.get("max_rel_err"), ".1e"), fmt(r.get("ref_rel_err"), ".1e"),
        ])
    out += pipe_table(header, body, right)
    if report.get("summary"):
        out += ["", "Geometric means (ours/ref < 1: convkit faster; % of ceiling as above):", ""]
        out += _summary_table(report["summary"])
    if report.get("totals"):
        out += ["", "GoogLeNet's layers that have a convkit kernel, added up (each at its fastest "
                "convkit algorithm; reference: cuDNN with TF32 off; lecture's and MobileNet's layers "
                "and ReLUs excluded):", ""]
        out += pipe_table(["pass", "batch", "layers", "ours ms", "ref ms", "ours/ref"],
                          [[t["pass"], str(t.get("batch")), str(t["layers"]), f"{t['ours_ms']:.3f}",
                            f"{t['ref_ms']:.3f}", f"{t['ratio']:.2f}"] for t in report["totals"]],
                          [False, True, True, True, True, True])
    if report.get("ref_totals"):
        out += ["", "GoogLeNet's convolutions and pools as the references run them on this GPU, added up:", ""]
        out += pipe_table(["pass", "batch", "reference", "layers", "ref ms"],
                          [[t["pass"], str(t.get("batch")), ref_label(t.get("ref", "cudnn"), t["ref_tf32"])
                            if t.get("ref") != "torch-cuda" else "torch-cuda",
                            str(t["layers"]), f"{t['ref_ms']:.3f}"] for t in report["ref_totals"]],
                          [False, True, False, True, True])
    out += failure_lines(report)
    hb = [r for r in report["rows"] if r.get("ours_host_bound") or r.get("ref_host_bound")]
    if hb:
        out += ["", f"{len(hb)} rows had samples where the GPU waited for the host inside the "
                f"timed window (ours_host_bound / ref_host_bound in the JSON): their times include "
                f"host dispatch."]
    noisy = [r for r in report["rows"] if r.get("spread") is not None and r["spread"] > 0.25]
    if noisy:
        out += ["", f"{len(noisy)} of {len(report['rows'])} rows spread over 25% between samples: "
                f"rerun before quoting their ratios."]
    return "\n".join(out) + "\n"


def _summary_table(summary: Sequence[Dict[str, object]]) -> List[str]:
    return pipe_table(
        ["group", "rows", "geomean ours/ref", "ours % ceil", "ref % ceil"],
        [[s["group"], str(s["n"]), fmt(s.get("geomean_ratio"), ".2f"),
          fmt(s.get("ours_pct_of_ceiling"), ".0f"), fmt(s.get("ref_pct_of_ceiling"), ".0f")]
         for s in summary], [False, True, True, True, True])


def readme_report(report: Dict[str, object]) -> str:
    """The short form of a GPU run for README.md: the machine, the ceilings, per batch a matrix
    of geometric means (rows: convkit's algorithms and its best per layer; columns: pass x
    reference), how CuPy's im2col + cuBLAS compares with cuDNN, the totals; then, folded, one
    line per (layer, batch, pass): convkit's best algorithm and every side's TFLOP/s."""
    commit = commit_text(report)
    c = report["ceilings"]
    out = [f"Measured {str(report['date'])[:10]} on {report['gpu']} ({report['device']}, CUDA "
           f"{report.get('cuda')}, cuDNN {report.get('cudnn')}, torch {report['torch']}), {report['dtype']}, "
           f"batch {batches_text(report)}, convkit commit {commit}. Command: `convkit bench --device cuda "
           f"--json ...` (benchmarks/gpu_check.sh). FP32 ceiling: torch.mm {c['matmul_n']}^3 with TF32 off at "
           f"{c['matmul_gflops'] / 1e3:.1f} TFLOP/s"
           + (f" (TF32 on: {c['matmul_tf32_gflops'] / 1e3:.1f})" if c.get("matmul_tf32_gflops") else "")
           + f"; copy {c['copy_gbps']:,.0f} GB/s. Ratio = convkit time / reference time in the same "
           f"run, geometric mean over the convolution layers (< 1: convkit faster)."]
    out += _reference_lines(report)
    summ = [s for s in report.get("summary", []) if s.get("op") == "conv2d"]
    passes = list(dict.fromkeys(s["pass"] for s in summ))
    refs = list(dict.fromkeys((s["ref"], s["ref_tf32"]) for s in summ if s.get("kind") in ("algo", "best")))
    for b in dict.fromkeys(s["batch"] for s in summ):
        cols = [(p, ref) for p in passes for ref in refs]
        algos = list(dict.fromkeys(s["algo"] for s in summ if s["batch"] == b and s.get("kind") in ("algo", "best")))
        body = []
        for a in algos:
            cells = []
            for p, (ref, tf) in cols:
                hit = [s for s in summ if s["batch"] == b and s["pass"] == p and s["ref"] == ref
                       and s["ref_tf32"] == tf and s["algo"] == a and s.get("kind") in ("algo", "best")]
                cells.append(f"{hit[0]['geomean_ratio']:.2f} ({hit[0]['n']})" if hit else "—")
            body.append([a if a != "best" else "best per layer"] + cells)
        if body:
            out += ["", f"Batch {b}: geomean ours/ref (layers):", ""]
            out += pipe_table(["algo"] + [f"{p} vs {ref_label(*ref)}" for p, ref in cols], body,
                              [False] + [True] * len(cols))
        vs = [s for s in summ if s["batch"] == b and s.get("kind") == "ref-vs-ref"]
        if vs:
            out += ["", f"Batch {b}, the classic alternative: CuPy im2col + cuBLAS time / cuDNN time: "
                    + "; ".join(f"{s['pass']} vs {ref_label(s['ref'], s['ref_tf32'])} {s['geomean_ratio']:.2f}"
                                for s in vs) + "."]
    if report.get("totals"):
        out += ["", "GoogLeNet's convolutions and pools added up, each at convkit's fastest algorithm: "
                + "; ".join(f"{t['pass']} batch {t.get('batch')}: {t['ours_ms']:.2f} ms against cuDNN's "
                            f"{t['ref_ms']:.2f} ms ({t['ratio']:.2f}, {t['layers']} layers)"
                            for t in report["totals"]) + "."]
    # per layer: the best convkit algorithm and each reference's rate
    conv = [r for r in report["rows"] if r["op"] == "conv2d"]
    keys = list(dict.fromkeys((r["layer"], r.get("batch"), r["pass"]) for r in conv))
    rcols = list(dict.fromkeys(ref_key(r) for r in conv))
    body = []
    for layer, b, p in keys:
        rs = [r for r in conv if (r["layer"], r.get("batch"), r["pass"]) == (layer, b, p)]
        ok = [r for r in rs if r["status"] == "ok" and r.get("ours_ms")]
        best = min(ok, key=lambda r: r["ours_ms"]) if ok else None
        cells = [layer, str(b), p, best["algo"] if best else "—",
                 _tflops(best["gflops"]) if best else "—",
                 _pct(best.get("pct_of_ceiling")) if best else "—"]
        for key in rcols:
            rr = [r for r in rs if ref_key(r) == key and r.get("ref_gflops")]
            cells.append(_tflops(rr[0]["ref_gflops"]) if rr else "—")
        cudnn = [r for r in rs if ref_key(r) == ("cudnn", False) and r.get("ref_ms")]
        cells.append(f"{best['ours_ms'] / cudnn[0]['ref_ms']:.2f}" if best and cudnn else "—")
        body.append(cells)
    if body:
        out += ["", "<details><summary>Per layer: convkit's fastest algorithm and every side's TFLOP/s"
                "</summary>", ""]
        out += pipe_table(["layer", "batch", "pass", "best algo", "ours TFLOP/s", "ours % fp32 ceil"]
                          + [f"{ref_label(*k)} TFLOP/s" for k in rcols] + ["ours/cudnn fp32"],
                          body, [False, True, False, False, True, True] + [True] * (len(rcols) + 1))
        out += ["", "</details>"]
    return "\n".join(out) + "\n"
