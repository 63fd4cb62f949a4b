"""The one exception family symback raises for bad input."""


class SymbackError(Exception):
    """Base class of every error symback raises on purpose.

    Catch this one class to handle any mistake in a network definition,
    a spec file, data, or a request for output.
    """


class DefinitionError(SymbackError, ValueError):
    """A graph, layer or function definition is malformed."""


class SpecError(SymbackError, ValueError):
    """A spec file or expression text cannot be parsed or uses an unknown name."""


class DataError(SymbackError, ValueError):
    """Training data has the wrong shape or contains non-finite values."""


class TrainingError(SymbackError, FloatingPointError):
    """Training produced a non-finite loss."""


class OutputError(SymbackError, OSError):
    """A document or file cannot be produced (missing TeX engine, bad suffix...)."""


class UnusedParameterWarning(UserWarning):
    """A parameter does not affect the loss (its gradient is always 0)."""
