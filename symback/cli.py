"""The ``symback`` command line: derive, train, codegen, demo.

Every mistake a user can make ends as one line on stderr,
``symback: error: <message>``, and a non-zero exit status (2 for bad
input, 1 when a file or tool could not be used); no traceback, and no
output file left behind, because every file is written whole or not at all.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .data import load_data, training_arrays
from .errors import CertificateError, OutputError, SymbackError, restore_interrupt
from .files import atomic_write, check_output, refuse_existing, refuse_overwrite, same_file
from .cli_options import (Parser, backend_option, fail, file_name, network_options, overwrite_option,
                          parse_layers, positive, seed_number)

__all__ = ["main", "build_parser", "parse_layers", "load_data"]

DOC_SUFFIXES = (".tex", ".md", ".pdf")

# ====================================================================== parsing
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``symback`` command."""
    parser = Parser(
        prog="symback",
        description="Symbolic backpropagation: derive the chain-rule formulas of a network, "
                    "render them as LaTeX or Markdown, and train with NumPy, JAX or PyTorch code "
                    "generated from them.",
        epilog="Errors are one line on stderr; exit status 2 for bad input, 1 when a file or "
               "tool could not be used.  Start with: symback demo")
    parser.add_argument("--version", action="version", version=f"symback {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    d = sub.add_parser("derive", help="derive and print (or write) the backpropagation formulas",
                       description="Derive dLoss/dparameter for every parameter and print the "
                                   "derivation (LaTeX by default) or write it to a file.",
                       epilog="examples: symback derive examples/seed002.toml -o seed002.pdf;  "
                              "symback derive --layers 784,128,64,10 --activation sigmoid "
                              "--output softmax --loss cross_entropy -o mlp.tex")
    network_options(d)
    d.add_argument("-o", "--out", type=file_name, metavar="FILE",
                   help="write .tex, .md or .pdf (by suffix; .pdf needs pdflatex) instead of printing")
    overwrite_option(d, "-o")
    d.add_argument("--format", choices=("latex", "markdown", "text"),
                   help="what to print without -o (default latex; text is a plain list of gradients)")
    d.add_argument("--template", type=file_name, metavar="NAME|FILE.j2",
                   help="LaTeX: article (default), snippet, beamer; Markdown (--format markdown or -o "
                        "*.md): markdown (default), article; or a path to your own *.j2")
    d.add_argument("--param", metavar="NAME", help="the parameter whose path is highlighted")
    d.add_argument("--values", metavar="x=3,w1=0.1,y=1",
                   help="numbers for every input, target and parameter: a worked example")
    d.add_argument("--lr", type=positive(float), metavar="RATE",
                   help="learning rate of the worked example's update step")
    d.add_argument("--title", help="document title")
    d.add_argument("--notation", choices=("matrix", "lecture", "nielsen"),
                   help="matrix (default: row-major, valid matrix products), lecture (the notes': J, "
                        "superscript layers a^(1) = X), nielsen (column vectors z = w a + b, BP1-BP4)")
    d.add_argument("--steps", choices=("brief", "full"),
                   help="full: a scalar graph's every step named by its rule, with inner derivatives and "
                        "vanishing terms; a matrix graph's (--layers, builder layers) delta recursion with each "
                        "line labelled by its case (output layer or not), the chain rule as in brief")
    d.add_argument("--steps-taken", type=positive(int), metavar="N",
                   help="with --values and --lr: N steps of gradient descent, theta^0 -> theta^1 -> ...")
    d.set_defaults(func=cmd_derive)

    t = sub.add_parser("train", help="train a network on a CSV or .npz file",
                       description="Train with code generated from the derived formulas (NumPy, or "
                                   "JAX or PyTorch with --backend).",
                       epilog="Data: a CSV file with a header row, or an .npz file holding arrays X "
                              "and Y.  A spec file's inputs and targets are read from the columns "
                              "of those names.  For a layer network the target columns are named "
                              "by --targets (default: the last column) and every other column is "
                              "an input.  With a softmax output of K classes a single target "
                              "column of integer class labels 0..K-1 is one-hot encoded.")
    network_options(t, with_data=True)
    t.add_argument("--data", type=file_name, metavar="FILE.csv|FILE.npz", help="training data (or give it positionally)")
    t.add_argument("--targets", metavar="COL[,COL...]",
                   help="target column names for a layer network (default: the last column)")
    t.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default="sgd", help="default sgd")
    t.add_argument("--lr", type=positive(float), default=0.1, metavar="RATE",
                   help="learning rate (default 0.1)")
    t.add_argument("--epochs", type=positive(int), default=20, metavar="N", help="default 20")
    t.add_argument("--batch-size", type=positive(int), default=32, metavar="N", help="default 32")
    t.add_argument("--seed", type=seed_number, default=0, help="initialisation and shuffling seed (default 0)")
    t.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="default float64")
    backend_option(t, "train with")
    t.add_argument("--out", type=file_name, default="params.npz", metavar="FILE.npz",
                   help="where to save the trained parameters (default params.npz)")
    t.add_argument("--resume", type=file_name, metavar="FILE.npz", help="start from parameters saved by a previous run "
                                                        "(--resume F --out F continues F in place)")
    overwrite_option(t, "--out or --plot")
    t.add_argument("--plot", type=file_name, metavar="FILE.png",
                   help="a PNG of the loss curve (and gradient norms); needs matplotlib")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with the running loss (needs tqdm; default: on when stderr is a terminal)")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("codegen", help="write a standalone training module (NumPy only, or --backend jax|torch)",
                       description="Write the generated forward, gradient and training-step "
                                   "functions as a Python module that needs only NumPy (or only the "
                                   "--backend library and NumPy).",
                       epilog="example: symback codegen --layers 2,8,1 --activation tanh -o net.py; "
                              "then: import net; params = net.init(0); grads = net.grad(X, Y, params)  "
                              "(a dict; net.value_and_grad(X, Y, params) gives (loss, grads))")
    network_options(c)
    c.add_argument("-o", "--out", type=file_name, required=True, metavar="FILE.py", help="the module to write")
    overwrite_option(c, "-o")
    c.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="default float64")
    backend_option(c, "write code for")
    c.set_defaults(func=cmd_codegen)

    m = sub.add_parser("demo", help="derive, render and train on built-in examples (no data needed)",
                       description="Derive seed 004's worked example and a small MLP, write their "
                                   "derivations (.tex, and .pdf when pdflatex is installed), train "
                                   "the MLP on generated data and print the results.")
    m.add_argument("--outdir", type=file_name, default=".", metavar="DIR", help="where to write the files (default .)")
    m.add_argument("--dataset", choices=("moons", "xor"), default="moons", help="default moons")
    m.add_argument("--no-pdf", action="store_true", help="write .tex only, even if pdflatex is there")
    m.add_argument("--seed", type=seed_number, default=0, help="data and initialisation seed (default 0)")
    overwrite_option(m, "the demo's files in --outdir")
    m.set_defaults(func=cmd_demo)
    return parser


