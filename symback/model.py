"""Model: a network's generated training code, with data checks, training, export and saving.

The model's numbers come only from code generated out of the derivation's formulas
(:mod:`symback.module`); :func:`symback.compile.compile` generates and loads that code once
per derivation, backend and dtype, and wraps it in a Model (or a backend's subclass).
"""
from __future__ import annotations

import builtins
import hashlib
import linecache
from pathlib import Path

import numpy as np

from .data import available_memory, check_finite, check_rate, check_seed, format_bytes
from .datashapes import DataShapes
from .errors import DataError, DefinitionError, SymbackError
from .files import atomic_write
from .targets import check_targets, min_rows, target_rules

__all__ = ["Model", "save_params", "load_params", "run_generated"]

_INF = float("inf")


def run_generated(source: str, digest: str, ns: dict) -> None:
    filename = f"<symback-generated-{digest}>"
    # linecache lets tracebacks and inspect.getsource show the generated lines
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    # The source is printed by codegen from SymPy formulas; the only user
    # text in it is names, which graph.check_name limits to identifiers.
    exec(builtins.compile(source, filename, "exec"), ns)


class Model(DataShapes):
    """A network's generated training code, with data checks around it.

    Parameters are a dict name -> ndarray of the model's dtype: a scalar
    graph's parameters are 0-d arrays (so that ``step`` and ``fit`` can
    update them in place), a matrix graph's have their declared shapes
    (``W1`` fan_in × fan_out, ``b1`` 1 × fan_out; an (n,) array is accepted
    for a 1 × n parameter and kept so).  Data have samples in rows: ``X``
    is n × d (a scalar graph's inputs are its columns, in order), ``Y`` is
    n × k (a 1-D array is taken as one column).
    """

    #: the printer's backend name (the code generator's library)
    backend = "numpy"

    def __init__(self, derivation, dtype: str, namespace: dict):
        self.derivation = derivation
        self.dtype = np.dtype(dtype)
        self._ns = namespace
        self.kind: str = namespace["KIND"]
        self.reduction: str = namespace["REDUCTION"]
        self.params: tuple = namespace["PARAMS"]
        self.n_inputs: int = namespace["N_INPUTS"]
        self.n_targets: int = namespace["N_TARGETS"]
        # (one row of X's shape, of Y's) after the samples: step's fast check compares tuples
        self._rows = ((self.n_inputs,), (self.n_targets,))
        # one sample's shape of X and Y for a one-sample graph (data (n, rows, columns)), else None
        self._sample = {"X": namespace.get("X_SAMPLE"), "Y": namespace.get("Y_SAMPLE"),
                        "G": namespace.get("Y_SAMPLE")}       # (vjp's G is shaped like Ŷ)
        # X as images (n, C, H, W) for a network that reads images, else None
        self._image = namespace.get("X_IMAGE")
        self.n_outputs: int = namespace["N_OUTPUTS"]
        self._stepped = None    # (the params dict, its arrays, its size) step last checked
        self._library = {"jax": "jax", "torch": "torch"}.get(getattr(self, "backend", ""), "numpy")
        # the printed functions themselves: the Model checks the data once, then calls them
        self._predict = namespace["_predict"]
        self._loss = namespace["_loss"]
        self._grad = namespace["_grad"]
        self._step = namespace["_apply_step"]
        # what the targets must satisfy for the formulas to hold (rows summing to 1, ...)
        self._target_rules = target_rules(derivation)
        self._min_rows = min_rows(derivation)       # (2 for batch statistics: BatchNorm)

    @property
    def source(self) -> str:
        """The generated Python source of this model (what ``export`` writes), VJP included."""
        ns = self._ns
        if "VJP_LAZY" not in ns:
            return ns["__source__"]
        if "__full_source__" not in ns:
            from .module import LAZY_VJP
            ns["__full_source__"] = ns["__source__"].replace(LAZY_VJP, self._vjp_text(), 1)
        return ns["__full_source__"]

    def _vjp_text(self) -> str:
        ns = self._ns
        if "__vjp_text__" not in ns:
            from .backends import printer
            from .module import vjp_text
            ns["__vjp_text__"] = vjp_text(self.derivation, printer(self.backend))
        return ns["__vjp_text__"]

    def _layer_ns(self) -> dict:
        """The namespace with the VJP functions, generated and loaded on first use."""
        ns = self._ns
        if ns.get("VJP_LAZY", False):
            from .backends import printer
            wrap = printer(self.backend).wrap
            text = self._vjp_text() + "".join(f"\n{f} = {wrap}({f})" for f in ("_vjp", "_vjp_forward",
                                                                           "_vjp_backward") if wrap)
            run_generated(text + "\nVJP_LAZY = False\n", hashlib.sha1(text.encode()).hexdigest()[:16], ns)
        return ns

    def adjoints(self, X, Y, params: dict) -> dict:
        """{node: ∂L/∂node} for the nodes whose adjoint the backward pass computes, at this batch:
        the hidden states h_t of a recurrent network, the activations A_l of a deep one (the
        gradient's flow through time and depth).  The function is generated on first use."""
        ns = self._ns
        if "_adjoints" not in ns:
            from .backends import printer
            from .module import adjoints_text
            text = adjoints_text(self.derivation, printer(self.backend))
            run_generated(text, hashlib.sha1(text.encode()).hexdigest()[:16], ns)
        params = self._pure(params, X)
        X, Y = self._xy(X, Y, params)
        return dict(self._run(ns["_adjoints"], X, Y, params))

    def adjoint_norms(self, X, Y, params: dict, nodes=None) -> dict:
        """{node: ‖∂L/∂node‖} (Frobenius norm over the batch) for `nodes` (default: every node
        :meth:`adjoints` reports), as floats."""
        deltas = self.adjoints(X, Y, params)
        unknown = [n for n in (nodes or ()) if n not in deltas]
        if unknown:
            raise SymbackError(f"no adjoint for {', '.join(map(repr, unknown))}; nodes with one: "
                               f"{', '.join(deltas)}")
        return {n: float(np.sqrt(np.sum(np.asarray(self._host(deltas[n]), dtype=np.float64) ** 2)))
                for n in (nodes or deltas)}

    def __repr__(self):
        return f"<Model {self.kind} params={list(self.params)} dtype={self.dtype.name}>"

    # -- data (the shapes: :class:`symback.datashapes.DataShapes`) -------------------------
    def _check_targets(self, Y) -> None:
        """DataError unless Y holds targets the formulas hold for (see :mod:`symback.targets`)."""
        if self._target_rules:
            try:
                host = np.asarray(self._host(Y))
            except (RuntimeError, NotImplementedError, TypeError):
                # values the library cannot read back: a meta tensor fails in the call itself;
                # a JAX tracer (m.grad inside the user's jax.jit) has no values to check
                return
            check_targets(host, self._target_rules)

    def _host(self, a):
        """An array as NumPy reads it (a backend's Model moves its own arrays to the host)."""
        return a

    def _run(self, fn, *args):
        try:
            return fn(*args)
        except (KeyError, ValueError) as exc:
            self._failed(exc, args[-2] if fn is self._step else args[-1])

    def _failed(self, exc, params):
        """Raise the DataError that says why generated code failed on these params and data."""
        if isinstance(exc, KeyError):
            raise DataError(f"params has no entry {exc.args[0]!r}; the model's parameters are "
                            f"{', '.join(self.params)}") from None
        self.check_params(params)
        raise DataError(f"the data do not fit the network: {exc}") from exc

    # -- the model ----------------------------------------------------------------
    def init(self, seed: int = 0) -> dict:
        """Fresh parameters in their declared shapes: Glorot weights (He before a ReLU-like
        activation) and zero biases for a matrix graph or layer network; small random 0-d
        arrays (N(0, 0.5²)) for a scalar graph.

        Raises DefinitionError, before allocating, when the parameters would
        not fit in this machine's available memory.
        """
        check_seed(seed)
        need = self.param_count() * self.dtype.itemsize
        free = available_memory()
        if free is not None and need > free:
            raise DefinitionError(f"the parameters would need {format_bytes(need)} "
                                  f"({self.param_count():.3g} numbers); this machine has "
                                  f"{format_bytes(free)} available")
        return self._ns["init"](seed)

    def param_count(self) -> int:
        """How many numbers the parameters hold (a sum of Python ints: never overflows)."""
        total = 0
        for shape in self._ns["SHAPES"].values():
            size = 1
            for n in shape:
                size *= int(n) if isinstance(n, (int, np.integer)) else 1   # None: a free size
            total += size
        return total

    def _pure(self, params, X=None):
        """The params of a pure call as the generated code takes them (NumPy's: as they are),
        checked first (names, shapes, real floating-point values)."""
        self.check_params(params)
        for k in self.params:       # another library's arrays would fail deep in the generated code
            lib = type(params[k]).__module__.split(".")[0].replace("jaxlib", "jax")
            if lib in ("torch", "jax") and lib != self._library:
                raise DataError(f"parameter {k!r} is a {type(params[k]).__module__}.{type(params[k]).__name__}; "
                                f"this model computes with {self._library}: convert it with np.asarray")
        return self._declared(params)

    def _declared(self, params: dict) -> dict:
        """params with a 1 × n parameter given as (n,) viewed as the row it is: a bias broadcasts
        either way, but a weight (inputs=1's W1) meets a matrix product, which reads (n,) as a
        column or refuses it."""
        shapes = self._ns["SHAPES"]
        rows = [k for k in self.params if len(shapes[k]) == 2 and len(np.shape(params[k])) == 1]
        return {**params, **{k: params[k].reshape(shapes[k]) for k in rows}} if rows else params

    def predict(self, X, params: dict) -> np.ndarray:
        """The network's output for the rows of X (n × outputs)."""
        params = self._pure(params, X)
        given = np.shape(X)
        out = self._run(self._predict, self._x(X, params), params)
        # one row a sample (a CNN's class scores) for X given as images or rows: (n, K), as
        # PyTorch's models return (X given as (n, 1, k) samples: (n, 1, K), the same form)
        return out.reshape(out.shape[0], -1) if self._ns["_rows_out"](given) else out

    def loss(self, X, Y, params: dict) -> float:
        """The batch loss L (mean, or sum, of the per-sample cost over the rows)."""
        params = self._pure(params, X)
        X, Y = self._xy(X, Y, params)
        return float(self._run(self._loss, X, Y, params))

    def grad(self, X, Y, params: dict) -> dict:
        """∂L/∂p for every parameter, as a dict shaped like ``params``."""
        given, params = params, self._pure(params, X)
        X, Y = self._xy(X, Y, params)
        _, grads = self._run(self._grad, X, Y, params)
        return self._shaped(grads, given)

    def value_and_grad(self, X, Y, params: dict) -> tuple[float, dict]:
        """(L, grads) from one forward and one backward pass."""
        given, params = params, self._pure(params, X)
        X, Y = self._xy(X, Y, params)
        value, grads = self._run(self._grad, X, Y, params)
        return float(value), self._shaped(grads, given)

    def vjp(self, X, params: dict, G):
        """(∂⟨G, Ŷ⟩/∂X, {name: ∂⟨G, Ŷ⟩/∂p}) for Ŷ = ``predict(X, params)`` and ⟨G, Ŷ⟩ = Σ G ⊙ Ŷ.

        The backward pass of the network used as a layer: G is the gradient
        that arrives at its output (n × outputs), the result what leaves
        towards X (shaped like X) and each parameter's gradient.  Derived by
        symback's engine like ``grad`` (see :mod:`symback.layer`).
        """
        ns = self._layer_ns()
        if ns["VJP_ERROR"]:
            raise SymbackError(f"this network cannot be used as a layer: {ns['VJP_ERROR']}")
        shapes, params = params, self._pure(params, X)
        given = np.shape(X)
        X = self._x(X, params)
        G = self._matrix(G, self.n_outputs, "G", "outputs", params)
        if G.shape[0] != X.shape[0]:
            raise DataError(f"X has {X.shape[0]} rows but G has {G.shape[0]}")
        dX, grads = self._run(ns["_vjp"], X, G, params)
        if self._image is not None and tuple(self._image) in (tuple(given[1:]), tuple(given)):
            dX = dX.reshape(-1, *self._image)   # images (n, C, H, W), or one, given: their δ as images
        return dX, self._shaped(grads, shapes)

    def _shaped(self, grads, params) -> dict:
        # a (1, n) parameter may be given as an (n,) array: its gradient comes back the same way
        out = {}
        for p, g in zip(self.params, grads):
            g = np.asarray(g, dtype=self.dtype)
            given = np.shape(params[p])
            out[p] = g.reshape(given) if g.shape != given and g.size == np.size(params[p]) else g
        return out

    def step(self, X, Y, params: dict, lr: float = 0.1) -> float:
        """One gradient-descent step p -= lr·∂L/∂p, in place; returns L before the step.  A bad
        rate or non-finite data are an error before any parameter changes (a NaN made them all NaN)."""
        if not (type(lr) is float and 0.0 <= lr < _INF):
            check_rate(lr, zero=True)
        # step() runs in training's tight loop: arrays already right are checked in one expression
        # (dtype objects of built-in types are singletons: `is` is exact, else the slow path decides)
        if not (type(X) is np.ndarray is type(Y) and X.dtype is self.dtype is Y.dtype
                and (xs := X.shape)[1:] == self._rows[0] and (ys := Y.shape)[1:] == self._rows[1]
                and xs[0] == ys[0] and xs[0] >= self._min_rows):
            X, Y = self._xy(X, Y)
        elif self._target_rules:
            self._check_targets(Y)
        check_finite(X, Y)
        self._check_step_params(params)
        try:
            return float(self._step_rows(X, Y, params, lr) if self._rowed else self._step(X, Y, params, lr))
        except (KeyError, ValueError) as exc:
            self._failed(exc, params)

    def _check_step_params(self, params) -> None:
        """check_params before a step changes anything (a bias given as a number was never
        updated; an integer array failed half-way, after other parameters had changed).  The
        tight loop's dict, holding the same arrays as last time, passes in one comparison."""
        arrays = list(map(params.get, self.params)) if isinstance(params, dict) else None
        last = self._stepped        # (ids compared; the arrays kept alive, so no id is reused)
        if last is not None and last[0] is params and len(params) == last[3] and list(map(id, arrays)) == last[1]:
            return
        self.check_params(params)
        self._check_updatable(params)
        self._stepped = (params, list(map(id, arrays)), arrays, len(params))
        self._rowed = self._declared(params) is not params

    #: whether the params of the last step held a 1 × n parameter as (n,) (see _declared)
    _rowed = False

    def _step_rows(self, X, Y, params: dict, lr):
        """The generated step with the 1 × n parameters given as (n,) seen as their rows: NumPy's
        and torch's views are written through in place; an immutable library's new arrays are put
        back into the dict in the shape given."""
        rows = self._declared(params)
        before = dict(rows)
        value = self._step(X, Y, rows, lr)
        for k, v in rows.items():
            if v is not before[k]:      # a new array: into the user's dict, in the shape given
                params[k] = v.reshape(np.shape(params[k])) if before[k] is not params[k] else v
        return value

    def _check_updatable(self, params) -> None:
        """DataError unless step can update params in place (NumPy: any checked params; a number
        is replaced in the dict)."""

    def fit(self, X, Y, params: dict, epochs: int = 20, lr: float = 0.1, batch_size: int | None = 32,
            seed: int = 0, optimizer="sgd", validation=None, progress: bool = False, **options):
        """Train `params` in place with shuffled mini-batches; returns the History.

        See :func:`symback.train.fit` for the options (optimizer ``"sgd"``,
        ``"momentum"`` or ``"adam"``, ``validation=(Xv, Yv)``, ``progress``).
        """
        from .train import fit
        return fit(self, X, Y, params, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                   optimizer=optimizer, validation=validation, progress=progress, **options)

    def _updates(self, params: dict, optimizer, lr: float):
        """How fit's batches update params here: in place (see :mod:`symback.updates`)."""
        from .updates import InPlace
        return InPlace(self, params, optimizer, lr)

    # -- parameters -----------------------------------------------------------------
    def check_params(self, params: dict) -> None:
        """Raise DataError unless params holds every parameter with the expected shape."""
        if not isinstance(params, dict):
            raise DataError(f"params must be a dict name -> array, got {type(params).__name__}")
        shapes = self._ns["SHAPES"]
        for p in self.params:
            if p not in params:
                raise DataError(f"params has no entry {p!r}; the model's parameters are {', '.join(self.params)}")
            v = params[p]
            dt = getattr(v, "dtype", None)
            if not (_floating(dt) if dt is not None else isinstance(v, (int, float, list, tuple))) \
                    or isinstance(v, bool):
                what = dt if dt is not None else type(v).__name__
                raise DataError(f"parameter {p!r} is not numeric array data: it holds {what} values, not "
                                "floating-point numbers (m.init() makes parameters of the model's dtype)")
            shape, want = tuple(np.shape(v)), tuple(shapes[p])
            if shape != want and not (len(want) == 2 and want[0] == 1 and shape == want[1:]):
                raise DataError(f"parameter {p!r} has shape {shape}, expected {tuple(shapes[p])}")
        if len(params) != len(self.params):
            # as torch's load_state_dict(strict=True): a misspelt or stale entry was silently unused
            extra = [k for k in params if k not in shapes]
            raise DataError(f"params has entries the model does not have: {', '.join(map(repr, extra))}; "
                            f"the model's parameters are {', '.join(self.params)}")

    def save(self, params: dict, path) -> Path:
        """Write params to an .npz file (whole or not at all; a file already at `path` is replaced:
        the call names it, where ``symback train`` refuses without --overwrite)."""
        self.check_params(params)
        shapes = self._ns["SHAPES"]         # each in its declared shape: a (1, n) row given as (n,) too
        return save_params({p: np.asarray(self._host(params[p])).reshape(shapes[p]) for p in self.params}, path)

    def load(self, path) -> dict:
        """Read params saved by :meth:`save`, checked against this model (real numbers, every
        parameter in its declared shape), in its dtype; DataError naming the file otherwise."""
        raw, shapes = load_params(path), self._ns["SHAPES"]
        params = {}
        for p in self.params:
            if p not in raw:
                raise DataError(f"{path}: no parameter {p!r}; the model's parameters are {', '.join(self.params)}")
            v, want = raw[p], tuple(shapes[p])
            if v.dtype.kind not in "fiu":       # bools, strings, dates, complex: not parameters
                raise DataError(f"{path}: parameter {p!r} holds {v.dtype} values, not real numbers")
            if v.shape != want and not (len(want) == 2 and want[0] == 1 and v.shape == want[1:]):
                raise DataError(f"{path}: parameter {p!r} has shape {v.shape}, the network's is {want}")
            params[p] = np.array(v, dtype=self.dtype).reshape(want)     # a (1, n) row given as (n,)
        return params

    def export(self, path) -> Path:
        """Write the generated source as a standalone module: NumPy only (JAX or torch too for
        those backends); ``python module.py`` checks its gradient by finite differences.  Written
        whole or not at all; a file already at `path` is replaced (the call names it)."""
        path = Path(path)
        if path.suffix != ".py":
            raise SymbackError(f"export writes a Python module: give a .py path, got {str(path)!r}")
        atomic_write(path, self.source.encode())
        return path


def _floating(dt) -> bool:
    """Whether an array's dtype (NumPy's, JAX's or torch's) is a real floating-point type."""
    if hasattr(dt, "is_floating_point"):            # a torch dtype
        return bool(dt.is_floating_point)
    try:
        return np.dtype(dt).kind == "f"
    except TypeError:
        return False


def save_params(params: dict, path) -> Path:
    """Save a dict name -> array as .npz (no pickle), whole or not at all."""
    import io
    path = Path(path)
    if path.suffix != ".npz":
        raise SymbackError(f"parameters are saved as .npz: give a .npz path, got {str(path)!r}")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in params.items()})
    atomic_write(path, buf.getvalue())
    return path


def load_params(path) -> dict:
    """Load a dict name -> array from .npz, without pickle (see :func:`symback.data.read_npz`)."""
    from .data import read_npz
    return read_npz(path, "parameters")
