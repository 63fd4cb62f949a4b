"""Derivation documents: Jinja templates fed with formulas printed in Python.

The Python side (:func:`context`) prepares every formula already printed
by :mod:`symback.printing`; the templates in the top-level ``templates/``
folder only arrange them.  The Jinja environment uses LaTeX-safe
delimiters (``\\VAR{...}``, ``\\BLOCK{...}``, ``%#`` line comments) and
escapes by default: anything reaching the output that is not a
:class:`Tex` string (prepared LaTeX) is escaped, so a title or name can
never run TeX commands.

:func:`render` returns the text; :func:`write` writes ``.tex``, ``.md``
or ``.pdf`` (through ``latexmk`` or ``pdflatex``), whole or not at all.
"""
from __future__ import annotations

import html
import os
import random
import re
import shutil
import subprocess
import tempfile
import unicodedata
from importlib import resources
from pathlib import Path

import jinja2
import sympy as sp
from jinja2.sandbox import SandboxedEnvironment
from sympy.calculus.util import maximum, minimum

from .derive import Adjoint
from .errors import OutputError, SymbackError
from .functions import Activation
from .printing import (activation_of_factor, chain_symbols, chain_values, factor_latex, latex,
                       name_latex, number, partial, prime)

__all__ = ["render", "write", "context", "latex_escape", "markdown_escape", "Tex",
           "template_names", "derivative_sup"]

FORMATS = {"latex": ".tex.j2", "markdown": ".md.j2"}
MAX_FIGURE_NODES = 30      # a bigger graph is unreadable as a figure
MAX_EXPANDED_OPS = 80      # longer expanded forms are left out of the document
MAX_NAIVE_OPS = 4000       # the naive derivative is skipped above this loss size
PDF_TIMEOUT = 240


# ------------------------------------------------------------------ escaping
class Tex(str):
    """Text that is already valid output (printed formulas, escaped user text)."""


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "#": r"\#", "&": r"\&",
    "$": r"\$", "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", '"': r"\textquotedbl{}",
}


def _plain(text) -> str:
    # one line, no control characters: a newline pair would end a paragraph inside \title
    return re.sub(r"\s+", " ", "".join(c for c in str(text) if unicodedata.category(c)[0] != "C"
                                       or c.isspace())).strip()


def latex_escape(text) -> Tex:
    """User text made inert for LaTeX: specials escaped, characters pdflatex lacks replaced.

    Greek letters become ``$\\alpha$`` and so on; any other character
    outside Latin-1 becomes ``?`` (pdflatex would stop on it).
    """
    out = []
    for c in _plain(text):
        if c in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[c])
        elif ord(c) < 128 or 0xA0 <= ord(c) < 0x100 and c.isalpha():
            out.append(c)
        else:
            name = unicodedata.name(c, "")
            greek = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER ([A-Z]+)", name)
            if greek:
                letter = greek.group(2).lower()
                out.append(rf"$\{letter.capitalize() if greek.group(1) == 'CAPITAL' else letter}$")
            else:
                out.append("?")
    return Tex("".join(out))


def markdown_escape(text) -> Tex:
    """User text made inert for Markdown with MathJax: HTML and Markdown punctuation escaped."""
    text = html.escape(_plain(text), quote=True)
    return Tex(re.sub(r"([\\`*_{}\[\]()#+\-.!|~$])", r"\\\1", text))


