"""Legacy code generation for ``LayerDerivation`` (the layer networks ``sb.mlp`` builds today).

Read off the LayerDerivation's internals: affine steps, element-wise steps,
softmax, then the output delta and, layer by layer, δ Wᵀ and the updates.
Kept only until ``sb.mlp`` builds matrix graphs, which the one code
generator (:mod:`symback.codegen`) compiles from their ``Program``; then
this module goes.
"""
from __future__ import annotations

import sympy as sp

from .codegen import Namer, realify
from .codegen import _safe as _fixpoint_lower
from .errors import SymbackError
from .printing.numpy import InPlace, NumpyPrinter

__all__ = ["layer_module"]


def _inplace(printer, namer, arrays, indent="    "):
    return InPlace(printer, lambda: next(namer.symbols("t")).name, arrays, indent)



class _LayerPlan:
    """The steps of a layer network's training code, read off its LayerDerivation.

    Forward: ``affine`` (Z = A W + 1 b), ``ew`` (an element-wise formula),
    ``softmax``.  Then ``loss``, the output delta and, layer by layer,
    ``matmul`` (δ Wᵀ), ``grad`` (Aᵀ δ and 1ᵀ δ) and the hidden δ.
    """

    def __init__(self, d, namer: Namer):
        from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
        from .layers import Elementwise, FPrime, Softmax
        self.d, self.namer = d, namer
        self._EAF, self._Elementwise, self._FPrime, self._Softmax = (
            ElementwiseApplyFunction, Elementwise, FPrime, Softmax)
        self.sym: dict[str, sp.Symbol] = {}
        self.arrays: set = set()
        self.params = list(d.params)
        self.forward, self.backward = [], []
        self.act_of: dict[str, str] = {}      # Z name -> A name
        self.c = sp.Symbol(namer.take("c"))   # lr/m or 1/m: folded into the output delta
        for n in ["X", "Y"] + self.params:
            self.s(n)
        self._build()

    def s(self, name: str) -> sp.Symbol:
        """The array symbol (and code identifier) for a matrix name."""
        if name not in self.sym:
            short = name.replace("delta_Z", "D") if name.startswith("delta_Z") else name
            self.sym[name] = sp.Symbol(name if name in ("X", "Y") else self.namer.take(short))
            self.arrays.add(self.sym[name])
        return self.sym[name]

    def _fail(self, what, e):
        raise SymbackError(f"cannot compile the layer formula {what} = {e}: unexpected form")

    # -- forward --
    def _build(self):
        d = self.d
        L = d.depth
        for node, e in d.forward:
            if isinstance(e, self._Softmax):
                self.forward.append(("softmax", self.s(node.name), self.s(e.arg.name)))
            elif isinstance(e, self._EAF):
                self.act_of[e.expr.name] = node.name
                z = self.s(e.expr.name)
                self.forward.append(("ew", self.s(node.name), _fixpoint_lower(e.function(z))))
            else:
                terms = e.args if isinstance(e, sp.MatAdd) else (e,)
                mm, bias = None, None
                for t in terms:
                    if isinstance(t, sp.MatMul) and isinstance(t.args[0], sp.OneMatrix) and len(t.args) == 2:
                        bias = self.s(t.args[1].name)
                    elif isinstance(t, sp.MatMul) and len(t.args) == 2 and all(
                            isinstance(a, sp.MatrixSymbol) for a in t.args):
                        mm = (self.s(t.args[0].name), self.s(t.args[1].name))
                    else:
                        self._fail(node.name, e)
                if mm is None:
                    self._fail(node.name, e)
                self.forward.append(("affine", self.s(node.name), mm, bias))
        # loss: Σ_k ℓ(ŷ, y), with log σ(z), log softmax(z) in their stable forms
        zL, yhat, Y = self.s(d.Z[L].name), self.s(d.A[L].name), self.s("Y")
        out = d.activation_list[-1]
        lf = d.loss_function
        ell = lf.expr.xreplace({lf.prediction: yhat, lf.target: Y})
        if isinstance(d.forward[-1][1], self._Softmax):
            self.zs, self.lse = self.s(f"{zL}s"), self.s("lse")
            ell = ell.replace(lambda e: isinstance(e, sp.log) and e.args[0] == yhat,
                              lambda e: self.zs - self.lse)
            ell = _fixpoint_lower(ell)
        else:
            self.zs = self.lse = None
            ell = _fixpoint_lower(ell, {yhat: out(zL)})
        self.loss_expr = realify(ell)
        # backward, in the derivation's order, matmuls of a layer before its updates
        for target, e in d.backward:
            if target.name.startswith("grad_"):
                p = target.name[len("grad_"):]
                if not (isinstance(e, sp.MatMul) and len(e.args) == 2):
                    self._fail(target.name, e)
                left, right = e.args
                if isinstance(left, sp.OneMatrix):
                    self.backward.append(("grad_b", self.s(p), self.s(right.name)))
                elif isinstance(left, sp.Transpose):
                    self.backward.append(("grad_W", self.s(p), self.s(left.arg.name), self.s(right.name)))
                else:
                    self._fail(target.name, e)
            else:
                pending = []
                try:
                    scalar = realify(self._scalar(e, pending))
                except SymbackError:
                    # SymPy's matrix calculus returns traces and contractions when
                    # a layer is one unit wide; the derivation's local factors
                    # (δ Wᵀ, then ⊙ f'(Z)) state the same δ in the usual form.
                    pending = []
                    scalar = realify(self._scalar(self._from_locals(target), pending))
                if target.name == d.delta[L].name:
                    scalar = self.c * scalar
                # the δ Wᵀ product needs W before the update of its layer
                first_grad = next((i for i, st in enumerate(self.backward)
                                   if st[0].startswith("grad") and any(
                                       st[1] == mmst[3] for mmst in pending)), len(self.backward))
                self.backward[first_grad:first_grad] = pending
                self.backward.append(("ew", self.s(target.name), sp.factor_terms(_fixpoint_lower(scalar))))

    def _from_locals(self, target):
        """δ_{k} = (δ_{k+1} · ∂Z_{k+1}/∂A_k) ⊙ ∂A_k/∂Z_k, from the derivation's local factors."""
        d = self.d
        k = next((l for l, D in d.delta.items() if D.name == target.name), None)
        if k is None or k == d.depth:
            self._fail(target.name, d.adjoint.get(target.name))
        z_next, a_k, z_k = d.Z[k + 1].name, d.A[k].name, d.Z[k].name
        return sp.HadamardProduct(d.delta[k + 1] * d.local[(z_next, a_k)], d.local[(a_k, z_k)])

    def _scalar(self, e, pending) -> sp.Expr:
        """A matrix formula that is element-wise, as a scalar formula over array symbols."""
        if isinstance(e, sp.MatrixSymbol):
            return self.s(e.name)
        if isinstance(e, sp.OneMatrix):
            return sp.S.One
        if isinstance(e, sp.MatAdd):
            return sp.Add(*[self._scalar(a, pending) for a in e.args])
        if isinstance(e, sp.HadamardProduct):
            return sp.Mul(*[self._scalar(a, pending) for a in e.args])
        if isinstance(e, sp.HadamardPower):
            return self._scalar(e.base, pending) ** e.exp
        if isinstance(e, self._EAF):
            return e.function(self._scalar(e.expr, pending))
        if isinstance(e, self._Elementwise):
            return e.function(*[self._scalar(a, pending) for a in e.operands])
        if isinstance(e, self._FPrime):
            f, z = e.function, e.arg
            a_name = self.act_of.get(z.name)
            if f.output_derivative is not None and a_name is not None:
                return f.output_derivative(self.s(a_name))     # f'(Z) = g(A): reuse A
            w = sp.Dummy("w", real=True)
            return sp.diff(f(w), w).xreplace({w: self.s(z.name)})
        if isinstance(e, sp.MatMul):
            coeff = sp.Mul(*[a for a in e.args if not isinstance(a, sp.MatrixExpr)])
            mats = [a for a in e.args if isinstance(a, sp.MatrixExpr)]
            if len(mats) == 1:
                return coeff * self._scalar(mats[0], pending)
            if len(mats) == 2 and isinstance(mats[0], sp.MatrixSymbol) and isinstance(mats[1], sp.Transpose):
                # δ Wᵀ: a matrix product, computed by its own step
                d_, w_ = self.s(mats[0].name), self.s(mats[1].arg.name)
                a_name = self.act_of.get(f"Z{int(mats[1].arg.name[1:]) - 1}", "A")
                out = self.s(f"d{a_name}")
                pending.append(("matmul", out, d_, w_))
                return coeff * out
        if e.is_Number:
            return e
        self._fail("δ", e)


