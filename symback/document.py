"""The content of a derivation document, every formula printed in Python.

:func:`context` turns a Derivation into the dictionary the templates
read: the network and forward pass, the loss and its batch reduction,
the local derivatives, each parameter's chain of factors, the δ
recursion, the activations' derivatives (with their suprema, found by
SymPy), the computational graph as TikZ, a worked numeric example, a
vanishing-gradient bound, a finite-difference check and operation
counts.  Scalar graphs and layer networks (``kind == "layers"``) give
the same keys, so one template serves both.
"""
from __future__ import annotations

import functools
import math
import random
import weakref
import re
from typing import NamedTuple

import sympy as sp
from sympy.calculus.util import maximum, minimum

from .engine import Adjoint
from .errors import OutputError, SymbackError
from .functions import Activation
from .printing import (LatexPrinter, Tex, chain_symbols, chain_values, factor_latex, latex,
                       latex_escape, markdown_escape, mark_primes, name_latex, number, partial, prime,
                       split_primes)

__all__ = ["context", "derivative_sup"]

MAX_FIGURE_NODES = 30      # a bigger graph is unreadable as a figure
MAX_EXPANDED_OPS = 80      # longer expanded forms are left out of the document
MAX_EXPANDED_NODES = 16    # ... and so are those of graphs with more nodes
MAX_NAIVE_OPS = 4000       # the naive derivative is skipped above this loss size
COLUMN = 3.2              # cm between the columns of the computational graph
LINE_WIDTH = 60            # symbols per display row before it is broken (about a page's width)
MAX_EXACT_SUP_OPS = 14     # longer derivatives get their supremum numerically (nsolve on f'' = 0)


def _exact(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, sp.Number)):
        try:
            value = sp.sympify(value, strict=True)
        except (sp.SympifyError, TypeError, ValueError):
            raise SymbackError(f"value for {name!r} must be a number, got {value!r}") from None
        if not value.is_number:
            raise SymbackError(f"value for {name!r} must be a number, got {value!r}")
    if isinstance(value, float):
        return sp.Rational(repr(value))     # 0.1 means 1/10: the example stays exact
    return sp.sympify(value)


def _apps(graph) -> list:
    found: dict = {}
    for n in graph.order:
        if n in graph._expr:
            for f in graph.expr(n).atoms(Activation):
                found.setdefault(f, None)
    return list(found)


@functools.lru_cache(maxsize=None)
def derivative_sup(cls) -> tuple[sp.Expr, bool]:
    """(sup over real z of |f'(z)|, exact?) computed by SymPy for an activation class.

    Each branch of a piecewise derivative is maximised and minimised on
    its own interval (``sympy.calculus.util.maximum``); when SymPy cannot
    find the critical points in closed form they are found numerically
    from f'' = 0 (``nsolve``) and the limits at ±∞.
    """
    z = sp.Symbol("z", real=True)
    app = cls(z)
    d = cls.derivative(*app.args).rewrite(sp.exp)
    pieces = d.as_expr_set_pairs(sp.S.Reals) if isinstance(d, sp.Piecewise) else [(d, sp.S.Reals)]
    best, exact = sp.S.Zero, True
    for e, dom in pieces:
        if dom is sp.S.EmptySet:
            continue
        if not e.has(z):
            best = sp.Max(best, sp.Abs(e))
            continue
        try:
            if sp.count_ops(e) > MAX_EXACT_SUP_OPS:
                # SymPy's critical-point search can run for minutes on long expressions
                raise NotImplementedError
            hi, lo = maximum(e, z, dom), minimum(e, z, dom)
        except (NotImplementedError, ValueError, TypeError):
            hi, lo = _numeric_extremes(e, z, dom)
            exact = False
        best = sp.Max(best, sp.Abs(hi), sp.Abs(lo))
    return sp.nsimplify(best) if exact else best, exact


def _numeric_extremes(e, z, dom):
    f = sp.lambdify(z, e, "mpmath")
    lo_end = dom.inf if dom.inf.is_finite else -40
    hi_end = dom.sup if dom.sup.is_finite else 40
    grid = [lo_end + (hi_end - lo_end) * k / 400 for k in range(401)]
    vals = [sp.Float(f(sp.Float(x))) for x in grid]
    cands = list(vals) + [sp.limit(e, z, dom.inf, "+"), sp.limit(e, z, dom.sup, "-")]
    de = sp.diff(e, z)
    for k in (max(range(len(vals)), key=vals.__getitem__), min(range(len(vals)), key=vals.__getitem__)):
        try:
            root = sp.nsolve(de, z, grid[k])
            if dom.contains(root) is sp.true:
                cands.append(e.subs(z, root).evalf())
        except (ValueError, ZeroDivisionError):
            pass
    cands = [c for c in cands if c.is_real]
    return max(cands), min(cands)


def _kinks(cls) -> list[dict]:
    """Points where a piecewise derivative jumps, with the value symback uses there."""
    z = sp.Symbol("z", real=True)
    app = cls(z)
    d = cls.derivative(*app.args)
    if not isinstance(d, sp.Piecewise):
        return []
    points = set()
    for _, cond in d.args:
        for rel in cond.atoms(sp.core.relational.Relational):
            points |= set(sp.solve(sp.Eq(rel.lhs, rel.rhs), z))
    out = []
    for b in sorted(points):
        # one-sided values: pick the branch at b ∓ ε, then let ε → 0 (SymPy's limit of a
        # Piecewise does not always take the side into account)
        eps = sp.Symbol("epsilon", positive=True)
        left, right = (sp.limit(d.subs(z, b + s * eps), eps, 0, "+") for s in (-1, 1))
        at = d.subs(z, b)
        if left != right:
            side = "right-hand" if at == right else ("left-hand" if at == left else "chosen")
            out.append({"at": Tex(latex(b)),
                        "equation": Tex(rf"{latex(prime(cls, (b, *app.args[1:])))} = {latex(at)}"),
                        "left": Tex(latex(left)), "right": Tex(latex(right)), "side": side})
    return out


