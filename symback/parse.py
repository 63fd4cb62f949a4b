"""Expression text into SymPy, parsed by a whitelist and never evaluated.

Expression text goes through :func:`parse_expr`: Python's ``ast`` parses
it and a whitelist walk builds SymPy objects directly — numbers, declared
names, the registry's activations and a few elementary functions, the
operators ``+ - * / **``.  Nothing a user writes is ever handed to
``eval``, ``exec`` or ``sympify``.  Every number the walk meets or makes
must be a real float64-sized value, and powers are bounded before SymPy
computes them, so no text can make the parser hang or exhaust memory.

:func:`parse_expr` serves spec files (:mod:`symback.spec`) and anyone
with a formula as text; :func:`parse_values` reads the ``--values`` flag
of ``symback derive``.
"""
from __future__ import annotations

import ast
import math
import sys
import warnings
from typing import Iterable, Mapping

import sympy as sp

from .errors import DefinitionError, SpecError
from .functions import ACTIVATIONS, LOSSES, softmax
from .registry import TEXT_PARSER
from .graph import Graph
from .matrix import MASKS, hadamard, is_matrix, layer_norm, ones, sumsq

__all__ = ["parse_expr", "parse_values", "functions", "known_names", "number_problem", "user_expr"]

# Elementary functions a spec may call, beside every registered activation.
_ELEMENTARY = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos,
    "tan": sp.tan, "sinh": sp.sinh, "cosh": sp.cosh, "abs": sp.Abs, "Abs": sp.Abs,
    "Max": sp.Max, "Min": sp.Min, "max": sp.Max, "min": sp.Min,
}
_ALIASES = {"ReLU": "relu", "sigma": "sigmoid", "LReLU": "leaky_relu"}
_CONSTANTS = {"pi": sp.pi, "E": sp.E}
_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.MatMult)
_REFUSED = {  # node type -> what to tell the user
    ast.Attribute: "attribute access", ast.Subscript: "subscripts", ast.Lambda: "lambda",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.Compare: "comparisons", ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions", ast.NamedExpr: "assignments", ast.Starred: "starred arguments",
    ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets",
    ast.JoinedStr: "strings", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}
#: the only keyword arguments expression text may pass: function -> keyword -> the word-valued
#: choices it takes (a string constant from this set), or None for a positive number
_KEYWORDS = {"softmax": {"mask": frozenset(MASKS)}, "layer_norm": {"eps": None}}
MAX_TEXT = 10_000      # characters in one expression
MAX_EXPONENT = 1_000   # |n| in a numeric power, so "9**9**9" cannot hang the parser
MAX_DEPTH = 100        # nesting of calls, powers and unary signs (flat sums and products are free)
MAX_BITS = 1 << 16     # bits of an exact number's numerator or denominator: bounds SymPy's work


def functions() -> dict:
    """Name -> callable for every function a spec expression may call (read at call time,
    so activations registered by the user are included)."""
    table = dict(_ELEMENTARY)
    table.update(ACTIVATIONS)
    table.update(LOSSES)            # mse(yhat, y); on matrices, the per-sample cost column
    table.update({"softmax": softmax, "hadamard": hadamard, "sumsq": sumsq, "layer_norm": layer_norm})
    for alias, name in _ALIASES.items():
        if name in ACTIVATIONS:
            table[alias] = ACTIVATIONS[name]
    return table


