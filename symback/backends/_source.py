"""The text of a generated module: its pure array functions, constants, init and self-check."""
from __future__ import annotations

import keyword

from ..engine import BATCH_SIZE
from ..matrix import is_matrix
from ._common import Plan, _uses

__all__ = ["identifiers", "function_texts", "constants", "SHARED_SOURCE"]


def identifiers(plan_: Plan, reserved=()) -> dict:
    """Node name → a Python identifier for it that is no keyword and no name the module uses."""
    taken = set(reserved) | {"np", "DTYPE"}
    out = {}
    every = [*plan_.inputs, *plan_.targets, *plan_.params] + [s for s, _ in plan_.forward + plan_.backward]
    for s in every:
        name = s.name
        ident = name
        while keyword.iskeyword(ident) or ident in taken:
            ident += "_"
        taken.add(ident)
        out[name] = ident
    out[BATCH_SIZE] = "_m"
    return out


def _closure(statements, wanted: set) -> list:
    """The statements that the names in `wanted` need, in order."""
    need, keep = set(wanted), []
    for s, e in reversed(statements):
        if s.name in need:
            keep.append((s, e))
            need |= _uses(e)
    return keep[::-1]


def function_texts(p: Plan, printer, names: dict) -> dict:
    """The pure array functions of a module, as source text, by name.

    ``_predict(_X, _params)``, ``_loss(_X, _Y, _params)``,
    ``_value_and_grad(_X, _Y, _params)`` → (L, {p: ∂L/∂p}), and the same
    pass split in two for a custom backward: ``_forward(_X, _Y, _params)`` →
    (L, values the backward pass reads) and ``_backward(_X, _Y, _params, _values)``.
    """
    n = lambda s: names.get(s.name, s.name)

    def unpack(statements, extra=(), with_y=True):
        used = set().union(*(_uses(e) for _, e in statements)) | set(extra)
        lines = ["    _m = _X.shape[0]"]
        for data, arg in ((p.inputs, "_X"), (p.targets if with_y else (), "_Y")):
            for i, s in enumerate(data):
                if s.name in used:
                    lines.append(f"    {n(s)} = {arg}" if is_matrix(s) else f"    {n(s)} = {arg}[:, {i}]")
        lines += [f"    {n(s)} = _params[{s.name!r}]" for s in p.params if s.name in used]
        return lines

    def body(statements):
        return [f"    {n(s)} = {printer.doprint(e)}" for s, e in statements]

    def outputs():
        if p.kind == "matrix":
            outs = [n(s) for s in p.outputs]
            return outs[0] if len(outs) == 1 else printer._join_columns(outs)
        return printer._join_columns([printer._fn("broadcast_to", n(s), "(_m,)") + "[:, None]"
                                      for s in p.outputs])

    grads = "{" + ", ".join(f"{k!r}: {printer.doprint(e)}" for k, e in p.gradients.items()) + "}"
    grad_uses = set().union(*(_uses(e) for e in p.gradients.values()))
    loss_text, loss_uses = printer.doprint(p.loss), _uses(p.loss)
    fwd_pred = _closure(p.forward, {s.name for s in p.outputs})
    fwd_loss = _closure(p.forward, loss_uses)
    back = _closure(p.backward, grad_uses)
    back_uses = set().union(grad_uses, *(_uses(e) for _, e in back))
    saved = [s for s, _ in p.forward if s.name in back_uses]
    fwd_all = _closure(p.forward, loss_uses | back_uses)
    out = {
        "_predict": ["def _predict(_X, _params):", '    """The network\'s output for the rows of _X."""',
                     *unpack(fwd_pred, with_y=False), *body(fwd_pred), f"    return {outputs()}"],
        "_loss": ["def _loss(_X, _Y, _params):", f'    """The batch loss L ({p.reduction} over the rows)."""',
                  *unpack(fwd_loss, loss_uses), *body(fwd_loss), f"    return {loss_text}"],
        "_value_and_grad": [
            "def _value_and_grad(_X, _Y, _params):",
            '    """(L, {parameter: dL/dparameter}): the forward pass, then the adjoints in order."""',
            *unpack(fwd_all + back, loss_uses | grad_uses), *body(fwd_all), *body(back),
            f"    return {loss_text}, {grads}"],
        "_forward": [
            "def _forward(_X, _Y, _params):",
            '    """(L, the forward values the backward pass reads)."""',
            *unpack(fwd_all, loss_uses), *body(fwd_all),
            "    return " + loss_text + ", {" + ", ".join(f"{s.name!r}: {n(s)}" for s in saved) + "}"],
        "_backward": [
            "def _backward(_X, _Y, _params, _values):",
            '    """{parameter: dL/dparameter} from the saved forward values."""',
            *unpack(back, grad_uses - {s.name for s in saved}),
            *[f"    {n(s)} = _values[{s.name!r}]" for s in saved], *body(back), f"    return {grads}"],
    }
    return {k: "\n".join(v) for k, v in out.items()}


