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
there. Reading it is the run-dir reader's (``rnnforge.core.run_files.read_eval_set``: the meta
record's schema, the arrays' ``.npy`` headers and sizes before any is read, the arrays against
the ONNX model); this module writes it. Only numpy is imported here.

    from rnnforge.export.eval_set import load_eval_set
    eval_set = load_eval_set(Path("runs/sketch/eval.npz"), task="sketch")
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rnnforge.core import fileio
from rnnforge.core.arrays import count, example_bytes
from rnnforge.core.run_files import (  # noqa: F401  (EvalSet, input_records, check_codes: this module's names too)
    EVAL_FORMAT,
    MULTI_PREFIX,
    EvalSet,
    OnnxFile,
    check_codes,
    input_records,
    read_eval_set,
)
from rnnforge.export.settings import DEFAULT_EVAL_BYTES, DEFAULT_EVAL_EXAMPLES

FORMAT = EVAL_FORMAT


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
    path: Path,
    task: str,
    source_run: str | None = None,
    models: Sequence[OnnxFile] = (),
    codes: Mapping[str, str] | None = None,
    labels: str | None = None,
) -> EvalSet:
    """Read ``path`` and check it belongs to ``task`` and, when given, to the model exported from
    ``source_run``, and that its inputs fit each of ``models`` (``run_files.read_eval_set``).

    Every refusal is one line naming the file; a missing file says to re-export.
    """
    return read_eval_set(path, task, source_run, models=models, codes=codes, labels=labels)