def parse_expr(text: str, names: Mapping[str, sp.Expr] | Iterable[str] | Graph | None = (), *,
               where: str = "expression") -> sp.Expr:
    """Parse expression text into a SymPy expression, by a whitelist, without evaluating it.

    ``names`` maps each allowed name to its SymPy object; a list of names
    (or a string "x y") makes plain Symbols; a :class:`Graph` offers
    every name it has so far.  Allowed: numbers, those names, ``pi``
    and ``E``, ``+ - * / **`` and unary ``-``/``+``, and calls of the
    registry's activations (sigmoid, tanh, relu, ...) and of exp, log,
    sqrt, sin, cos, tan, sinh, cosh, abs, Max, Min; on matrices also softmax,
    layer_norm, hadamard, sumsq and the losses, with the keyword arguments
    ``mask="causal"`` (softmax) and ``eps=number`` (layer_norm).  Anything else —
    attribute access, subscripts, strings, keywords, lambda, ``eval``,
    dunder names — raises :class:`SpecError`, which names the offending
    piece and its column; ``where`` says which expression it was in.
    """
    if isinstance(names, Graph):
        names = known_names(names)
    elif names is None:
        names = {}
    elif isinstance(names, str):
        names = {n: sp.Symbol(n) for n in names.replace(",", " ").split()}
    elif not isinstance(names, Mapping):
        names = {n: sp.Symbol(n) for n in names}
    if not isinstance(text, str):
        raise SpecError(f"{where}: expected expression text, got {type(text).__name__} {text!r}")
    if len(text) > MAX_TEXT:
        raise SpecError(f"{where}: expression longer than {MAX_TEXT} characters")
    if not text.strip():
        raise SpecError(f"{where}: empty expression")
    if "\n" in text.strip() or "\r" in text:
        raise SpecError(f"{where}: an expression must be on one line")
    tree = _ast(text.strip(), where)
    walker = _Walker(names, functions(), where, text.strip())
    try:
        result, _ = walker.visit(tree.body)
    except RecursionError:
        raise SpecError(f"{where}: expression too deeply nested") from None
    if not isinstance(result, sp.Expr):
        raise SpecError(f"{where}: {_short(text.strip())!r} is not a scalar expression")
    if result.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise SpecError(f"{where}: {_short(text.strip())!r} is undefined or infinite (e.g. log(0))")
    if result.has(sp.I):
        raise SpecError(f"{where}: {_short(text.strip())!r} is not real (it involves sqrt(-1))")
    return result


