"""The run dir as a checked contract: one reader, and a declared schema for every file in it.

The run dir is what travels from the training machine to the serving machine, so whatever reads
it (``export onnx``, ``bench``, ``bench --all``, ``bench load``, ``bench compare``,
``rnnforge.serving``, a resumed ``train``) reads it through here and treats each file as input
from outside: a command loads and checks every file it will use before any work, and a file
that breaks its schema is one line naming the file and the field (a JSON pointer: ``/info/window``,
``metadata rnnforge.day_types/0``), exit 2 (``RunFileError``).

======================================  ======================================  ==========================
file                                    schema (``rnnforge/core/schemas/``)     read by
======================================  ======================================  ==========================
config.json                             ``config``, its ``info``: ``info``      export, bench, load, serving
metrics.json                            ``metrics``                             bench (the report)
parity.json, OTHER.parity.json          ``parity``                              bench (bench.json, report)
mlflow.json                             ``mlflow``                              train (resumed), export
eval.npz: ``meta``                      ``eval_meta``                           bench, bench load
eval.npz: ``x``/``x.<name>``, ``y``,    .npy headers: dtype, shape, size        bench, bench load
``reference``                           (memory bound) before reading; then
                                        against the ONNX model
model*.onnx: ``metadata_props``         ``onnx_metadata``                       bench, bench load, serving
bench/tf_timing.json                    ``tf_timing``                           bench (recorded TensorFlow)
bench/serving.json                      ``serving``                             serving, bench compare
bench/bench.json                        ``export/bench.schema.json``            bench load, bench compare
======================================  ======================================  ==========================

A schema requires what a reader reads and types every field it names; fields it does not name
are left as they are (a newer rnnforge may add some). What one file's schema cannot say, the
reader checks after it: a companion's scores in metrics.json, a recorded timing of another model,
eval.npz's arrays against its record and against the model (names, dtypes, shapes with their
symbolic axes, the model's category codes, finite floats).

Why JSON Schema, validated by ``jsonschema``: the project already declares ``bench.json`` that
way (``export/bench.schema.json``), so every file is declared alike; a schema is a
language-neutral file that ships inside the package (package data) and that anyone reading a
run dir with other tools can use; and one validator, the reference implementation of JSON Schema
2020-12 (``jsonschema``, with ``referencing`` for the shared ``info`` schema), gives each violation
with the path of its field, which is what a one-line refusal must name. It is imported only when
a file is checked, so ``rnnforge --help`` stays light.

    config = read_config(run.config, TASKS)
    model = read_onnx(run.onnx)
    eval_set = read_eval_set(run.eval_set, "sketch", models=[model], labels="classification")
"""

from __future__ import annotations

import functools
import json
import math
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnforge.core.arrays import Inputs, NamedArrays
from rnnforge.core.errors import UserError, first_line

SCHEMAS = Path(__file__).with_name("schemas")
BASE_URI = "https://rnnforge.dev/schemas/"
#: No run-dir JSON file rnnforge writes comes near this (a metrics.json of 100000 epochs is ~30 MB):
#: a larger one is refused before it is read, not parsed into memory.
MAX_JSON_BYTES = 64 * 2**20
#: eval.npz's meta record is a few KB of JSON.
MAX_META_BYTES = 2**20
EVAL_FORMAT = 1
EVAL_KEYS = ("y", "reference", "meta")  # besides the inputs: ``x``, or one ``x.<name>`` per input
MULTI_PREFIX = "x."
#: dtype kinds an eval.npz array may have: booleans, integers, floats (never objects or records).
NUMERIC_KINDS = "biuf"

HINTS = {
    "config": "expected the config.json of a finished 'rnnforge train' run",
    "metrics": "expected the metrics.json of 'rnnforge train'; remove it to bench without the training section",
    "mlflow": "expected the mlflow.json of 'rnnforge train --mlflow-tracking-uri'; remove it, or give --mlflow-run-id",
    "tf_timing": "delete it and bench again (or pass --tf-baseline none)",
    "serving": "not a readable serving.json; find the settings again with 'rnnforge bench load {run} --slo-p99-ms X'",
}


