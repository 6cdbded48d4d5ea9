"""``rnnforge.serving``: serve an exported run the way ``rnnforge bench load --slo-p99-ms`` chose.

``load(run_dir)`` reads ``RUN_DIR/bench/serving.json`` (the variant, provider, intra-op threads,
instances, max batch and queue delay the search recommended; without it: fp32, one instance,
batch 1, or the ``settings`` you pass) and opens that many ONNX Runtime sessions behind a dynamic
batcher (``rnnforge.export.load.Batcher``: one thread per session, ORT's ``run`` releases the GIL).
A ``Service`` is thread-safe: call ``predict`` from every request handler at once, and concurrent
requests are batched together.

Pre-processing is what the model's metadata declares: inputs by name (one example each, no batch
axis; a single-input model also takes the bare array), cast to the declared dtype, shape-checked;
a sketch drawing longer than ``max_len`` rows keeps its first ``max_len`` rows and a shorter one is
left-padded with zero rows, as in training. Post-processing: every output by its name, one
example's rows, and for a classifier ``label`` (the most probable of the metadata's class names)
and ``class_names``.

    from rnnforge import serving
    service = serving.load("runs/sketch")
    service.predict({"strokes": drawing})  # {"probabilities": [...], "label": "circle", "class_names": [...]}

Needs only numpy, onnx, onnxruntime and jsonschema (a serving install); every file it reads from the
run dir is checked first (``rnnforge.core.run_files``).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rnnforge.core.arrays import NamedArrays
from rnnforge.core.errors import UserError, first_line
from rnnforge.core.run_dir import RunDir

__all__ = ["Service", "load"]

#: Settings without a serving.json: one request at a time on the fp32 model.
DEFAULT_SETTINGS = {
    "variant": "fp32",
    "provider": "cpu",
    "threads": None,
    "instances": 1,
    "max_batch": 1,
    "queue_delay_ms": 0.0,
}


def load(run_dir, settings: Mapping | None = None) -> Service:
    """A ready ``Service`` for ``run_dir``: configured from ``bench/serving.json`` unless
    ``settings`` (keys of ``DEFAULT_SETTINGS``) are given; without either, the defaults."""
    from rnnforge.export.load_run import load_serving_json

    run = RunDir(Path(run_dir))
    record = None
    if settings is None and (run.bench / "serving.json").is_file():
        record = load_serving_json(run.bench / "serving.json")
        settings = record["settings"]
    chosen = {**DEFAULT_SETTINGS, **(settings or {})}
    unknown = sorted(set(chosen) - set(DEFAULT_SETTINGS))
    if unknown:
        raise UserError(f"serving settings: unknown key {unknown[0]!r}; expected some of {', '.join(DEFAULT_SETTINGS)}")
    return Service(run, chosen, record)


class Service:
    """An exported model served by a dynamic batcher: ``predict(inputs)`` (blocking) or
    ``submit(inputs)`` (a ``concurrent.futures.Future``); ``close()`` when done (or ``with``)."""

    def __init__(self, run: RunDir, settings: dict, record: dict | None = None):
        from rnnforge.export.bench import checked_export
        from rnnforge.export.capacity import Config
        from rnnforge.export.load import Batcher
        from rnnforge.export.load_run import OrtEngines
        from rnnforge.export.settings import available_cores, variant_path

        config = run.load_config(_tasks(), require_model=False)
        self.run, self.record = run, record
        self.task = config["task"]
        path = variant_path(run.onnx, settings["variant"])
        if not path.is_file():
            raise UserError(
                f"{path} does not exist: export it ('rnnforge export onnx {run.path}') or serve another variant"
            )
        model = checked_export(path, self.task, config["info"])  # its metadata checked (core.run_files)
        self.inputs = {i.name: i for i in model.inputs}
        self.output_names = [o.name for o in model.outputs]
        self.info = model.values.get("rnnforge.info", {})
        self.class_names = model.values.get("rnnforge.class_names")
        self.settings = {**settings, "threads": settings["threads"] or available_cores()}
        self.config = Config(**self.settings)
        shapes = {n: tuple(d if isinstance(d, int) else 1 for d in i.dims[1:]) for n, i in self.inputs.items()}
        engines = OrtEngines({self.config.variant: path}, shapes, run.bench)
        self._batcher = Batcher(engines.open(self.config), self.config.max_batch, self.config.queue_delay_ms / 1e3)

    def preprocess(self, inputs) -> dict[str, np.ndarray]:
        """One example's inputs, by name, as the model takes them (batch axis of 1 added)."""
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise UserError(
                    f"this {self.task} model takes {len(self.inputs)} named inputs: {', '.join(self.inputs)}"
                )
            inputs = {next(iter(self.inputs)): inputs}
        missing = [n for n in self.inputs if n not in inputs]
        extra = [n for n in inputs if n not in self.inputs]
        if missing or extra:
            raise UserError(
                f"inputs: expected {', '.join(self.inputs)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
        out = {}
        for name, declared in self.inputs.items():
            try:
                value = np.asarray(inputs[name], dtype=declared.dtype)
            except (TypeError, ValueError) as exc:
                raise UserError(f"input {name!r}: not {declared.dtype} numbers ({exc})") from None
            if declared.dtype.startswith("float") and not np.isfinite(value).all():
                raise UserError(f"input {name!r}: holds NaN or infinity")
            dims, given = declared.dims[1:], list(value.shape)
            if declared.dynamic_time and value.ndim == len(dims) and self.info.get("max_len"):
                value = pad_or_crop(value, int(self.info["max_len"]))
            fixed = [(i, d) for i, d in enumerate(dims) if isinstance(d, int)]
            if value.ndim != len(dims) or any(value.shape[i] != d for i, d in fixed):
                want = "[" + ", ".join(str(d) for d in dims) + "]"
                raise UserError(f"input {name!r}: shape {given}, the model takes one example of {want}")
            out[name] = value[None]
        return out

    def postprocess(self, outputs: list[np.ndarray]) -> dict:
        """Outputs by name; a classifier's ``label`` and ``class_names`` too."""
        result = {name: np.asarray(value) for name, value in zip(self.output_names, outputs)}
        first = result[self.output_names[0]]
        if self.class_names and first.ndim == 1 and len(first) == len(self.class_names):
            result["label"] = self.class_names[int(np.argmax(first))]
            result["class_names"] = list(self.class_names)
        return result

    def submit(self, inputs) -> concurrent.futures.Future:
        """Queue one example; the future gives ``predict``'s answer."""
        from rnnforge.export.engines import invalid_argument
        from rnnforge.export.load import Request, clock

        future: concurrent.futures.Future = concurrent.futures.Future()
        features = NamedArrays(self.preprocess(inputs))
        if len(features) == 1 and not _multi(self.inputs):
            features = next(iter(features.values()))

        def done(outputs, timing) -> None:
            if isinstance(outputs, BaseException):
                if invalid_argument(outputs):  # a feed the model does not take: the caller's input
                    outputs = UserError(f"ONNX Runtime refused the inputs: {first_line(outputs)}")
                future.set_exception(outputs)
            else:
                future.set_result(self.postprocess(outputs))

        now = clock()
        self._batcher.submit([Request(features, now, now, done)])
        return future

    def predict(self, inputs, timeout: float | None = None) -> dict:
        """One example in, its outputs out (see the module docstring); thread-safe."""
        return self.submit(inputs).result(timeout)

    def close(self) -> None:
        self._batcher.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pad_or_crop(rows: np.ndarray, max_len: int) -> np.ndarray:
    """A sequence ``[n, features]`` as training fed it: its first ``max_len`` rows, left-padded
    with zero rows to ``max_len``."""
    rows = rows[:max_len]
    out = np.zeros((max_len, *rows.shape[1:]), dtype=rows.dtype)
    if len(rows):
        out[max_len - len(rows) :] = rows
    return out


def _multi(inputs: dict) -> bool:
    return len(inputs) > 1


def _tasks():
    from rnnforge.models import TASKS

    return TASKS
