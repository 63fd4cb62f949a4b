"""A row norm's γ and β applied by the library's layer-norm kernels, where the derived statements
are exactly that.

``layer_norm(H, γ, β)`` lowers to Ĥ = norm(H) (the ``layer_norm`` statement, torch's
``native_layer_norm`` without weights), N = β + γ ⊙ Ĥ, and in the backward from δN:
δĤ = γ ⊙ δN into the norm's VJP (``layer_norm_vjp``), δγ = Σ (Ĥ ⊙ δN) and δβ = Σ δN over the
samples and rows (two ``bsum`` each).  torch's ``native_layer_norm`` with weight γ and bias β
computes N in the same pass as Ĥ, and ``native_layer_norm_backward`` with them returns
(δH, δγ, δβ) — the same sums, from the forward's mean and 1/σ, as conv2d's kernels compute a
convolution's derived sums (:mod:`symback.passes`).  :func:`affine_norms` prints them so where
every statement is exactly that one and Ĥ, γ ⊙ δN and the partial sums are read nowhere else;
otherwise the statements stay.  Nothing is derived here.
"""
from __future__ import annotations

import sympy as sp

from .lowering import Stmt, select

__all__ = ["KINDS", "affine_norms"]


def _readers(body) -> dict:
    out: dict = {}
    for st in body:
        for s in st.reads():
            out.setdefault(s, []).append(st)
    return out


def _sums(sym, readers, shapes, keep):
    """(the partial bsum, the final bsum) of the two that sum `sym` over the samples and rows
    (the only sum of `sym`, the partial one read only by the final one), else None."""
    first = [r for r in readers.get(sym, []) if r.op == "bsum"]
    if len(first) != 1 or first[0].args != (sym,):
        return None
    second = readers.get(first[0].target, [])
    if len(second) != 1 or second[0].op != "bsum" or second[0].args != (first[0].target,) \
            or len(shapes.get(second[0].target, ())) != 1 or first[0].target in keep:
        return None
    return first[0], second[0]


def affine_norms(stmts: list[Stmt], fn) -> list[Stmt]:
    """The statements with each row norm's γ, β (and their δ) in the layer-norm kernels, where
    they are exactly the module docstring's; a pass of :mod:`symback.passes`, for a printer with
    ``layer_norm_affine`` in its kernels."""
    if "layer_norm_affine" not in fn.printer.kernels or not any(st.op == "layer_norm" for st in stmts):
        return stmts
    body = select(stmts, fn.keep)
    shapes, readers = fn.low.shapes, _readers(body)
    params = {st.target for st in body if st.op == "param"}
    replace, before = {}, {}
    for st in body:
        if st.op != "layer_norm" or len(st.args) != 2:
            continue
        m = _match(st, readers, params, shapes, fn.keep)
        if m is None:
            continue
        gamma, beta, N, G, vjps, dgamma, dbeta, drop = m
        pair, (h, eps) = st.target, st.args
        replace[pair] = Stmt(pair, "layer_norm_affine", (h, gamma, beta, eps), st.shape)
        replace[N.target] = Stmt(N.target, "pair_item", (pair, 0), N.shape)
        if G is None:
            continue
        g = fn.low.fresh()
        shapes[g] = st.shape
        first = min(body.index(x) for x in drop + vjps + [dgamma, dbeta])
        before[first] = Stmt(g, "layer_norm_affine_vjp", (G, pair, h, gamma, beta, eps, bool(vjps)), st.shape)
        for v in vjps:
            replace[v.target] = Stmt(v.target, "pair_item", (g, 0), v.shape)
        replace[dgamma.target] = Stmt(dgamma.target, "pair_item", (g, 1), dgamma.shape)
        replace[dbeta.target] = Stmt(dbeta.target, "pair_item", (g, 2), dbeta.shape)
    if not replace:
        return stmts
    out = []
    for i, st in enumerate(body):
        if i in before:
            out.append(before[i])
        out.append(replace.get(st.target, st))
    out = select(out, fn.keep)
    # Ĥ = pair[0] is now N: nothing may still read it as Ĥ (a value kept that the match missed)
    hats = {st.target for st in body if st.op == "pair_item" and st.args[1] == 0 and st.args[0] in replace
            and st.target not in replace}
    return stmts if any(st.reads() & hats for st in out) or hats & fn.keep else out


def _match(norm, readers, params, shapes, keep):
    """(γ, β, the N statement, δN or None, the norm's VJP statements, δγ's and δβ's final sums,
    the statements they replace) when `norm`'s Ĥ is read exactly as the module docstring says."""
    pair = norm.target
    items = [r for r in readers.get(pair, []) if r.op == "pair_item"]
    if len(items) != 1 or items[0].args != (pair, 0) or items[0].target in keep:
        return None
    hat = items[0].target
    N, prods = None, []
    for r in readers.get(hat, []):
        if r.op != "let":
            return None
        e = r.args[0]
        terms = e.args if isinstance(e, sp.Add) else ()
        if len(terms) == 2 and N is None:
            beta = next((t for t in terms if t in params), None)
            gamma = (e - beta) / hat if beta is not None else None
            if gamma in params and shapes.get(gamma) == shapes.get(beta) and len(shapes.get(gamma, ())) == 2 \
                    and shapes[gamma][0] == 1:
                N = r
                continue
        prods.append(r)
    if N is None:
        return None
    vjps = [r for r in readers.get(pair, []) if r.op == "layer_norm_vjp"]
    if len(readers.get(pair, [])) != 1 + len(vjps):
        return None
    if not prods and not vjps:
        return gamma, beta, N, None, [], None, None, []
    if len(prods) != 1:
        return None
    G = sp.simplify(prods[0].args[0] / hat)
    if not isinstance(G, sp.Symbol) or G == hat or prods[0].target in keep:
        return None
    dg, db = _sums(prods[0].target, readers, shapes, keep), _sums(G, readers, shapes, keep)
    if dg is None or db is None or len(readers.get(prods[0].target, [])) != 1:
        return None
    drop = [prods[0], dg[0], db[0]]
    for v in vjps:
        dh = next((r for r in readers.get(G, []) if r.target == v.args[0]), None)
        if dh is None or v.args[1:] != (pair, norm.args[0], norm.args[1]) or dh.op != "let" \
                or sp.simplify(dh.args[0] - gamma * G) != 0 or len(readers.get(dh.target, [])) != 1 \
                or dh.target in keep:
            return None
        drop.append(dh)
    return gamma, beta, N, G, vjps, dg[1], db[1], drop


def _code(c, st):
    """The printing of one statement this pass made (symback.straightline's KINDS)."""
    a, p = st.args, c.p
    d = st.shape[-1]
    if st.op == "layer_norm_affine":
        return lambda: p.op_layer_norm_affine(c.N(a[0]), c.N(a[1]), c.N(a[2]), p._print(a[3]), d)
    return lambda: p.op_layer_norm_affine_vjp(*[c.N(x) for x in a[:5]], p._print(a[5]), d, a[6])


#: statement kind -> its printing, for symback.straightline's KINDS
KINDS = {"layer_norm_affine": _code, "layer_norm_affine_vjp": _code}
