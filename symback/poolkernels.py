"""Max-pooling's δ by the indices of its forward kernel: two passes over the statements.

:func:`pool_indices` keeps the arg-max indices the forward's pooling kernel found and routes
the δ by them (``maxpool_pair``, ``maxpool_vjp_idx``).

:func:`pool_masks` moves a 0/1 mask that multiplies such a δ (ReLU' before a max-pooling:
δ_Z = δ_A ⊙ [Z ≥ 0], δ_A the pooled δ d scattered to each window's arg-max) onto the pooled
map: δ_Z = scatter(d ⊙ [Z ≥ 0 at the arg-max]).  The same numbers: δ_A is 0 off the arg-max
positions, where both sides are 0, and at an arg-max position p both are d_w·m(Z_p), summed
over the windows w whose arg-max p is (one, when windows do not overlap; a sum of the same
terms otherwise, each multiplied by 0 or 1, which rounds nothing).  The mask's formula is the
derivation's, its array symbols replaced by their values at the arg-max (``pool_gather``);
the arg-max is the pooling's own, ties included.  One element-wise pass over the pooled map
instead of the full one, and one full-size array fewer; Z is read at the forward's pooling
and can go there.  For a printer with ``pool_indices`` (torch, JAX) and ``pool_masks`` (torch).
"""
from __future__ import annotations

from collections import Counter, defaultdict

import sympy as sp

from .printing.numpy import mask_of
from .stmt import Stmt

__all__ = ["pool_indices", "pool_masks"]


def pool_indices(stmts: list[Stmt], fn) -> list[Stmt]:
    """Max-pooling's δ routed by the arg-max indices its forward kernel found: where a
    function has both ``maxpool(A)`` and ``maxpool_vjp(D, A)`` of one geometry, the forward
    becomes ``maxpool_pair`` (the pooled values and their indices, one kernel call) read by
    ``pair_item`` 0, and the δ ``maxpool_vjp_idx`` reads item 1 instead of pooling A again
    (and not A: the kernel takes only its shape, so A can go after the forward's pooling).
    The same values: the indices are the ones the routing recomputed (first arg-max).
    For a printer with ``pool_indices``."""
    if not getattr(fn.printer, "pool_indices", False):
        return stmts
    low = fn.low
    vjps = {(st.args[1], st.args[2]) for st in stmts if st.op == "maxpool_vjp"}
    pairs, out = {}, []
    for st in stmts:
        key = (st.args[0], st.args[1]) if st.op == "maxpool" else (st.args[1], st.args[2]) \
            if st.op == "maxpool_vjp" else None
        if st.op == "maxpool" and key in vjps:
            pair = low.fresh()
            low.shapes[pair] = st.shape
            pairs[key] = pair
            out += [Stmt(pair, "maxpool_pair", st.args, st.shape), Stmt(st.target, "pair_item", (pair, 0), st.shape)]
            continue
        if st.op == "maxpool_vjp" and key in pairs:
            st = st._replace(op="maxpool_vjp_idx", args=(st.args[0], pairs[key], st.args[2]))
        out.append(st)
    return out


def _mask_factor(f, full, shapes) -> bool:
    """Whether f is a 0/1 mask (a Piecewise of 1 and 0) of arrays shaped `full` and numbers."""
    return mask_of(f) is not None and all(shapes.get(s, ()) in ((), full) for s in f.free_symbols)


def pool_masks(stmts: list[Stmt], fn) -> list[Stmt]:
    """``D = maxpool_vjp_idx(d, …)``, read only by ``δ = D ⊙ m₁ ⊙ … ⊙ c`` (0/1 masks mᵢ of
    arrays shaped like D, numbers c), as ``δ = maxpool_vjp_idx(d ⊙ m₁' ⊙ … ⊙ c, …)`` where
    each mᵢ' reads its arrays at the arg-max (``pool_gather``, put right after the pooling
    and the array).  Exactly δ (see the module's docstring).  For a printer with
    ``pool_masks`` (torch: under XLA the mask fuses into the δ's pass where it is)."""
    if not getattr(fn.printer, "pool_masks", False):
        return stmts
    low, keep = fn.low, fn.keep
    made = {st.target: st for st in stmts}
    at = {st.target: i for i, st in enumerate(stmts)}
    reads = Counter(s for st in stmts for s in st.reads())
    after, gathered, out = defaultdict(list), {}, []
    for st in stmts:
        e = st.args[0] if st.op == "let" else None
        vjps = [f for f in (e.args if isinstance(e, sp.Mul) else ()) if f in made
                and made[f].op == "maxpool_vjp_idx" and reads[f] == 1 and f not in keep]
        rest = e / vjps[0] if len(vjps) == 1 else None
        factors = rest.args if isinstance(rest, sp.Mul) else (rest,)
        if rest is None or not rest.free_symbols or not all(
                f.is_number or _mask_factor(f, st.shape, low.shapes) for f in factors):
            out.append(st)
            continue
        d, pair, geometry = made[vjps[0]].args
        pooled = low.shapes[pair]
        subs = {}
        for z in sorted((s for s in rest.free_symbols if low.shapes.get(s, ()) != ()), key=str):
            if (z, pair) not in gathered:
                g = gathered[z, pair] = low.fresh()
                low.shapes[g] = pooled
                after[max(at.get(z, -1), at[pair])].append(Stmt(g, "pool_gather", (z, pair, geometry), pooled))
            subs[z] = gathered[z, pair]
        dm = low.fresh()
        low.shapes[dm] = pooled
        out += [Stmt(dm, "let", (d * rest.xreplace(subs),), pooled),
                Stmt(st.target, "maxpool_vjp_idx", (dm, pair, geometry), st.shape)]
    if not gathered:
        return stmts
    placed = list(after.pop(-1, []))
    for st in out:
        placed.append(st)
        placed += after.pop(at.get(st.target, -2), [])
    return placed