# ====================================================================== network
def _derive(args):
    """(derivation, spec or None) of the positional spec file or the layer flags."""
    import symback as sb
    from .spec import read_spec

    layer_flags = [f for f in ("activation", "output", "loss", "reduction", "l2", "residual")
                   if getattr(args, f) is not None]
    if args.spec and args.layers:
        raise SymbackError("give either a spec file or --layers, not both")
    if args.spec:
        if layer_flags:
            raise SymbackError(f"--{layer_flags[0]} applies to --layers networks; "
                               "a spec file defines its own functions and loss")
        spec = read_spec(args.spec)
        return sb.derive(spec.graph), spec
    if not args.layers:
        raise SymbackError("no network: give a spec file (e.g. examples/seed002.toml) "
                           "or --layers, e.g. --layers 2,8,1")
    output = args.output or "identity"
    loss = args.loss or ("cross_entropy" if output == "softmax" else "mse")
    net = sb.mlp(args.layers, activation=args.activation or "sigmoid", output=output, loss=loss,
                 reduction=args.reduction or "mean", l2=args.l2 or 0.0, residual=bool(args.residual))
    return sb.derive(net), None


# ====================================================================== derive
def cmd_derive(args) -> int:
    """symback derive: print or write the derivation."""
    from .parse import parse_values

    out = Path(args.out) if args.out else None
    if out is not None:
        check_output(out, DOC_SUFFIXES, "-o")
        if args.format:
            wanted = {".tex": "latex", ".pdf": "latex", ".md": "markdown"}[out.suffix.lower()]
            if args.format != wanted:
                raise SymbackError(f"--format {args.format} does not match {out.name}; "
                                   "the suffix of -o chooses the format")
        refuse_overwrite(out, "-o", spec=args.spec, template=args.template)
        refuse_existing(out, "-o", args.overwrite)
    d, spec = _derive(args)
    values = parse_values(args.values) if args.values else (dict(spec.values) if spec else {})
    lr = args.lr if args.lr is not None else (spec.lr if spec else None)
    if values:
        _check_values(d, values)
    elif args.lr is not None:
        raise SymbackError("--lr is the learning rate of a worked example: give --values too")
    if args.param is not None:
        d._param(args.param)               # unknown name -> a clear error now
    if args.steps_taken is not None and (not values or lr is None):
        raise SymbackError("--steps-taken iterates the worked example: give --values and --lr too")
    from .document.steps import MAX_STEPS
    if args.steps_taken is not None and args.steps_taken > MAX_STEPS:
        raise SymbackError(f"--steps-taken is at most {MAX_STEPS}, got {args.steps_taken}")
    options = {k: v for k, v in (("param", args.param), ("values", values or None),
                                 ("lr", lr), ("title", args.title), ("notation", args.notation),
                                 ("steps", args.steps), ("steps_taken", args.steps_taken)) if v is not None}
    if args.template:
        options["template"] = args.template
    if out is not None:
        d.write(out, **options)
        print(f"wrote {out}")
        return 0
    fmt = args.format or "latex"
    if fmt == "text":
        if args.template:
            raise SymbackError("--template applies to latex and markdown output")
        from .printing.text import text_report
        sys.stdout.write(text_report(d, values, lr, steps_taken=args.steps_taken))
    elif fmt == "markdown":
        options.setdefault("template", "markdown")
        sys.stdout.write(d.markdown(**options))
    else:
        sys.stdout.write(d.latex(**options))
    return 0