class RunFileError(UserError):
    """A run-dir file that is unreadable or breaks its schema: one line naming the file and the field."""


def re_export(path: Path) -> str:
    """The hint for a file ``export onnx`` writes: export the run again."""
    return f"re-run 'rnnforge export onnx {Path(path).parent}'"


# --- schemas and the validator -------------------------------------------------------------------


@functools.cache
def load_schema(schema: str | Path) -> dict:
    """A schema by name (``rnnforge/core/schemas/NAME.schema.json``) or by path."""
    path = Path(schema) if isinstance(schema, Path) else SCHEMAS / f"{schema}.schema.json"
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def _registry():
    """Every shipped schema under its ``$id``, so that one can ``$ref`` another (``info.schema.json``)."""
    from referencing import Registry, Resource

    resources = [
        (schema["$id"], Resource.from_contents(schema))
        for schema in (load_schema(path) for path in sorted(SCHEMAS.glob("*.schema.json")))
    ]
    return Registry().with_resources(resources)


@functools.cache
def _validator(schema: str | Path, pointer: str = ""):
    """A 2020-12 validator of ``schema`` (or of its part at the JSON pointer ``pointer``)."""
    from jsonschema import Draft202012Validator

    if pointer:
        return Draft202012Validator({"$ref": load_schema(schema)["$id"] + "#" + pointer}, registry=_registry())
    return Draft202012Validator(load_schema(schema), registry=_registry())


def problem(data: Any, schema: str | Path, pointer: str = "", label: str = "") -> str | None:
    """The first way ``data`` breaks ``schema`` (or its part at ``pointer``), in words naming the
    field (``label``, e.g. ``metadata rnnforge.info``, goes before the field's own pointer); None
    when it follows it."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(schema, pointer).iter_errors(data))
    return None if error is None else describe(error, label)


def check(data: Any, schema: str | Path, path: Path, hint: str = "", pointer: str = "", label: str = "") -> Any:
    """``data`` if it follows ``schema``; else ``RunFileError``: ``PATH: <the field and what is wrong>; HINT``."""
    found = problem(data, schema, pointer, label)
    if found is not None:
        raise RunFileError(f"{path}: {found}" + (f"; {hint}" if hint else ""))
    return data


def describe(error, label: str = "") -> str:
    """One ``jsonschema`` error as ``field /a/0/b is a string ('x'), expected an integer``."""
    where = list(error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "required" and isinstance(value, dict):
        missing = next((key for key in expected if key not in value), expected[0])
        return f"{_field(label, [*where, missing])} is missing"
    if kind == "additionalProperties" and expected is False and isinstance(value, dict):
        known = error.schema.get("properties", {})
        extra = next((key for key in value if key not in known), "?")
        return f"{_field(label, [*where, extra])} is not expected here"
    field, shown = _field(label, where), _show(value)
    if "propertyNames" in error.absolute_schema_path:  # the instance is a key of the object at ``where``
        allowed = f", expected keys among {', '.join(map(_show, expected))}" if kind == "enum" else ""
        return f"{field} has the key {shown}{allowed}"
    words = {
        "type": lambda: (
            f"is {_kind(value)}{_example(value)}, expected {' or '.join(_TYPE_WORDS[t] for t in _list(expected))}"
        ),
        "enum": lambda: f"is {shown}, expected one of {', '.join(map(_show, expected))}",
        "const": lambda: f"is {shown}, expected {_show(expected)}",
        "minimum": lambda: f"is {shown}, expected at least {expected:g}",
        "exclusiveMinimum": lambda: f"is {shown}, expected more than {expected:g}",
        "maximum": lambda: f"is {shown}, expected at most {expected:g}",
        "exclusiveMaximum": lambda: f"is {shown}, expected less than {expected:g}",
        "minItems": lambda: f"has {len(value)} item(s), expected at least {expected}",
        "maxItems": lambda: f"has {len(value)} item(s), expected at most {expected}",
        "minLength": lambda: f"is {shown}, expected at least {expected} character(s)",
        "pattern": lambda: f"is {shown}, expected text matching {expected}",
    }
    if kind in words:
        return f"{field} {words[kind]()}"
    return f"{field}: {_clip(error.message, 160)}"


_TYPE_WORDS = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def pointer(parts: Sequence) -> str:
    """The JSON pointer (RFC 6901) of a field: ``/info/class_names/0``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _field(label: str, where: Sequence) -> str:
    if label:
        return (label + pointer(where)).strip()
    return f"field {pointer(where)}" if where else "the top level"


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    for kind, words in ((dict, "an object"), (list, "a list"), (str, "a string"), (int, "an integer")):
        if isinstance(value, kind):
            return words
    return "a number" if isinstance(value, float) else type(value).__name__