# ---------------------------------------------------------------- templates
def _builtin_dir() -> Path:
    """The built-in templates: top-level templates/ in a checkout, symback/templates in a wheel."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "article.tex.j2").is_file():
        return checkout
    return Path(str(resources.files("symback.templates")))


def template_names() -> list[str]:
    """The names of the built-in templates ('article', 'beamer', 'markdown', 'snippet')."""
    return sorted({p.name.split(".")[0] for p in _builtin_dir().glob("*.j2") if not p.name.startswith("_")})


def _environment(fmt: str, dirs: tuple[str, ...]) -> jinja2.Environment:
    escape = latex_escape if fmt == "latex" else markdown_escape

    def finalize(value):
        # escape by default: only prepared Tex passes unchanged
        if isinstance(value, Tex):
            return value
        if value is None:
            return ""
        if isinstance(value, (int, float, sp.Number)) and not isinstance(value, bool):
            return number(value)
        return escape(value)

    env = SandboxedEnvironment(
        block_start_string=r"\BLOCK{", block_end_string="}",
        variable_start_string=r"\VAR{", variable_end_string="}",
        comment_start_string=r"\#{", comment_end_string="}",
        line_comment_prefix="%#", trim_blocks=True, lstrip_blocks=True,
        autoescape=False, undefined=jinja2.StrictUndefined, finalize=finalize,
        keep_trailing_newline=True,
        loader=jinja2.FileSystemLoader(list(dirs) + [str(_builtin_dir())]))
    env.filters["latex_escape"] = latex_escape
    env.filters["markdown_escape"] = markdown_escape
    env.filters["escape_text"] = escape
    env.filters["number"] = lambda v: Tex(number(v))
    return env


def _template(template: str, fmt: str, template_dir=None) -> jinja2.Template:
    if fmt not in FORMATS:
        raise OutputError(f"unknown format {fmt!r}: use 'latex' or 'markdown'")
    if not isinstance(template, (str, os.PathLike)):
        raise OutputError(f"template must be a name or a path, got {type(template).__name__}")
    dirs = [str(template_dir)] if template_dir is not None else []
    text = str(template)
    if text.endswith(".j2") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise OutputError(f"template file {text!r} not found")
        dirs.insert(0, str(path.resolve().parent))
        name = path.name
    else:
        if fmt == "markdown" and text == "article":
            text = "markdown"       # the markdown version of the full document
        name = text + FORMATS[fmt]
    env = _environment(fmt, tuple(dirs))
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound:
        raise OutputError(f"no {fmt} template {text!r}; built-in ones: {', '.join(template_names())}"
                          + (f"; also searched {template_dir}" if template_dir else "")) from None
    except jinja2.TemplateSyntaxError as exc:
        raise OutputError(f"template {name!r} line {exc.lineno}: {exc.message}") from None


def render(derivation, template: str = "article", fmt: str = "latex", **options) -> str:
    """Render `derivation` with a template: a built-in name or a path to a ``*.j2`` file.

    ``fmt`` is "latex" or "markdown".  Options: ``title``, ``author``,
    ``param`` (the parameter whose path the figure highlights and the
    vanishing-gradient bound follows), ``values`` (name -> number, for
    the worked example and the verification table), ``lr`` (learning
    rate of the worked update), ``seed`` (random verification values),
    ``figure``, ``example``, ``vanishing``, ``verify``, ``cost`` (False
    leaves a section out), ``display`` (snippet: one ``$$`` block for a
    notebook), ``template_dir`` (a folder searched before the built-ins).
    """
    template_dir = options.pop("template_dir", None)
    tpl = _template(template, fmt, template_dir)
    ctx = context(derivation, fmt=fmt, **options)
    try:
        return tpl.render(**ctx)
    except jinja2.TemplateError as exc:
        raise OutputError(f"template {tpl.name!r} failed: {exc}") from None


# ---------------------------------------------------------------- writing
def _atomic_write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(derivation, path, **options) -> Path:
    """Write the derivation to `path`: ``.tex``, ``.md`` or ``.pdf`` by suffix.

    The file is written whole or not at all.  A ``.pdf`` is compiled in a
    temporary folder with ``latexmk`` (or ``pdflatex``), shell escape off,
    and moved into place only when the engine succeeded.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".md":
        options.setdefault("template", "markdown")
        data = render(derivation, fmt="markdown", **options).encode()
    elif suffix in (".tex", ".pdf"):
        data = render(derivation, fmt="latex", **options).encode()
        if suffix == ".pdf":
            data = compile_pdf(data.decode())
    else:
        raise OutputError(f"cannot write {latex_escape(path.name)!s}: use a .tex, .md or .pdf suffix")
    _atomic_write(path, data)
    return path


