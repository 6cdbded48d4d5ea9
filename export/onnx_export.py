"""``rnnforge export onnx RUN_DIR``: tf2onnx conversion that always ends with a parity check.

The task spec declares the ONNX inputs and outputs (names, named dynamic axes), the opset and
the tolerance. ``tf2onnx.convert.from_keras`` swallows conversion errors, so only running the
model proves it: the converted graph is checked for ``Loop``/``Scan`` nodes (Keras masking makes
them, many times slower on ONNX Runtime: docs/performance.md), its input and output names against the spec, its dynamic
axes get the spec's names (``batch``, ``time``), then it runs on ONNX Runtime against TensorFlow
on a real test batch. Only a model that passes is written, atomically.

Export is the last step that reads the dataset: it writes ``eval.npz`` beside the model (the
evaluation split, capped at ``--eval-examples``, with TensorFlow's outputs on it), from which
``rnnforge bench`` scores and checks every engine without the dataset or TensorFlow.

    rnnforge export onnx runs/sketch --fp16 --int8 --eval-examples 500
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import rnnforge
from rnnforge.core import fileio
from rnnforge.core.arrays import Inputs, count, feeds, rows, select
from rnnforge.core.errors import UserError
from rnnforge.core.machine import versions
from rnnforge.core.progress import Progress
from rnnforge.core.run_dir import RunDir
from rnnforge.core.tracking import export_target, log_export
from rnnforge.export import graph_opt
from rnnforge.export.eval_set import EvalSet, default_cap, write_eval_set
from rnnforge.export.parity import parity_gate
from rnnforge.export.settings import DEFAULT_EVAL_EXAMPLES, variant_path

SUPPORTED_OPSETS = (17, 18)
FORBIDDEN_OPS = ("Loop", "Scan")
PARITY_BATCH = 256
PREDICT_BATCH = 256


def export_onnx(
    run_dir: Path,
    opset: int | None = None,
    output: Path | None = None,
    atol: float | None = None,
    fp16: bool = False,
    eval_examples: int | None = None,
    int8: bool = False,
    mlflow_run_id: str | None = None,
    fuse_members: bool = False,
) -> dict:
    """Convert, validate and write ``model.onnx``, ``eval.npz`` and ``parity.json``; returns the
    parity record (``parity["eval_set"]``: the eval file's path, example counts and size).

    With ``fp16``, also the half-precision variant (``model.fp16.onnx`` beside ``output``), which
    must pass its own, looser parity gate (``spec.onnx.fp16_atol``); its record is ``parity["fp16"]``.
    With ``int8``, also the int8 variant (``model.int8.onnx``, ``export/int8.py``: the task's
    quantization recipe), which must pass the task's accuracy gate (``spec.onnx.int8``) on the
    evaluation split; its record is ``parity["int8"]``, with the recipe and the calibration set.
    ``eval_examples`` is how many held-out examples the int8 gate is judged on (``None``:
    ``DEFAULT_EVAL_EXAMPLES``, 3,838: enough to establish 99.9 % agreement), and caps the stored
    evaluation examples (evenly spaced over the split; ``None``: ``eval_set.default_cap``, which
    also keeps their inputs within 64 MiB). The ONNX files go to MLflow too: into ``mlflow_run_id``, or the MLflow
    run RUN_DIR/mlflow.json records (``core.tracking``).

    A run that keeps served models beside model.keras (``model.NAME.keras``: a distilled
    forecaster's ensemble) gets each exported too (``model.NAME.onnx`` beside ``output``), with its
    own parity gate against its Keras model; its record is ``parity[NAME]``. ``fuse_members``: the
    ensemble among them (or the run's model, when that is the ensemble) is converted from the task's
    fused form (``TaskSpec.fused_model``: one recurrent node per layer for every member), and its
    parity is checked against the averaged ensemble itself.
    """
    from rnnforge.models import TASKS, get_spec

    run = RunDir(Path(run_dir))
    config = run.load_config(TASKS)
    spec = get_spec(config["task"])
    opset, atol = _checked_options(spec, opset, atol, eval_examples)
    output = Path(output) if output else run.onnx
    check_targets(run, output)
    tracking = export_target(run.path, mlflow_run_id)

    model = run.load_model()
    companions = {name: load_companion(run, name) for name in companion_names(run)}
    fused = fused_forms(spec, model, companions, config) if fuse_members else {}
    onnx_model, rewrites = converted(fused.get("", model), spec, config, run, opset, run.model)
    print(f"loading the {config['dataset']} dataset: the evaluation set (and int8's calibration inputs)", flush=True)
    data = spec.load_data(config)
    eval_set = evaluation_set(model, spec, config, run, eval_examples, data)
    x = rows(eval_set.x, slice(0, PARITY_BATCH))
    parity = parity_gate(model, onnx_model, spec, x, atol, "ONNX Runtime", f"{output} not written")
    parity.update(
        {
            "task": spec.name,
            "split": eval_set.split,
            "opset": opset,
            "graph_rewrites": rewrites,
            "onnx_path": str(output),
            "source_run": str(run.path.resolve()),
            **graph_record(onnx_model, "" in fused, config["info"]),
        }
    )
    written = []
    for name, companion in companions.items():  # checked before any file is written
        path = variant_path(output, name)
        other, other_rewrites = converted(fused.get(name, companion), spec, config, run, opset, run.companion(name))
        record = parity_gate(companion, other, spec, x, atol, f"ONNX Runtime ({name})", "nothing written")
        parity[name] = {
            **record,
            "onnx_path": str(path),
            "graph_rewrites": other_rewrites,
            **graph_record(other, name in fused, config["info"]),
        }
        written.append((path, other))
    if fp16:
        parity["fp16"] = export_fp16(model, onnx_model, spec, x, variant_path(output, "fp16"))
    if int8:
        from rnnforge.export.int8 import export_int8

        parity["int8"] = export_int8(
            onnx_model,
            spec,
            eval_set,
            data,
            variant_path(output, "int8"),
            tf_predict=lambda inputs: predict(model, inputs),
            examples=DEFAULT_EVAL_EXAMPLES if eval_examples is None else eval_examples,
        )
    fileio.write_bytes(output, onnx_model.SerializeToString())
    for path, other in written:
        fileio.write_bytes(path, other.SerializeToString())
    size = write_eval_set(run.eval_set, eval_set)
    parity["eval_set"] = {"path": str(run.eval_set), "examples": count(eval_set.x), "bytes": size}
    parity["eval_set"]["examples_in_split"] = eval_set.meta["examples_in_split"]
    fileio.write_json(run.parity_of(output), parity)
    for variant, wanted in (("fp16", fp16), ("int8", int8)):
        stale = variant_path(output, variant)
        if not wanted and stale.exists():  # derived from the model just replaced
            stale.unlink()
            print(f"removed the stale {stale} (export again with --{variant} to refresh it)", flush=True)
    log_export(run.path, tracking)
    return parity


def companion_names(run: RunDir) -> list[str]:
    """The served models kept beside model.keras (``model.NAME.keras``, e.g. ``ensemble``)."""
    return sorted(p.name.removeprefix("model.").removesuffix(".keras") for p in run.path.glob("model.*.keras"))


def load_companion(run: RunDir, name: str):
    """``model.NAME.keras`` with plain tf-keras."""
    from tensorflow import keras

    try:
        return keras.models.load_model(run.companion(name), compile=False)
    except Exception as exc:  # corrupt or foreign file
        raise UserError(f"{run.companion(name)} cannot be loaded by tf-keras: {exc}".splitlines()[0]) from None


def fused_forms(spec, model, companions: dict, config: dict) -> dict:
    """``--fuse-members``: the fused form of each ensemble among the run's model (key ``""``) and
    its companions (by name). Refused for a task without one or a run without an ensemble."""
    from rnnforge.core.config import TrainConfig

    if spec.fused_model is None:
        raise UserError(f"--fuse-members does not apply to task {spec.name!r}: it has no ensemble")
    train_config = TrainConfig.from_dict(config)
    fused = {}
    for name, served in {"": model, **companions}.items():
        form = spec.fused_model(served, train_config, config["info"])
        if form is not None:
            fused[name] = form
    if not fused:
        raise UserError(
            "--fuse-members fuses an ensemble's members, and this run trained one network (--ensemble "
            f"{config['info'].get('ensemble') or 1}): nothing to fuse"
        )
    return fused


def converted(model, spec, config: dict, run: RunDir, opset: int, source: Path) -> tuple:
    """``model`` through tf2onnx, checked, its axes named, rewritten (``graph_opt``) and labelled:
    the ModelProto and the rewrites' counts."""
    print(f"converting {source} with tf2onnx (opset {opset})", flush=True)
    started = time.monotonic()
    onnx_model = convert(model, spec, opset)
    check_graph(onnx_model, spec, config["info"])
    name_dynamic_axes(onnx_model, spec, config["info"])
    rewrites = graph_opt.optimise(onnx_model)
    attach_metadata(onnx_model, spec, config, run, opset)
    print(f"  converted in {time.monotonic() - started:.1f} s: {len(onnx_model.graph.node)} nodes", flush=True)
    return onnx_model, rewrites


def graph_record(onnx_model, fused: bool, info: dict) -> dict:
    """Nodes and op types of ``onnx_model``; for a ``fused`` ensemble, its members and recurrent nodes
    (also in the model's metadata, ``rnnforge.fused_members``)."""
    ops = [n.op_type for n in onnx_model.graph.node]
    record = {"nodes": len(ops), "op_types": sorted(set(ops))}
    if fused:
        members = int(info.get("ensemble") or 1)
        record.update(fused_members=members, recurrent_nodes=sum(op in ("LSTM", "GRU") for op in ops))
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = "rnnforge.fused_members", str(members)
    return record


def check_targets(run: RunDir, output: Path) -> None:
    """Before any work: the ONNX file (``--output``) and the run dir (eval.npz) can be written."""
    fileio.check_writable(output, "--output", directory=False)
    fileio.check_writable(run.path, "RUN_DIR")


def _checked_options(spec, opset: int | None, atol: float | None, eval_examples: int | None) -> tuple[int, float]:
    """``--opset`` and ``--atol`` (the spec's unless given), checked with ``--eval-examples``."""
    opset = spec.onnx.opset if opset is None else opset
    if opset not in SUPPORTED_OPSETS:
        raise UserError(
            f"--opset {opset} is not supported: tf2onnx 1.17 converts opsets {' or '.join(map(str, SUPPORTED_OPSETS))}"
        )
    atol = spec.onnx.atol if atol is None else atol
    if not 0 <= atol < float("inf"):  # an infinite tolerance would pass any model
        raise UserError(f"--atol must be a non-negative tolerance, finite, got {atol}")
    if eval_examples is not None and eval_examples < 1:
        raise UserError(f"--eval-examples must be at least 1, got {eval_examples}")
    return opset, atol


def export_fp16(model, onnx_model, spec, x: Inputs, output: Path) -> dict:
    """Convert ``onnx_model`` to fp16, check its parity against TensorFlow and write it; the record."""
    from rnnforge.export.fp16 import convert_to_fp16

    print("fp16 variant: converting", flush=True)
    half, kept = convert_to_fp16(onnx_model, feeds(x, [i.name for i in onnx_model.graph.input]))
    print(f"fp16 variant ({len(kept)} of {len(half.graph.node)} nodes kept in fp32):", flush=True)
    parity = parity_gate(model, half, spec, x, spec.onnx.fp16_atol, "the fp16 variant", "nothing written")
    parity.update({"onnx_path": str(output), "nodes_kept_fp32": kept, "nodes": len(half.graph.node)})
    fileio.write_bytes(output, half.SerializeToString())
    return parity


def input_signature(model, spec) -> list:
    """``tf.TensorSpec`` per model input, in the model's order, as the spec declares it (by name):
    named axes dynamic, ints fixed, ``None`` axes as the trained model fixed them (e.g. the
    forecaster's window)."""
    import tensorflow as tf

    declared = {t.name: t for t in spec.onnx.inputs}
    signature = []
    for model_input in model.inputs:
        tensor = declared[_tensor_name(model_input)]
        dims = list(model_input.shape)
        shape = [
            None if isinstance(a, str) else (a if isinstance(a, int) else dims[i]) for i, a in enumerate(tensor.axes)
        ]
        signature.append(tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=tensor.name))
    return signature


def _tensor_name(tensor) -> str:
    """A Keras input tensor's name without its ``:0`` suffix."""
    return tensor.name.split(":")[0]


def convert(model, spec, opset: int):
    """Run tf2onnx on ``model`` with the spec's input names and dynamic axes; returns a ModelProto."""
    import tf2onnx

    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=input_signature(model, spec), opset=opset)
    return onnx_model


def check_graph(onnx_model, spec, info: dict | None = None) -> None:
    """Refuse graphs with Loop/Scan nodes or with inputs/outputs other than the spec's (those the
    model of data ``info`` takes: ``OnnxSpec.inputs_for``)."""
    ops = [n.op_type for n in onnx_model.graph.node]
    slow = sorted({op for op in ops if op in FORBIDDEN_OPS})
    if slow:
        raise UserError(
            f"the converted graph holds {', '.join(slow)} node(s) (Keras masking or an unrolled "
            "recurrence): ONNX Runtime runs these ~30x slower; handle padding with explicit tensors"
        )
    for kind, declared, actual in (
        ("input", spec.onnx.inputs_for(info or {}), onnx_model.graph.input),
        ("output", spec.onnx.outputs_for(info or {}), onnx_model.graph.output),
    ):
        want, got = [t.name for t in declared], [v.name for v in actual]
        if want != got:
            raise UserError(f"ONNX {kind} names {got} differ from the task spec's {want}")


def attach_metadata(onnx_model, spec, config: dict, run: RunDir, opset: int) -> None:
    """Store what a consumer needs in the model's metadata_props."""
    metadata = {
        "rnnforge.task": spec.name,
        "rnnforge.version": rnnforge.__version__,
        "rnnforge.opset": str(opset),
        "rnnforge.source_run": str(run.path.resolve()),
        "rnnforge.source_model_sha256": fileio.sha256_file(run.model),
        "rnnforge.dataset": config["dataset"],
        "rnnforge.inputs": json.dumps(
            [
                {"name": t.name, "dtype": t.dtype, "axes": t.axes, "description": t.description}
                for t in spec.onnx.inputs_for(config["info"])
            ]
        ),
        "rnnforge.outputs": json.dumps(
            [
                {"name": t.name, "dtype": t.dtype, "axes": t.axes, "description": t.description}
                for t in spec.onnx.outputs_for(config["info"])
            ]
        ),
        "rnnforge.info": json.dumps(config["info"]),
    }
    for key in ("class_names", "window", "horizon", "units", "day_types", "quantiles", "interval_scale"):
        if key in config["info"]:
            metadata[f"rnnforge.{key}"] = json.dumps(config["info"][key])
    del onnx_model.metadata_props[:]
    for key, value in metadata.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_model.producer_name = "rnnforge (tf2onnx)"


def evaluation_set(model, spec, config: dict, run: RunDir, cap: int | None, data=None) -> EvalSet:
    """The evaluation split (test, or valid when test is empty), at most ``cap`` examples evenly
    spaced (``None``: the default cap), with TensorFlow's outputs on them: the one read of the
    dataset after training (``data``: the task's data, when the caller loaded it already)."""
    if data is None:
        print(f"loading the {config['dataset']} dataset for the evaluation set", flush=True)
        data = spec.load_data(config)
    split = data.evaluation_split()
    x_all, y_all = data.splits[split]
    n_all = count(x_all)
    keep = select(n_all, default_cap(x_all) if cap is None else cap)
    x, y = rows(x_all, keep), np.ascontiguousarray(y_all[keep])
    reference = predict(model, x, progress="TensorFlow's outputs on the evaluation set")
    records = [
        {
            "name": tensor.name,
            "dtype": str(a.dtype),
            "shape": ["batch", *a.shape[1:]],
            **({"codes": config["info"][tensor.codes]} if tensor.codes else {}),
        }
        for tensor, a in zip(spec.onnx.inputs_for(config["info"]), x.values() if isinstance(x, dict) else [x])
    ]
    meta = {
        "task": spec.name,
        "source_run": str(run.path.resolve()),
        "dataset": config["dataset"],
        "split": split,
        "examples_in_split": int(n_all),
        "selection": "all" if len(keep) == n_all else f"{len(keep)} evenly spaced",
        **({"inputs": records} if isinstance(x, dict) else {"input": records[0]}),
        "reference": {"name": spec.onnx.outputs[0].name, "engine": "tensorflow"},
        "info": config["info"],
        "versions": versions(),
    }
    print(f"eval set: {len(keep)} of {n_all} {split} examples, with TensorFlow's outputs", flush=True)
    return EvalSet(x, y, reference, meta)


def predict(model, x: Inputs, progress: str | None = None) -> np.ndarray:
    """TensorFlow's first output of ``model`` on ``x``, in batches of ``PREDICT_BATCH``; a long one
    shows how far it is under the label ``progress``."""
    shown = Progress(progress, count(x)) if progress else None
    chunks = []
    for i in range(0, count(x), PREDICT_BATCH):
        chunks.append(_first_output(model, rows(x, slice(i, i + PREDICT_BATCH))))
        if shown:
            shown.update(i + len(chunks[-1]))
    if shown:
        shown.finish()
    return np.concatenate(chunks)


def _first_output(model, x: Inputs) -> np.ndarray:
    out = model(x, training=False)
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


def name_dynamic_axes(onnx_model, spec, info: dict | None = None) -> None:
    """Name the graph inputs' and outputs' dynamic axes as the spec declares them (``batch``,
    ``time``); tf2onnx leaves ``unk__N``. Inner shapes that used those names follow them."""
    renames = {}
    for declared, values in (
        (spec.onnx.inputs_for(info or {}), onnx_model.graph.input),
        (spec.onnx.outputs_for(info or {}), onnx_model.graph.output),
    ):
        for tensor, value in zip(declared, values):
            dims = value.type.tensor_type.shape.dim
            for index, name in tensor.dynamic_axes().items():
                if index < len(dims):
                    if dims[index].dim_param:
                        renames[dims[index].dim_param] = name
                    dims[index].dim_param = name
    for value in onnx_model.graph.value_info:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