def _example(value) -> str:
    return f" ({_show(value)})" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def _show(value) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return _clip(text, 60)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --- JSON files ------------------------------------------------------------------------------------


def read_json(path: Path, schema: str | Path | None = None, hint: str = "") -> Any:
    """The JSON value in ``path`` (UTF-8, a BOM allowed, at most ``MAX_JSON_BYTES``), checked
    against ``schema`` when given; every refusal is one ``RunFileError`` line naming ``path``."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise RunFileError(f"{path} {what}{tail}")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise RunFileError(
                f"{path} holds {size / 2**20:,.0f} MiB, more than the {MAX_JSON_BYTES // 2**20} MiB any rnnforge "
                f"JSON file takes{tail}"
            )
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise RunFileError(f"{path} cannot be read ({exc.strerror or exc}){tail}") from None
    except UnicodeDecodeError as exc:
        raise RunFileError(
            f"{path} is not valid JSON: not UTF-8 text ({exc.reason} at byte {exc.start}){tail}"
        ) from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RunFileError(f"{path} is not valid JSON: {first_line(exc)}{tail}") from None
    return data if schema is None else check(data, schema, path, hint)


def read_config(path: Path, known_tasks: Sequence[str] = ()) -> dict:
    """RUN_DIR/config.json; a task not in ``known_tasks`` is named as such before any other field."""
    data = read_json(path, hint=HINTS["config"])
    task = data.get("task") if isinstance(data, dict) else None
    if known_tasks and isinstance(task, str) and task not in known_tasks:
        raise RunFileError(f"{path}: unknown task {task!r}, expected one of {', '.join(known_tasks)}")
    return check(data, "config", path, HINTS["config"])


def read_metrics(path: Path) -> dict:
    """RUN_DIR/metrics.json, each companion model it names with its own valid and test scores."""
    data = read_json(path, "metrics", HINTS["metrics"])
    for name in data.get("companions", []):
        if not isinstance(data.get(name), dict):
            where = f"field {pointer([name])} (companions names it)"
            raise RunFileError(f"{path}: {where} is missing or not an object; {HINTS['metrics']}")
        for split in ("valid", "test"):
            check(
                data[name].get(split),
                "metrics",
                path,
                HINTS["metrics"],
                "/$defs/scores",
                f"field {pointer([name, split])}",
            )
    return data


def read_parity(path: Path) -> dict:
    """A parity record (``parity.json``, or ``OTHER.parity.json`` beside ``--output OTHER.onnx``)."""
    return read_json(path, "parity", re_export(path))


def read_mlflow(path: Path) -> dict:
    """RUN_DIR/mlflow.json."""
    return read_json(path, "mlflow", HINTS["mlflow"])


def read_tf_timing(path: Path, task: str, source_run: str) -> dict:
    """RUN_DIR/bench/tf_timing.json of the model exported from ``source_run``: a recording of
    another model is refused (named before any other field), as is one that breaks its schema."""
    data = read_json(path, hint=HINTS["tf_timing"])
    named = isinstance(data, dict) and isinstance(data.get("task"), str) and isinstance(data.get("source_run"), str)
    if named and (data["task"] != task or data["source_run"] != source_run):
        raise RunFileError(
            f"{path} was recorded for the {data['task']} model exported from {data['source_run']}, not this "
            f"run's ({source_run}): delete it, or pass --tf-baseline none"
        )
    return check(data, "tf_timing", path, f"not a readable TensorFlow timing; {HINTS['tf_timing']}")


def read_serving(path: Path) -> dict:
    """RUN_DIR/bench/serving.json."""
    return read_json(path, "serving", HINTS["serving"].format(run=Path(path).parent.parent))


# --- ONNX models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInput:
    """An ONNX model's input (or output): name, numpy dtype name and dims (ints fixed, strings named)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    @property
    def dynamic_time(self) -> bool:
        """Whether axis 1 is dynamic (the sketch model's ``time``), so lengths can be swept."""
        return len(self.dims) > 1 and isinstance(self.dims[1], str)

    def shape_text(self) -> str:
        return "[" + ", ".join(map(str, self.dims)) + "]"