def context(derivation, fmt: str = "latex", **options) -> dict:
    """Everything a template needs, every formula already printed (see :func:`render`)."""
    d = derivation
    known = {"title", "author", "param", "values", "lr", "seed", "figure", "example",
             "vanishing", "verify", "cost", "display", "date"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise OutputError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    escape = latex_escape if fmt == "latex" else markdown_escape
    param = options.get("param")
    if param is None:
        param = _deepest_param(d)
    else:
        param = d._param(param)
    values = options.get("values")
    if values and getattr(d, "kind", "scalar") == "layers":
        exact = _arrays(d, values)
    else:
        exact = {str(k): _exact(k, v) for k, v in values.items()} if values else None
    lr = options.get("lr")
    ctx = {
        "fmt": fmt,
        "kind": getattr(d, "kind", "scalar"),
        "title": escape(options.get("title") or "Backpropagation, step by step"),
        "author": escape(options.get("author") or ""),
        "date": escape(options.get("date") or ""),
        "display": bool(options.get("display", False)),
        "derivation": d,
        "param": Tex(name_latex(param)),
        "param_name": escape(param),
    }
    ctx.update({"punchline": None, "output": None, "layer_note": None, "sizes": None})
    if ctx["kind"] == "layers":
        ctx.update(_layer_context(d, fmt, param, exact, lr, options))
        return ctx
    ctx.update(_network(d))
    ctx["local"] = _local_table(d)
    widest = max((len(r["value"]) + len(r["written_out"] or "") for r in ctx["local"]), default=0)
    ctx["local_cols"] = 2 if widest < 60 else 1
    ctx["gradients"] = [_gradient(d, p) for p in d.params]
    ctx["deltas"] = _deltas(d)
    ctx["activations"] = _activations(type(f) for f in _apps(d.graph))
    dg = _scalar_diagram(d, param)
    ctx["figure"] = _tikz(dg) if options.get("figure", True) and fmt == "latex" else None
    ctx["mermaid"] = _mermaid(dg) if options.get("figure", True) and fmt == "markdown" else None
    ctx["figure_note"] = None if len(dg.order) <= MAX_FIGURE_NODES else Tex(
        f"The graph has {len(dg.order)} nodes, too many to draw legibly; "
        "the table of local derivatives lists its edges.")
    ctx["example"] = _example(d, exact, lr) if exact and options.get("example", True) else None
    ctx["vanishing"] = _vanishing(d, param, ctx["activations"]) if options.get("vanishing", True) else None
    ctx["verify"] = _verify(d, exact, options.get("seed", 0)) if options.get("verify", True) else None
    ctx["cost"] = _cached_cost(d) if options.get("cost", True) else None
    return ctx


def _deepest_param(d) -> str:
    """The parameter farthest from the loss (the notes' first-layer weight)."""
    return max(d.params, key=lambda p: (max(len(path) for path in d.chain(p)), -d.params.index(p)))


def _network(d) -> dict:
    g, apps = d.graph, _apps(d.graph)
    names = lambda kind: Tex(", ".join(name_latex(n) for n in g.names(kind)))  # noqa: E731
    forward = [{"lhs": Tex(name_latex(n)), "rhs": Tex(latex(g.expr(n), applications=apps))}
               for n in g.node_names]
    loss = g.loss_name
    return {"inputs": names("input"), "targets": names("target"), "params": names("param"),
            "n_params": len(d.params), "forward": forward,
            "loss": _loss_block(d, name_latex(loss), latex(g.expr(loss), applications=apps))}


def _inline_partial(of: str, wrt: str) -> str:
    """∂of/∂wrt on one line, for slides."""
    return rf"\partial {name_latex(of)} / \partial {name_latex(wrt)}"


def _local_table(d) -> list[dict]:
    g, apps = d.graph, _apps(d.graph)
    rows = []
    for child in g.order:
        for parent in g.parents(child):
            if (child, parent) not in d.local:
                continue
            e = d.local[(child, parent)]
            short = latex(e, applications=apps)
            full = latex(e, primes=False)
            rows.append({"of": Tex(name_latex(child)), "wrt": Tex(name_latex(parent)),
                         "partial": Tex(partial(child, parent)), "value": Tex(short),
                         "inline": Tex(_inline_partial(child, parent)),
                         "written_out": Tex(full) if full != short else None, "how": None})
    return rows


def _gradient(d, p) -> dict:
    apps = _apps(d.graph)
    paths = d.chain(p)
    closed = d.gradient(p)
    lhs = partial(d.loss_name, p)
    symbolic = " + ".join(chain_symbols(path) for path in paths)
    valued = " + ".join(chain_values(path, applications=apps) for path in paths)
    # the expanded form only helps on small graphs (and counting a huge one is slow)
    expanded = d.gradient(p, form="expanded") if len(d.graph.order) <= MAX_EXPANDED_NODES else None
    show_expanded = (expanded is not None and sp.count_ops(expanded) <= MAX_EXPANDED_OPS
                     and expanded != closed and _visual_len(latex(expanded, applications=apps)) <= LINE_WIDTH)
    return {
        "name": Tex(name_latex(p)), "lhs": Tex(lhs),
        "paths": [{"symbols": Tex(chain_symbols(path)), "factors": Tex(chain_values(path, applications=apps)),
                   "length": len(path)} for path in paths],
        "symbolic": Tex(symbolic), "valued": Tex(valued),
        "closed": Tex(latex(closed, applications=apps)),
        "closed_aligned": Tex(_aligned_lines(closed, apps)),
        "expanded": Tex(latex(expanded, applications=apps)) if show_expanded else None,
        "recursive": None, "weight": False,
    }


def _aligned_lines(expr, apps, width: int = LINE_WIDTH) -> str:
    r"""`expr` printed for an align row, broken into continuation rows (``\\ &\qquad``) when long.

    A long sum breaks between its terms; a product with a long sum breaks inside that sum.
    """
    text = latex(expr, applications=apps)
    if _visual_len(text) <= width:
        return text
    e = sp.factor_terms(expr)
    body, prefix, suffix = e, "", ""
    if isinstance(e, sp.Mul):
        adds = [f for f in e.args if isinstance(f, sp.Add)]
        if not adds:
            return text
        body = max(adds, key=lambda f: len(f.args))
        if _visual_len(latex(body, applications=apps)) < width // 2:
            return text         # no long sum inside: a break would only split a short factor
        prefix, suffix = latex(e / body, applications=apps) + r" \bigl(", r"\bigr)"
    if not isinstance(body, sp.Add):
        return text
    lines, cur = [], prefix
    for term in _signed_terms(body, apps):
        if cur not in ("", prefix) and _visual_len(cur) + _visual_len(term) > width:
            lines.append(cur)
            cur = ""
        cur = f"{cur} {term}" if cur not in ("", prefix) else cur + term
    lines.append(cur + suffix)
    return r" \\ &\qquad ".join(lines)


def _visual_len(tex: str) -> int:
    """Roughly how many symbols a formula shows (LaTeX commands count as one, markup as none)."""
    tex = re.sub(r"\\(left|right|bigl|bigr|operatorname|mathrm|mathbf)\b|\\[,;!]", "", tex)
    tex = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", lambda m: max(m.group(1), m.group(2), key=len), tex)
    return len(re.sub(r"[{}\s^_]", "", re.sub(r"\\[A-Za-z]+", "x", tex)))


def _signed_terms(add: sp.Add, apps) -> list[str]:
    """The terms of a sum as the printer shows them, each with its sign (the first without '+')."""
    printer = LatexPrinter({"applications": tuple(apps)})
    out = []
    for i, t in enumerate(printer._as_ordered_terms(add)):
        neg = t.could_extract_minus_sign()
        term = -t if neg else t
        body = printer.doprint(term)
        if isinstance(term, sp.Add):
            body = rf"\left({body}\right)"
        out.append(("- " if neg else ("+ " if i else "")) + body)
    return out


def _deltas(d) -> list[dict]:
    g, apps = d.graph, _apps(d.graph)
    rows = []
    for n in reversed(g.order):
        if n not in d.adjoint:
            continue
        lhs = latex(Adjoint(n)) if n != d.loss_name else rf"\delta_{{{name_latex(n)}}}"
        if n == d.loss_name:
            rows.append({"name": Tex(name_latex(n)), "lhs": Tex(lhs),
                         "symbolic": Tex(partial(n, n)), "value": Tex("1"), "param": False})
            continue
        sym, val = [], []
        for c in g.children(n):
            dc = latex(Adjoint(c)) if c != d.loss_name else None
            local = d.local[(c, n)]
            sym.append(f"{dc} \\cdot {partial(c, n)}" if dc else partial(c, n))
            val.append(f"{dc} \\cdot {factor_latex(local, applications=apps)}" if dc
                       else latex(local, applications=apps))
        rows.append({"name": Tex(name_latex(n)), "lhs": Tex(lhs), "symbolic": Tex(" + ".join(sym)),
                     "value": Tex(" + ".join(val)), "param": g.kind(n) == "param"})
    return rows


def _product_latex(e) -> str:
    """A product with the function values first and the sums after: σ(z)(1 − σ(z))."""
    e = sp.factor_terms(e)
    if not isinstance(e, sp.Mul):
        return latex(e, primes=False)
    coeff, rest = e.as_coeff_Mul()
    factors = sorted(sp.Mul.make_args(rest), key=lambda f: isinstance(f, sp.Add))
    head = "" if coeff == 1 else ("-" if coeff == -1 else latex(coeff) + " ")
    return head + " ".join(factor_latex(f) if isinstance(f, sp.Add) else latex(f, primes=False)
                           for f in factors)


def _definition(cls, app):
    """The definition, in exponentials when it is just a SymPy function (tanh(z) = ...)."""
    e = cls.definition(*app.args)
    if isinstance(e, sp.Function) and not isinstance(e, Activation) and e.args == app.args[:1]:
        e = e.rewrite(sp.exp)
    return e


def _activations(classes) -> list[dict]:
    out = []
    for cls in dict.fromkeys(classes):
        z = sp.Symbol("z", real=True)
        app = cls(z)
        deriv = cls.derivative(*app.args)
        sup, exact = derivative_sup(cls)
        sup_text = latex(sup) if exact else r"\approx " + number(sup, 4)
        out.append({
            "name": cls.__name__,
            "definition": Tex(rf"{latex(app)} = {latex(_definition(cls, app))}"),
            "derivative": Tex(rf"{latex(prime(cls, app.args))} = {_product_latex(deriv)}"),
            "sup": sup, "sup_exact": exact,
            "sup_text": Tex(rf"\sup_{{z}} \left|{latex(prime(cls, app.args))}\right| "
                            rf"{'=' if exact else ''} {sup_text}"),
            "kinks": _kinks(cls),
            "cls": cls,
        })
    return out

# ------------------------------------------------------------------ figure
class Diagram(NamedTuple):
    """A computational graph ready to draw: nodes in order, edges with their labels."""

    order: list                # node names
    kind: dict                 # name -> input/target/param/node/loss
    parents: dict              # name -> list of names it is computed from
    labels: dict               # (child, parent) -> LaTeX of the local derivative
    plain: dict                # (child, parent) -> plain-text label (Mermaid)
    on_path: set               # (child, parent) edges on the highlighted paths
    names: dict                # name -> LaTeX of the node's label


def _scalar_diagram(d, param: str) -> Diagram:
    g, apps = d.graph, _apps(d.graph)
    labels, plain = {}, {}
    for (child, parent), e in d.local.items():
        text = latex(e, applications=apps)
        labels[(child, parent)] = text if len(text) <= 40 else partial(child, parent)
        plain[(child, parent)] = str(mark_primes(sp.factor_terms(e), apps)).replace("_prime(", "'(")
    on_path = {(f.of, f.wrt) for path in d.chain(param) for f in path}
    return Diagram(list(g.order), {n: g.kind(n) for n in g.order},
                   {n: g.parents(n) for n in g.order}, labels, plain, on_path,
                   {n: name_latex(n) for n in g.order})


def _layout(dg: Diagram) -> dict[str, tuple[float, float]]:
    """Columns by depth (leaves just left of their first use), rows by the children's height."""
    children = {n: [c for c in dg.order if n in dg.parents[c]] for n in dg.order}
    col: dict[str, int] = {}
    for n in dg.order:
        if dg.parents[n]:
            col[n] = 1 + max((col.get(p, 0) for p in dg.parents[n]), default=0)
    for n in dg.order:
        if not dg.parents[n]:
            col[n] = min((col[k] for k in children[n]), default=1) - 1
    pos: dict[str, tuple[float, float]] = {}
    for c in sorted(set(col.values()), reverse=True):
        members = [n for n in dg.order if col[n] == c]

        def key(n):
            ys = [pos[k][1] for k in children[n] if k in pos]
            return sum(ys) / len(ys) if ys else 0.0
        members.sort(key=key, reverse=True)
        center = sum(key(n) for n in members) / len(members)
        for i, n in enumerate(members):
            pos[n] = (c * COLUMN, center + 1.5 * ((len(members) - 1) / 2 - i))
    return pos


def _tikz(dg: Diagram):
    """TikZ commands drawing `dg`: local derivatives on the edges, the path highlighted."""
    if len(dg.order) > MAX_FIGURE_NODES:
        return None
    pos, ids = _layout(dg), {n: f"n{i}" for i, n in enumerate(dg.order)}
    path_nodes = {n for e in dg.on_path for n in e}
    style = {"input": "data", "target": "data", "param": "param", "node": "inner", "loss": "loss"}
    lines = []
    for n in dg.order:
        x, y = pos[n]
        hl = ",hl" if n in path_nodes else ""
        lines.append(rf"\node[{style[dg.kind[n]]}{hl}] ({ids[n]}) at ({x:.2f},{y:.2f}) {{${dg.names[n]}$}};")
    for child in dg.order:
        for parent in dg.parents[child]:
            edge = "hledge" if (child, parent) in dg.on_path else "edge"
            label = dg.labels.get((child, parent))
            mid = rf" node[lbl] {{${label}$}}" if label else ""
            # an edge that skips columns bends, so it does not run through the nodes between
            skips = abs(pos[child][0] - pos[parent][0]) > COLUMN + 0.01
            link = " to[bend left=18]" if skips else " --"
            lines.append(rf"\draw[{edge}] ({ids[parent]}){link}{mid} ({ids[child]});")
    return Tex("\n".join(lines))


def _mermaid(dg: Diagram):
    """The graph as a Mermaid flowchart (GitHub renders it), the path drawn thick."""
    if len(dg.order) > MAX_FIGURE_NODES:
        return None
    ids = {n: f"n{i}" for i, n in enumerate(dg.order)}
    lines, thick, k = ["flowchart LR"], [], 0
    for n in dg.order:
        lines.append(f'  {ids[n]}(["{n}"])')
    for child in dg.order:
        for parent in dg.parents[child]:
            label = re.sub(r"[^A-Za-z0-9_+\-*/^(). ']", "", dg.plain.get((child, parent), ""))
            arrow = f'-- "{label}" -->' if label else "-->"
            lines.append(f"  {ids[parent]} {arrow} {ids[child]}")
            if (child, parent) in dg.on_path:
                thick.append(str(k))
            k += 1
    if thick:
        lines.append(f"  linkStyle {','.join(thick)} stroke:#e69500,stroke-width:4px")
    return Tex("\n".join(lines))


# ---------------------------------------------------------- worked example
def _example(d, values: dict, lr) -> dict:
    g, apps = d.graph, _apps(d.graph)
    ev = d.evaluate(values)
    known = dict(values)
    given = [{"name": Tex(name_latex(n)), "value": Tex(number(values[n]))}
             for n in g.input_names + g.target_names + g.param_names]
    forward = []
    for n in g.order:
        if n not in g._expr:
            continue
        e = g.expr(n)
        forward.append({"lhs": Tex(name_latex(n)), "formula": Tex(latex(e, applications=apps)),
                        "substituted": Tex(latex(e, values=known, applications=apps)),
                        "value": Tex(number(ev["forward"][n]))})
        known[n] = ev["forward"][n]
    grads = []
    for p in d.params:
        paths = d.chain(p)
        grads.append({
            "lhs": Tex(partial(d.loss_name, p)),
            "formula": Tex(" + ".join(chain_values(path, applications=apps) for path in paths)),
            "substituted": Tex(" + ".join(chain_values(path, values=known, applications=apps)
                                          for path in paths)),
            "value": Tex(number(ev["gradient"][p]))})
    updates = []
    if lr is not None:
        eta = _exact("lr", lr)
        for p in d.params:
            grad = ev["gradient"][p]
            new = values[p] - eta * grad
            gtext = number(grad)
            updates.append({"name": Tex(name_latex(p)),
                            "rule": Tex(rf"{name_latex(p)} - \eta \, {partial('L', p)}"),
                            "substituted": Tex(rf"{number(values[p])} - {number(eta)} \cdot "
                                               + (rf"\left({gtext}\right)" if gtext.startswith("-") else gtext)),
                            "value": Tex(number(new))})
    return {"given": given, "forward": forward, "loss": Tex(number(ev["forward"][d.loss_name])),
            "gradients": grads, "updates": updates, "matrices": False,
            "lr": Tex(number(_exact("lr", lr))) if lr is not None else None}


# -------------------------------------------------------- vanishing gradient
def _upper(bound: sp.Expr) -> str:
    """An exact bound as it is; a numeric one rounded up (to 4 digits), so it stays a bound."""
    if bound.is_Rational or not bound.is_finite:
        return latex(bound)
    scale = 10 ** (3 - math.floor(math.log10(abs(float(bound))))) if bound else 1
    return number(sp.Rational(math.ceil(float(bound) * scale), scale))


def _vanishing(d, param: str, activations: list[dict]) -> dict:
    """Bound |∂C/∂param| by replacing each activation-derivative factor with its supremum."""
    g, apps = d.graph, _apps(d.graph)
    sups = {a["cls"]: a["sup"] for a in activations}
    bound_paths, counts = [], []
    for path in d.chain(param):
        parts, k = [], 0
        for f in path:
            acts, rest = split_primes(f.expr, apps)
            for act in acts:
                s = sups.get(act, sp.oo)
                k += act in sups
                parts.append(_upper(s))
            if rest != 1:
                parts.append(rf"\left|{latex(rest, applications=apps)}\right|")
        counts.append(k)
        bound_paths.append(r" \cdot ".join(parts) or "1")
    shrinking = [a for a in activations if a["sup"].is_number and a["sup"] < 1]
    return {"param": Tex(name_latex(param)),
            "bound": Tex(rf"\left|{partial(d.loss_name, param)}\right| \le "
                         + " + ".join(bound_paths)),
            "factors": max(counts, default=0),
            "shrinking": [a["name"] for a in shrinking],
            "any": bool(activations), "matrix_note": False}


# ----------------------------------------------------------- verification
def _verify(d, values, seed) -> dict:
    """Each gradient from the formulas next to a central difference of the unrolled loss."""
    g = d.graph
    names = g.input_names + g.target_names + g.param_names
    if values:
        point, source = {n: values[n] for n in names}, "the values of the worked example"
        rows = _verify_rows(d, point)
    else:
        rng = random.Random(seed)
        for _ in range(20):     # a point where some gradient is nonzero (ReLU can switch all off)
            point = {n: sp.Rational(round(rng.uniform(0.05, 0.95) if g.kind(n) == "target"
                                          else rng.uniform(-1, 1), 3)).limit_denominator(1000)
                     for n in names}
            rows = _verify_rows(d, point)
            if any(r.get("value") for r in rows):
                break
        source = f"random values (seed {seed})"
    point_tex = [{"name": Tex(name_latex(n)), "value": Tex(number(point[n]))} for n in names]
    worst = max((r["err"] for r in rows if "err" in r), default=None)
    return {"rows": rows, "point": point_tex, "source": source, "digits": VERIFY_DIGITS,
            "h": Tex(number(VERIFY_H)), "worst": Tex(number(worst, 2)) if worst is not None else None,
            "matrices": False}


VERIFY_DIGITS, VERIFY_H = 40, sp.Rational(1, 10 ** 12)


def _verify_rows(d, point) -> list[dict]:
    g, digits, h = d.graph, VERIFY_DIGITS, VERIFY_H
    env = {g.symbol(n): sp.Float(v, digits) for n, v in point.items()}
    loss = g.unrolled()[d.loss_name]
    rows = []
    for p in d.params:
        sym = g.symbol(p)
        formula = sp.N(d.gradient(p, form="expanded").xreplace(env), digits)
        plus = sp.N(loss.xreplace({**env, sym: env[sym] + h}), digits)
        minus = sp.N(loss.xreplace({**env, sym: env[sym] - h}), digits)
        fd = (plus - minus) / (2 * h)
        if not (formula.is_real and fd.is_real):
            rows.append({"name": Tex(name_latex(p)), "formula": Tex(r"\text{--}"),
                         "fd": Tex(r"\text{--}"), "error": Tex(r"\text{not real here}")})
            continue
        scale = max(abs(formula), abs(fd))
        err = abs(formula - fd) / scale if scale else abs(formula - fd)
        rows.append({"name": Tex(name_latex(p)), "formula": Tex(number(formula, 10)),
                     "fd": Tex(number(fd, 10)), "error": Tex(number(err, 2)), "err": err,
                     "value": formula})
    return rows


# ------------------------------------------------------------------- cost
def _cost(d) -> dict:
    """Operation counts: each gradient differentiated from the unrolled loss vs the chain program."""
    g = d.graph
    forward = [g.expr(n) for n in g.order if n in g._expr]
    backward = [d.adjoint[n] for n in g.order if n in d.adjoint and n != d.loss_name]
    chain_ops = sum(sp.count_ops(e) for e in forward + backward)
    reps, reduced = sp.cse(forward + backward)
    cse_ops = sum(sp.count_ops(e) for _, e in reps) + sum(sp.count_ops(e) for e in reduced)
    loss = g.unrolled()[d.loss_name]
    naive, note = None, None
    if sp.count_ops(loss) > MAX_NAIVE_OPS:
        note = (f"The unrolled loss has {sp.count_ops(loss)} operations; differentiating it "
                "symbolically for every parameter was skipped.")
    else:
        naive = sp.count_ops(loss) + sum(sp.count_ops(sp.diff(loss, g.symbol(p))) for p in d.params)
    return {"naive": naive, "chain": chain_ops, "cse": cse_ops, "note": note,
            "loss_ops": sp.count_ops(loss) if naive is not None else None,
            "ratio": Tex(number(sp.Rational(naive, cse_ops), 3)) if naive and cse_ops else None,
            "saves": bool(naive and cse_ops and naive > cse_ops)}


# ================================================================ layer networks
MAX_LAYER_ENTRIES = 400     # verification and cost need explicit matrices; small nets only
MAX_SHOWN = 6               # matrices larger than this are not written out in the example


def _layer_context(d, fmt: str, param: str, exact_values, lr, options) -> dict:
    """The same keys as a scalar graph's context, in matrix form (δ^{(l)}, ⊙, ᵀ)."""
    L = d.depth
    acts = [f for f in d.activation_list if isinstance(f, type) and issubclass(f, Activation)]
    ctx = {"inputs": Tex(rf"X \in \mathbb{{R}}^{{m \times {d.sizes[0]}}}"),
           "targets": Tex(rf"Y \in \mathbb{{R}}^{{m \times {d.sizes[-1]}}}"),
           "params": Tex(", ".join(rf"{latex(d.W[l])} \in \mathbb{{R}}^{{{d.sizes[l - 1]} \times {d.sizes[l]}}}, "
                                   rf"{latex(d.b[l])} \in \mathbb{{R}}^{{1 \times {d.sizes[l]}}}"
                                   for l in range(1, L + 1))),
           "n_params": len(d.params), "sizes": Tex(r" \to ".join(map(str, d.sizes))),
           "forward": [{"lhs": Tex(latex(n)), "rhs": Tex(latex(e))} for n, e in d.forward]}
    # per-sample cost: the loss summed over the outputs of one sample
    lf, width = d.loss_function, d.sizes[-1]
    k = sp.Symbol("k", integer=True, positive=True)
    yk, tk = (sp.Symbol("yhat_k"), sp.Symbol("y_k")) if width > 1 else (sp.Symbol("yhat"), sp.Symbol("y"))
    term = lf(yk, tk)
    sign = "- " if term.could_extract_minus_sign() else ""
    term = -term if sign else term
    body = rf"{sign}\sum_{{k=1}}^{{{width}}} {factor_latex(term)}" if width > 1 else sign + latex(term)
    ctx["loss"] = _loss_block(d, "C", body, full=rf"\left({body}\right)" if sign or width > 1 else body)
    g, (z, a, y) = d.output_delta
    top = d.adjoint[d.delta[L].name]
    out = d.activation_list[-1]
    ctx["output"] = {
        "scalar": Tex(rf"\frac{{\partial C}}{{\partial z_k}} = "
                      + latex(g.xreplace({a: sp.Symbol("yhat_k"), y: sp.Symbol("y_k"), z: sp.Symbol("z_k")}))),
        "matrix": Tex(rf"{latex(d.delta[L])} = \frac{{\partial C}}{{\partial {latex(d.Z[L])}}} = {latex(top)}"),
        "function": getattr(out, "__name__", str(out)), "loss": lf.name}
    # local factors, in the order the deepest path meets them
    seen, local = set(), []
    for p in [_deepest_param(d)] + d.params:
        for f in d.chain(p)[0]:
            if (f.of, f.wrt) in seen:
                continue
            seen.add((f.of, f.wrt))
            local.append({"of": Tex(name_latex(f.of)), "wrt": Tex(name_latex(f.wrt)),
                          "partial": Tex(partial(f.of, f.wrt)), "value": Tex(latex(f.expr)),
                          "inline": Tex(_inline_partial(f.of, f.wrt)),
                          "written_out": None, "how": _how(f)})
    ctx["local"] = local
    ctx["local_cols"] = 1
    grads = []
    for p in d.params:
        path = d.chain(p)[0]
        grads.append({"name": Tex(name_latex(p)), "lhs": Tex(partial("C", p)),
                      "paths": [{"symbols": Tex(chain_symbols(path)), "factors": Tex(chain_values(path)),
                                 "length": len(path)}],
                      "closed": Tex(latex(d.gradient(p))), "closed_aligned": Tex(latex(d.gradient(p))),
                      "expanded": None,
                      "recursive": Tex(latex(d.adjoint[p])), "weight": p.startswith("W")})
    ctx["gradients"] = grads
    ctx["punchline"] = [gr for gr in reversed(grads) if gr["weight"]]
    ctx["deltas"] = [{"name": Tex(latex(t)), "lhs": Tex(latex(t)), "symbolic": Tex(latex(e)),
                      "value": Tex(latex(e)), "param": not type(t).__name__ == "AdjointMatrix"}
                     for t, e in d.backward]
    ctx["activations"] = _activations(acts)
    dg = _layer_diagram(d, param)
    ctx["figure"] = _tikz(dg) if options.get("figure", True) and fmt == "latex" else None
    ctx["mermaid"] = _mermaid(dg) if options.get("figure", True) and fmt == "markdown" else None
    ctx["figure_note"] = None
    small = sum(d.sizes[l - 1] * d.sizes[l] + d.sizes[l] for l in range(1, L + 1)) <= MAX_LAYER_ENTRIES
    ctx["example"] = _layer_example(d, exact_values, lr) if exact_values and options.get("example", True) else None
    ctx["vanishing"] = _layer_vanishing(d, param, ctx["activations"]) if options.get("vanishing", True) else None
    if options.get("verify", True):
        ctx["verify"] = _layer_verify(d, exact_values, options.get("seed", 0)) if small else None
    else:
        ctx["verify"] = None
    ctx["cost"] = _cached_cost(d) if options.get("cost", True) else None
    ctx["layer_note"] = None if small else Tex(
        "The network is too large for the numeric appendix (it evaluates the formulas exactly, "
        "entry by entry); the formulas above hold for any width.")
    return ctx


def _how(f) -> Tex:
    """How a matrix factor enters the product (the chain's dots are not all matrix products)."""
    wrt, expr = str(f.wrt), f.expr
    if f.of == "C":
        return Tex("the output error")
    if type(expr).__name__ == "FPrime":
        return Tex(r"element-wise ($\odot$)")
    if wrt.startswith("W"):
        return Tex(r"on the left ($A^{\top}\delta$)")
    if wrt.startswith("b"):
        return Tex(r"sums the rows ($\mathbf{1}^{\top}\delta$)")
    return Tex(r"on the right ($\delta W^{\top}$)")


def _layer_diagram(d, param: str) -> Diagram:
    L = d.depth
    order, kind, parents, labels, plain = ["X"], {"X": "input"}, {"X": []}, {}, {}
    prev = "X"
    for l in range(1, L + 1):
        W, b, Z = f"W{l}", f"b{l}", f"Z{l}"
        A = d.A[l].name
        order += [W, b, Z, A]
        kind.update({W: "param", b: "param", Z: "node", A: "node"})
        parents.update({W: [], b: [], Z: [prev, W, b], A: [Z]})
        labels[(Z, W)] = latex(d.A[l - 1].T)
        labels[(Z, b)] = r"\mathbf{1}^{\top}"
        f = d.activation_list[l - 1]
        labels[(A, Z)] = (latex(d.local[(A, Z)]) if (A, Z) in d.local
                          else rf"{getattr(f, 'latex_name', '')}'")
        if l > 1:
            labels[(Z, prev)] = latex(d.W[l].T)
        prev = A
    order += ["Y", "C"]
    kind.update({"Y": "target", "C": "loss"})
    parents.update({"Y": [], "C": [prev, "Y"]})
    labels[("C", prev)] = latex(d.delta[L])
    plain = {(f"Z{l}", f"W{l}"): f"{d.A[l - 1].name}.T" for l in range(1, L + 1)}
    plain.update({(f"Z{l}", f"b{l}"): "1.T" for l in range(1, L + 1)})
    plain.update({(f"Z{l}", d.A[l - 1].name): f"W{l}.T" for l in range(2, L + 1)})
    plain.update({(d.A[l].name, f"Z{l}"): f"{getattr(d.activation_list[l - 1], '__name__', '')}'(Z{l})"
                  for l in range(1, L + 1)})
    plain[("C", prev)] = f"delta{L}"
    on_path = set()
    for fct in d.chain(param)[0]:
        if fct.of == "C":
            on_path |= {("C", prev), (prev, f"Z{L}")}
        else:
            on_path.add((str(fct.of), str(fct.wrt)))
    names = {n: latex(sp.Symbol(n)) if n != "Yhat" else r"\hat{Y}" for n in order}
    return Diagram(order, kind, parents, labels, plain, on_path, names)


def _loss_block(d, lhs: str, rhs: str, full: str | None = None) -> dict:
    """The per-sample cost and its batch reduction L = (1/m) Σ C^{(i)}, from d.batch_loss()."""
    frac = r"\frac{1}{m}" if d.reduction == "mean" else ""
    if full is None:
        bl = d.batch_loss()
        sign = ""
        if bl.could_extract_minus_sign():
            sign, bl = "- ", -bl
        num, den = sp.fraction(bl)
        batch = sign + (rf"\frac{{1}}{{{latex(den)}}} {latex(num)}" if den != 1 else latex(bl))
    else:
        batch = rf"{frac} \sum_{{i=1}}^{{m}} {full}"
    per = rf"{lhs}^{{(i)}}"
    return {"lhs": Tex(lhs), "rhs": Tex(rhs), "reduction": d.reduction,
            "batch": Tex(rf"L = {frac} \sum_{{i=1}}^{{m}} {per}"),
            "batch_full": Tex(rf"L = {batch}"),
            "batch_gradient": Tex(rf"\frac{{\partial L}}{{\partial \theta}} = {frac} \sum_{{i=1}}^{{m}} "
                                  rf"\frac{{\partial {per}}}{{\partial \theta}}")}


def _arrays(d, values: dict) -> dict:
    """Values for a layer network as float arrays of the right shapes (b_l as rows)."""
    import numpy as np
    out = {}
    for name in ["X", "Y"] + d.params:
        if name not in values:
            raise SymbackError(f"values missing for {name!r}; a layer network needs X, Y and "
                               + ", ".join(d.params))
        try:
            out[name] = np.atleast_2d(np.asarray(values[name], dtype=float))
        except (TypeError, ValueError):
            raise SymbackError(f"values for {name!r} must be numbers or arrays of numbers") from None
    return out


def _numpy_loss(d):
    """L(params) computed from the definitions alone (NumPy), for finite differences."""
    import numpy as np
    from .functions import softmax
    w = sp.Dummy("w")
    fns = []
    for f in d.activation_list:
        if f is softmax:
            def sm(z):
                e = np.exp(z - z.max(axis=1, keepdims=True))
                return e / e.sum(axis=1, keepdims=True)
            fns.append(sm)
        else:
            fns.append(np.vectorize(sp.lambdify(w, f.definition(w) if not f.extra_params
                                                else f.definition(w, *f.extra_params), "mpmath"),
                                    otypes=[float]))
    lf = d.loss_function
    ell = np.vectorize(sp.lambdify((lf.prediction, lf.target), lf.expr, "mpmath"), otypes=[float])

    def loss(v):
        a = v["X"]
        for l, f in enumerate(fns, start=1):
            a = f(a @ v[f"W{l}"] + v[f"b{l}"])
        per_sample = ell(a, v["Y"]).sum(axis=1)
        return per_sample.mean() if d.reduction == "mean" else per_sample.sum()
    return loss


def _matrix(a) -> Tex:
    return Tex(latex(sp.Matrix(a.tolist()).applyfunc(lambda v: sp.Float(v))))


def _layer_example(d, v: dict, lr) -> dict:
    ev = d.evaluate(v)
    show = lambda a: _matrix(a) if max(a.shape) <= MAX_SHOWN else Tex(  # noqa: E731
        rf"\text{{a }} {a.shape[0]} \times {a.shape[1]} \text{{ matrix}}")
    given = [{"name": Tex(name_latex(n)), "value": show(v[n])} for n in ["X", "Y"] + d.params]
    forward = [{"lhs": Tex(latex(n)), "formula": Tex(latex(e)), "substituted": None,
                "value": show(ev["forward"][n.name])} for n, e in d.forward]
    grads = [{"lhs": Tex(partial("L", p)), "formula": None, "substituted": None,
              "value": show(ev["gradient"][p])} for p in d.params]
    updates = []
    if lr is not None:
        eta = float(_exact("lr", lr))
        updates = [{"name": Tex(name_latex(p)), "rule": Tex(rf"{name_latex(p)} - \eta \, {partial('L', p)}"),
                    "substituted": None, "value": show(v[p] - eta * ev["gradient"][p])} for p in d.params]
    return {"given": given, "forward": forward, "loss": Tex(number(_numpy_loss(d)(v))),
            "gradients": grads, "updates": updates, "lr": Tex(number(_exact("lr", lr))) if lr is not None else None,
            "matrices": True}


def _layer_vanishing(d, param: str, activations: list[dict]) -> dict:
    """‖∂C/∂W_l‖_F bounded by the product of the activation derivatives' suprema and weight norms."""
    L, l = d.depth, int(param[1:])
    sups = {a["cls"]: a["sup"] for a in activations}
    factors = []
    for k in range(l, L):
        s = sups.get(d.activation_list[k - 1])
        if s is not None:
            factors.append(_upper(s))
    norms = [rf"\|{latex(d.A[l - 1])}\|_F" if param.startswith("W") else r"\sqrt{m}"]
    norms += [rf"\|{latex(d.delta[L])}\|_F"] + [rf"\|{latex(d.W[k])}\|_F" for k in range(l + 1, L + 1)]
    total = sp.Mul(*[sups[d.activation_list[k - 1]] for k in range(l, L) if d.activation_list[k - 1] in sups])
    shrinking = [a["name"] for a in activations if a["sup"].is_number and a["sup"] < 1
                 and any(a["cls"] is d.activation_list[k - 1] for k in range(l, L))]
    bound = r" \cdot ".join(factors + norms)
    if len(factors) > 1:
        bound += rf" = {_upper(total)} \cdot " + r" \cdot ".join(norms)
    return {"param": Tex(name_latex(param)),
            "bound": Tex(rf"\left\|{partial('C', param)}\right\|_F \le {bound}"),
            "factors": len(factors), "shrinking": shrinking, "any": bool(activations),
            "matrix_note": True}


def _layer_verify(d, values, seed) -> dict:
    """The formulas' gradients (SymPy, exact matrices) against central differences (NumPy)."""
    import numpy as np
    from .functions import softmax
    if values is None:
        rng = np.random.default_rng(seed)
        m = 3
        values = {"X": rng.normal(size=(m, d.sizes[0]))}
        if d.activation_list[-1] is softmax:
            values["Y"] = np.eye(d.sizes[-1])[rng.integers(0, d.sizes[-1], size=m)]
        elif d.loss_function.name == "binary_cross_entropy":
            values["Y"] = rng.uniform(0.05, 0.95, size=(m, d.sizes[-1]))
        else:
            values["Y"] = rng.normal(size=(m, d.sizes[-1]))
        for l in range(1, d.depth + 1):
            values[f"W{l}"] = rng.normal(scale=0.8, size=(d.sizes[l - 1], d.sizes[l]))
            values[f"b{l}"] = rng.normal(scale=0.3, size=(1, d.sizes[l]))
        source = f"random values (seed {seed}, {m} samples)"
    else:
        source = "the values of the worked example"
    grads = d.evaluate(values)["gradient"]
    loss, h = _numpy_loss(d), 1e-6
    rows, worst = [], 0.0
    for p in d.params:
        fd = np.zeros_like(values[p])
        for idx in np.ndindex(fd.shape):
            plus = {**values, p: values[p].copy()}
            minus = {**values, p: values[p].copy()}
            plus[p][idx] += h
            minus[p][idx] -= h
            fd[idx] = (loss(plus) - loss(minus)) / (2 * h)
        g = grads[p]
        err = float(np.linalg.norm(g - fd) / max(np.linalg.norm(fd), np.linalg.norm(g), 1e-300))
        worst = max(worst, err)
        rows.append({"name": Tex(name_latex(p)), "formula": Tex(number(np.linalg.norm(g), 8)),
                     "fd": Tex(number(np.linalg.norm(fd), 8)), "error": Tex(number(err, 2)), "err": err})
    return {"rows": rows, "point": [], "source": source, "digits": 16, "h": Tex(number(h)),
            "worst": Tex(number(worst, 2)), "matrices": True}


_COST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached_cost(d) -> dict:
    """The operation counts of a derivation, computed once (they never change)."""
    if d not in _COST:
        _COST[d] = _layer_cost(d) if getattr(d, "kind", "scalar") == "layers" else _cost(d)
    return _COST[d]


def _layer_cost(d) -> dict:
    """Operation counts on explicit matrices of symbols (one sample): naive vs chain vs cse."""
    from .engine import BATCH_SIZE
    from .layers import Elementwise, FPrime, Softmax
    L = d.depth
    entries = sum(d.sizes[l - 1] * d.sizes[l] + d.sizes[l] for l in range(1, L + 1))
    if entries > 60:
        return {"naive": None, "chain": None, "cse": None, "ratio": None, "saves": False,
                "note": Tex(f"The network has {entries} parameter entries; counting operations entry "
                            "by entry was skipped (it is shown for small networks)."), "loss_ops": None}

    def syms(name, r, c):
        return sp.Matrix(r, c, lambda i, j: sp.Symbol(f"{name}_{i}_{j}"))
    env = {d.X: syms("x", 1, d.sizes[0]), d.Y: syms("y", 1, d.sizes[-1])}
    for l in range(1, L + 1):
        env[d.W[l]] = syms(f"w{l}", d.sizes[l - 1], d.sizes[l])
        env[d.b[l]] = syms(f"b{l}", 1, d.sizes[l])

    def explicit(e, table):
        e = e.xreplace(table).subs(BATCH_SIZE, 1)
        e = e.replace(lambda x: isinstance(x, FPrime), lambda x: x.as_elementwise())
        e = e.replace(lambda x: isinstance(x, Softmax), lambda x: sp.Matrix(
            x.arg.rows, x.arg.cols, lambda i, k: sp.exp(x.arg[i, k]) / sum(
                sp.exp(x.arg[i, j]) for j in range(x.arg.cols))))
        e = e.replace(lambda x: isinstance(x, Elementwise), lambda x: sp.Matrix(
            x.shape[0] if x.shape[0] != BATCH_SIZE else 1, x.shape[1],
            lambda i, k: x.function(*[sp.Matrix(o)[i, k] for o in x.operands])))
        return sp.Matrix(e.doit())
    # naive: the loss written out in inputs and parameters, differentiated per entry
    full = dict(env)
    for node, e in d.forward:
        full[node] = explicit(e, full)
    yhat, y = full[d.A[L]], env[d.Y]
    loss = sum(d.loss_function(yhat[0, k], y[0, k]) for k in range(d.sizes[-1]))
    pentries = [s for l in range(1, L + 1) for M in (env[d.W[l]], env[d.b[l]]) for s in M]
    naive = sp.count_ops(loss) + sum(sp.count_ops(sp.diff(loss, s)) for s in pentries)
    # chain program: each forward and backward matrix in terms of the previous named ones
    named, program = dict(env), []
    for node, e in d.forward + list(d.backward):
        value = explicit(e, named)
        program += list(value)
        rows = 1 if node.shape[0] == BATCH_SIZE else node.shape[0]
        named[node] = syms(f"v{len(named)}", rows, node.shape[1])
    chain_ops = sum(sp.count_ops(e) for e in program)
    reps, reduced = sp.cse(program)
    cse_ops = sum(sp.count_ops(e) for _, e in reps) + sum(sp.count_ops(e) for e in reduced)
    return {"naive": naive, "chain": chain_ops, "cse": cse_ops, "note": None, "loss_ops": sp.count_ops(loss),
            "ratio": Tex(number(sp.Rational(naive, cse_ops), 3)) if cse_ops else None,
            "saves": naive > cse_ops}
