"""Imports flow one way (definition → graph → engine → documents | compiler → backends):
every module of ``symback/`` is read with ``ast``, imports inside functions included, and the
package's import graph must have no circle."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "symback"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The symback modules `path` imports anywhere in its text (a package's __init__ not counted
    for `from . import x`, which names the submodule)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("symback")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("symback"):
                target = node.module
            else:
                continue
            names = {f"{target}.{a.name}" for a in node.names}
            found = {n for n in names if (PACKAGE.parent / (n.replace(".", "/") + ".py")).exists()
                     or (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
            out |= found or {target}
    return out - {here}


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {t for t in imports_of(p) if t in mods} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_imports_inside_functions():
    g = graph()
    assert "symback.engine" in g and g["symback.engine"]        # the graph was built


def test_no_import_circle():
    g = {m: {t for t in ts if t != "symback"} for m, ts in graph().items() if m != "symback"}
    assert cycles(g) == []


def test_a_planted_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
