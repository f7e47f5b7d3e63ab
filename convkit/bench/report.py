"""A run's report written out: the Markdown table (CPU here, GPU in report_gpu.py), the short
form for README.md, and strict JSON (inf/NaN as null). viz.py plots the JSON as a PNG."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, Optional

from convkit.bench.report_gpu import markdown_gpu, readme_report
from convkit.bench.tables import (batches_text, commit_text, failure_lines, fmt, fmt_work, overhead_lines,
                                  pipe_table, plural, report_batches)

__all__ = ["markdown_report", "readme_report", "write_outputs"]


def _gemm_ceiling_text(c: Dict[str, object]) -> str:
    """The FMA peak and our GEMM's share of it, for the table header ("" when not measured)."""
    if not c.get("fma_peak_gflops") or not c.get("gemm_gflops"):
        return ""
    text = (f" FMA peak (our kernel, {c.get('gemm_isa', '?')}) {c['fma_peak_gflops']:.1f} GFLOP/s "
            f"({c.get('fma_peak_gflops_per_core', 0):.1f} on one core); convkit GEMM "
            f"{'x'.join(map(str, c.get('gemm_shape', [])))} {c['gemm_gflops']:.1f} GFLOP/s "
            f"= {c['gemm_pct_of_peak']:.0f}% of peak")
    if c.get("gemm_conv_gflops"):
        text += (f", {'x'.join(map(str, c.get('gemm_conv_shape', [])))} "
                 f"{c['gemm_conv_gflops']:.1f} GFLOP/s = {c['gemm_conv_pct_of_peak']:.0f}%")
    return text + f" (M x N x K, {c.get('gemm_dtype', 'float32')}, best sample)."


def markdown_report(report: Dict[str, object]) -> str:
    """The results as Markdown: a line on the machine and ceilings, one table row per
    (layer, pass, algo[, reference setting]), then the geometric-mean summary. Aligned, so it
    reads on a terminal."""
    if report["device"] != "cpu":
        return markdown_gpu(report)
    c = report["ceilings"]
    commit = commit_text(report)
    out = [
        f"convkit bench on {report['device']} ({report['cpu']}), {plural(report['threads'], 'thread')}, "
        f"batch {batches_text(report)}, {report['dtype']}, torch {report['torch']}, commit {commit}, "
        f"{report['date']}.",
        "",
        f"Ceilings measured in the same run: torch.mm {c['matmul_n']}x{c['matmul_n']} "
        f"{c['matmul_gflops']:.1f} GFLOP/s; copy {c['copy_gbps']:.1f} GB/s (read + write)."
        f"{_gemm_ceiling_text(c)} "
        f"Times are medians of {report['repeat']} interleaved samples; ratio < 1: convkit faster. "
        f"Rate: GFLOP/s for convolutions (fwd+bwd = 3x the forward's MACs), GB/s for pools and "
        f"ReLU; % of ceiling: of the torch.mm rate (convolutions) or the copy bandwidth (pools, "
        f"ReLU). "
        f"Spread: (slowest - fastest sample) / median, the worse of the two sides; "
        f"rel err: convkit's largest error against torch in float64, over the largest value.",
        "",
    ]
    several = len(report_batches(report)) > 1
    header = ["layer"] + (["batch"] if several else []) + [
        "pass", "algo", "work", "ours ms", "torch ms", "ours/torch", "ours rate", "% ceiling",
        "spread", "rel err"]
    right = [False] + ([True] if several else []) + [False, False] + [True] * 8
    body = []
    for r in report["rows"]:
        first = [r["layer"]] + ([str(r["batch"])] if several else []) + [r["pass"], r["algo"]]
        if r["status"] != "ok":
            body.append(first + [fmt_work(r), f"**{r['status']}**", fmt(r["ref_ms"], ".3f"),
                                 "—", "—", "—", "—", fmt(r.get("max_rel_err"), ".1e")])
            continue
        rate = (f"{r['gflops']:.1f} GFLOP/s" if "gflops" in r else f"{r['gbps']:.1f} GB/s")
        body.append(first + [fmt_work(r), f"{r['ours_ms']:.3f}", f"{r['ref_ms']:.3f}",
                             f"{r['ratio']:.2f}", rate, f"{r['pct_of_ceiling']:.0f}%",
                             f"{100 * r['spread']:.0f}%", fmt(r.get("max_rel_err"), ".1e")])
    out += pipe_table(header, body, right)
    if report.get("summary"):
        out += ["", "Geometric mean of ours/torch:", ""]
        out += pipe_table(["group", "rows", "geomean ours/torch"],
                          [[s["group"], str(s["n"]), f"{s['geomean_ratio']:.2f}"]
                           for s in report["summary"]], [False, True, True])
    if report.get("totals"):
        out += ["", "GoogLeNet's layers added up (each at its fastest convkit algorithm; the "
                "lecture's and MobileNet's layers excluded):", ""]
        out += pipe_table(["pass", "batch", "layers", "ours ms", "torch ms", "ours/torch"],
                          [[t["pass"], str(t.get("batch")), str(t["layers"]), f"{t['ours_ms']:.2f}",
                            f"{t['ref_ms']:.2f}", f"{t['ratio']:.2f}"] for t in report["totals"]],
                          [False, True, True, True, True, True])
    out += overhead_lines(report)
    out += failure_lines(report)
    noisy = [r for r in report["rows"] if r["status"] == "ok" and r["spread"] > 0.25]
    if noisy:
        out += ["", f"{len(noisy)} of {len(report['rows'])} cases spread over 25% between "
                f"samples (load average {report.get('loadavg_start') or 0:.1f} at the start): "
                f"rerun on a quiet machine before quoting their ratios."]
    return "\n".join(out) + "\n"


def _finite(obj):
    """The report with inf/NaN floats (an error that could not be measured) as null: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_outputs(report: Dict[str, object], json_path: Optional[str],
                  markdown_path: Optional[str], readme_path: Optional[str] = None) -> str:
    """The Markdown report (returned) to markdown_path, strict JSON to json_path, and for a GPU
    run readme_report's short form to readme_path."""
    md = markdown_report(report)
    for path, text in ((markdown_path, md),
                       (readme_path, readme_report(report) if readme_path and report["device"] != "cpu" else md)):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(_finite(report), f, indent=1, allow_nan=False)
            f.write("\n")
    return md
