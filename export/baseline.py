"""The TensorFlow baseline of ``rnnforge bench`` (``--tf-baseline auto|measure|recorded|none``).

TensorFlow is timed in its own process where it is installed and the run dir holds
``model.keras``; each measurement is kept in ``bench/tf_timing.json`` so that a machine without
TensorFlow (a serving install) can still put the last recorded rows beside ONNX Runtime's, named
as recorded with their machine and date. A recording of another model is refused. Where neither
is possible, TensorFlow is left out with one line saying why.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from rnnforge.core.errors import UserError
from rnnforge.core.run_dir import RunDir
from rnnforge.export.measure import TENSORFLOW, EngineUnavailable, Job, run_in_subprocess
from rnnforge.export.results import machine_line
from rnnforge.export.settings import BenchSettings


def tensorflow_baseline(run: RunDir, task: str, source_run: str, settings: BenchSettings, work: Path) -> dict:
    """TensorFlow's rows per ``--tf-baseline``: measured now (in a child process; recorded in
    ``bench/tf_timing.json``), the last recorded timing, or none; always with a ``note`` line.
    ``source_run``: the run the ONNX model was exported from, which a recorded timing must match."""
    mode, reason = settings.tf_baseline, "--tf-baseline none"
    if mode in ("auto", "measure"):
        try:
            return measure_tensorflow(run, task, source_run, settings, work)
        except EngineUnavailable as exc:
            if mode == "measure":
                raise UserError(f"--tf-baseline measure: {exc}") from None
            reason = str(exc)
    if mode in ("auto", "recorded"):
        record = load_tf_timing(run, task, source_run)
        if record is not None:
            return recorded_baseline(record, settings, reason if mode == "auto" else None)
        if mode == "recorded":
            raise UserError(
                f"--tf-baseline recorded: {run.tf_timing} does not exist; bench this run once where "
                "TensorFlow is installed, or pass --tf-baseline none"
            )
        reason += f", and {run.tf_timing} holds no earlier timing"
    note = f"TensorFlow baseline left out: {reason}"
    print(note, flush=True)
    return {"source": "none", "note": note, "rows": []}


def measure_tensorflow(run: RunDir, task: str, source_run: str, settings: BenchSettings, work: Path) -> dict:
    """Time TensorFlow in a child process; ``record`` is what ``write_outputs`` keeps in
    ``bench/tf_timing.json`` for machines without TensorFlow."""
    if not _importable("tensorflow"):
        raise EngineUnavailable("TensorFlow is not installed here")
    if not run.model.is_file():
        raise EngineUnavailable(f"{run.model} is not in the run dir")
    job = Job(TENSORFLOW, str(run.model), str(run.eval_set), task, settings.to_dict())
    result = run_in_subprocess(job, work)
    record = {
        "task": task,
        "source_run": source_run,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": result["machine"],
        "versions": result["versions"],
        "intra_op_threads": result["threads"],
        "settings": {k: settings.to_dict()[k] for k in ("warmup", "runs", "max_seconds")},
        "rows": result["rows"],
        "samples": result["samples"],
    }
    note = "TensorFlow: measured now, in its own process (tf.function, fixed signature)"
    return {"source": "measured", "note": note, **_described(record), "record": record}


def load_tf_timing(run: RunDir, task: str, source_run: str) -> dict | None:
    """The recorded TensorFlow timing of this run's model, or None; refuses another run's."""
    path = run.tf_timing
    if not path.is_file():
        return None
    unreadable = f"{path} is not a readable TensorFlow timing"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        recorded_task, source = record["task"], record["source_run"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{unreadable} ({exc}); delete it and bench again") from None
    if recorded_task != task or source != source_run:
        raise UserError(
            f"{path} was recorded for the {recorded_task} model exported from {source}, not this run's ({source_run}): "
            "delete it, or pass --tf-baseline none"
        )
    missing = [k for k in ("rows", "machine", "recorded_at", "intra_op_threads") if k not in record]
    if missing or not isinstance(record["rows"], list):
        raise UserError(f"{unreadable} (no {', '.join(missing) or 'rows'}); delete it and bench again")
    return record


def recorded_baseline(record: dict, settings: BenchSettings, reason: str | None) -> dict:
    """The recorded rows this bench asked for, and one line saying where and when they were taken."""
    wanted = {(b, n) for b in settings.batch_sizes for n in (None, *settings.seq_lengths)}
    rows = [r for r in record["rows"] if (r["batch_size"], r["seq_len"]) in wanted]
    missing = sorted(wanted - {(r["batch_size"], r["seq_len"]) for r in rows}, key=lambda k: (k[1] or 0, k[0]))
    note = (
        f"TensorFlow: recorded {record['recorded_at']} on {machine_line(record['machine'])} "
        f"({record['intra_op_threads']} threads), not measured now"
        + (f" ({reason})" if reason else "")
        + (
            "; no recorded row for " + ", ".join(f"batch {b}" + (f" len {n}" if n else "") for b, n in missing)
            if missing
            else ""
        )
    )
    print(note, flush=True)
    return {"source": "recorded", "note": note, **_described(record), "rows": rows}


def _described(record: dict) -> dict:
    keys = ("machine", "recorded_at", "versions", "intra_op_threads", "rows", "samples")
    return {k: record[k] for k in keys if k in record}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