def _layer_function(plan: _LayerPlan, mode: str, printer: NumpyPrinter) -> list[str]:
    """The body of one generated function: 'predict', 'forward', 'loss', 'backward', 'grad' or 'step'.

    'backward' starts from the values 'forward' returned (only a softmax's
    shifted logits are recomputed); 'grad' and 'step' run both passes in one
    function, so that buffers can be reused across them.

    Buffers are reused in place once nothing later reads them (a liveness
    pass over the steps); X, Y and the values a function returns are never
    overwritten, and parameters only by their own update in 'step'.
    """
    namer = Namer(plan.namer.used)
    ind = "    "
    ew = _inplace(printer, namer, plan.arrays, ind)
    given = [st[1] for st in plan.forward] if mode == "backward" else []
    steps = [st for st in plan.forward if mode != "backward" or st[0] == "softmax"]
    if mode in ("loss", "backward", "grad", "step"):
        steps.append(("loss", None, plan.loss_expr))
    if mode in ("backward", "grad", "step"):
        steps += plan.backward
    if mode in ("loss", "backward", "grad", "step"):
        # the loss and the output delta share their subexpressions ((Yhat - Y) for MSE)
        i_loss = next(i for i, st in enumerate(steps) if st[0] == "loss")
        if mode != "loss":
            i_top = i_loss + 1
            reps, (lexpr, dexpr) = sp.cse([steps[i_loss][2], steps[i_top][2]], symbols=namer.symbols("e"))
            for r, _ in reps:
                plan.arrays.add(r)
            pre = [("ew", r, v) for r, v in reps if v.free_symbols & plan.arrays]
            scal = [("scalar", r, v) for r, v in reps if not (v.free_symbols & plan.arrays)]
            steps[i_loss:i_top + 1] = scal + pre + [("loss", None, lexpr), ("ew", steps[i_top][1], dexpr)]

    def reads(st) -> set:
        kind = st[0]
        if kind in ("ew", "loss", "scalar"):
            out = set(st[2].free_symbols)
        elif kind == "affine":
            out = {st[2][0], st[2][1], st[3]}
        elif kind == "softmax":
            out = {st[2]}
        elif kind == "matmul":
            out = {st[2], st[3]}
        elif kind == "grad_W":
            out = {st[2], st[3]}
        else:
            out = {st[2]}
        return out & plan.arrays

    # outputs each function returns, never overwritten
    if mode == "predict":
        keep = {plan.forward[-1][1]}
    elif mode == "forward":
        keep = {st[1] for st in plan.forward}
    else:
        keep = set()
    softmax_needs_lse = plan.lse is not None and mode != "predict" and mode != "forward"
    protected = {plan.sym["X"], plan.sym["Y"]} | {plan.sym[p] for p in plan.params} | keep | set(given)
    last = {}
    for i, st in enumerate(steps):
        for r in reads(st):
            last[r] = i
    alias: dict = {}

    def root(n):
        while n in alias:
            n = alias[n]
        return n

    def free_at(i, names) -> set:
        out = set()
        for n in names:
            group = [k for k in set(last) | set(alias) | {n} if root(k) == root(n)]
            if any(k in protected for k in group):
                continue
            if all(last.get(k, -1) <= i for k in group):
                out.add(n)
        return out

    lines = []
    c = plan.c.name
    if mode in ("loss", "backward", "grad", "step"):
        lines.append(f"{ind}m = X.shape[0]")
    if mode in ("backward", "grad", "step"):
        lines.append(f"{ind}ones = _ones(m)")
        scale = ("lr / m" if mode == "step" else "1 / m") if plan.d.reduction == "mean" else \
            ("lr" if mode == "step" else "1")
        lines.append(f"{ind}{c} = {scale}       # the batch reduction{' and the step size' if mode == 'step' else ''}, "
                     "folded into the output delta")
    for p in plan.params:
        lines.append(f"{ind}{plan.sym[p]} = params[{p!r}]")
    used = set().union(*(reads(st) for st in steps))
    written = {st[1] for st in steps if st[0] == "softmax"}
    for v in given:
        if v in used and v not in written:
            lines.append(f"{ind}{v} = values[{v.name!r}]")
    grads = {}
    for i, st in enumerate(steps):
        kind = st[0]
        if kind == "affine":
            z, (a, w), b = st[1], st[2], st[3]
            lines.append(f"{ind}{z} = {a} @ {w}")
            if b is not None:
                lines.append(f"{ind}{z} += {b}")
        elif kind == "ew" or kind == "scalar":
            if kind == "scalar":
                lines.append(f"{ind}{st[1]} = {printer.doprint(st[2])}")
                continue
            body, ref = ew.emit(st[2], free_at(i, reads(st)))
            lines += body
            if ref != st[1].name:
                lines.append(f"{ind}{st[1]} = {ref}")
                if ref.isidentifier() and sp.Symbol(ref) in plan.arrays and not body:
                    alias[st[1]] = sp.Symbol(ref)
        elif kind == "softmax":
            yhat, z = st[1], st[2]
            zs = plan.zs if plan.zs is not None else z
            if z in free_at(i, {z}) and zs not in protected:
                lines.append(f"{ind}{z} -= {z}.max(axis=1, keepdims=True)   # shifted: exp cannot overflow")
                if zs != z:
                    lines.append(f"{ind}{zs} = {z}")
            else:
                lines.append(f"{ind}{zs} = {z} - {z}.max(axis=1, keepdims=True)   # shifted: exp cannot overflow")
            e = next(namer.symbols("E"))
            ssum = next(namer.symbols("S"))
            lines.append(f"{ind}{e} = np.exp({zs})")
            lines.append(f"{ind}{ssum} = {e}.sum(axis=1, keepdims=True)")
            lines.append(f"{ind}{e} /= {ssum}")
            lines.append(f"{ind}{yhat} = {e}")
            if softmax_needs_lse:
                lines.append(f"{ind}{plan.lse} = np.log({ssum})   # log-sum-exp of the shifted logits")
        elif kind == "loss":
            code = _reduce_sum(st[2], ew, free_at(i, reads(st)), lines, plan, printer)
            div = " / m" if plan.d.reduction == "mean" else ""
            lines.append(f"{ind}value = {code}{div}")
        elif kind == "matmul":
            lines.append(f"{ind}{st[1]} = {st[2]} @ {st[3]}.T")
        elif kind in ("grad_W", "grad_b"):
            p = st[1]
            prod = f"{st[2]}.T @ {st[3]}" if kind == "grad_W" else f"ones @ {st[2]}"
            if mode == "step":
                lines.append(f"{ind}{p} -= {prod}")
            else:
                g = namer.take(f"grad_{p}")
                grads[p] = g
                lines.append(f"{ind}{g} = {prod}")
    if mode == "predict":
        lines.append(f"{ind}return {plan.forward[-1][1]}")
    elif mode == "forward":
        lines.append(f"{ind}return {{{', '.join(f'{st[1].name!r}: {st[1]}' for st in plan.forward)}}}")
    elif mode == "loss":
        lines.append(f"{ind}return value")
    elif mode in ("grad", "backward"):
        lines.append(f"{ind}return value, ({', '.join(grads[plan.sym[p]] for p in plan.params)},)")
    else:
        lines.append(f"{ind}return value")
    return lines


