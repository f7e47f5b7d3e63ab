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


def _failed(rows) -> Tuple[List[Dict[str, object]], List[Dict[str, object]]]:
    """(failed convkit cases, references that failed their own check), each once: the first row
    of its (layer, pass, batch, algorithm) or (layer, pass, batch, reference, TF32) (a GPU case
    has a row per reference, a reference a row per algorithm)."""
    cases: Dict[Tuple, Dict[str, object]] = {}
    refs: Dict[Tuple, Dict[str, object]] = {}
    for r in rows:
        where = (r["layer"], r["pass"], r.get("batch"))
        if r["status"] != "ok":
            cases.setdefault(where + (r["algo"],), r)
        if r.get("ref_status") not in (None, "ok"):
            refs.setdefault(where + (r.get("ref"), r.get("ref_tf32")), r)
    return list(cases.values()), list(refs.values())


def failure_lines(report: Dict[str, object]) -> List[str]:
    """Interruption, failed cases and references that failed their own check (_failed)."""
    out = []
    if report.get("interrupted"):
        out += ["", f"**Interrupted**: {report['interrupted']}; the tables cover what ran."]
    bad, bad_ref = _failed(report["rows"])
    for rs, what, detail in (
            (bad, "case(s) failed** (no time reported for them)",
             lambda r: f"algo={r['algo']}: {r['status']}: {r.get('error')}"),
            (bad_ref, "reference case(s) failed** (the reference was not timed)",
             lambda r: f"{ref_label(r['ref'], r.get('ref_tf32'))}: {r['ref_status']}: {r.get('ref_error')}")):
        if rs:
            out += ["", f"**{len(rs)} {what}:", ""]
            out += [f"- {r['layer']} {r['pass']} batch {r.get('batch')} {detail(r)}" for r in rs]
    return out


def n_failed(report: Dict[str, object]) -> Tuple[int, int]:
    """(failed convkit cases, failed reference cases), each counted once (_failed)."""
    bad, bad_ref = _failed(report["rows"])
    return len(bad), len(bad_ref)
