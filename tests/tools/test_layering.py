"""The layers' dependency rules, read from the sources (nothing is imported or compiled):

- C++: only csrc/bindings includes pybind11 (or Python.h); csrc/common, csrc/cpu, csrc/cuda and
  csrc/sim include nothing from csrc/bindings.
- Python: convkit._params (the argument checks every layer shares) imports nothing of convkit
  but convkit._errors; the module-level imports among convkit's modules form no cycle other than
  the known ones listed below.

Imports inside function bodies are left out of the graph; `python -m pytest -s` prints them
(test_report_function_level_imports), so a lazy import used to hide a cycle shows up in review.
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
PKG = ROOT / "convkit"

# ---- C++ ------------------------------------------------------------------------------------------

_INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.MULTILINE)
_CXX_SUFFIXES = {".h", ".hpp", ".cuh", ".cpp", ".cc", ".cu"}


def _strip_comments(text: str) -> str:
    """The source without /* */ and // comments (an #include inside a comment is no include)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", text)


def _includes(path: Path):
    """(delimiter, included path) of every #include line of a C++/CUDA source."""
    return _INCLUDE.findall(_strip_comments(path.read_text(errors="replace")))


def _cxx_files(top: Path):
    return sorted(p for p in top.rglob("*") if p.suffix in _CXX_SUFFIXES and p.is_file())


def _resolve(src: Path, name: str):
    """The file under csrc an include names, tried as the build resolves it: relative to the
    including file, then to csrc (the include root); None for a system or third-party header."""
    for base in (src.parent, CSRC):
        cand = (base / name).resolve()
        if cand.is_file() and CSRC.resolve() in cand.parents:
            return cand
    return None


def _is_python_header(name: str) -> bool:
    return name.startswith("pybind11/") or name in ("Python.h", "pybind11.h")


def test_csrc_layout_is_what_the_rules_name():
    """The rules below name these folders; a new one should be placed in them on purpose."""
    assert sorted(p.name for p in CSRC.iterdir() if p.is_dir()) == ["bindings", "common", "cpu", "cuda", "sim"]


def test_only_bindings_include_pybind11():
    offenders = [f"{p.relative_to(ROOT)}: #include {d}{name}"
                 for p in _cxx_files(CSRC) if CSRC / "bindings" not in p.parents
                 for d, name in _includes(p) if _is_python_header(name)]
    assert not offenders, "pybind11 / Python headers outside csrc/bindings:\n" + "\n".join(offenders)
    # and the bindings do use it (the test would pass vacuously if the parsing found nothing)
    assert any(_is_python_header(name) for p in _cxx_files(CSRC / "bindings") for _, name in _includes(p))


def test_kernels_include_nothing_from_bindings():
    bindings = (CSRC / "bindings").resolve()
    offenders = []
    for p in _cxx_files(CSRC):
        if CSRC / "bindings" in p.parents:
            continue
        for d, name in _includes(p):
            target = _resolve(p, name)
            if name.startswith("bindings/") or (target is not None and bindings in target.parents):
                offenders.append(f"{p.relative_to(ROOT)}: #include {d}{name}")
    assert not offenders, "csrc/common, cpu, cuda and sim must not depend on csrc/bindings:\n" + "\n".join(offenders)


def test_include_parsing_sees_the_kernels_headers():
    """A sanity check of the parser: a kernel source's project includes resolve under csrc."""
    incs = _includes(CSRC / "cpu" / "conv_direct.cpp")
    assert ("\"", "cpu/conv.h") in incs and _resolve(CSRC / "cpu" / "conv_direct.cpp", "cpu/conv.h") is not None


# ---- Python ---------------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _targets(mod: str, is_package: bool, node) -> set:
    """The convkit modules an import statement depends on. `from pkg import sub` depends on the
    submodule `sub` (its package is always imported first, which is no edge of its own);
    `from pkg import name` for a name that is not a submodule depends on pkg itself."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        base = mod if is_package else mod.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    if target not in MODULES:
        return set()
    out = set()
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.add(sub if sub in MODULES else target)
    return out


def _imports():
    """(module-level edges {module: {modules}}, [(module, line, statement, {convkit modules})] of
    the imports in function bodies, convkit's or not)."""
    edges = {m: set() for m in MODULES}
    in_functions = []
    for mod, path in MODULES.items():
        is_package = path.name == "__init__.py"

        def walk(node, in_function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets = _targets(mod, is_package, child) - {mod}
                    if in_function:
                        in_functions.append((mod, child.lineno, ast.unparse(child), targets))
                    else:
                        edges[mod] |= targets
                walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        walk(ast.parse(path.read_text(), str(path)), False)
    return edges, in_functions


def _cycles(edges) -> set:
    """Every elementary cycle of the graph, each as a tuple rotated to start at its smallest
    module (the graph is small: a plain depth-first search from each start)."""
    found = set()
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges[node]):
                if nxt == start:
                    i = path.index(min(path))
                    found.add(tuple(path[i:] + path[:i]))
                elif nxt not in path and nxt > start:   # each cycle found from its smallest module
                    stack.append((nxt, path + [nxt]))
    return found


# Known module-level cycles. Each is a debt (issue 14); remove its entry when the cycle is gone,
# and add none: a new cycle fails the test.
KNOWN_CYCLES = set()


def test_params_imports_only_errors():
    """convkit._params, the argument checks shared by every layer, sits at the bottom: of convkit
    it may import convkit._errors alone (at module level or in a function)."""
    edges, in_functions = _imports()
    imported = edges["convkit._params"].union(*(t for m, _, _, t in in_functions if m == "convkit._params"))
    assert imported == {"convkit._errors"}, imported


def test_no_new_import_cycles():
    edges, _ = _imports()
    cycles = _cycles(edges)
    assert cycles == KNOWN_CYCLES, (
        f"module-level import cycles among convkit's modules: new {sorted(cycles - KNOWN_CYCLES)}, "
        f"gone (remove them from KNOWN_CYCLES) {sorted(KNOWN_CYCLES - cycles)}")


def test_cycle_finder():
    """The search itself: a 3-cycle and a 2-cycle sharing a node, and an acyclic edge."""
    g = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == {("a", "b"), ("a", "b", "c")}


def test_graph_sees_the_package():
    """A sanity check of the graph: the modules and a few edges known to exist."""
    edges, _ = _imports()
    assert {"convkit", "convkit._params", "convkit._kernels", "convkit.functional"} <= set(MODULES)
    assert "convkit._kernels" in edges["convkit.functional"]
    assert "convkit._errors" in edges["convkit._params"]


def test_report_function_level_imports():
    """Not a rule: lists every import inside a function body (printed with -s)."""
    _, in_functions = _imports()
    for mod, line, stmt, _ in in_functions:
        print(f"{MODULES[mod].relative_to(ROOT)}:{line}: {stmt}")
