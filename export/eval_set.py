"""``RUN_DIR/eval.npz``: the evaluation examples that travel with an exported model.

``rnnforge export onnx`` reads the dataset once and writes, compressed, the evaluation split's
inputs ``x`` (capped at ``--eval-examples``), their labels ``y``, TensorFlow's outputs on them
(``reference``, the task's first output) and a JSON ``meta`` record (task, source run, split,
counts, the input's name/dtype/shape, the data info the scores need, the versions that wrote it).
A model with several inputs (the forecaster with covariates) stores each as ``x.<input name>``
and their records as ``meta["inputs"]``; ``x`` is then a dict keyed by input name, and the
helpers of ``rnnforge.core.arrays`` (``count``, ``rows``, ``feeds``...) treat both forms alike. An integer input of
category codes records its code list (``codes``); codes outside it are refused.
``rnnforge bench`` scores every engine on ``x``/``y`` and measures agreement against ``reference``:
it needs neither the dataset nor TensorFlow, so a run dir copied to an inference machine benches
there. Only numpy is imported here.

    from rnnforge.export.eval_set import load_eval_set
    eval_set = load_eval_set(Path("runs/sketch/eval.npz"), task="sketch")
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnforge.core import fileio
from rnnforge.core.arrays import Inputs, NamedArrays, count, example_bytes, first
from rnnforge.core.errors import UserError, first_line
from rnnforge.export.settings import DEFAULT_EVAL_BYTES, DEFAULT_EVAL_EXAMPLES

FORMAT = 1
KEYS = ("y", "reference", "meta")  # besides the inputs: ``x``, or one ``x.<name>`` per input
MULTI_PREFIX = "x."


def input_records(meta: dict) -> list[dict]:
    """The stored inputs' records (name, dtype, shape, codes): ``meta["inputs"]``, or ``[meta["input"]]``."""
    return list(meta.get("inputs") or [meta.get("input", {})])


@dataclass(frozen=True)
class EvalSet:
    """``x`` ``[n, ...]`` model inputs, ``y`` ``[n, ...]`` labels, ``reference`` ``[n, ...]`` TensorFlow's
    outputs on ``x``, and ``meta`` (see the module docstring)."""

    x: Inputs
    y: np.ndarray
    reference: np.ndarray
    meta: dict

    @property
    def split(self) -> str:
        return self.meta["split"]

    @property
    def info(self) -> dict:
        return self.meta["info"]