def _reduce_sum(expr, ew: InPlace, free, lines, plan, printer) -> str:
    """Code for Σ over all entries of an element-wise formula; a dot product where it can be."""
    coeff, rest = expr.as_coeff_Mul()
    factors = [f for f in sp.Mul.make_args(rest)]
    full = [f for f in factors if ew.is_array(f) and not (plan.lse is not None and f.free_symbols <= {plan.lse})]
    k = "" if coeff == 1 else ("-" if coeff == -1 else f"{printer.parenthesize(coeff, 50)}*")
    if len(factors) == 1 and rest.is_Pow and rest.exp == 2:
        body, ref = ew.emit(rest.base, free)
        lines += body
        return f"{k}np.vdot({ref}, {ref})"
    if len(factors) == 2 and len(full) == 2:
        body1, r1 = ew.emit(factors[0], free)
        lines += body1
        body2, r2 = ew.emit(factors[1], free - set(factors[0].free_symbols))
        lines += body2
        return f"{k}np.vdot({r1}, {r2})"
    body, ref = ew.emit(expr, free)
    lines += body
    return f"np.sum({ref})"


_INIT_SCHEME = {"relu": "he", "leaky_relu": "he"}


def layer_module(d, dtype: str) -> str:
    """The source of the NumPy training module of a LayerDerivation."""
    namer, printer = Namer(), NumpyPrinter()
    plan = _LayerPlan(d, namer)
    sizes = d.sizes
    acts = [f.__name__ for f in d.activation_list]
    init_rows = [(f"W{l}", f"b{l}", sizes[l - 1], sizes[l], _INIT_SCHEME.get(acts[l - 1], "glorot"))
                 for l in range(1, d.depth + 1)]
    shapes = {}
    for w, b, fi, fo, _ in init_rows:
        shapes[w], shapes[b] = (fi, fo), (fo,)
    arch = "-".join(map(str, sizes))
    doc = {
        "predict": "The network's output for the rows of X.",
        "forward": "Every Z and A of the forward pass, by name (nothing overwritten).",
        "loss": f"The batch loss L ({d.reduction} over the rows of the per-sample cost).",
        "backward": "(L, gradients in PARAMS order) from the values forward() returned.",
        "grad": "(L, gradients): forward() and backward() in one function, buffers reused.",
        "step": "One gradient-descent step on params, in place; returns L before it.",
    }
    args = {"predict": "X, params", "forward": "X, params", "loss": "X, Y, params",
            "backward": "X, Y, params, values", "grad": "X, Y, params", "step": "X, Y, params, lr"}
    src = [
        f'"""Training code generated by symback for the {arch} network '
        f"({'/'.join(acts)}, loss {d.loss_function.name}).",
        "",
        "Z = A W + b, A = f(Z) forward; the output delta, then delta W^T * f'(Z) backward,",
        'from the derivation\'s formulas after common-subexpression elimination.  NumPy only."""',
        "import numpy as np",
        "",
        f"DTYPE = np.{dtype}",
        "KIND = 'layers'",
        f"REDUCTION = {d.reduction!r}",
        f"SIZES = {tuple(sizes)!r}",
        f"ACTIVATIONS = {tuple(acts)!r}",
        f"PARAMS = {tuple(d.params)!r}",
        f"N_INPUTS = {sizes[0]}",
        f"N_TARGETS = {sizes[-1]}",
        f"SHAPES = {shapes!r}",
        f"INIT = {tuple(init_rows)!r}",
        "_ONES = {}",
        "",
        "",
        "def _ones(m):",
        '    """A cached row of m ones: 1^T delta sums a delta over the samples (one BLAS call)."""',
        "    ones = _ONES.get(m)",
        "    if ones is None:",
        "        ones = _ONES[m] = np.ones(m, dtype=DTYPE)",
        "    return ones",
        "",
        "",
        "def init(seed=0):",
        '    """Glorot-uniform weights (He-normal before ReLU-like activations), zero biases."""',
        "    rng = np.random.default_rng(seed)",
        "    params = {}",
        "    for w, b, fan_in, fan_out, scheme in INIT:",
        "        if scheme == 'he':",
        "            W = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))",
        "        else:",
        "            limit = np.sqrt(6.0 / (fan_in + fan_out))",
        "            W = rng.uniform(-limit, limit, size=(fan_in, fan_out))",
        "        params[w] = W.astype(DTYPE)",
        "        params[b] = np.zeros(fan_out, dtype=DTYPE)",
        "    return params",
        "",
    ]
    for mode in ("predict", "forward", "loss", "backward", "grad", "step"):
        src += ["", f"def {mode}({args[mode]}):", f'    """{doc[mode]}"""']
        src += _layer_function(plan, mode, printer)
        src.append("")
    return "\n".join(src)
