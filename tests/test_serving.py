"""The serving half stands alone: an exported run dir, copied to a machine without the dataset,
TensorFlow, Ray or tf2onnx, benches there (``bench``, ``bench --all``, ``bench compare``).

"That machine" is every Python process started with ``blocked_env``: a ``sitecustomize`` on
``PYTHONPATH`` makes importing the training stack (and the dataset generators, and what only
training needs: pandas, imageio, onnxconverter-common) fail, in the CLI process and
in each engine's timing process alike.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TRAINING_STACK,
    blocking_env,
    copy_run,
    error_line,
    make_run_dir,
    rewrite_eval_set,
    run_cli,
    run_cli_process,
)

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("serving")]  # one xdist worker builds the module's runs

#: The datasets themselves: the synthetic generators and the real-data readers.
DATASET_MODULES = (
    "rnnforge.pipeline.sketch_synthetic",
    "rnnforge.pipeline.quickdraw",
    "rnnforge.pipeline.sketch_rnn",
    "rnnforge.pipeline.input",
)
FAST = ("--warmup", "1", "--runs", "10", "--max-seconds", "0.2")


@pytest.fixture
def blocked_env(tmp_path) -> dict:
    """The environment of an inference machine: neither the training stack nor the datasets."""
    return blocking_env(tmp_path / "inference_python", TRAINING_STACK, DATASET_MODULES)


def rnnforge(env: dict, *args):
    """``rnnforge ARGS`` in a fresh process with ``env``."""
    return run_cli_process(*args, timeout=600, env=env)


@pytest.fixture(scope="module")
def csv_forecast_run(tmp_path_factory) -> Path:
    """A forecast run trained on a CSV file and exported with 100 eval examples; then the CSV is deleted."""
    from rnnforge.pipeline.timeseries import synthetic_series

    folder = tmp_path_factory.mktemp("csv_run")
    csv = folder / "data" / "riders.csv"
    csv.parent.mkdir()
    series = synthetic_series(seed=0)
    csv.write_text("date,value\n" + "".join(f"{day:%Y-%m-%d},{value:.0f}\n" for day, value in series.items()))
    run = make_run_dir(
        folder / "forecast",
        "forecast",
        epochs_steps=10,
        config_overrides={"dataset": "csv", "data_dir": str(csv), "ensemble": 1},
    )
    exported = run_cli("export", "onnx", run, "--eval-examples", "100")
    assert exported.returncode == 0, exported.stderr
    shutil.rmtree(csv.parent)
    return run


def test_the_inference_machine_lacks_the_training_stack(blocked_env):
    """One process with the serving stack imported tries each blocked module in turn."""
    probe = (
        "import json, sys\nimport onnxruntime, onnx, numpy, click, matplotlib, markdown_it\nfailed = {}\n"
        "for name in sys.argv[1:]:\n    try:\n        __import__(name)\n"
        "    except ImportError as exc:\n        failed[name] = str(exc)\nprint(json.dumps(failed))\n"
    )
    modules = (*TRAINING_STACK, *DATASET_MODULES)
    result = subprocess.run([sys.executable, "-c", probe, "os", *modules], env=blocked_env, capture_output=True)
    assert result.returncode == 0, result.stderr
    failed = json.loads(result.stdout)
    assert set(failed) == set(modules), failed  # "os" imports, every blocked module fails
    assert all("blocked: an inference machine" in message for message in failed.values()), failed


def test_bench_runs_without_dataset_or_training_stack(exported_run, csv_forecast_run, tmp_path, blocked_env):
    from rnnforge.export.results import validate_result

    box = tmp_path / "inference_box"
    sketch, forecast = copy_run(exported_run, box / "sketch"), copy_run(csv_forecast_run, box / "forecast")
    (sketch / "model.keras").unlink()  # the serving files suffice
    assert not Path(json.loads((forecast / "config.json").read_text())["data_dir"]).exists()

    one = rnnforge(blocked_env, "bench", sketch, "--batch-sizes", "1,4", *FAST)
    assert one.returncode == 0, one.stderr
    assert "TensorFlow baseline left out: TensorFlow is not installed here" in one.stdout
    assert "batch 1: ORT" in one.stdout and "(no TensorFlow baseline)" in one.stdout
    result = json.loads((sketch / "bench" / "bench.json").read_text())
    validate_result(result)
    assert result["tensorflow"]["source"] == "none" and result["ratios_over_tf"] == {}
    assert {r["engine"] for r in result["latency"]} == {"onnxruntime"} and len(result["latency"]) == 2
    accuracy = result["accuracy"]
    metrics = json.loads((sketch / "metrics.json").read_text())
    assert accuracy["examples"] == 1000 and accuracy["split"] == "test"
    assert accuracy["tensorflow"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert accuracy["onnxruntime"]["accuracy"] == pytest.approx(accuracy["tensorflow"]["accuracy"], abs=0.002)
    assert accuracy["agreement"]["top1_agreement"] >= 0.998 and accuracy["agreement"]["max_abs_diff"] < 1e-4
    assert "**TensorFlow**: no figures" in (sketch / "bench" / "report.md").read_text()

    every = rnnforge(blocked_env, "bench", "--all", box, "--batch-sizes", "1,4", *FAST)
    assert every.returncode == 0, every.stderr
    combined = json.loads((box / "bench_all.json").read_text())
    assert set(combined) == {"sketch", "forecast"}
    for name, result in combined.items():
        validate_result(result)
        assert result["tensorflow"]["source"] == "none", name
    forecast_eval = combined["forecast"]["eval"]
    assert forecast_eval["examples"] == combined["forecast"]["accuracy"]["examples"] == 100
    assert forecast_eval["examples_in_split"] > 100
    forecast_accuracy = combined["forecast"]["accuracy"]
    assert forecast_accuracy["onnxruntime"]["mae"] == pytest.approx(forecast_accuracy["tensorflow"]["mae"], rel=1e-5)
    assert "no TensorFlow baseline" in (box / "bench_report.md").read_text()

    compared = rnnforge(blocked_env, "bench", "compare", sketch / "bench" / "bench.json", box / "bench_all.json")
    assert compared.returncode == 0, compared.stderr
    assert "| sketch | onnxruntime | 4 |" in compared.stdout


def test_a_recorded_tensorflow_timing_stands_in(exported_run, tmp_path, blocked_env):
    run = copy_run(exported_run, tmp_path / "run")
    measured = run_cli("bench", run, "--batch-sizes", "1", *FAST)  # where TensorFlow is installed
    assert measured.returncode == 0, measured.stderr
    record = json.loads((run / "bench" / "tf_timing.json").read_text())
    assert record["task"] == "sketch" and [r["batch_size"] for r in record["rows"]] == [1]
    assert json.loads((run / "bench" / "bench.json").read_text())["tensorflow"]["source"] == "measured"

    served = rnnforge(blocked_env, "bench", run, "--batch-sizes", "1,2", *FAST)
    assert served.returncode == 0, served.stderr
    notes = [line for line in served.stdout.splitlines() if line.startswith("TensorFlow")]
    assert len(notes) == 1 and "not measured now (TensorFlow is not installed here)" in notes[0]
    assert f"TensorFlow: recorded {record['recorded_at']} on " in notes[0] and "no recorded row for batch 2" in notes[0]
    result = json.loads((run / "bench" / "bench.json").read_text())
    assert result["tensorflow"]["source"] == "recorded" and result["tensorflow"]["machine"] == record["machine"]
    assert [r for r in result["latency"] if r["engine"] == "tensorflow"] == record["rows"]
    assert set(result["ratios_over_tf"]["onnxruntime"]) == {"1"}
    assert "not measured now" in (run / "bench" / "report.md").read_text()
    assert json.loads((run / "bench" / "tf_timing.json").read_text()) == record  # a recording is never replaced

    line = error_line(rnnforge(blocked_env, "bench", run, "--tf-baseline", "measure", *FAST))
    assert "--tf-baseline measure: TensorFlow is not installed here" in line
    left_out = rnnforge(blocked_env, "bench", run, "--tf-baseline", "none", "--batch-sizes", "1", *FAST)
    assert left_out.returncode == 0 and "TensorFlow baseline left out: --tf-baseline none" in left_out.stdout
    (run / "bench" / "tf_timing.json").unlink()
    line = error_line(rnnforge(blocked_env, "bench", run, "--tf-baseline", "recorded", *FAST))
    assert "--tf-baseline recorded:" in line and "tf_timing.json does not exist" in line


def test_another_runs_recorded_timing_is_refused(exported_run, tmp_path, blocked_env):
    run = copy_run(exported_run, tmp_path / "run")
    timing = run / "bench" / "tf_timing.json"
    timing.parent.mkdir()
    timing.write_text(json.dumps({"task": "sketch", "source_run": "/elsewhere/sketch", "rows": []}))
    line = error_line(rnnforge(blocked_env, "bench", run, *FAST))
    assert str(timing) in line and "was recorded for the sketch model exported from /elsewhere/sketch" in line


def _edit_eval(edit):
    """The run's eval.npz rewritten by ``edit(arrays, meta)``."""

    def damage(run: Path, forecast_run: Path) -> None:
        rewrite_eval_set(run / "eval.npz", edit)

    return damage


