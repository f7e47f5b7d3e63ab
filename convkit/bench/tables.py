"""Text building blocks of `convkit bench`'s output: aligned pipe tables, number and work
formats, how a reference is named, the batch list, the per-call overhead line and the failures
(counted by n_failed for the exit status)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["REF_LABELS", "ref_label", "plural", "fmt_work", "fmt", "pipe_table", "report_batches",
           "batches_text", "commit_text", "overhead_lines", "failure_lines", "n_failed"]


# How the tables and the summary name a reference (ref, ref_tf32).
REF_LABELS = {("cudnn", False): "cudnn fp32", ("cudnn", True): "cudnn tf32", ("cudnn", None): "cudnn",
              ("cupy-im2col-cublas", False): "cupy im2col+cublas",
              ("cupy-im2col-cublas", True): "cupy im2col+cublas tf32",
              ("cupy-im2col-cublas", None): "cupy im2col+cublas"}


def ref_label(ref: Optional[str], tf32: Optional[bool] = None) -> str:
    return REF_LABELS.get((ref, tf32), ref or "")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt_work(row) -> str:
    if "macs" in row:
        return f"{row['macs'] / 1e6:,.1f} M MACs"
    return f"{row['bytes'] / 1e6:,.2f} MB"


def fmt(x, spec) -> str:
    return "—" if x is None else format(x, spec)


def pipe_table(header: Sequence[str], body: Sequence[Sequence[str]],
               right: Sequence[bool]) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if rj else c.ljust(w)
                                 for c, w, rj in zip(cells, widths, right)) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if rj else ("-" * (w + 2))
                          for w, rj in zip(widths, right)) + "|"
    return [line(header), rule] + [line(r) for r in body]


def report_batches(report: Dict[str, object]) -> List[int]:
    b = report.get("batches") or report.get("batch")
    return list(b) if isinstance(b, (list, tuple)) else [b]


def commit_text(report) -> str:
    """The run's commit for a report's first line: 10 hex digits, "(dirty)" with local changes."""
    return (report.get("commit") or "no git")[:10] + (" (dirty)" if report.get("dirty") else "")


def batches_text(report: Dict[str, object]) -> str:
    return ",".join(str(b) for b in report_batches(report))


def overhead_lines(report: Dict[str, object]) -> List[str]:
    o = report.get("call_overhead_us")
    if not o:
        return []
    parts = [f"{op} " + ", ".join(f"{impl} {o[op][impl]:.1f} µs" for impl in ("convkit", "torch")
                                  if impl in o[op])
             for op in ("relu", "max_pool2d") if op in o]
    parts += [f"{k} failed: {v}" for k, v in o.get("errors", {}).items()]
    shape = "x".join(str(d) for d in o.get("shape", []))
    return ["", f"Per-call overhead at batch 1 ({shape}, wall clock over {o.get('calls')} calls"
            f"{', synchronized at the end' if report['device'] != 'cpu' else ''}): "
            + "; ".join(parts) + "."]


def failure_lines(report: Dict[str, object]) -> List[str]:
    """Interruption, failed cases (once per layer, pass, batch, algorithm: a GPU case has a row
    per reference) and references that failed their own check."""
    out = []
    if report.get("interrupted"):
        out += ["", f"**Interrupted**: {report['interrupted']}; the tables cover what ran."]
    seen, bad = set(), []
    for r in report["rows"]:
        key = (r["layer"], r["pass"], r.get("batch"), r["algo"])
        if r["status"] != "ok" and key not in seen:
            seen.add(key)
            bad.append(r)
    if bad:
        out += ["", f"**{len(bad)} case(s) failed** (no time reported for them):", ""]
        out += [f"- {r['layer']} {r['pass']} batch {r.get('batch')} algo={r['algo']}: {r['status']}: "
                f"{r.get('error')}" for r in bad]
    seen, bad_ref = set(), []
    for r in report["rows"]:
        key = (r["layer"], r["pass"], r.get("batch"), r.get("ref"), r.get("ref_tf32"))
        if r.get("ref_status") not in (None, "ok") and key not in seen:
            seen.add(key)
            bad_ref.append(r)
    if bad_ref:
        out += ["", f"**{len(bad_ref)} reference case(s) failed** (the reference was not timed):", ""]
        out += [f"- {r['layer']} {r['pass']} batch {r.get('batch')} {ref_label(r['ref'], r.get('ref_tf32'))}: "
                f"{r['ref_status']}: {r.get('ref_error')}" for r in bad_ref]
    return out


def n_failed(report: Dict[str, object]) -> Tuple[int, int]:
    """(failed convkit cases, failed reference cases), each counted once (see failure_lines)."""
    cases = {(r["layer"], r["pass"], r.get("batch"), r["algo"]) for r in report["rows"]
             if r["status"] != "ok"}
    refs = {(r["layer"], r["pass"], r.get("batch"), r.get("ref"), r.get("ref_tf32")) for r in report["rows"]
            if r.get("ref_status") not in (None, "ok")}
    return len(cases), len(refs)
