"""A model's inputs, one array or several by name (``NamedArrays``), and the helpers that treat
both forms alike: ``count``, ``first``, ``rows``, ``feeds``, ``example_bytes``, ``concatenate``,
and ``select`` (evenly spaced examples). Only numpy is imported here.

Indexing a ``NamedArrays`` by a name gives that input's array; by anything else (a slice, an index array) gives
the same rows of every array, as indexing one array does, so code that takes ``x[:n]`` or
``x[keep]`` works on either form. Keras and tf.data take it as the dict it is.

    x = NamedArrays(series=values, past_day_type=codes)
    x["series"].shape, x[:16]["past_day_type"].shape    # (n, 56, 1), (16, 56)
"""

from __future__ import annotations

import numpy as np

from rnnforge.core.errors import UserError


class NamedArrays(dict):
    """Input name -> ``[n, ...]`` array, every array with the same ``n`` examples."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return super().__getitem__(key)
        return NamedArrays({name: array[key] for name, array in self.items()})

    @property
    def examples(self) -> int:
        """``n``: the number of examples (rows of each array)."""
        return len(next(iter(self.values()))) if self else 0


#: A model's inputs: one array ``[n, ...]``, or arrays ``[n, ...]`` keyed by input name
#: (``NamedArrays``, or a plain dict).
Inputs = np.ndarray | dict[str, np.ndarray]


def count(x: Inputs) -> int:
    """The number of examples in ``x``."""
    return len(first(x))


def first(x: Inputs) -> np.ndarray:
    """The (first) input array of ``x``."""
    return next(iter(x.values())) if isinstance(x, dict) else x


def rows(x: Inputs, index) -> Inputs:
    """``x[index]`` of every input (a slice or an index array), contiguous."""
    if isinstance(x, dict):
        return NamedArrays({name: np.ascontiguousarray(a[index]) for name, a in x.items()})
    return np.ascontiguousarray(x[index])


def feeds(x: Inputs, names) -> dict[str, np.ndarray]:
    """``x`` keyed by the model's input ``names`` (one array: the first name), contiguous."""
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        if missing:
            raise UserError(f"the model takes input {missing[0]!r}, which the stored examples lack ({', '.join(x)})")
        return {n: np.ascontiguousarray(x[n]) for n in names}
    return {names[0]: np.ascontiguousarray(x)}


def example_bytes(x: Inputs) -> int:
    """Bytes of one example's inputs (all of them)."""
    return sum(int(a[0].nbytes) for a in (x.values() if isinstance(x, dict) else [x]) if len(a))


def concatenate(parts: list) -> Inputs:
    """The examples of ``parts`` (each ``Inputs`` of one form), one after the other."""
    if parts and isinstance(parts[0], dict):
        return NamedArrays({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})
    return np.concatenate(parts)


def select(n: int, cap: int) -> np.ndarray:
    """Indices of at most ``cap`` of ``n`` examples, evenly spaced (a split sorted by class keeps
    every class), in order."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))
