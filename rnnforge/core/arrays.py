"""``NamedArrays``: a model's inputs when it has several, one numpy array per input name.

Indexing by a name gives that input's array; by anything else (a slice, an index array) gives
the same rows of every array, as indexing one array does, so code that takes ``x[:n]`` or
``x[keep]`` works on either form. Keras and tf.data take it as the dict it is.

    x = NamedArrays(series=values, past_day_type=codes)
    x["series"].shape, x[:16]["past_day_type"].shape    # (n, 56, 1), (16, 56)
"""

from __future__ import annotations


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