def _check_values(d, values: dict):
    if not d.layout.worked_in_numbers:
        raise SymbackError("--values gives numbers to the symbols of a scalar graph (a spec file); "
                           "a matrix network's worked example is what `symback train` computes")
    g = d.graph
    known = g.input_names + g.target_names + g.param_names
    unknown = [k for k in values if k not in known]
    if unknown:
        raise SymbackError(f"--values: unknown name(s) {', '.join(unknown)}; "
                           f"the graph has {', '.join(known)}")
    missing = [k for k in known if k not in values]
    if missing:
        raise SymbackError(f"--values: missing {', '.join(missing)} (every input, target and "
                           "parameter needs a number)")


# ====================================================================== train
def cmd_train(args) -> int:
    """symback train: fit the network to the data and save the parameters."""
    import symback as sb
    from .train import accuracy, check_memory, fit_recorded, plot_history, resume_params

    out = Path(args.out)
    check_output(out, (".npz",), "--out")
    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        check_output(plot, (".png",), "--plot")
        if not _has("matplotlib"):
            raise OutputError("--plot needs matplotlib: pip install matplotlib")
    progress = args.progress
    if progress is None:
        progress = sys.stderr.isatty() and _has("tqdm")
    elif progress and not _has("tqdm"):
        raise OutputError("--progress needs tqdm: pip install tqdm")
    _split_train_files(args)
    in_place = bool(args.resume) and same_file(out, Path(args.resume))    # asked for by naming it twice
    for target, flag in ((out, "--out"), (plot, "--plot")):
        if target is not None:
            refuse_overwrite(target, flag, data=args.data, spec=args.spec)
            refuse_existing(target, flag, args.overwrite or (in_place and target is out))
    d, _ = _derive(args)
    X, Y = training_arrays(d, args.data, args.targets)
    what = f"--layers {','.join(map(str, args.layers))}" if args.layers else "the network"
    check_memory(d, args.optimizer, min(args.batch_size, len(X)), np.dtype(args.dtype).itemsize, what)
    model = sb.compile(d, dtype=args.dtype, backend=args.backend)
    params = resume_params(model, args.resume) if args.resume else model.init(seed=args.seed)
    start = time.perf_counter()     # gradient norms are recorded for the plot's second panel
    losses, norms, flow = fit_recorded(model, X, Y, params, norms=plot is not None, epochs=args.epochs, lr=args.lr,
                                 batch_size=args.batch_size, seed=args.seed, optimizer=args.optimizer,
                                 progress=progress)
    seconds = time.perf_counter() - start
    if plot is not None:        # first: a plot that cannot be written leaves the parameters' file as it was
        norms = {k: norms[k] for k in d.layout.plotted_norms(list(norms))}
        atomic_write(plot, plot_history(losses, norms, flow))
    model.save(params, out)
    spec = args.spec[0] if isinstance(args.spec, list) and args.spec else args.spec
    what = "-".join(map(str, args.layers)) + " network" if args.layers else \
        (f"the network of {Path(spec).name}" if spec else "the network")
    print(f"trained {what} ({', '.join(d.params)}) on {len(X)} samples: {args.epochs} epochs of {args.optimizer}, "
          f"lr {args.lr}, batch size {args.batch_size}, in {seconds:.2f} s")
    print(f"loss: first epoch {losses[0]:.6g}, final {losses[-1]:.6g}")
    acc = accuracy(d, model, X, Y, params)
    if acc is not None:
        print(f"training accuracy: {acc:.4f}")
    print(f"parameters saved to {out}")
    if plot is not None:
        print(f"loss curve saved to {plot}")
    return 0


