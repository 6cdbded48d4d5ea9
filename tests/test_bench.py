"""``rnnforge bench``: bench.json's fields, honest providers, and refusing non-ONNX files."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import error_line, run_cli


@pytest.fixture(scope="module")
def bench_result(exported_run):
    result = run_cli("bench", exported_run, "--batch-sizes", "1,8", "--warmup", "2", "--runs", "15",
                     "--max-seconds", "0.5")
    assert result.returncode == 0, result.stderr
    assert "batch 1: ORT" in result.stdout and "report:" in result.stdout
    return json.loads((exported_run / "bench" / "bench.json").read_text())


def test_bench_json_fields(bench_result, exported_run):
    assert bench_result["task"] == "sketch" and bench_result["schema_version"] == 1
    assert bench_result["provider"]["requested"] == "cpu"
    assert bench_result["provider"]["session_providers"][0] == "CPUExecutionProvider"
    assert bench_result["machine"]["logical_cores"] >= 1 and bench_result["machine"]["cpu"]
    assert {"tensorflow", "tf2onnx", "onnxruntime-gpu", "ray"} <= set(bench_result["versions"])
    assert bench_result["session_creation_ms"] > 0 and bench_result["first_inference_ms"] > 0
    rows = {(r["engine"], r["batch_size"]): r for r in bench_result["latency"]}
    assert set(rows) == {(e, b) for e in ("onnxruntime", "tensorflow") for b in (1, 8)}
    for (engine, batch), row in rows.items():
        lat = row["latency_ms"]
        assert 10 <= row["runs"] <= 15
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert row["throughput_per_s"] == pytest.approx(batch / (lat["mean"] / 1e3))
    assert set(bench_result["ratio_ort_over_tf"]) == {"1", "8"}
    assert bench_result["ratio_ort_over_tf"]["1"] == pytest.approx(
        rows[("onnxruntime", 1)]["latency_ms"]["p50"] / rows[("tensorflow", 1)]["latency_ms"]["p50"])


def test_bench_scores_both_engines_on_the_test_split(bench_result, exported_run):
    accuracy = bench_result["accuracy"]
    metrics = json.loads((exported_run / "metrics.json").read_text())
    assert accuracy["examples"] == 1000
    assert accuracy["tensorflow"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert accuracy["onnxruntime"]["accuracy"] == pytest.approx(accuracy["tensorflow"]["accuracy"], abs=0.002)
    assert accuracy["agreement"]["top1_agreement"] >= 0.998 and accuracy["agreement"]["max_abs_diff"] < 1e-4
    assert accuracy["split"] == "test"
    assert bench_result["parity"]["passed"] is True


def test_bench_report_and_plots(bench_result, exported_run):
    out = exported_run / "bench"
    report = (out / "report.md").read_text()
    assert "| batch | engine | n | p50 ms" in report and "## Architecture" in report
    assert "rnn0 (LSTM)" in report and "![Training curve](../training_curve.png)" in report
    for png in ("latency_vs_batch.png", "latency_distribution.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cuda_is_never_faked(exported_run):
    """Asking for CUDA on a machine without a usable GPU must fail, not report CPU numbers."""
    bench_json = exported_run / "bench" / "bench.json"
    before = bench_json.read_bytes() if bench_json.exists() else None
    result = run_cli("bench", exported_run, "--provider", "cuda", "--batch-sizes", "1", "--runs", "10")
    if shutil.which("nvidia-smi") is None:
        assert result.returncode == 4
        line = error_line(result)
        assert "--provider cuda" in line and "CPU" in line and "refusing" in line or "not in this onnxruntime build" in line
        assert (bench_json.read_bytes() if bench_json.exists() else None) == before
    else:
        assert result.returncode == 0, result.stderr
        assert json.loads(bench_json.read_text())["provider"]["session_providers"][0] == "CUDAExecutionProvider"


def test_not_onnx_is_refused(exported_run, tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"this is not a protobuf")
    line = error_line(run_cli("bench", exported_run, "--model", fake))
    assert f"{fake} is not a valid ONNX model" in line
