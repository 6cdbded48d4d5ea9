"""``bench.json``: its figures (p50 index, ratios, scenarios, scores), its schema check, and reading
it back (``bench compare`` reads the current schema, ``SCHEMA_VERSION``, and the ones before it:
``READABLE_VERSIONS``; its rows' p50/p99 and throughput mean the same in each).

The schema (``bench.schema.json``) keeps each figure once: the previous one's duplicates
(``onnx_model``, the top-level ``session_creation_ms``/``first_inference_ms`` and
``ratio_ort_over_tf``) are read as ``onnx_models``, ``sessions`` and ``ratios_over_tf``. It records
``eval`` (the stored examples scored) and ``tensorflow`` (where the TensorFlow baseline comes from:
measured now, recorded on another machine, or none); schema 4 adds ``provenance``, each variant's
node placement and applied options (``sessions``), and each row's percentile intervals. ``validate_result`` checks a result
against it with ``jsonschema``, the validator of every run-dir file (``rnnforge.core.run_files``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnforge.core.errors import UserError
from rnnforge.core.run_files import problem, read_json
from rnnforge.export.parity import top1_record
from rnnforge.export.settings import AGREEMENT_THRESHOLDS

SCHEMA_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
SCHEMA_PATH = Path(__file__).with_name("bench.schema.json")
TENSORFLOW = "tensorflow"


class SchemaError(ValueError):
    """A result that does not follow ``bench.schema.json``: a bug in rnnforge, never user input."""


def engine_name(variant: str) -> str:
    """``onnxruntime`` for fp32, ``onnxruntime_fp16`` for the fp16 variant."""
    return "onnxruntime" if variant == "fp32" else f"onnxruntime_{variant}"


def machine_line(machine: dict) -> str:
    """``AMD EPYC 7B13, 2 logical cores, GPU NVIDIA H100 (driver 550.54)``"""
    gpu = f", GPU {machine['gpu']['name']} (driver {machine['gpu']['driver']})" if machine.get("gpu") else ""
    return f"{machine['cpu'] or 'unknown CPU'}, {machine['logical_cores']} logical cores{gpu}"


def row_key(row: dict) -> tuple:
    """``(engine, batch size, sequence length or None)``: how latency rows are matched everywhere."""
    return row["engine"], row["batch_size"], row.get("seq_len")


def p50_index(rows: list[dict]) -> dict[tuple, float]:
    """``{(engine, batch size, seq len): p50 ms}`` of ``rows``."""
    return {row_key(r): r["latency_ms"]["p50"] for r in rows}


def ratios(rows: list[dict], engine: str = "onnxruntime") -> dict[str, float]:
    """``engine`` / TensorFlow p50 per batch size at full length (below 1: ``engine`` is faster);
    empty without TensorFlow rows."""
    p50 = p50_index(rows)
    return {
        str(batch): ms / p50[(TENSORFLOW, batch, None)]
        for (name, batch, seq_len), ms in p50.items()
        if name == engine and seq_len is None and (TENSORFLOW, batch, None) in p50
    }


def scenarios(rows: list[dict]) -> dict:
    """MLPerf-style figures per engine: SingleStream p90 (batch 1) and Offline samples/s (best batch)."""
    out = {}
    for engine in sorted({r["engine"] for r in rows}):
        mine = [r for r in rows if r["engine"] == engine and r.get("seq_len") is None]
        single = next((r for r in mine if r["batch_size"] == 1), None)
        best = max(mine, key=lambda r: r["throughput_per_s"])
        out[engine] = {
            "single_stream_p90_ms": single["latency_ms"]["p90"] if single else None,
            "offline_samples_per_s": best["throughput_per_s"],
            "offline_batch_size": best["batch_size"],
        }
    return out


def summary_line(result: dict) -> str:
    """One line per batch size and ONNX Runtime engine: its p50, TensorFlow's, and their ratio."""
    p50 = p50_index(result["latency"])
    lines = []
    for variant in result["onnx_models"]:
        name, label = engine_name(variant), "ORT" if variant == "fp32" else f"ORT {variant}"
        for batch in result["settings"]["batch_sizes"]:
            tf = p50.get((TENSORFLOW, batch, None))
            lines.append(
                f"batch {batch}: {label} {p50[(name, batch, None)]:.3f} ms"
                + (f" vs TF {tf:.3f} ms (x{p50[(name, batch, None)] / tf:.2f})" if tf else " (no TensorFlow baseline)")
            )
    return "\n".join(lines)


def agreement_threshold(engine: str, spec) -> float:
    """The top-1 agreement with TensorFlow ``engine`` is judged on: ``AGREEMENT_THRESHOLDS`` by its
    variant, the task's int8 gate for int8."""
    variant = "fp32" if engine == "onnxruntime" else engine.removeprefix("onnxruntime_")
    return spec.onnx.int8.min_top1_agreement if variant == "int8" else AGREEMENT_THRESHOLDS.get(variant, 0.999)


def score_engines(predictions: dict[str, np.ndarray], reference: np.ndarray, spec, x, y, info: dict) -> dict:
    """Every engine's task scores on ``x``/``y``, and its agreement with and score deltas against
    TensorFlow's stored outputs ``reference`` (scored as ``tensorflow``).

    ``agreement`` is the first engine's; ``agreement_by_engine`` and ``delta_vs_tensorflow`` cover all.
    """
    scores = {TENSORFLOW: spec.score(x, y, reference, info)}
    agreement, delta = {}, {}
    for name, pred in predictions.items():
        scores[name] = spec.score(x, y, pred, info)
        agreement[name] = {"max_abs_diff": float(np.max(np.abs(pred.astype(np.float64) - reference)))}
        if spec.kind == "classification":  # judged on its 95 % lower bound (export.parity.top1_record)
            agreement[name].update(top1_record(pred, reference, agreement_threshold(name, spec)))
        delta[name] = {
            k: float(v - scores[TENSORFLOW][k])
            for k, v in scores[name].items()
            if isinstance(v, float) and k in scores[TENSORFLOW]
        }
    return {
        "agreement": agreement[next(iter(predictions))],
        "agreement_by_engine": agreement,
        "delta_vs_tensorflow": delta,
        **scores,
    }


def validate_result(result: dict) -> None:
    """Check ``result`` against ``bench.schema.json`` (``jsonschema``, as every run-dir file is:
    ``rnnforge.core.run_files``); ``SchemaError`` names the first violation's field."""
    found = problem(result, SCHEMA_PATH)
    if found is not None:
        raise SchemaError(f"bench.json: {found}")


def load_results(path: Path) -> dict[str, dict]:
    """``{task: result}`` from a bench.json or a bench_all.json of a schema in ``READABLE_VERSIONS``."""
    path = Path(path)
    data = read_json(path, hint="expected a bench.json or bench_all.json of 'rnnforge bench'")
    if isinstance(data, dict) and "latency" in data:
        results = [data]  # one bench.json
    elif isinstance(data, dict) and data and all(isinstance(v, dict) and "latency" in v for v in data.values()):
        results = list(data.values())  # bench_all.json: run name -> result
    else:
        raise UserError(f"{path} is neither a bench.json nor a bench_all.json (no 'latency' rows)")
    for result in results:
        if result.get("schema_version") not in READABLE_VERSIONS:
            raise UserError(
                f"{path}: bench.json schema_version {result.get('schema_version')!r}; this rnnforge reads "
                + ", ".join(map(str, READABLE_VERSIONS))
            )
        if not isinstance(result.get("task"), str):
            raise UserError(f"{path}: a result has no 'task' name")
    return {r["task"]: r for r in results}