def _truncate(run: Path, forecast_run: Path) -> None:
    data = (run / "eval.npz").read_bytes()
    (run / "eval.npz").write_bytes(data[: len(data) // 2])


def _other_tasks(run: Path, forecast_run: Path) -> None:
    shutil.copy(forecast_run / "eval.npz", run / "eval.npz")


def _as_float64(arrays, meta):
    arrays["x"] = arrays["x"].astype(np.float64)
    meta["input"]["dtype"] = "float64"


def _two_columns(arrays, meta):
    arrays["x"] = np.ascontiguousarray(arrays["x"][..., :2])
    meta["input"]["shape"][-1] = 2


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda run, _: (run / "eval.npz").unlink(), "is missing: this run was exported before"),
        (_other_tasks, "holds 'forecast' examples, but the run is 'sketch'"),
        (_edit_eval(lambda a, m: m.update(source_run="/elsewhere/sketch")), "was written for the run exported from"),
        (_edit_eval(_as_float64), "inputs are float64, but the model takes float32"),
        (_edit_eval(_two_columns), "do not fit the model's input [batch, time, 3]"),
        (_edit_eval(lambda a, m: a.update(y=a["y"][:-1])), "1000 inputs, 999 labels and 1000 reference outputs"),
        (_edit_eval(lambda a, m: a.pop("reference")), "has no reference"),
        (
            _edit_eval(lambda a, m: a.update(reference=a["reference"][:, :7])),
            "TensorFlow's stored outputs are [1000, 7], but the model's output probabilities is [batch, 10]",
        ),
        (_edit_eval(lambda a, m: m["input"].update(dtype="uint8")), "but its record says uint8"),
        (_truncate, "is not a readable eval set"),
    ],
    ids=[
        "missing",
        "other_task",
        "other_run",
        "dtype",
        "shape",
        "labels",
        "no_reference",
        "reference_shape",
        "record",
        "truncated",
    ],
)
def test_an_eval_set_that_does_not_fit_is_refused(damage, expected, exported_run, forecast_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "run")
    damage(run, forecast_run)
    result = run_cli("bench", run, *FAST)
    assert result.returncode == 2
    line = error_line(result)
    assert str(run / "eval.npz") in line and expected in line and f"re-run 'rnnforge export onnx {run}'" in line
    assert not (run / "bench").exists()