def _split_train_files(args) -> None:
    """`symback train [SPEC.toml] [DATA.csv]`: tell the positional files apart by suffix."""
    specs, data, other = [], [], []
    for f in args.spec:
        suffix = Path(f).suffix.lower()
        (data if suffix in (".csv", ".npz", ".txt") else specs if suffix == ".toml" else other).append(f)
    if args.data:
        data.append(args.data)
    # Any other name is the spec, unless the network is already given (--layers or a .toml
    # file): then it can only be meant as data, and reading it says what is wrong with it.
    (data if args.layers or specs else specs).extend(other)
    if len(specs) > 1 or len(data) > 1:
        raise SymbackError(f"train takes one spec file and one data file, got {' '.join(specs + data)}")
    if not data:
        raise SymbackError("no training data: give a .csv or .npz file (or --data FILE)")
    args.spec, args.data = (specs[0] if specs else None), data[0]


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


# ====================================================================== codegen
def cmd_codegen(args) -> int:
    """symback codegen: write a standalone module that needs only NumPy (and the --backend library)."""
    from .backends import backend_module_source

    out = Path(args.out)
    check_output(out, (".py",), "-o")
    refuse_overwrite(out, "-o", spec=args.spec)
    refuse_existing(out, "-o", args.overwrite)
    d, _ = _derive(args)
    atomic_write(out, backend_module_source(d, args.backend, args.dtype).encode())
    lib = "NumPy-only" if args.backend == "numpy" else f"{args.backend} + NumPy"
    print(f"wrote {out}: {lib} functions init, predict, loss, grad and step for {d!r}")
    return 0


# ====================================================================== demo
def cmd_demo(args) -> int:
    """symback demo: the whole pipeline on built-in examples."""
    from .demo import DEMO_FILES, demo

    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"--outdir {outdir}: not a directory")
    no_pdf = "--no-pdf given" if args.no_pdf else \
        (None if shutil.which("pdflatex") else "pdflatex is not installed")
    for name in DEMO_FILES:
        refuse_existing(outdir / name, "--outdir:", args.overwrite)
    demo(outdir, dataset=args.dataset, seed=args.seed, no_pdf=no_pdf)
    return 0


# ====================================================================== helpers
def main(argv=None) -> int:
    """Run the ``symback`` command with `argv` (default: sys.argv[1:]); returns the exit status."""
    restore_interrupt()     # from here on Ctrl-C is a KeyboardInterrupt, answered below
    try:
        return _main(argv)
    except KeyboardInterrupt:
        fail("interrupted")
        return 130


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as the command's one line on stderr (no source path, no code line)."""
    print(f"symback: warning: {message}", file=sys.stderr if file is None else file)


def _main(argv) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:       # `train --epochs 3 data.csv`: a file after the options is still a file
            if getattr(args, "command", None) == "train" and not any(e.startswith("-") for e in extra):
                args.spec = list(args.spec) + extra
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:          # --help, --version, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not getattr(args, "func", None):
        fail("give a command: derive, train, codegen or demo (symback --help lists them)")
        return 2
    # warnings wait for the outcome: a run that fails says one line, the error (a warning
    # on the way there, such as an unused parameter, is not the news)
    held, shown = [], warnings.showwarning
    warnings.showwarning = lambda message, *rest, **kw: held.append(message)
    try:
        code = args.func(args)
        for message in held:
            _one_line_warning(message, None, None, None)
        return code
    except CertificateError as exc:     # symback's own line is false: a bug, not the user's input
        fail(f"the document was not written: a check of symback's own formulas failed, a bug in symback "
             f"(please report it with the command that gave it): {exc}")
        return 1
    except OutputError as exc:
        fail(exc)
        return 1
    except (SymbackError, ValueError) as exc:
        fail(exc)
        return 2
    except RecursionError:
        fail("the network is nested too deeply for SymPy's recursive algorithms (RecursionError); "
              "a layer network (--layers) handles depth better than a long scalar chain")
        return 1
    except MemoryError:
        fail("out of memory (MemoryError): the network or the data is too large for this machine")
        return 1
    except BrokenPipeError:            # `symback derive ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        fail(_os_message(exc))
        return 1
    except Exception as exc:           # a bug in symback: still one line, the traceback on request
        if os.environ.get("SYMBACK_TRACEBACK"):
            raise
        fail(f"internal error, a bug in symback ({type(exc).__name__}: {exc}); please report it with the "
             "command that gave it (SYMBACK_TRACEBACK=1 shows where it happened)")
        return 1
    finally:
        warnings.showwarning = shown


def _os_message(exc: OSError) -> str:
    if exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