def default_cap(x: np.ndarray) -> int:
    """How many of ``x``'s examples are stored by default: ``DEFAULT_EVAL_EXAMPLES``, fewer when
    their inputs would pass ``DEFAULT_EVAL_BYTES`` (341 video clips of 16 x 64 x 64 x 3 bytes)."""
    per_example = example_bytes(x) if count(x) else 1
    return max(1, min(DEFAULT_EVAL_EXAMPLES, DEFAULT_EVAL_BYTES // max(1, per_example)))


def write_eval_set(path: Path, eval_set: EvalSet) -> int:
    """Write ``eval_set`` to ``path`` (compressed, atomically); returns the file's size in bytes."""
    meta = json.dumps({"format": FORMAT, **eval_set.meta})
    buffer = io.BytesIO()
    x = eval_set.x
    inputs = {f"{MULTI_PREFIX}{name}": a for name, a in x.items()} if isinstance(x, dict) else {"x": x}
    np.savez_compressed(buffer, **inputs, y=eval_set.y, reference=eval_set.reference, meta=np.array(meta))
    fileio.write_bytes(path, buffer.getvalue())
    return len(buffer.getvalue())


def load_eval_set(
    path: Path, task: str, source_run: str | None = None, input_dtype: str | None = None, input_shape=None
) -> EvalSet:
    """Read ``path`` and check it belongs to ``task`` and, when given, to the model exported from
    ``source_run`` whose input is ``input_dtype`` (e.g. ``"float32"``) of ``input_shape`` (ints
    fixed, anything else free).

    Every refusal is one line naming the file; a missing file says to re-export.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path} is missing: this run was exported before bench read its evaluation data from the run "
            f"dir; re-run 'rnnforge export onnx {path.parent}'"
        )
    eval_set = _read(path)
    meta = eval_set.meta
    if meta.get("task") != task:
        raise UserError(f"{path} holds {meta.get('task')!r} examples, but the run is {task!r}: {_re_export(path)}")
    if source_run is not None and meta.get("source_run") != source_run:
        raise UserError(
            f"{path} was written for the run exported from {meta.get('source_run')}, but the model comes from "
            f"{source_run}: {_re_export(path)}"
        )
    _check_arrays(path, eval_set, input_dtype, input_shape)
    return eval_set


def _read(path: Path) -> EvalSet:
    try:
        with np.load(path, allow_pickle=False) as data:
            multi = [k for k in data.files if k.startswith(MULTI_PREFIX)]
            missing = [k for k in (*KEYS, *([] if multi else ["x"])) if k not in data.files]
            if missing:
                raise UserError(f"{path} has no {', '.join(missing)}: not an rnnforge eval set; {_re_export(path)}")
            arrays = {k: data[k] for k in KEYS}
            meta = json.loads(str(arrays["meta"]))
            if multi and isinstance(meta, dict):
                order = [r.get("name") for r in input_records(meta)]
                names = sorted(
                    (k[len(MULTI_PREFIX) :] for k in multi), key=lambda n: order.index(n) if n in order else 99
                )
                arrays["x"] = NamedArrays({name: data[MULTI_PREFIX + name] for name in names})
            elif not multi:
                arrays["x"] = data["x"]
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise UserError(
            f"{path} is not a readable eval set (truncated or corrupt?): {first_line(exc)}; {_re_export(path)}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("info"), dict):
        raise UserError(f"{path}: unknown eval set format; {_re_export(path)}")
    return EvalSet(arrays["x"], arrays["y"], arrays["reference"], meta)


def _check_arrays(path: Path, eval_set: EvalSet, input_dtype: str | None, input_shape) -> None:
    x, meta = eval_set.x, eval_set.meta
    arrays = x if isinstance(x, dict) else {None: x}
    records = input_records(meta)
    if len(records) != len(arrays):
        raise UserError(
            f"{path}: {len(arrays)} stored input(s), but its record lists {len(records)}; {_re_export(path)}"
        )
    for (name, a), declared in zip(arrays.items(), records):
        label = "x" if name is None else f"x.{name}"
        if (name is not None and declared.get("name") != name) or (
            str(a.dtype) != declared.get("dtype") or list(a.shape[1:]) != declared.get("shape", [])[1:]
        ):
            raise UserError(
                f"{path}: {label} is {a.dtype} {list(a.shape)}, but its record says {declared.get('dtype')} "
                f"{declared.get('shape')}; {_re_export(path)}"
            )
        check_codes(a, declared.get("codes"), f"{path}: {label}")
    n = count(x)
    if not n or len(eval_set.y) != n or len(eval_set.reference) != n or any(len(a) != n for a in arrays.values()):
        raise UserError(
            f"{path}: {n} inputs, {len(eval_set.y)} labels and {len(eval_set.reference)} reference outputs "
            f"(expected the same number, at least 1); {_re_export(path)}"
        )
    x = first(x)
    if input_dtype is not None and str(x.dtype) != input_dtype:
        raise UserError(f"{path}: inputs are {x.dtype}, but the model takes {input_dtype}; {_re_export(path)}")
    if input_shape is not None:
        fixed = [(i, d) for i, d in enumerate(input_shape) if isinstance(d, int) and i > 0]
        if len(input_shape) != x.ndim or any(x.shape[i] != d for i, d in fixed):
            model = "[" + ", ".join(map(str, input_shape)) + "]"
            raise UserError(
                f"{path}: inputs of shape {list(x.shape)} do not fit the model's input {model}; {_re_export(path)}"
            )


def check_codes(codes: np.ndarray, names: list | None, where: str) -> None:
    """Refuse category codes outside ``0..len(names) - 1`` (``names``: the input's code list)."""
    if names is None or not codes.size:
        return
    bad = (codes < 0) | (codes >= len(names))
    if bad.any():
        raise UserError(
            f"{where} holds code {int(codes[bad][0])}, outside the model's codes 0..{len(names) - 1} "
            f"({', '.join(f'{i} = {n}' for i, n in enumerate(names))})"
        )


def _re_export(path: Path) -> str:
    return f"re-run 'rnnforge export onnx {path.parent}'"
