"""``symback demo``: the whole pipeline on built-in examples, with no files needed.

The lecture notes' one-weight worked example (seed 004) is derived, its
numbers printed and its derivation written; then a small MLP is derived,
written, and trained on generated data with the NumPy code generated
from its formulas.
"""
from __future__ import annotations

import time
from pathlib import Path

from .errors import OutputError
from .files import atomic_write

__all__ = ["demo", "SEED004_SPEC"]

# Seed 004's worked example, embedded so `symback demo` needs no files.
SEED004_SPEC = """
inputs  = ["x"]
targets = ["y"]
params  = ["w1"]

[nodes]
yhat = "identity(w1*x)"

[loss]
cost = "(yhat - y)**2"

[example]
values = { x = 3, w1 = 0.1, y = 1 }
lr     = 1
"""


#: the files demo() writes into its folder (a .pdf beside each .tex when pdflatex runs)
DEMO_FILES = ("seed004.tex", "seed004.pdf", "mlp.tex", "mlp.pdf")


def demo(outdir: Path, dataset: str = "moons", seed: int = 0, no_pdf: str | None = None) -> list[Path]:
    """Run the demo, printing what it does, and return the files written into `outdir`.

    ``dataset`` is "moons" or "xor"; ``no_pdf`` is why no PDF is made
    (None: a PDF beside each .tex).
    """
    import sympy as sp

    import symback as sb
    from .datasets import two_moons, xor
    from .printing.text import text_number
    from .spec import spec_from_dict, tomllib
    from .train import accuracy, epoch_losses

    start = time.perf_counter()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pdf = no_pdf is None
    written = []

    print("1. Seed 004's worked example: yhat = w1 x, C = (yhat - y)^2, x = 3, w1 = 0.1, y = 1, lr = 1")
    spec = spec_from_dict(tomllib.loads(SEED004_SPEC), "seed 004")
    d = sb.derive(spec.graph)
    ev = d.evaluate(spec.values)
    grad = ev["gradient"]["w1"]
    path = " * ".join(f"d{f.of}/d{f.wrt}" for f in d.chain("w1")[0])
    print(f"   dC/dw1 = {path} = {sp.sstr(d.gradient('w1'))}")
    print(f"   C = {text_number(ev['forward']['C'])}, dC/dw1 = {text_number(grad)}, "
          f"w1 <- {text_number(spec.values['w1'])} - {text_number(spec.lr)} * ({text_number(grad)}) "
          f"= {text_number(spec.values['w1'] - spec.lr * grad)}")
    title = "A one-weight linear neuron with squared error: one gradient step, worked out"
    written += _write_docs(d, outdir / Path(DEMO_FILES[0]).stem, pdf, values=spec.values, lr=spec.lr, title=title)

    sizes = [2, 16, 16, 1]
    print(f"2. An MLP {'-'.join(map(str, sizes))}, tanh hidden layers, sigmoid output, binary cross-entropy")
    net = sb.mlp(sizes, activation="tanh", output="sigmoid", loss="binary_cross_entropy")
    d2 = sb.derive(net)
    print(f"   dL/dZ{len(sizes) - 1} = {sp.sstr(d2.delta(f'Z{len(sizes) - 1}', form='chain'))}   "
          "(sigmoid + binary cross-entropy: prediction - target, over the batch)")
    written += _write_docs(d2, outdir / Path(DEMO_FILES[2]).stem, pdf, title="A two-hidden-layer MLP")

    make = two_moons if dataset == "moons" else xor
    X, Y = make(n=500, seed=seed)
    Xtr, Ytr, Xte, Yte = X[:400], Y[:400], X[400:], Y[400:]
    model = sb.compile(d2)
    params = model.init(seed=seed)
    t0 = time.perf_counter()
    history = model.fit(Xtr, Ytr, params, epochs=150, lr=0.01, batch_size=32, seed=seed,
                        optimizer="adam")
    seconds = time.perf_counter() - t0
    losses = epoch_losses(history)
    train_acc = accuracy(d2, model, Xtr, Ytr, params)
    test_acc = accuracy(d2, model, Xte, Yte, params)
    print(f"3. Trained on {len(Xtr)} points of {dataset} (generated with NumPy), "
          f"150 epochs of Adam in {seconds:.1f} s, with NumPy code generated from these formulas")
    print(f"   loss {losses[0]:.4f} -> {losses[-1]:.4f}; accuracy: training {train_acc:.3f}, "
          f"held-out {test_acc:.3f} ({len(Xte)} points)")
    print("Files:")
    for f in written:
        print(f"   {f}")
    if not pdf:
        print(f"   (no .pdf: {no_pdf})")
    print(f"Done in {time.perf_counter() - start:.1f} s.  Next: symback derive --help")
    return written


def _write_docs(d, stem: Path, pdf: bool, **options) -> list[Path]:
    """Write stem.tex (and stem.pdf from the same text); a failing TeX run is reported, not fatal."""
    from .render import compile_pdf

    tex = d.latex(**options)
    paths = [stem.with_suffix(".tex")]
    atomic_write(paths[0], tex.encode())
    if pdf:
        try:
            data = compile_pdf(tex)
        except OutputError as exc:
            print(f"   (no {stem.name}.pdf: {' '.join(str(exc).split())[:200]})")
        else:
            paths.append(stem.with_suffix(".pdf"))
            atomic_write(paths[-1], data)
    return paths