def _ast(text: str, where: str) -> ast.Expression:
    """Python's parse of one expression line, quietly, allowing long flat sums."""
    # The parser warns about things like "1 is 1" or "\\d"; the walk refuses those
    # with a proper message, so a warning on stderr would only be noise.
    # CPython builds the tree of "a+b+c+..." recursively, one level per operator, so
    # a flat sum of a few thousand terms needs more than the default recursion limit;
    # MAX_TEXT bounds how much more.  Real nesting is bounded by the parser itself
    # ("too many nested parentheses") and by MAX_DEPTH in the walk.
    limit = sys.getrecursionlimit()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sys.setrecursionlimit(max(limit, MAX_TEXT + 1_000))
            return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise SpecError(f"{where}: cannot parse {_short(text)!r}{col}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError(f"{where}: expression too deeply nested or malformed") from None
    finally:
        sys.setrecursionlimit(limit)


def number_problem(num) -> str | None:
    """Why the SymPy number `num` cannot be a float64 value, or None if it can."""
    if num in (sp.nan, sp.zoo) or num.is_infinite:
        return "is undefined or infinite"
    if not num.is_Rational:
        f = float(num)
        return None if math.isfinite(f) else "is too large for a float64 (above 1.8e308)"
    p, q = int(num.p), int(num.q)
    if max(p.bit_length(), q.bit_length()) > MAX_BITS:
        return f"has more than {MAX_BITS} bits"
    try:
        f = p / q      # exact int division, correctly rounded: overflow and underflow are real
    except OverflowError:
        return "is too large for a float64 (above 1.8e308)"
    if f == 0 and p != 0:
        return "is too small for a float64 (below 5e-324)"
    return None


def _bits(expr) -> int:
    """Bits of the largest exact number in `expr`'s coefficients (what a power multiplies)."""
    return max((max(int(c.p).bit_length(), int(c.q).bit_length()) for c in _coefficients(expr)
                if c.is_Rational), default=0)


def _coefficients(expr):
    """The numbers SymPy keeps in `expr`'s top level: the number itself, a product's
    coefficient, each term's coefficient of a sum (SymPy distributes 2*(x + y))."""
    for term in (expr.args if expr.is_Add else (expr,)):
        if term.is_Number:
            yield term
        elif term.is_Mul and term.args and term.args[0].is_Number:
            yield term.args[0]


def _shape(m) -> str:
    return "×".join(str(d) for d in m.shape)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Walker:
    """Builds SymPy objects from a whitelisted subset of Python's expression syntax.

    ``visit`` returns ``(expr, constant)``: ``constant`` says the piece has no
    names in it, so its value is checked (real, finite, float64-sized) as soon
    as it is built, before anything larger is built from it.
    """

    def __init__(self, names, funcs, where, text):
        self.names, self.funcs, self.where, self.text = names, funcs, where, text

    def fail(self, node, what: str):
        piece = _short(ast.get_source_segment(self.text, node) or type(node).__name__)
        col = getattr(node, "col_offset", None)
        at = f" (column {col + 1})" if col is not None else ""
        raise SpecError(f"{self.where}: {what} {piece!r}{at}")

    def visit(self, node, depth: int = 0):
        if depth > MAX_DEPTH:
            self.fail(node, f"expression nested more than {MAX_DEPTH} deep:")
        if isinstance(node, ast.Constant):
            return self.checked(node, self.constant(node), True)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node, depth)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.Attribute) and node.attr == "T":
            value, constant = self.visit(node.value, depth + 1)
            if not is_matrix(value):
                self.fail(node, "only a matrix has a transpose .T:")
            return value.T, constant
        what = _REFUSED.get(type(node), f"unsupported syntax ({type(node).__name__})")
        self.fail(node, f"{what} not allowed:")

    def checked(self, node, expr, constant: bool):
        """(expr, constant) once expr's numbers are known to be float64-sized reals."""
        if is_matrix(expr):          # its numbers were checked as its scalar pieces were built
            return expr, constant
        if constant and isinstance(expr, sp.Expr) and not expr.is_Number:
            self.check_value(node, expr)
        elif isinstance(expr, sp.Expr):
            for c in _coefficients(expr):
                problem = number_problem(c)
                if problem:
                    self.fail(node, f"a number that {problem} in")
        return expr, constant

    def check_value(self, node, expr):
        """A constant that is not a plain number (sqrt(2), log(-1), exp(800)): evaluate it."""
        if expr.has(sp.I):
            self.fail(node, "not a real number:")
        if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            self.fail(node, "undefined or infinite value:")
        try:
            # cheap: every argument was checked to be a float64-sized real before this
            value = expr.evalf(20)
        except (ValueError, TypeError, ArithmeticError, RecursionError):
            self.fail(node, "a constant that cannot be evaluated:")
        if value.has(sp.I):
            self.fail(node, "not a real number:")
        if value.is_Number:
            problem = number_problem(value)
            if problem:
                self.fail(node, f"a value that {problem}:")

    def constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(node, "only numbers are allowed as constants, not")
        if isinstance(v, float):
            if not math.isfinite(v):
                self.fail(node, "non-finite number")
            # Python reads 1e-400 as 0.0: a literal with a nonzero digit that became 0 underflowed
            literal = (ast.get_source_segment(self.text, node) or "").lower().split("e")[0]
            if v == 0.0 and any(c in "123456789" for c in literal):
                self.fail(node, "a number too small for a float64 (below 5e-324):")
            # the shortest repr of a float gives the decimal the user wrote: 0.1 -> 1/10, exactly
            return sp.Rational(repr(v))
        if v.bit_length() > MAX_BITS:
            self.fail(node, f"a number with more than {MAX_BITS} bits:")
        return sp.Integer(v)

    def name(self, node):
        n = node.id
        if n.startswith("__"):
            self.fail(node, "dunder names are not allowed:")
        if n in self.names:
            return self.names[n], False
        if n in _CONSTANTS:
            return _CONSTANTS[n], True
        if n in self.funcs:
            self.fail(node, "a function must be called with an argument:")
        known = ", ".join(sorted(self.names)) or "none declared"
        self.fail(node, f"unknown name (declared names: {known}):")

    def binop(self, node, depth):
        if not isinstance(node.op, _BINARY):
            hint = "; write powers as **" if isinstance(node.op, ast.BitXor) else ""
            self.fail(node, f"operator {type(node.op).__name__} not allowed{hint}:")
        if isinstance(node.op, ast.Pow):
            return self.power(node, depth)
        if isinstance(node.op, ast.MatMult):
            return self.matmul(node, depth)
        # "a+b-c+..." is a left-nested chain in Python's tree, one level per operator:
        # walk it in a loop, so a long flat sum (or product) costs no depth and is
        # built with one Add (Mul) rather than one per term.
        additive = isinstance(node.op, (ast.Add, ast.Sub))
        group, op = ((ast.Add, ast.Sub), sp.Add) if additive else ((ast.Mult, ast.Div), sp.Mul)
        chain = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, group):
            chain.append(node)
            node = node.left
        first, constant = self.visit(node, depth + 1)
        terms = [first]
        running = first if first.is_Number else None    # the exact number so far, while there is one
        for link in reversed(chain):
            right, const_right = self.visit(link.right, depth + 1)
            if isinstance(link.op, ast.Div):
                if right == 0:
                    self.fail(link, "division by zero in")
                right = sp.Pow(right, -1)
            elif isinstance(link.op, ast.Sub):
                right = -right
            terms.append(right)
            constant = constant and const_right
            # a running number is checked at each step, so "1e308*10*..." stops at its first piece
            running = op(running, right) if running is not None and right.is_Number else None
            if running is not None:
                self.checked(link, running, True)
        try:
            value = op(*terms)
        except (TypeError, ValueError) as exc:      # SymPy's ShapeError: matrices of other shapes
            shapes = [_shape(t) for t in terms if is_matrix(t)]
            self.fail(chain[0], f"terms of shapes {', '.join(shapes)} do not fit together in" if shapes
                      else f"the terms do not fit ({exc}) in")
        return self.checked(chain[0], value, constant)

    def matmul(self, node, depth):
        left, const_left = self.visit(node.left, depth + 1)
        right, const_right = self.visit(node.right, depth + 1)
        if not (is_matrix(left) and is_matrix(right)):
            self.fail(node, "@ multiplies matrices; for numbers write *:")
        if left.shape[1] != right.shape[0]:
            self.fail(node, f"shapes do not fit ({_shape(left)} @ {_shape(right)}) in")
        return left @ right, const_left and const_right

    def power(self, node, depth):
        base, const_base = self.visit(node.left, depth + 1)
        exp, const_exp = self.visit(node.right, depth + 1)
        if exp.is_Number:
            if abs(exp) > MAX_EXPONENT:
                self.fail(node, f"exponent larger than {MAX_EXPONENT} in")
            # SymPy computes a number's power (and a product's coefficient's) exactly:
            # refuse before it starts when the result would be too long to be a float64
            if _bits(base) * abs(float(exp)) > MAX_BITS:
                self.fail(node, "a number too large for a float64 in")
            if base == 0 and exp < 0:
                self.fail(node, "division by zero in")
        return self.checked(node, sp.Pow(base, exp), const_base and const_exp)

    def unary(self, node, depth):
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            value, constant = self.visit(node.operand, depth + 1)
            return (-value if isinstance(node.op, ast.USub) else value), constant
        self.fail(node, f"operator {type(node.op).__name__} not allowed:")

    def call(self, node, depth):
        if not isinstance(node.func, ast.Name):
            self.fail(node.func, "only plain function names may be called, not")
        fname = node.func.id
        if fname.startswith("__") or fname not in self.funcs:
            allowed = ", ".join(sorted(self.funcs))
            self.fail(node.func, f"unknown or forbidden function (allowed: {allowed}):")
        kwargs = {kw.arg: self.keyword(fname, kw, depth) for kw in node.keywords}
        if not node.args:
            self.fail(node, "a function needs an argument:")
        visited = [self.visit(a, depth + 1) for a in node.args]
        args = [a for a, _ in visited]
        try:
            result = self.funcs[fname](*args, **kwargs)
        except (TypeError, ValueError, DefinitionError) as exc:
            self.fail(node, f"bad call ({exc}):")
        return self.checked(node, result, all(c for _, c in visited))


    def keyword(self, fname, kw, depth):
        """The value of a whitelisted keyword argument (softmax's mask="causal", layer_norm's eps=...)."""
        allowed = _KEYWORDS.get(fname, {})
        if kw.arg is None or kw.arg not in allowed:
            names = ", ".join(f"{k}=" for k in allowed)
            self.fail(kw.value if kw.arg is None else kw, f"{fname} takes no such keyword argument"
                      + (f" (it takes {names})" if names else "") + ":")
        choices = allowed[kw.arg]
        if choices is not None:        # a word from a fixed set: the only strings text may hold
            if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
                    and kw.value.value in choices):
                self.fail(kw.value, f"{kw.arg}= takes one of {', '.join(map(repr, sorted(choices)))}, not")
            return kw.value.value
        value, constant = self.visit(kw.value, depth + 1)
        if not (constant and value.is_Number and value > 0):
            self.fail(kw.value, f"{kw.arg}= takes a positive number, not")
        return value