def compile_pdf(tex: str) -> bytes:
    """Compile a LaTeX document to PDF bytes; OutputError with the TeX error if it fails."""
    latexmk, pdflatex = shutil.which("latexmk"), shutil.which("pdflatex")
    if not pdflatex:
        raise OutputError("writing a .pdf needs pdflatex (and optionally latexmk) on the PATH, "
                          "e.g. Debian's texlive-latex-extra; write a .tex file instead")
    env = dict(os.environ, shell_escape="f", openout_any="p", openin_any="p")
    flags = ["-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape"]
    with tempfile.TemporaryDirectory(prefix="symback-tex-") as tmp:
        Path(tmp, "derivation.tex").write_text(tex, encoding="utf-8")
        if latexmk:
            runs = [[latexmk, "-norc", "-pdf", "-quiet", *flags, "derivation.tex"]]
        else:
            runs = [[pdflatex, *flags, "derivation.tex"]] * 2   # twice: references
        for cmd in runs:
            try:
                done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                                      timeout=PDF_TIMEOUT, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise OutputError(f"{Path(cmd[0]).name} took more than {PDF_TIMEOUT} s") from None
            pdf = Path(tmp, "derivation.pdf")
            if done.returncode != 0 or not pdf.is_file():
                log = Path(tmp, "derivation.log")
                text = log.read_text(errors="replace") if log.is_file() else done.stdout
                errors = [ln for ln in text.splitlines() if ln.startswith("!")][:5]
                raise OutputError(f"{Path(cmd[0]).name} failed: " + ("; ".join(errors) or text[-800:]))
        return pdf.read_bytes()


# ====================================================================== content
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
        left, right, at = sp.limit(d, z, b, "-"), sp.limit(d, z, b, "+"), d.subs(z, b)
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
    ctx.update(_network(d))
    ctx["local"] = _local_table(d)
    ctx["gradients"] = [_gradient(d, p) for p in d.params]
    ctx["deltas"] = _deltas(d)
    ctx["activations"] = _activations(d)
    ctx["figure"] = _tikz(d, param) if options.get("figure", True) and fmt == "latex" else None
    ctx["mermaid"] = _mermaid(d, param) if options.get("figure", True) and fmt == "markdown" else None
    ctx["figure_note"] = None if len(d.graph.order) <= MAX_FIGURE_NODES else Tex(
        f"The graph has {len(d.graph.order)} nodes, too many to draw legibly; "
        "the table of local derivatives lists its edges.")
    ctx["example"] = _example(d, exact, lr) if exact and options.get("example", True) else None
    ctx["vanishing"] = _vanishing(d, param, ctx["activations"]) if options.get("vanishing", True) else None
    ctx["verify"] = _verify(d, exact, options.get("seed", 0)) if options.get("verify", True) else None
    ctx["cost"] = _cost(d) if options.get("cost", True) else None
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
    bl = d.batch_loss()
    num, den = sp.fraction(bl)
    batch = (rf"\frac{{1}}{{{latex(den)}}} {latex(num)}" if den != 1 else latex(bl))
    per = rf"{name_latex(loss)}^{{(i)}}"
    frac = r"\frac{1}{m}" if d.reduction == "mean" else ""
    return {
        "inputs": names("input"), "targets": names("target"), "params": names("param"),
        "n_params": len(d.params),
        "forward": forward,
        "loss": {"lhs": Tex(name_latex(loss)), "rhs": Tex(latex(g.expr(loss), applications=apps)),
                 "reduction": d.reduction,
                 "batch": Tex(rf"L = {frac} \sum_{{i=1}}^{{m}} {per}"),
                 "batch_full": Tex(rf"L = {batch}"),
                 "batch_gradient": Tex(rf"\frac{{\partial L}}{{\partial \theta}} = "
                                       rf"{frac} \sum_{{i=1}}^{{m}} "
                                       rf"\frac{{\partial {per}}}{{\partial \theta}}")},
    }


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
                         "written_out": Tex(full) if full != short else None})
    return rows


