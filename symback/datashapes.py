"""The shapes data may take on the way into a Model, and the errors that say which.

:class:`DataShapes` is the part of :class:`symback.model.Model` that reads X, Y and G: rows
(n, d) of a matrix graph, one sample's matrices (n, rows, columns), images (n, C, H, W) as in
PyTorch, a lone sample without its batch axis; and, for what fits none of them, one
DataError that names the shapes the network takes (and, for class labels where one-hot rows
are wanted, how to encode them).
"""
from __future__ import annotations

import numpy as np

from .data import sample_shape
from .errors import DataError
from .targets import check_rows

__all__ = ["DataShapes"]


class DataShapes:
    """Data checks of a Model: needs its ``dtype``, ``n_inputs``, ``n_targets``, ``n_outputs``,
    ``_sample`` (one sample's shape of X, Y and G, or None), ``_image``, ``_host`` and ``_min_rows``
    (the fewest samples a batch may have: 2 under batch statistics)."""

    def _matrix(self, a, width: int, what: str, unit: str, params=None) -> np.ndarray:
        # params: where the data will meet them (a backend places converted data beside them)
        if self._sample.get(what) is not None:
            return self._samples(a, what)
        # Fast path first: step() is called in tight loops.
        if not (type(a) is np.ndarray and a.dtype == self.dtype and a.ndim == 2):
            a = _as_array(a, self.dtype, what)
            if a.ndim == 1 and width > 1 and a.size != width:   # not one sample: n labels, say
                raise DataError(f"{what} has shape {a.shape}, read as one sample of {a.size} values, but the "
                                f"network has {width} {unit}: give {what} of shape (n, {width})"
                                + self._labels_hint(a, what))
            if a.ndim == 1:
                a = a.reshape(-1, 1) if width == 1 else a.reshape(1, -1)
            if a.ndim != 2:
                flat = " (its axes after the first in a row: .reshape(len(X), -1))" \
                    if a.ndim > 2 and a[0].size == width else ""    # a sequence (n, T, d) for an RNN's x_1…x_T
                raise DataError(f"{what} must be a 2-D array (samples in rows), got shape {a.shape}: "
                                f"give {what} of shape (n, {width}){flat}")
        if a.shape[1] != width:
            raise DataError(f"{what} has {a.shape[1]} columns but the network has {width} {unit}"
                            + self._labels_hint(a, what))
        return a

    def _labels_hint(self, a, what: str) -> str:
        """For targets that look like class labels (one whole number 0..K−1 a sample) where the
        network takes K > 1 target columns: how to give them (the command line one-hot encodes them;
        a Model takes the targets its formulas hold for).  Called only on the way to an error."""
        K = self._forms("Y")[0][-1]
        try:
            v = np.asarray(self._host(a))
        except (TypeError, ValueError, RuntimeError):
            return ""
        if not (what == "Y" and K > 1 and v.size and v.size == len(v) and v.dtype.kind in "biuf"
                and np.all((v == np.round(v)) & (v >= 0) & (v < K))):
            return ""
        return f" (class labels? one-hot encode them: Y = np.eye({K})[labels], shape (n, {K}))"

    def _sample_shape(self, shape: tuple, what: str) -> tuple:
        """The shape (n, rows, columns) that data of this shape take as a one-sample graph's
        samples (a reshape, a view), or the shape itself where no form applies."""
        return sample_shape(shape, tuple(self._sample[what]), self._image if what == "X" else None)

    def _samples(self, a, what: str) -> np.ndarray:
        """Data of a one-sample graph: (n, rows, columns), or one sample (rows, columns)."""
        want = tuple(self._sample[what])
        if not (type(a) is np.ndarray and a.dtype == self.dtype):
            a = _as_array(a, self.dtype, what)
        if (shape := self._sample_shape(a.shape, what)) != a.shape:
            a = a.reshape(shape)
        if a.shape[1:] != want:
            raise self._shape_error(a.shape, what, a)
        return a

    def _shape_error(self, shape, what: str, a=None) -> DataError:
        """The DataError for data of a shape the network does not take, naming the forms it does."""
        forms = self._forms(what)
        sample = (f"an image {tuple(self._image)}" if what == "X" and self._image is not None else
                  str(tuple(self._sample[what])) if self._sample.get(what) is not None else f"a row of {forms[0][0]}")
        return DataError(f"{what} has shape {tuple(shape)}, but one sample of the network is {sample}: give {what} "
                         "of shape " + " or ".join("(n, " + ", ".join(map(str, f)) + ")" for f in forms)
                         + (self._labels_hint(a, what) if a is not None else ""))

    def _forms(self, what: str) -> list:
        """The shapes after the batch axis that data `what` may have: images (C, H, W) as in
        PyTorch, a one-row sample's row alone (k), one sample (rows, columns), or a row."""
        want = self._sample.get(what)
        if want is None:
            return [((self.n_inputs,), (self.n_targets,), (self.n_outputs,))["XYG".index(what)]]
        forms = [tuple(self._image)] if what == "X" and self._image is not None else []
        return forms + ([(want[1],)] if want[0] == 1 else []) + [tuple(want)]

    def check_input(self, X) -> None:
        """DataError unless X's shape is one the network takes (the layer forms of torch's module
        and JAX's function check X with it before the library sees it)."""
        alone = self._check_form(X, "X")
        check_rows(1 if alone else np.shape(X)[0], self._min_rows)

    def _check_form(self, a, what: str) -> bool:
        """DataError unless data `what` (X, or Y where the torch module's loss takes it) have a
        shape the network takes: a batch in one of _forms, or one sample (one image, one row);
        returns whether it is one sample without its batch axis."""
        shape, sample = tuple(np.shape(a)), self._sample[what]
        if sample is not None:
            alone = shape in (tuple(sample), tuple(self._image or ()) if what == "X" else None,
                              tuple(sample[1:]) if sample[0] == 1 else None)
        else:                                       # a 1-D array: a column, or one row
            alone = len(shape) == 1 and shape[0] in (1, self._forms(what)[0][0])
        if not (alone or (len(shape) > 1 and shape[1:] in self._forms(what))):
            raise self._shape_error(shape, what, a)
        return alone

    def _x(self, X, params=None) -> np.ndarray:
        X = self._matrix(X, self.n_inputs, "X", "inputs", params)
        if X.shape[0] == 0:
            raise DataError("X has no rows")
        check_rows(X.shape[0], self._min_rows)
        return X

    def _xy(self, X, Y, params=None):
        X, given = self._x(X, params), Y
        Y = self._matrix(Y, self.n_targets, "Y", "targets", params)
        if Y.shape[0] != X.shape[0]:
            raise self._rows_error(X, Y, given)
        self._check_targets(Y)
        return X, Y

    def _rows_error(self, X, Y, given) -> DataError:
        """The DataError for X and Y of different numbers of samples (Y as `given`: K labels of K
        classes, say, are read as one sample)."""
        return DataError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}"
                         + (self._labels_hint(given, "Y") if np.ndim(given) == 1 else ""))


def _as_array(a, dtype, what) -> np.ndarray:
    """a as a NumPy array of `dtype`; DataError for anything but real numbers (complex values
    would lose their imaginary part, strings be parsed as numbers, objects be anything)."""
    try:
        raw = np.asarray(a)
    except (TypeError, ValueError, RuntimeError) as exc:     # (torch: a tensor that needs grad)
        raise DataError(f"{what} is not numeric array data: {exc}") from None
    if raw.dtype.kind not in "biuf":
        raise DataError(f"{what} is not numeric array data: it holds {raw.dtype} values, not real numbers")
    return raw.astype(dtype, copy=False)
