"""Derivation documents: the Jinja environment, rendering, and writing files.

The content of a document is prepared by :mod:`symback.document`, every
formula already printed; the templates in the top-level ``templates/``
folder only arrange it.  The Jinja environment uses LaTeX-safe
delimiters (``\\VAR{...}``, ``\\BLOCK{...}``, ``%#`` line comments) and
escapes by default: anything reaching the output that is not a
:class:`~symback.printing.Tex` string (prepared LaTeX) is escaped, so a
title or name can never run TeX commands.

:func:`render` returns the text; :func:`write` writes ``.tex``, ``.md``
or ``.pdf`` (through ``latexmk`` or ``pdflatex``), whole or not at all.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2
import sympy as sp
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from .document import context, plain
from .document.certificate import certify
from .errors import OutputError
from .files import atomic_write, os_reason
from .printing import Tex, latex_escape, markdown_escape, number
from .engine import CONSUMERS

__all__ = ["render", "write", "compile_pdf", "latex_escape", "markdown_escape", "Tex",
           "template_names"]

FORMATS = {"latex": ".tex.j2", "markdown": ".md.j2"}
PDF_TIMEOUT = 240
MAX_OUTPUT = 10_000_000   # characters a template may produce, or build in one string or list


# ---------------------------------------------------------------- a bounded sandbox
MAX_ITERATIONS = 10_000_000   # loop iterations a render may run, all loops together
MAX_INT_BITS = 100_000        # bits of an integer a template may compute


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join, so a loop cannot double a string forever."""

    def visit_Concat(self, node, frame):
        self.write("environment.bounded(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox (no attribute beginning with _, no unsafe callables), and no way for
    a template to ask for more than MAX_OUTPUT characters or items at once: sizes given
    to ``*``, ``**`` and to calls (``'x'.center(n)``, ``lipsum(n)``) are checked before
    Python allocates, and joined strings after."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+"])
    iterations = 0

    def _parse(self, source, name, filename):
        # every for loop's iterable goes through the _counted filter: nested loops that print
        # nothing (so no output size stops them) count against MAX_ITERATIONS too
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(jinja2.nodes.For):
            loop.iter = jinja2.nodes.Filter(loop.iter, "_counted", [], [], None, None, lineno=loop.lineno)
        return tree

    def counted(self, iterable):
        """The items of `iterable`, each counted against the render's MAX_ITERATIONS."""
        for item in iterable:
            self.iterations += 1
            if self.iterations > MAX_ITERATIONS:
                raise SecurityError(f"the template's loops ran more than {MAX_ITERATIONS:,} times")
            yield item

    def bounded(self, value):
        """value, unless it is a string or sequence longer than MAX_OUTPUT."""
        if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_OUTPUT:
            raise SecurityError(f"the template built something longer than {MAX_OUTPUT:,}")
        return value

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
                    raise SecurityError(f"the template asked for a repetition longer than {MAX_OUTPUT:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) \
                and abs(right) * max(abs(left), 2).bit_length() > 10_000:
            raise SecurityError("the template asked for a power too large to compute")
        ints = isinstance(left, int) and isinstance(right, int)
        if ints and operator == "*" and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise SecurityError("the template asked for a product too large to compute")
        if operator == "+" and not ints and isinstance(left, (str, list, tuple)) \
                and isinstance(right, (str, list, tuple)) and len(left) + len(right) > MAX_OUTPUT:
            raise SecurityError(f"the template built something longer than {MAX_OUTPUT:,}")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        """Call from the template, refusing sizes (int arguments, widths in a format string)
        above MAX_OUTPUT."""
        _check_sizes(args, kwargs)
        # '{:0999999999}'.format(1): the sandbox wraps str.format (the wrapper's __wrapped__)
        method = getattr(__obj, "__wrapped__", __obj)
        if isinstance(getattr(method, "__self__", None), str):
            _check_format(method.__self__)
        return __self.bounded(super().call(__context, __obj, *args, **kwargs))


def _check_sizes(args, kwargs):
    for v in (*args, *kwargs.values()):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_OUTPUT:
            raise SecurityError(f"the template passed {v}, more than the {MAX_OUTPUT:,} allowed")


def _check_format(spec: str) -> None:
    """Refuse a format string whose width or precision exceeds MAX_OUTPUT ('%0999999999d')."""
    if any(int(n) > MAX_OUTPUT for n in re.findall(r"\d{8,}", spec)):
        raise SecurityError(f"the template's format string asks for more than {MAX_OUTPUT:,} characters")


def _bounded_filter(f):
    """A built-in filter whose int arguments (widths, counts) are checked first."""
    @functools.wraps(f)     # keeps Jinja's pass_context/pass_environment marks
    def filter_(*args, **kwargs):
        _check_sizes(args[1:], kwargs)
        return f(*args, **kwargs)
    return filter_


class _TemplateLoader(jinja2.FileSystemLoader):
    """Jinja's file loader, for templates only: a name must end in ``.j2``, and the file,
    symlinks resolved, must lie inside the folder it was found in — so a template cannot
    ``include`` a user's other files, or a file a symlink points to outside the folder."""

    def __init__(self, searchpath, top: str = ""):
        super().__init__(searchpath)
        self.top = top          # the template asked for by name or path: any suffix

    def get_source(self, environment, template):
        if not template.endswith(".j2") and template != self.top:
            raise jinja2.TemplateNotFound(f"{template} (only *.j2 templates can be included)")
        source, filename, uptodate = super().get_source(environment, template)
        real = Path(filename).resolve()
        if not any(real.is_relative_to(Path(folder).resolve()) for folder in self.searchpath):
            raise jinja2.TemplateNotFound(f"{template} (a link out of the templates' folder)")
        return source, filename, uptodate


def _plain(value):
    """The template's view of a context value: str (Tex kept), numbers, None, lists, dicts.

    Templates get plain data, never live objects: a Derivation or a SymPy
    object would let a template call methods that write files or compute
    without bound (``derivation.write(...)``, ``x.evalf(10**9)``).
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, sp.Integer):
        return int(value)
    if isinstance(value, sp.Number):
        try:
            return float(value)         # nan and oo too: the template's number() prints them
        except TypeError:
            return Tex(number(value))
    return str(getattr(value, "__name__", value))     # a SymPy function class prints as its name

# ---------------------------------------------------------------- templates
def _builtin_dir() -> Path:
    """The built-in templates: top-level templates/ in a checkout, symback/templates in a wheel."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "article.tex.j2").is_file():
        return checkout
    # In a wheel they are installed as symback/templates (a namespace package, whose
    # resources.files() is a MultiplexedPath that str() does not turn into a path).
    return Path(__file__).resolve().parent / "templates"


def template_names() -> list[str]:
    """The names of the built-in templates ('article', 'beamer', 'markdown', 'snippet')."""
    return sorted({p.name.split(".")[0] for p in _builtin_dir().glob("*.j2") if not p.name.startswith("_")})


def _environment(fmt: str, dirs: tuple[str, ...], top: str = "") -> jinja2.Environment:
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

    env = _BoundedSandbox(
        block_start_string=r"\BLOCK{", block_end_string="}",
        variable_start_string=r"\VAR{", variable_end_string="}",
        comment_start_string=r"\#{", comment_end_string="}",
        line_comment_prefix="%#", trim_blocks=True, lstrip_blocks=True,
        autoescape=False, undefined=jinja2.StrictUndefined, finalize=finalize,
        keep_trailing_newline=True,
        loader=_TemplateLoader(list(dirs) + [str(_builtin_dir())], top))
    env.filters = {k: _bounded_filter(f) for k, f in env.filters.items()}
    env.filters["_counted"] = env.counted
    plain_format = env.filters["format"]
    env.filters["format"] = lambda spec, *a, **k: (_check_format(str(spec)), plain_format(spec, *a, **k))[1]
    env.filters["latex_escape"] = latex_escape
    env.filters["markdown_escape"] = markdown_escape
    env.filters["escape_text"] = escape
    env.filters["number"] = lambda v: Tex(number(v))
    # "element-wise ($\odot$)" -> "element-wise": no math inside \text{} of a Markdown formula
    env.filters["striptex"] = lambda v: Tex(re.sub(r"\s*\(\$.*?\$\)", "", str(v)))
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
        if path.is_file():
            dirs.insert(0, str(path.resolve().parent))
        elif path.name != text or not (_builtin_dir() / text).is_file():   # a built-in's file name
            raise OutputError(f"template file {text!r} not found; built-in ones: {', '.join(template_names())}")
        name = path.name
    else:
        if fmt == "markdown" and text == "article":
            text = "markdown"       # the markdown version of the full document
        name = text + FORMATS[fmt]
    env = _environment(fmt, tuple(dirs), name)
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound:
        names = sorted({p.name.split(".")[0] for p in _builtin_dir().glob("*" + FORMATS[fmt])
                        if not p.name.startswith("_")} | ({"article"} if fmt == "markdown" else set()))
        raise OutputError(f"no {fmt} template {text!r}; built-in {fmt} ones: {', '.join(names)}"
                          + (f"; also searched {template_dir}" if template_dir else "")) from None
    except jinja2.TemplateSyntaxError as exc:
        raise OutputError(f"template {name!r} line {exc.lineno}: {exc.message}") from None
    except UnicodeDecodeError:
        raise OutputError(f"template {text!r} is not a UTF-8 text file") from None
    except OSError as exc:
        raise OutputError(f"cannot read template {text!r}: {os_reason(exc)}") from None
    except (RecursionError, MemoryError):
        raise OutputError(f"template {text!r} is too deeply nested or too large to compile") from None


def render(derivation, template: str = "article", fmt: str = "latex", **options) -> str:
    """Render `derivation` with a template: a built-in name or a path to a ``*.j2`` file.

    ``fmt`` is "latex" or "markdown".  Options: ``title``, ``author``,
    ``param`` (the parameter whose path the figure highlights and the
    vanishing-gradient bound follows), ``values`` (name -> number, for
    the worked example and the verification table), ``lr`` (learning
    rate of the worked update), ``seed`` (random verification values),
    ``figure``, ``example``, ``vanishing``, ``verify``, ``cost`` (False
    leaves a section out), ``display`` (snippet: one ``$$`` block for a
    notebook), ``template_dir`` (a folder searched before the built-ins),
    ``notation`` ("matrix", "lecture" or "nielsen"), ``steps`` ("brief" or
    "full": a scalar graph's every rule named; a matrix graph's δ lines labelled by
    case, nothing more) and ``steps_taken`` (iterates θ⁰ → θ¹ → … of
    the worked example, with ``values`` and ``lr``).
    """
    template_dir = options.pop("template_dir", None)
    tpl = _template(template, fmt, template_dir)
    # templates get plain data: no live objects, and the SymPy expressions behind the formulas stay behind
    full = context(derivation, fmt=fmt, **options)
    certify(derivation, full)       # every displayed equation checked first: a false one is a bug, never written
    ctx = _plain(plain({k: v for k, v in full.items() if k != "derivation"}))
    try:
        parts, size = [], 0
        for piece in tpl.generate(**ctx):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the output is longer than {MAX_OUTPUT:,} characters")
            parts.append(piece)
    except RecursionError:
        raise OutputError(f"template {tpl.name!r} failed: it recurses too deeply") from None
    except MemoryError:
        raise OutputError(f"template {tpl.name!r} failed: out of memory") from None
    except Exception as exc:   # noqa: BLE001 - a user's template can raise anything Python can
        what = "" if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: "
        raise OutputError(f"template {tpl.name!r} failed: {what}{' '.join(str(exc).split())}") from None
    # the %# comment lines at a template's top leave blank lines behind
    return "".join(parts).lstrip("\n")


# ---------------------------------------------------------------- writing
def write(derivation, path, **options) -> Path:
    """Write the derivation to `path`: ``.tex``, ``.md`` or ``.pdf`` by suffix.

    The file is written whole or not at all; one already at `path` is replaced (the call
    names it; the command line refuses without ``--overwrite``).  A ``.pdf`` is compiled in a
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
            if b"\\documentclass" not in data:     # the snippet: equations to \input elsewhere
                raise OutputError(f"cannot write {path.name!r}: template {options.get('template', 'article')!r} "
                                  f"makes equations to \\input into your own document, not a whole one; "
                                  f"write it as .tex, or use article or beamer for a .pdf")
            data = compile_pdf(data.decode())
    else:
        raise OutputError(f"cannot write {path.name!r}: use a .tex, .md or .pdf suffix")
    atomic_write(path, data)
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

CONSUMERS.update(render=render, write=write)   # what Derivation.latex/markdown/write call
