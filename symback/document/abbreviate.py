"""An abbreviated figure for long recurrent or deep graphs: one step drawn, the rest ⋯.

A builder names its states in order (:attr:`Graph.states`: a recurrent net's
h_t, a deep net's hidden outputs).  Each node belongs to the first step whose
state it feeds; a leaf (input, parameter) to its children's step when they all
lie in one, else it is shared and always drawn.  The figure keeps one step
whole (an RNN's step 2 with h_1 coming in, an MLP's first layer and the layer
of the highlighted parameter), the last state, and everything after it (read-
out, loss).  Each connected run of the other nodes becomes one node drawn
``⋯``: the edges into and out of it carry no label (it stands for many edges,
not for a formula), and it is highlighted when the path runs through it.
A drawn edge between two real nodes keeps its true local factor.
"""
from __future__ import annotations

__all__ = ["abbreviate", "ELIDED", "RECURRENT_STEPS", "DEEP_STATES"]

ELIDED = "elided"        # the kind of a ⋯ node
RECURRENT_STEPS = 3      # an unrolled net of this many steps or more is drawn one step
DEEP_STATES = 4          # a feed-forward net with this many hidden layers or more: first and last


def _steps(order, parents, states) -> dict:
    """name -> index of its step (0-based), None for the shared leaves and what follows the last state."""
    children = {n: [c for c in order if n in parents[c]] for n in order}
    step: dict = {}
    for k, s in enumerate(states):
        todo = [s]
        while todo:                       # s's ancestors not claimed by an earlier state
            n = todo.pop()
            if n in step or not parents[n]:
                continue
            step[n] = k
            todo.extend(parents[n])
    for n in order:
        if not parents[n]:
            ks = {step.get(c) for c in children[n]}
            step[n] = ks.pop() if len(ks) == 1 else None
    return {n: step.get(n) for n in order}


def abbreviate(dg, recurrent: bool, param: str | None = None):
    """`dg` with the steps outside the drawn window merged into ⋯ nodes (a Diagram), or `dg`
    itself when the graph is short enough to draw whole."""
    states = [s for s in dg.states if s in dg.parents]
    if len(states) < (RECURRENT_STEPS if recurrent else DEEP_STATES):
        return dg
    step = _steps(dg.order, dg.parents, states)
    window = {1} if recurrent else {0} | ({step[param]} - {None})
    keep = {n for n in dg.order if step[n] is None or step[n] in window}
    keep |= {states[k - 1] for k in window if k > 0} | {states[-1]}
    groups = _groups([n for n in dg.order if n not in keep], dg.parents)
    return _merged(dg, keep, groups)


def _groups(elided, parents) -> list[set]:
    """The connected runs of the elided nodes (edges between two of them join them)."""
    owner = {n: {n} for n in elided}
    for n in elided:
        for p in parents[n]:
            if p in owner and owner[p] is not owner[n]:
                merged = owner[p] | owner[n]
                for m in merged:
                    owner[m] = merged
    seen, out = set(), []
    for n in elided:
        if id(owner[n]) not in seen:
            seen.add(id(owner[n]))
            out.append(owner[n])
    return out


def _merged(dg, keep, groups):
    """The Diagram of the kept nodes and one ⋯ node per group, in an order parents-first."""
    dots = {f"…{i + 1}": g for i, g in enumerate(groups)}
    where = {m: d for d, g in dots.items() for m in g}
    index = {n: i for i, n in enumerate(dg.order)}
    kind = {n: dg.kind[n] for n in keep} | {d: ELIDED for d in dots}
    parents = {}
    for n in list(keep) + list(dots):
        members = dots.get(n, {n})
        ps = []
        for m in sorted(members, key=index.get):
            for p in dg.parents[m]:
                # a ⋯ node's inputs and parameters are part of what it stands for
                src = where.get(p, p)
                if p in members or (n in dots and not dg.parents[p]) or src in ps:
                    continue
                ps.append(src)
        parents[n] = ps
    on_path = {e for e in dg.on_path if e[0] in keep and e[1] in keep}
    on_path |= {(where.get(c, c), where.get(p, p)) for c, p in dg.on_path
                if (c in where) != (p in where)}
    first = {n: min(index[m] for m in dots.get(n, {n})) for n in parents}
    order = _topological(parents, first)
    real = lambda table: {e: v for e, v in table.items() if e[0] in keep and e[1] in keep}    # noqa: E731
    names = {n: dg.names[n] for n in keep} | {d: r"\cdots" for d in dots}
    return dg._replace(order=order, kind=kind, parents=parents, labels=real(dg.labels),
                       plain=real(dg.plain), on_path=on_path, names=names, exprs=real(dg.exprs),
                       values={n: v for n, v in dg.values.items() if n in keep},
                       edge_values=real(dg.edge_values))


def _topological(parents, first) -> list:
    """Parents before children, ties in the original order."""
    done, order = set(), []
    while len(order) < len(parents):
        ready = [n for n in parents if n not in done and all(p in done for p in parents[n])]
        n = min(ready, key=first.get)
        done.add(n)
        order.append(n)
    return order