def _gradient(d, p) -> dict:
    apps = _apps(d.graph)
    paths = d.chain(p)
    closed = d.gradient(p)
    lhs = partial(d.loss_name, p)
    symbolic = " + ".join(chain_symbols(path) for path in paths)
    valued = " + ".join(chain_values(path, applications=apps) for path in paths)
    expanded = d.gradient(p, form="expanded")
    show_expanded = sp.count_ops(expanded) <= MAX_EXPANDED_OPS and expanded != closed
    return {
        "name": Tex(name_latex(p)), "lhs": Tex(lhs),
        "paths": [{"symbols": Tex(chain_symbols(path)), "factors": Tex(chain_values(path, applications=apps)),
                   "length": len(path)} for path in paths],
        "symbolic": Tex(symbolic), "valued": Tex(valued),
        "closed": Tex(latex(closed, applications=apps)),
        "expanded": Tex(latex(expanded, applications=apps)) if show_expanded else None,
    }


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


def _activations(d) -> list[dict]:
    out = []
    for cls in dict.fromkeys(type(f) for f in _apps(d.graph)):
        z = sp.Symbol("z", real=True)
        app = cls(z)
        deriv = cls.derivative(*app.args)
        sup, exact = derivative_sup(cls)
        sup_text = latex(sup) if exact else r"\approx " + number(sup, 4)
        out.append({
            "name": cls.__name__,
            "definition": Tex(rf"{latex(app)} = {latex(cls.definition(*app.args))}"),
            "derivative": Tex(rf"{latex(prime(cls, app.args))} = {latex(deriv, primes=False)}"),
            "sup": sup, "sup_exact": exact,
            "sup_text": Tex(rf"\sup_{{z}} \left|{latex(prime(cls, app.args))}\right| "
                            rf"{'=' if exact else ''} {sup_text}"),
            "kinks": _kinks(cls),
            "cls": cls,
        })
    return out

# ------------------------------------------------------------------ figure
def _layout(g) -> dict[str, tuple[float, float]]:
    """Columns by depth (leaves just left of their first use), rows by the children's height."""
    col: dict[str, int] = {}
    for n in g.order:
        if n in g._expr:
            col[n] = 1 + max((col.get(p, 0) for p in g.parents(n)), default=0)
    for n in g.order:
        if n not in g._expr:
            kids = g.children(n)
            col[n] = min((col[k] for k in kids), default=1) - 1
    pos: dict[str, tuple[float, float]] = {}
    for c in sorted(set(col.values()), reverse=True):
        members = [n for n in g.order if col[n] == c]
        def key(n):
            ys = [pos[k][1] for k in g.children(n) if k in pos]
            return sum(ys) / len(ys) if ys else 0.0
        members.sort(key=key, reverse=True)
        center = sum(key(n) for n in members) / len(members)
        gap = 1.5
        for i, n in enumerate(members):
            pos[n] = (c * 3.2, center + gap * ((len(members) - 1) / 2 - i))
    return pos


def _tikz(d, param: str):
    """The computational graph: local derivatives on the edges, `param`'s paths highlighted."""
    g, apps = d.graph, _apps(d.graph)
    if len(g.order) > MAX_FIGURE_NODES:
        return None
    pos = _layout(g)
    on_path = {(f.of, f.wrt) for path in d.chain(param) for f in path}
    path_nodes = {n for e in on_path for n in e}
    style = {"input": "data", "target": "data", "param": "param", "node": "inner", "loss": "loss"}
    lines = []
    for n in g.order:
        x, y = pos[n]
        hl = ",hl" if n in path_nodes else ""
        lines.append(rf"\node[{style[g.kind(n)]}{hl}] (n{g.order.index(n)}) at ({x:.2f},{y:.2f}) "
                     rf"{{${name_latex(n)}$}};")
    for child in g.order:
        for parent in g.parents(child):
            if (child, parent) in d.local:
                label = latex(d.local[(child, parent)], applications=apps)
                if len(label) > 40:
                    label = partial(child, parent)
                edge = "hledge" if (child, parent) in on_path else "edge"
            else:
                label, edge = "", "edge"      # inputs and targets carry no derivative
            lines.append(rf"\draw[{edge}] (n{g.order.index(parent)}) -- node[lbl] {{${label}$}} "
                         rf"(n{g.order.index(child)});" if label else
                         rf"\draw[{edge}] (n{g.order.index(parent)}) -- (n{g.order.index(child)});")
    return Tex("\n".join(lines))


