"""``rnnforge bench``: bench.json's schema and fields, honest providers, fp16 variants, reports,
``bench --all`` and the ``bench compare`` gate."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import error_line, run_cli


@pytest.fixture(scope="module")
def bench_result(exported_run):
    export = run_cli("export", "onnx", exported_run, "--fp16")
    assert export.returncode == 0, export.stderr
    result = run_cli(
        "bench",
        exported_run,
        "--batch-sizes",
        "1,8",
        "--seq-lengths",
        "40",
        "--variants",
        "fp32,fp16",
        "--warmup",
        "2",
        "--runs",
        "15",
        "--max-seconds",
        "0.5",
    )
    assert result.returncode == 0, result.stderr
    assert "batch 1: ORT" in result.stdout and "batch 1: ORT fp16" in result.stdout and "report:" in result.stdout
    return json.loads((exported_run / "bench" / "bench.json").read_text())


def test_bench_json_fields(bench_result):
    from rnnforge.export.bench import validate_result

    validate_result(bench_result)  # the documented schema, export/bench.schema.json
    assert bench_result["task"] == "sketch" and bench_result["schema_version"] == 2
    assert bench_result["provider"]["requested"] == "cpu" and bench_result["provider"]["io_binding"] is False
    assert bench_result["provider"]["session_providers"][0] == "CPUExecutionProvider"
    assert bench_result["machine"]["logical_cores"] >= 1 and bench_result["machine"]["cpu"]
    assert {"tensorflow", "tf2onnx", "onnxruntime-gpu", "ray"} <= set(bench_result["versions"])
    assert bench_result["versions"]["opset"] == 17
    assert set(bench_result["sessions"]) == {"fp32", "fp16"}
    assert all(s["session_creation_ms"] > 0 and s["first_inference_ms"] > 0 for s in bench_result["sessions"].values())
    engines = ("onnxruntime", "onnxruntime_fp16", "tensorflow")
    rows = {(r["engine"], r["batch_size"], r["seq_len"]): r for r in bench_result["latency"]}
    assert set(rows) == {(e, b, n) for e in engines for b in (1, 8) for n in (None, 40)}
    for (_engine, batch, _), row in rows.items():
        lat = row["latency_ms"]
        assert 10 <= row["runs"] <= 15
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
        assert row["throughput_per_s"] == pytest.approx(batch / (lat["mean"] / 1e3))
    assert set(bench_result["ratios_over_tf"]) == {"onnxruntime", "onnxruntime_fp16"}
    assert bench_result["ratio_ort_over_tf"] == bench_result["ratios_over_tf"]["onnxruntime"]
    assert bench_result["ratio_ort_over_tf"]["1"] == pytest.approx(
        rows[("onnxruntime", 1, None)]["latency_ms"]["p50"] / rows[("tensorflow", 1, None)]["latency_ms"]["p50"]
    )
    single = bench_result["scenarios"]["tensorflow"]
    assert single["single_stream_p90_ms"] == rows[("tensorflow", 1, None)]["latency_ms"]["p90"]
    assert single["offline_samples_per_s"] == max(rows[("tensorflow", b, None)]["throughput_per_s"] for b in (1, 8))


def test_schema_rejects_a_result_missing_a_percentile(bench_result):
    import jsonschema

    from rnnforge.export.bench import validate_result

    broken = json.loads(json.dumps(bench_result))
    del broken["latency"][0]["latency_ms"]["p99"]
    with pytest.raises(jsonschema.ValidationError, match="p99"):
        validate_result(broken)


def test_percentiles_on_known_timings():
    from rnnforge.export.bench import latency_stats

    stats = latency_stats([float(v) for v in range(1, 101)], batch_size=4)
    lat = stats["latency_ms"]
    assert (lat["min"], lat["max"], lat["mean"]) == (1.0, 100.0, 50.5)
    assert lat["p50"] == pytest.approx(50.5) and lat["p90"] == pytest.approx(90.1)
    assert lat["p99"] == pytest.approx(99.01) and lat["p99_9"] == pytest.approx(99.901)
    assert stats["runs"] == 100 and stats["throughput_per_s"] == pytest.approx(4 / 0.0505)


def test_bench_scores_every_engine_on_the_test_split(bench_result, exported_run):
    accuracy = bench_result["accuracy"]
    metrics = json.loads((exported_run / "metrics.json").read_text())
    assert accuracy["examples"] == 1000 and accuracy["split"] == "test"
    assert accuracy["tensorflow"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert accuracy["onnxruntime"]["accuracy"] == pytest.approx(accuracy["tensorflow"]["accuracy"], abs=0.002)
    assert accuracy["agreement"]["top1_agreement"] >= 0.998 and accuracy["agreement"]["max_abs_diff"] < 1e-4
    fp16 = accuracy["agreement_by_engine"]["onnxruntime_fp16"]
    assert fp16["top1_agreement"] >= 0.99 and 1e-6 < fp16["max_abs_diff"] < 1e-2  # really half precision
    delta = accuracy["delta_vs_tensorflow"]["onnxruntime_fp16"]["accuracy"]
    assert delta == pytest.approx(accuracy["onnxruntime_fp16"]["accuracy"] - accuracy["tensorflow"]["accuracy"])
    parity = bench_result["parity"]
    assert parity["passed"] is True and parity["fp16"]["passed"] is True and parity["fp16"]["atol"] == 1e-2


def test_bench_reports_and_plots(bench_result, exported_run):
    out = exported_run / "bench"
    report = (out / "report.md").read_text()
    assert "| batch | len | engine | n | p50 ms" in report and "## Architecture" in report
    assert "rnn0 (LSTM)" in report and "![Training curve](../training_curve.png)" in report
    assert "- fp16: opset 17" in report and "SingleStream p90" in report and "### By sequence length" in report
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html
    assert html.count('src="data:image/png;base64,') >= 5 and 'src="latency' not in html  # self-contained
    for png in (
        "latency_vs_batch.png",
        "latency_distribution.png",
        "throughput_vs_latency.png",
        "latency_vs_seq_len.png",
    ):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fp16_parity_gate_refuses_and_writes_nothing(exported_run, tmp_path):
    import onnx

    from rnnforge.core.errors import ParityError
    from rnnforge.core.run_dir import RunDir
    from rnnforge.export.onnx_export import check_parity, export_fp16
    from rnnforge.models import TASKS, get_spec

    run = RunDir(exported_run)
    spec = get_spec("sketch")
    strict = dataclasses.replace(spec, onnx=dataclasses.replace(spec.onnx, fp16_atol=1e-7))
    model = run.load_model()
    x = get_spec("sketch").load_data(run.load_config(TASKS)).splits["test"][0][:64]
    with pytest.raises(ParityError, match="fp16 variant differs from TensorFlow beyond atol 1e-07"):
        export_fp16(model, onnx.load(str(run.onnx)), strict, x, tmp_path / "model.fp16.onnx")
    assert not (tmp_path / "model.fp16.onnx").exists()
    assert check_parity(model, run.onnx.read_bytes(), spec, x, 1e-4)["passed"]  # fp32 passes its own gate


def test_fp16_keeps_out_of_range_tensors_in_fp32(forecast_run, tmp_path):
    """The forecaster reads and writes raw riders (> 65,504): scaling must stay fp32."""
    result = run_cli("export", "onnx", forecast_run, "--fp16", "--output", tmp_path / "model.onnx")
    assert result.returncode == 0, result.stderr
    import onnxruntime as ort

    parity = json.loads((forecast_run / "parity.json").read_text())["fp16"]
    assert parity["passed"] and len(parity["nodes_kept_fp32"]) >= 4 and parity["max_abs_diff"] <= 1e3
    session = ort.InferenceSession(str(tmp_path / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"


def test_bench_fp16_needs_the_export(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench"))
    (run / "model.fp16.onnx").write_bytes(b"stale")  # from an earlier export --fp16
    exported = run_cli("export", "onnx", run)  # a plain export replaces the model: the fp16 copy is stale
    assert exported.returncode == 0, exported.stderr
    assert not (run / "model.fp16.onnx").exists() and "removed the stale" in exported.stdout
    line = error_line(run_cli("bench", run, "--variants", "fp16"))
    assert f"{run / 'model.fp16.onnx'} does not exist" in line and "--fp16" in line


def test_cuda_is_never_faked(exported_run):
    """Asking for CUDA on a machine without a usable GPU must fail, not report CPU numbers."""
    bench_json = exported_run / "bench" / "bench.json"
    before = bench_json.read_bytes() if bench_json.exists() else None
    for provider in ("cuda", "tensorrt"):
        result = run_cli("bench", exported_run, "--provider", provider, "--batch-sizes", "1", "--runs", "10")
        if shutil.which("nvidia-smi") is None:
            assert result.returncode == 4
            line = error_line(result)
            assert f"--provider {provider}" in line
            assert ("CPU" in line and "refusing" in line) or "not in this onnxruntime build" in line
            assert (bench_json.read_bytes() if bench_json.exists() else None) == before
        else:
            assert result.returncode == 0, result.stderr


def test_gpu_provider_settings(exported_run, forecast_run, tmp_path):
    import onnxruntime as ort

    from rnnforge.core.errors import UserError
    from rnnforge.export.bench import provider_setup
    from rnnforge.models import get_spec

    x = np.zeros((8, 100, 3), np.float32)
    cuda = provider_setup("cuda", get_spec("sketch"), exported_run / "model.onnx", x, (1, 32, 256), None, tmp_path)
    name, options = cuda.providers[0]
    assert name == "CUDAExecutionProvider" and cuda.io_binding and cuda.device == "cuda"
    assert options["cudnn_conv_algo_search"] == "EXHAUSTIVE" and options["cudnn_conv1d_pad_to_nc1d"] == "1"
    assert "enable_cuda_graph" not in options and cuda.providers[-1] == "CPUExecutionProvider"
    forecast = provider_setup(
        "cuda",
        get_spec("forecast"),
        forecast_run / "model.onnx",
        np.zeros((4, 56, 1), np.float32),
        (1, 8),
        None,
        tmp_path,
        cuda_graph=True,
        user_options={"cudnn_conv_algo_search": "HEURISTIC"},
    )
    assert "cudnn_conv1d_pad_to_nc1d" not in forecast.providers[0][1]  # no Conv1D in the forecaster
    assert forecast.providers[0][1]["enable_cuda_graph"] == "1" and forecast.cuda_graph
    assert forecast.providers[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"

    trt = provider_setup(
        "tensorrt",
        get_spec("sketch"),
        exported_run / "model.onnx",
        x,
        (1, 32, 256),
        [25, 100],
        tmp_path,
        variant="fp16",
    )
    name, options = trt.providers[0]
    assert name == "TensorrtExecutionProvider" and trt.providers[1][0] == "CUDAExecutionProvider"
    assert options["trt_fp16_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path / "trt_cache")
    assert (
        options["trt_profile_min_shapes"],
        options["trt_profile_opt_shapes"],
        options["trt_profile_max_shapes"],
    ) == ("strokes:1x25x3", "strokes:32x100x3", "strokes:256x100x3")
    with pytest.raises(UserError, match="--cuda-graph needs --provider cuda"):
        provider_setup("cpu", get_spec("sketch"), exported_run / "model.onnx", x, (1,), None, tmp_path, cuda_graph=True)
    assert "CPUExecutionProvider" in ort.get_available_providers()


def test_io_binding_gives_the_same_outputs(exported_run, tmp_path):
    from rnnforge.export.bench import OrtEngine, provider_setup
    from rnnforge.models import get_spec

    x = np.random.default_rng(0).normal(0, 5, size=(16, 100, 3)).astype(np.float32)
    plain = provider_setup("cpu", get_spec("sketch"), exported_run / "model.onnx", x, (16,), None, tmp_path)
    bound = provider_setup(
        "cpu", get_spec("sketch"), exported_run / "model.onnx", x, (16,), None, tmp_path, io_binding=True
    )
    assert not plain.io_binding and bound.io_binding and bound.device == "cpu"
    expected = OrtEngine(exported_run / "model.onnx", plain, "strokes", 1).predict(x)
    engine = OrtEngine(exported_run / "model.onnx", bound, "strokes", 1)
    np.testing.assert_array_equal(engine.predict(x), expected)
    call = engine.bind(x)
    call()  # the timed call runs on the bound buffers
    assert expected.shape == (16, 10)


def test_bench_all_and_compare_gate(exported_run, forecast_run, tmp_path):
    runs = tmp_path / "runs"
    for name, source in (("sketch", exported_run), ("forecast", forecast_run)):
        shutil.copytree(source, runs / name, ignore=shutil.ignore_patterns("bench", "*.fp16.onnx"))
    (runs / "notes").mkdir()  # not a run: ignored
    result = run_cli(
        "bench", "--all", runs, "--batch-sizes", "1,4", "--warmup", "1", "--runs", "10", "--max-seconds", "0.2"
    )
    assert result.returncode == 0, result.stderr
    combined = json.loads((runs / "bench_all.json").read_text())
    assert set(combined) == {"sketch", "forecast"} and combined["forecast"]["task"] == "forecast"
    report = (runs / "bench_report.md").read_text()
    assert "| forecast | forecast | cpu |" in report and "[report](sketch/bench/report.md)" in report
    assert (runs / "bench_report.html").is_file() and (runs / "forecast" / "bench" / "report.html").is_file()

    baseline = runs / "sketch" / "bench" / "bench.json"
    same = run_cli("bench", "compare", baseline, runs / "bench_all.json")
    assert same.returncode == 0 and "no regression" in same.stdout and "| sketch | onnxruntime | 4 |" in same.stdout
    slower = json.loads(baseline.read_text())
    for row in slower["latency"]:
        if row["engine"] == "onnxruntime" and row["batch_size"] == 4:
            row["latency_ms"] = {k: v * 1.5 for k, v in row["latency_ms"].items()}
            row["throughput_per_s"] /= 1.5
    candidate = tmp_path / "slower.json"
    candidate.write_text(json.dumps(slower))
    gated = run_cli("bench", "compare", baseline, candidate, "--threshold", "1.2", "--output", tmp_path / "cmp.md")
    assert gated.returncode == 5 and "REGRESSED" in gated.stdout
    line = error_line(gated)
    assert "1 row(s) regressed beyond 1.2x on p50" in line and "sketch onnxruntime batch 4: p50 1.50x worse" in line
    assert "| 1.500 |" in (tmp_path / "cmp.md").read_text()
    assert run_cli("bench", "compare", baseline, candidate, "--threshold", "1.6").returncode == 0
    assert (
        run_cli("bench", "compare", baseline, candidate, "--metric", "throughput", "--threshold", "1.2").returncode == 5
    )
    assert "is neither a bench.json" in error_line(
        run_cli("bench", "compare", baseline, runs / "sketch" / "config.json")
    )