def model_inputs(onnx_model) -> list[ModelInput]:
    """Every graph input of ``onnx_model`` (a ModelProto), in order."""
    return _tensors(onnx_model.graph.input)


def model_outputs(onnx_model) -> list[ModelInput]:
    """Every graph output of ``onnx_model`` (a ModelProto), in order."""
    return _tensors(onnx_model.graph.output)


def _tensors(values) -> list[ModelInput]:
    from onnx import helper

    found = []
    for value in values:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
        found.append(ModelInput(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name, dims))
    return found


@dataclass(frozen=True)
class OnnxFile:
    """An rnnforge ONNX export, checked: the ModelProto, its ``metadata_props`` as stored
    (``meta``) and decoded (``values``: JSON ones parsed), its inputs and outputs."""

    path: Path
    model: Any
    meta: dict[str, str]
    values: dict[str, Any]
    inputs: tuple[ModelInput, ...]
    outputs: tuple[ModelInput, ...]

    @property
    def input(self) -> ModelInput:
        return self.inputs[0]

    def codes(self, key: str) -> list | None:
        """The category names of the info key ``key`` (``day_types``), from the model's metadata."""
        if f"rnnforge.{key}" in self.values:
            return self.values[f"rnnforge.{key}"]
        return (self.values.get("rnnforge.info") or {}).get(key)