def user_expr(value, names: Mapping[str, sp.Expr] | Iterable[str] = (), *, where: str = "value") -> sp.Basic:
    """A value a user handed to the library, as a SymPy object, never evaluated as code.

    Text is parsed by :func:`parse_expr` (SymPy's own ``sympify`` of a string
    runs it through ``eval``); SymPy objects pass unchanged; anything else
    (Python and NumPy numbers) goes through ``sympify(strict=True)``, which
    accepts numbers only.  Raises :class:`SpecError` otherwise.
    """
    if isinstance(value, str):
        return parse_expr(value, names, where=where)
    if isinstance(value, sp.Basic):
        return value
    try:
        return sp.sympify(value, strict=True)
    except (sp.SympifyError, TypeError, ValueError):
        raise SpecError(f"{where}: expected a number or a SymPy expression, "
                        f"got {type(value).__name__} {_short(repr(value))}") from None


def parse_values(text: str) -> dict:
    """'x=3, w1=0.1, y=1' -> {'x': 3, 'w1': 1/10, 'y': 1} as exact SymPy numbers.

    Each value is a number, optionally signed (parsed, not evaluated).
    """
    out = {}
    for item in (p.strip() for p in str(text).split(",")):
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise SpecError(f"--values: expected name=number, got {item!r}")
        if name in out:
            raise SpecError(f"--values: {name} is given twice")
        if value.strip().lstrip("+-").lower() in ("nan", "inf", "infinity"):
            raise SpecError(f"--values: the value of {name} must be a finite number, got {value.strip()!r}")
        num = parse_expr(value, {}, where=f"--values: value of {name}")
        if not num.is_Number:
            raise SpecError(f"--values: the value of {name} must be a number, got {value.strip()!r}")
        out[name] = num
    if not out:
        raise SpecError("--values: no values given (expected e.g. 'x=3,w1=0.1,y=1')")
    return out


def known_names(g: Graph) -> dict:
    """Names usable in the next expression: everything declared or defined so far
    (and ``ones``, the column of ones, in a matrix graph: m×1, or T×1 when one sample is T rows)."""
    known = {n: g.symbol(n) for n in g.order}
    # rows are samples: the m×1 column; one sample of T rows (no "m" in the inputs' shapes,
    # all T rows): the T×1 column, so "H @ W + ones @ b" adds b to each row
    rows = g.layout.ones_rows()
    if rows is not None and "ones" not in known:
        known["ones"] = ones(rows)
    return known


TEXT_PARSER.append(user_expr)   # definitions given as text (sb.loss_function) are parsed here
