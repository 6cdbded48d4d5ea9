"""``RUN_DIR/eval.npz``: the evaluation examples that travel with an exported model.

``rnnforge export onnx`` reads the dataset once and writes, compressed, the evaluation split's
inputs ``x`` (capped at ``--eval-examples``), their labels ``y``, TensorFlow's outputs on them
(``reference``, the task's first output) and a JSON ``meta`` record (task, source run, split,
counts, the input's name/dtype/shape, the data info the scores need, the versions that wrote it).
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
from rnnforge.core.errors import UserError
from rnnforge.export.settings import DEFAULT_EVAL_BYTES, DEFAULT_EVAL_EXAMPLES

FORMAT = 1
KEYS = ("x", "y", "reference", "meta")


@dataclass(frozen=True)
class EvalSet:
    """``x`` ``[n, ...]`` model inputs, ``y`` ``[n, ...]`` labels, ``reference`` ``[n, ...]`` TensorFlow's
    outputs on ``x``, and ``meta`` (see the module docstring)."""

    x: np.ndarray
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
    per_example = x[0].nbytes if len(x) else 1
    return max(1, min(DEFAULT_EVAL_EXAMPLES, DEFAULT_EVAL_BYTES // max(1, per_example)))


def select(n: int, cap: int) -> np.ndarray:
    """Indices of at most ``cap`` of ``n`` examples, evenly spaced (a split sorted by class keeps
    every class), in order."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def write_eval_set(path: Path, eval_set: EvalSet) -> int:
    """Write ``eval_set`` to ``path`` (compressed, atomically); returns the file's size in bytes."""
    meta = json.dumps({"format": FORMAT, **eval_set.meta})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=eval_set.x, y=eval_set.y, reference=eval_set.reference, meta=np.array(meta))
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
            missing = [k for k in KEYS if k not in data.files]
            if missing:
                raise UserError(f"{path} has no {', '.join(missing)}: not an rnnforge eval set; {_re_export(path)}")
            arrays = {k: data[k] for k in KEYS}
        meta = json.loads(str(arrays["meta"]))
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path} is not a readable eval set (truncated or corrupt?): {message}; {_re_export(path)}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("info"), dict):
        raise UserError(f"{path}: unknown eval set format; {_re_export(path)}")
    return EvalSet(arrays["x"], arrays["y"], arrays["reference"], meta)


def _check_arrays(path: Path, eval_set: EvalSet, input_dtype: str | None, input_shape) -> None:
    x, meta = eval_set.x, eval_set.meta
    declared = meta.get("input", {})
    if str(x.dtype) != declared.get("dtype") or list(x.shape[1:]) != declared.get("shape", [])[1:]:
        raise UserError(
            f"{path}: x is {x.dtype} {list(x.shape)}, but its record says {declared.get('dtype')} "
            f"{declared.get('shape')}; {_re_export(path)}"
        )
    if not len(x) or len(eval_set.y) != len(x) or len(eval_set.reference) != len(x):
        raise UserError(
            f"{path}: {len(x)} inputs, {len(eval_set.y)} labels and {len(eval_set.reference)} reference outputs "
            f"(expected the same number, at least 1); {_re_export(path)}"
        )
    if input_dtype is not None and str(x.dtype) != input_dtype:
        raise UserError(f"{path}: inputs are {x.dtype}, but the model takes {input_dtype}; {_re_export(path)}")
    if input_shape is not None:
        fixed = [(i, d) for i, d in enumerate(input_shape) if isinstance(d, int) and i > 0]
        if len(input_shape) != x.ndim or any(x.shape[i] != d for i, d in fixed):
            model = "[" + ", ".join(map(str, input_shape)) + "]"
            raise UserError(
                f"{path}: inputs of shape {list(x.shape)} do not fit the model's input {model}; {_re_export(path)}"
            )


def _re_export(path: Path) -> str:
    return f"re-run 'rnnforge export onnx {path.parent}'"