def constants(p: Plan) -> str:
    """The module's description of the network: names, shapes, what targets look like."""
    return "\n".join([
        f"KIND = {p.kind!r}", f"REDUCTION = {p.reduction!r}",
        f"INPUTS = {tuple(s.name for s in p.inputs)!r}", f"TARGETS = {tuple(s.name for s in p.targets)!r}",
        f"PARAMS = {tuple(s.name for s in p.params)!r}", f"SHAPES = {p.shapes!r}", f"BIASES = {p.biases!r}",
        f"N_INPUTS = {_width(p.inputs)}", f"N_TARGETS = {_width(p.targets)}", f"TARGET_KIND = {p.target_kind!r}"])


def _width(symbols) -> int:
    return int(symbols[0].shape[1]) if symbols and is_matrix(symbols[0]) else len(symbols)


#: The initialisation and the finite-difference self-check every generated module carries.
#: They need only NumPy and the module's ``_asarray``, ``loss`` and ``grad``.
SHARED_SOURCE = '''
def init(seed=0):
    """Glorot-uniform weights, zero biases (parameters entering as 1 b); a scalar graph's
    parameters N(0, 0.5**2).  The same numbers as symback's NumPy and other backends."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in PARAMS:
        shape = SHAPES[p]
        if not shape:
            value = np.array(rng.normal(0.0, 0.5))
        elif p in BIASES:
            value = np.zeros(shape)
        else:
            limit = np.sqrt(6.0 / (shape[0] + shape[1]))
            value = rng.uniform(-limit, limit, size=shape)
        out[p] = _asarray(value)
    return out


def random_data(n=8, seed=0):
    """Random (X, Y) of the network's widths; targets one-hot, in (0, 1) or real as the loss needs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_INPUTS))
    if TARGET_KIND == "onehot":
        Y = np.eye(N_TARGETS)[rng.integers(0, N_TARGETS, n)]
    elif TARGET_KIND == "unit":
        Y = rng.uniform(0.1, 0.9, size=(n, N_TARGETS))
    else:
        Y = rng.normal(size=(n, N_TARGETS))
    return X, Y


def selfcheck(n=8, seed=0, entries=3):
    """Central finite differences of loss() against grad() at a few entries of every parameter."""
    X, Y = random_data(n, seed)
    X, Y = _asarray(X), _asarray(Y)
    params = init(seed)
    grads = {k: np.asarray(v, dtype=np.float64) for k, v in grad(X, Y, params).items()}
    wide = np.dtype(np.float64) == np.dtype(NP_DTYPE)
    h, tol = (1e-6, 1e-5) if wide else (1e-3, 1e-2)
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    for k in PARAMS:
        base = np.array(params[k], dtype=np.float64)
        for _ in range(entries):
            idx = tuple(int(rng.integers(0, s)) for s in base.shape)
            moved = []
            for sign in (1.0, -1.0):
                trial = base.copy()
                trial[idx] += sign * h
                moved.append(loss(X, Y, {**params, k: _asarray(trial)}))
            fd = (moved[0] - moved[1]) / (2 * h)
            worst = max(worst, abs(fd - grads[k][idx]) / max(1.0, abs(fd), abs(grads[k][idx])))
    ok = worst <= tol
    print(f"finite-difference check of {len(PARAMS)} parameters: max relative error "
          f"{worst:.2e} (tolerance {tol:.0e}): {'OK' if ok else 'FAILED'}")
    return ok


if __name__ == "__main__":
    import sys
    sys.exit(0 if selfcheck() else 1)
'''
