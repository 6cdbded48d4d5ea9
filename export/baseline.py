"""The TensorFlow baseline of ``rnnforge bench`` (``--tf-baseline auto|measure|recorded|none``).

TensorFlow is timed in its own process where it is installed and the run dir holds
``model.keras``; each measurement is kept in ``bench/tf_timing.json`` so that a machine without
TensorFlow (a serving install) can still put the last recorded rows beside ONNX Runtime's, named
as recorded with their machine and date. A recording of another model is refused. Where neither
is possible, TensorFlow is left out with one line saying why.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from rnnforge.core.errors import UserError
from rnnforge.core.run_dir import RunDir
from rnnforge.core.run_files import read_tf_timing
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


def check_baseline(run: RunDir, task: str, source_run: str, settings: BenchSettings) -> None:
    """Before any timing: what ``--tf-baseline`` needs is there, and a recorded timing the bench may
    stand in with (``recorded``; ``auto`` where TensorFlow cannot be measured here) is this model's
    and follows its schema."""
    mode = settings.tf_baseline
    measurable = _importable("tensorflow") and run.model.is_file()
    if mode == "measure" and not measurable:
        reason = (
            "TensorFlow is not installed here"
            if not _importable("tensorflow")
            else f"{run.model} is not in the run dir"
        )
        raise UserError(f"--tf-baseline measure: {reason}")
    if mode == "recorded" and not run.tf_timing.is_file():
        raise UserError(
            f"--tf-baseline recorded: {run.tf_timing} does not exist; bench this run once where "
            "TensorFlow is installed, or pass --tf-baseline none"
        )
    if mode == "recorded" or (mode == "auto" and not measurable):
        load_tf_timing(run, task, source_run)


def load_tf_timing(run: RunDir, task: str, source_run: str) -> dict | None:
    """The recorded TensorFlow timing of this run's model (``bench/tf_timing.json``, checked against
    its schema: ``run_files.read_tf_timing``), or None; refuses another run's."""
    if not run.tf_timing.is_file():
        return None
    return read_tf_timing(run.tf_timing, task, source_run)


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