def read_onnx(path: Path) -> OnnxFile:
    """``path`` loaded and checked with ``onnx.checker`` (full check), an rnnforge export whose
    metadata follows ``onnx_metadata`` (each JSON value parsed and checked against its
    ``contentSchema``)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: run 'rnnforge export onnx RUN_DIR' first (or pass --model)")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        raise UserError(f"{path} is not a valid ONNX model: {first_line(exc)}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if "rnnforge.task" not in meta:
        raise UserError(
            f"{path} is not an rnnforge export (no 'rnnforge.task' metadata): "
            "export the run with 'rnnforge export onnx RUN_DIR'"
        )
    hint = "export the run again with 'rnnforge export onnx RUN_DIR'"
    check(meta, "onnx_metadata", path, hint, label="metadata")
    declared = load_schema("onnx_metadata")["properties"]
    values: dict[str, Any] = dict(meta)
    for key, value in meta.items():
        if declared.get(key, {}).get("contentMediaType") != "application/json":
            continue
        try:
            values[key] = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise RunFileError(f"{path}: metadata {key} is not JSON ({first_line(exc)}); {hint}") from None
        check(
            values[key],
            "onnx_metadata",
            path,
            hint,
            f"/properties/{pointer([key])[1:]}/contentSchema",
            f"metadata {key}",
        )
    return OnnxFile(path, model, meta, values, tuple(model_inputs(model)), tuple(model_outputs(model)))


# --- eval.npz --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """``x`` ``[n, ...]`` model inputs, ``y`` ``[n, ...]`` labels, ``reference`` ``[n, ...]`` TensorFlow's
    outputs on ``x``, and ``meta`` (``export.eval_set``'s docstring)."""

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


def input_records(meta: dict) -> list[dict]:
    """The stored inputs' records (name, dtype, shape, codes): ``meta["inputs"]``, or ``[meta["input"]]``."""
    return list(meta.get("inputs") or [meta.get("input", {})])


@dataclass(frozen=True)
class _Array:
    """One ``.npy`` member of an eval.npz, as its header declares it (nothing read past the header)."""

    key: str
    member: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def label(self) -> str:
        return f"{self.dtype.name} {list(self.shape)}"


def read_eval_set(
    path: Path,
    task: str | None = None,
    source_run: str | None = None,
    *,
    models: Sequence[OnnxFile] = (),
    codes: Mapping[str, str] | None = None,
    labels: str | None = None,
    memory: int | None = None,
) -> EvalSet:
    """Read eval.npz after checking it: every array's ``.npy`` header first (numeric dtype, a
    size its member really holds, all of them within half of ``memory``, by default what this
    machine has available), then the ``meta`` record (``eval_meta``; of ``task`` and, when given,
    exported from ``source_run``), the arrays against the record and against each of ``models``
    (every input: name, dtype, shape with its symbolic axes; ``reference`` against the first output;
    ``y`` as ``labels``, ``classification`` or ``forecast``, says), and once read, their values:
    finite floats, and each input that ``codes`` maps to an info key (``past_day_type`` ->
    ``day_types``) holding only the models' codes. Every refusal is one line naming the file."""
    path = Path(path)
    hint = re_export(path)
    if not path.is_file():
        raise RunFileError(
            f"{path} is missing: this run was exported before bench read its evaluation data from the run dir; {hint}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = _headers(path, archive, hint)
            _check_sizes(path, arrays, memory, hint)
            meta = _meta(path, archive, arrays["meta"], hint)
            if task is not None and meta["task"] != task:
                raise RunFileError(f"{path} holds {meta['task']!r} examples, but the run is {task!r}: {hint}")
            if source_run is not None and meta["source_run"] != source_run:
                raise RunFileError(
                    f"{path} was written for the run exported from {meta['source_run']}, but the model comes from "
                    f"{source_run}: {hint}"
                )
            inputs = _inputs_in_order(arrays, meta)
            _check_records(path, inputs, meta, hint)
            _check_counts(path, inputs, arrays, hint)
            for model in models:
                _check_against_model(path, inputs, arrays, model, codes or {}, labels, hint)
            data = {key: _read_array(path, archive, array, hint) for key, array in arrays.items() if key != "meta"}
    except RunFileError:
        raise
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
        raise RunFileError(
            f"{path} is not a readable eval set (truncated or corrupt?): {first_line(exc)}; {hint}"
        ) from None
    x = data["x"] if "x" in data else NamedArrays({a.key[len(MULTI_PREFIX) :]: data[a.key] for a in inputs})
    eval_set = EvalSet(x, data["y"], data["reference"], meta)
    _check_values(path, eval_set, inputs, models, codes or {}, labels, hint)
    return eval_set


def _headers(path: Path, archive: zipfile.ZipFile, hint: str) -> dict[str, _Array]:
    """Every array bench reads, from its ``.npy`` header alone."""
    members = {info.filename[: -len(".npy")]: info for info in archive.infolist() if info.filename.endswith(".npy")}
    multi = sorted(k for k in members if k.startswith(MULTI_PREFIX))
    missing = [k for k in (*EVAL_KEYS, *([] if multi else ["x"])) if k not in members]
    if missing:
        raise RunFileError(f"{path} has no {', '.join(missing)}: not an rnnforge eval set; {hint}")
    if multi and "x" in members:
        raise RunFileError(f"{path} holds both x and {multi[0]}: not an rnnforge eval set; {hint}")
    arrays = {}
    for key in (*(multi or ["x"]), *EVAL_KEYS):
        with archive.open(members[key]) as stream:
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise RunFileError(f"{path}: {key} is a .npy file of format {version}, expected 1.0 or 2.0; {hint}")
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(stream)
            offset = stream.tell()
        if any(int(d) < 0 for d in shape):
            raise RunFileError(f"{path}: {key}'s header declares the shape {list(shape)}; {hint}")
        array = _Array(key, members[key], tuple(int(d) for d in shape), np.dtype(dtype))
        wanted = "U" if key == "meta" else NUMERIC_KINDS
        if array.dtype.kind not in wanted or array.dtype.hasobject or array.dtype.names:
            kind = "Python objects" if array.dtype.hasobject else array.dtype.name
            raise RunFileError(
                f"{path}: {key} holds {kind}, expected {'text' if key == 'meta' else 'numbers'} "
                f"(only numeric arrays and the meta text are read); {hint}"
            )
        if not array.dtype.isnative:
            raise RunFileError(f"{path}: {key} is {array.dtype.str} (not this machine's byte order); {hint}")
        held = members[key].file_size - offset
        if array.nbytes > held:
            raise RunFileError(
                f"{path}: {key}'s header declares {array.label} ({_bytes(array.nbytes)}), but it holds "
                f"{_bytes(max(held, 0))}: truncated or tampered; {hint}"
            )
        arrays[key] = array
    return arrays


def _check_sizes(path: Path, arrays: dict[str, _Array], memory: int | None, hint: str) -> None:
    """The meta record at most ``MAX_META_BYTES``; all arrays together within half of ``memory``."""
    if arrays["meta"].nbytes > MAX_META_BYTES or arrays["meta"].shape != ():
        raise RunFileError(
            f"{path}: its meta record is {arrays['meta'].label} ({_bytes(arrays['meta'].nbytes)}), expected one "
            f"text of at most {_bytes(MAX_META_BYTES)}; {hint}"
        )
    if memory is None:
        from rnnforge.core.machine import available_memory

        memory = available_memory()
    need = sum(a.nbytes for a in arrays.values())
    if memory is not None and need > memory // 2:
        largest = max(arrays.values(), key=lambda a: a.nbytes)
        raise RunFileError(
            f"{path}: its arrays need {_bytes(need)} ({largest.key}: {largest.label}); this machine has "
            f"{_bytes(memory)} available and bench keeps within half of it"
        )


def _bytes(count: int) -> str:
    return f"{count / 1e9:,.1f} GB" if count >= 1e8 else f"{count:,} bytes"


def _read_array(path: Path, archive: zipfile.ZipFile, array: _Array, hint: str) -> np.ndarray:
    with archive.open(array.member) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _meta(path: Path, archive: zipfile.ZipFile, array: _Array, hint: str) -> dict:
    text = str(_read_array(path, archive, array, hint))
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RunFileError(f"{path}: its meta record is not JSON ({first_line(exc)}); {hint}") from None
    return check(meta, "eval_meta", path, hint, label="meta field ")


def _inputs_in_order(arrays: dict[str, _Array], meta: dict) -> list[_Array]:
    """The stored inputs, in the order of their records."""
    if "x" in arrays:
        return [arrays["x"]]
    order = [r["name"] for r in input_records(meta)]
    stored = [a for key, a in arrays.items() if key.startswith(MULTI_PREFIX)]
    return sorted(stored, key=lambda a: order.index(_name(a)) if _name(a) in order else len(order))


def _name(array: _Array) -> str | None:
    """An input's name (``x.<name>``), or None for the single input ``x``."""
    return array.key[len(MULTI_PREFIX) :] if array.key.startswith(MULTI_PREFIX) else None


def _check_records(path: Path, inputs: list[_Array], meta: dict, hint: str) -> None:
    records = input_records(meta)
    if len(records) != len(inputs):
        raise RunFileError(f"{path}: {len(inputs)} stored input(s), but its record lists {len(records)}; {hint}")
    for array, record in zip(inputs, records):
        name = _name(array)
        if (name is not None and record["name"] != name) or (
            array.dtype.name != record["dtype"] or list(array.shape[1:]) != list(record["shape"][1:])
        ):
            raise RunFileError(
                f"{path}: {array.key} is {array.label}, but its record says {record['dtype']} {record['shape']}; {hint}"
            )


def _check_counts(path: Path, inputs: list[_Array], arrays: dict[str, _Array], hint: str) -> None:
    for array in (*inputs, arrays["y"], arrays["reference"]):
        if not array.shape:
            raise RunFileError(
                f"{path}: {array.key} is a single {array.dtype.name} value, expected one row per example; {hint}"
            )
    n = inputs[0].shape[0]
    y, reference = arrays["y"].shape[0], arrays["reference"].shape[0]
    if not n or y != n or reference != n or any(a.shape[0] != n for a in inputs):
        raise RunFileError(
            f"{path}: {n} inputs, {y} labels and {reference} reference outputs "
            f"(expected the same number, at least 1); {hint}"
        )


def _check_against_model(
    path: Path,
    inputs: list[_Array],
    arrays: dict[str, _Array],
    model: OnnxFile,
    codes: Mapping[str, str],
    labels: str | None,
    hint: str,
) -> None:
    """Every stored input against the model's declared inputs (names, dtypes, shapes, a symbolic
    axis the same size wherever it appears), TensorFlow's outputs against the first output, the
    labels' form against the task's, and the model's code lists present."""
    single = len(inputs) == 1 and _name(inputs[0]) is None
    if single and len(model.inputs) != 1:
        raise RunFileError(
            f"{path} stores one input (x), but {model.path} takes {len(model.inputs)}: "
            f"{', '.join(i.name for i in model.inputs)}; {hint}"
        )
    stored = {model.input.name if single else _name(a): a for a in inputs}
    missing = [i.name for i in model.inputs if i.name not in stored]
    if missing:
        raise RunFileError(f"{path} has no x.{missing[0]}, an input {model.path} takes; {hint}")
    extra = [name for name in stored if name not in {i.name for i in model.inputs}]
    if extra:
        raise RunFileError(f"{path} holds x.{extra[0]}, which {model.path} does not take; {hint}")
    sizes: dict[str, tuple[int, str]] = {}
    for declared in model.inputs:
        array = stored[declared.name]
        label = "inputs" if single else array.key
        if array.dtype.name != declared.dtype:
            verb = "are" if single else "is"
            raise RunFileError(
                f"{path}: {label} {verb} {array.dtype.name}, but the model takes {declared.dtype} ({model.path}); {hint}"
            )
        fits = len(array.shape) == len(declared.dims) and all(
            not isinstance(d, int) or array.shape[i] == d for i, d in enumerate(declared.dims) if i > 0
        )
        if not fits:
            what = f"inputs of shape {list(array.shape)}" if single else f"{label} of shape {list(array.shape)}"
            raise RunFileError(
                f"{path}: {what} do not fit the model's input {declared.shape_text()} ({model.path}); {hint}"
            )
        for axis, dim in enumerate(declared.dims):
            if isinstance(dim, str) and dim != "?":
                size, first = sizes.setdefault(dim, (array.shape[axis], label))
                if size != array.shape[axis]:
                    raise RunFileError(
                        f"{path}: {label} has {array.shape[axis]} along the model's axis {dim!r}, {first} has {size}; {hint}"
                    )
        key = codes.get(declared.name)
        if key and not isinstance(model.codes(key), list):
            raise RunFileError(
                f"{model.path}: input {declared.name!r} takes codes of rnnforge.{key}, which its metadata lacks; "
                "export the run again with 'rnnforge export onnx RUN_DIR'"
            )
    output, reference = model.outputs[0], arrays["reference"]
    fixed = [(i, d) for i, d in enumerate(output.dims) if isinstance(d, int) and i > 0]
    if len(reference.shape) != len(output.dims) or any(reference.shape[i] != d for i, d in fixed):
        raise RunFileError(
            f"{path}: TensorFlow's stored outputs are {list(reference.shape)}, but the model's output "
            f"{output.name} is {output.shape_text()} ({model.path}); {hint}"
        )
    if reference.dtype.kind != "f":
        raise RunFileError(f"{path}: reference is {reference.dtype.name}, expected TensorFlow's float outputs; {hint}")
    y = arrays["y"]
    if labels == "classification" and (len(y.shape) != 1 or y.dtype.kind not in "iu"):
        raise RunFileError(f"{path}: y is {y.label}, expected one integer class label per example; {hint}")
    if labels == "forecast" and (y.shape != reference.shape or y.dtype.kind != "f"):
        raise RunFileError(
            f"{path}: y is {y.label}, expected float values shaped as the outputs {list(reference.shape)}; {hint}"
        )


def _check_values(
    path: Path,
    eval_set: EvalSet,
    inputs: list[_Array],
    models: Sequence[OnnxFile],
    codes: Mapping[str, str],
    labels: str | None,
    hint: str,
) -> None:
    """Finite floats everywhere; category codes within the record's and the models' lists; class
    labels within the model's classes."""
    x = eval_set.x if isinstance(eval_set.x, dict) else {None: eval_set.x}
    named = dict(zip((a.key for a in inputs), x.values()))
    for key, values in (*named.items(), ("y", eval_set.y), ("reference", eval_set.reference)):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            example = int(np.argwhere(~np.isfinite(values))[0][0])
            raise RunFileError(f"{path}: {key} holds NaN or infinity (example {example}); {hint}")
    records = dict(zip((a.key for a in inputs), input_records(eval_set.meta)))
    for array, values in zip(inputs, x.values()):
        record_codes = records[array.key].get("codes")
        for model in models:
            key = codes.get(model.input.name if _name(array) is None else _name(array))
            if not key:
                continue
            names = model.codes(key)
            if record_codes is not None and list(record_codes) != list(names):
                raise RunFileError(
                    f"{path}: {array.key}'s record lists the codes {_show(record_codes)}, but the model's "
                    f"rnnforge.{key} are {_show(names)}; {hint}"
                )
            check_codes(values, names, f"{path}: {array.key}")
        check_codes(values, record_codes, f"{path}: {array.key}")
    if labels == "classification" and eval_set.reference.ndim == 2 and eval_set.y.size:
        classes = eval_set.reference.shape[1]
        bad = (eval_set.y < 0) | (eval_set.y >= classes)
        if bad.any():
            raise RunFileError(
                f"{path}: y holds label {int(eval_set.y[bad][0])}, outside the model's classes 0..{classes - 1}; {hint}"
            )


def check_codes(codes: np.ndarray, names: list | None, where: str) -> None:
    """Refuse category codes outside ``0..len(names) - 1`` (``names``: the input's code list)."""
    if names is None or not codes.size:
        return
    bad = (codes < 0) | (codes >= len(names))
    if bad.any():
        shown = ", ".join(f"{i} = {n}" for i, n in enumerate(names[:8])) + (
            f", ... ({len(names)} codes)" if len(names) > 8 else ""
        )
        raise RunFileError(
            f"{where} holds code {int(codes[bad][0])}, outside the model's codes 0..{len(names) - 1} ({shown})"
        )