def _mermaid(d, param: str):
    """The graph as a Mermaid flowchart (GitHub renders it), `param`'s path drawn thick."""
    g = d.graph
    if len(g.order) > MAX_FIGURE_NODES:
        return None
    on_path = {(f.of, f.wrt) for path in d.chain(param) for f in path}
    lines, thick, k = ["flowchart LR"], [], 0
    for n in g.order:
        lines.append(f'  n{g.order.index(n)}(["{n}"])')
    for child in g.order:
        for parent in g.parents(child):
            label = str(d.local.get((child, parent), "")).replace('"', "'")
            arrow = f'-- "{label}" -->' if label else "-->"
            lines.append(f"  n{g.order.index(parent)} {arrow} n{g.order.index(child)}")
            if (child, parent) in on_path:
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
            "gradients": grads, "updates": updates,
            "lr": Tex(number(_exact("lr", lr))) if lr is not None else None}


# -------------------------------------------------------- vanishing gradient
def _vanishing(d, param: str, activations: list[dict]) -> dict:
    """Bound |∂C/∂param| by replacing each activation-derivative factor with its supremum."""
    g, apps = d.graph, _apps(d.graph)
    sups = {a["cls"]: a["sup"] for a in activations}
    bound_paths, counts = [], []
    for path in d.chain(param):
        parts, k = [], 0
        for f in path:
            app = activation_of_factor(f.expr, g.expr(f.of)) if f.of in g._expr else None
            if app is not None and type(app) in sups:
                k += 1
                s = sups[type(app)]
                parts.append(latex(s) if s.is_Rational or s.is_Integer else number(s, 4))
            elif f.expr != 1:
                parts.append(rf"\left|{latex(f.expr, applications=apps)}\right|")
        counts.append(k)
        bound_paths.append(r" \cdot ".join(parts) or "1")
    shrinking = [a for a in activations if a["sup"].is_number and a["sup"] < 1]
    return {"param": Tex(name_latex(param)),
            "bound": Tex(rf"\left|{partial(d.loss_name, param)}\right| \le "
                         + " + ".join(bound_paths)),
            "factors": max(counts, default=0),
            "shrinking": [a["name"] for a in shrinking],
            "any": bool(activations)}


# ----------------------------------------------------------- verification
def _verify(d, values, seed) -> dict:
    """Each gradient from the formulas next to a central difference of the unrolled loss."""
    g = d.graph
    names = g.input_names + g.target_names + g.param_names
    if values:
        point, source = {n: values[n] for n in names}, "the values of the worked example"
    else:
        rng = random.Random(seed)
        point = {n: sp.Rational(round(rng.uniform(0.05, 0.95) if g.kind(n) == "target"
                                      else rng.uniform(-1, 1), 3)).limit_denominator(1000)
                 for n in names}
        source = f"random values (seed {seed})"
    digits, h = 40, sp.Rational(1, 10 ** 12)
    env = {g.symbol(n): sp.Float(point[n], digits) for n in names}
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
                     "fd": Tex(number(fd, 10)), "error": Tex(number(err, 2)), "err": err})
    point_tex = [{"name": Tex(name_latex(n)), "value": Tex(number(point[n]))} for n in names]
    worst = max((r["err"] for r in rows if "err" in r), default=None)
    return {"rows": rows, "point": point_tex, "source": source, "digits": digits,
            "h": Tex(number(h)), "worst": Tex(number(worst, 2)) if worst is not None else None}


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
