"""``rnnforge bench``: bench.json's schema and fields, honest providers, fp16 variants, reports,
``bench --all`` and the ``bench compare`` gate. Shared fixtures are never modified: a test that
exports or benches copies its run first."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import copy_run, error_line, run_cli

pytestmark = pytest.mark.xdist_group("bench")  # one xdist worker builds the module's runs


@pytest.fixture(scope="module")
def fp16_run(exported_run, tmp_path_factory):
    """A copy of the exported sketch run, exported again with --fp16."""
    run = copy_run(exported_run, tmp_path_factory.mktemp("fp16") / "sketch")
    export = run_cli("export", "onnx", run, "--fp16")
    assert export.returncode == 0, export.stderr
    return run


@pytest.fixture(scope="module")
def bench_result(fp16_run):
    result = run_cli(
        "bench",
        fp16_run,
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
    assert "tensorflow batch    1:" in result.stdout and "onnxruntime_fp16 batch    8 len   40:" in result.stdout
    return json.loads((fp16_run / "bench" / "bench.json").read_text())


@pytest.mark.slow
def test_bench_json_fields(bench_result):
    import jsonschema

    from rnnforge.export.results import SCHEMA_PATH, validate_result

    validate_result(bench_result)  # the documented schema, export/bench.schema.json
    jsonschema.validate(bench_result, json.loads(SCHEMA_PATH.read_text()))  # a real JSON Schema validator agrees
    assert bench_result["task"] == "sketch" and bench_result["schema_version"] == 4
    assert not {"onnx_model", "session_creation_ms", "first_inference_ms", "ratio_ort_over_tf"} & set(bench_result)
    assert bench_result["tensorflow"]["source"] == "measured" and bench_result["settings"]["tf_baseline"] == "auto"
    assert bench_result["tensorflow"]["machine"] == bench_result["machine"]
    assert bench_result["eval"]["examples"] == bench_result["eval"]["examples_in_split"] == 1000
    assert bench_result["provider"]["requested"] == "cpu" and bench_result["provider"]["io_binding"] is False
    assert bench_result["provider"]["session_providers"][0] == "CPUExecutionProvider"
    assert bench_result["machine"]["logical_cores"] >= 1 and bench_result["machine"]["cpu"]
    assert {"tensorflow", "tf2onnx", "onnxruntime-gpu", "ray"} <= set(bench_result["versions"])
    assert bench_result["versions"]["opset"] == 17
    assert set(bench_result["sessions"]) == {"fp32", "fp16"}
    assert all(s["session_creation_ms"] > 0 and s["first_inference_ms"] > 0 for s in bench_result["sessions"].values())
    for session in bench_result["sessions"].values():  # ONNX Runtime's own placement, per variant
        assert session["placement"]["nodes"] >= 3 and session["session_providers"] == ["CPUExecutionProvider"]
        assert session["placement"]["by_provider"] == {"CPUExecutionProvider": session["placement"]["nodes"]}
        assert session["intra_op_threads"] == bench_result["provider"]["intra_op_threads"]
        assert session["provider_options"] == {"CPUExecutionProvider": {}}
    fp16_nodes = bench_result["sessions"]["fp16"]["placement"]["nodes"]
    assert fp16_nodes > bench_result["sessions"]["fp32"]["placement"]["nodes"]  # its Cast nodes
    origin = bench_result["provenance"]
    assert origin["onnxruntime"]["file"].endswith("onnxruntime/__init__.py") and origin["onnxruntime"]["version"]
    assert len(origin["before"]["load_average"]) == 3 and "available" in origin["after"]["gpu"]
    engines = ("onnxruntime", "onnxruntime_fp16", "tensorflow")
    rows = {(r["engine"], r["batch_size"], r["seq_len"]): r for r in bench_result["latency"]}
    assert set(rows) == {(e, b, n) for e in engines for b in (1, 8) for n in (None, 40)}
    for (_engine, batch, _), row in rows.items():
        lat = row["latency_ms"]
        assert 10 <= row["runs"] <= 15 and row["warmup"] == {"calls": 2, "until": "fixed"}
        assert row["ci95_ms"]["p50"]["low"] <= lat["p50"] <= row["ci95_ms"]["p50"]["high"]
        assert row["ci95_ms"]["p99"] is None and row["ci95_ms"]["p99_9"] is None  # 15 calls bracket neither
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
        assert row["throughput_per_s"] == pytest.approx(batch / (lat["mean"] / 1e3))
    assert set(bench_result["ratios_over_tf"]) == {"onnxruntime", "onnxruntime_fp16"}
    assert set(bench_result["ratios_over_tf"]["onnxruntime"]) == {"1", "8"}
    assert bench_result["ratios_over_tf"]["onnxruntime"]["1"] == pytest.approx(
        rows[("onnxruntime", 1, None)]["latency_ms"]["p50"] / rows[("tensorflow", 1, None)]["latency_ms"]["p50"]
    )
    single = bench_result["scenarios"]["tensorflow"]
    assert single["single_stream_p90_ms"] == rows[("tensorflow", 1, None)]["latency_ms"]["p90"]
    assert single["offline_samples_per_s"] == max(rows[("tensorflow", b, None)]["throughput_per_s"] for b in (1, 8))


def test_schema_rejects_a_result_missing_a_percentile(bench_result):
    from rnnforge.export.results import SchemaError, validate_result

    broken = json.loads(json.dumps(bench_result))
    del broken["latency"][0]["latency_ms"]["p99"]
    with pytest.raises(SchemaError, match="bench.json: field /latency/0/latency_ms/p99 is missing"):
        validate_result(broken)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(schema_version=3), "field /schema_version is 3, expected 4"),
        (lambda r: r.pop("provenance"), "field /provenance is missing"),
        (lambda r: r["sessions"]["fp32"].pop("placement"), "field /sessions/fp32/placement is missing"),
        (lambda r: r["latency"][0].update(engine="pytorch"), 'field /latency/0/engine is "pytorch", expected one of'),
        (lambda r: r["latency"][0].update(batch_size=0), "field /latency/0/batch_size is 0, expected at least 1"),
        (lambda r: r["latency"][0].update(runs=2.5), "field /latency/0/runs is a number (2.5), expected an integer"),
        (lambda r: r["provider"].update(io_binding="yes"), 'field /provider/io_binding is a string ("yes")'),
        (
            lambda r: r["onnx_models"].update(int4="model.int4.onnx"),
            'field /onnx_models has the key "int4"',
        ),  # int8 is a variant
        (lambda r: r["tensorflow"].update(source="guessed"), 'field /tensorflow/source is "guessed", expected one of'),
        (lambda r: r["latency"][0]["latency_ms"].update(p50=-1.0), "field /latency/0/latency_ms/p50 is -1.0"),
        (
            lambda r: r["settings"].update(batch_sizes=[]),
            "field /settings/batch_sizes has 0 item(s), expected at least 1",
        ),
        (lambda r: r.pop("eval"), "field /eval is missing"),
    ],
)
def test_schema_check_names_the_field(bench_result, edit, message):
    """bench.json is checked with jsonschema before it is written, as every run-dir file is read
    (``core.run_files``): a violation is one line naming its field."""
    from rnnforge.export.results import SchemaError, validate_result

    broken = json.loads(json.dumps(bench_result))
    edit(broken)
    with pytest.raises(SchemaError) as refused:
        validate_result(broken)
    assert message in str(refused.value)


def test_percentiles_on_known_timings():
    from rnnforge.export.measure import latency_stats

    stats = latency_stats([float(v) for v in range(1, 101)], batch_size=4)
    lat = stats["latency_ms"]
    assert (lat["min"], lat["max"], lat["mean"]) == (1.0, 100.0, 50.5)
    assert lat["p50"] == pytest.approx(50.5) and lat["p90"] == pytest.approx(90.1)
    assert lat["p99"] == pytest.approx(99.01) and lat["p99_9"] == pytest.approx(99.901)
    assert stats["runs"] == 100 and stats["throughput_per_s"] == pytest.approx(4 / 0.0505)


def test_bench_scores_every_engine_on_the_test_split(bench_result, fp16_run):
    accuracy = bench_result["accuracy"]
    metrics = json.loads((fp16_run / "metrics.json").read_text())
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


def test_bench_reports_and_plots(bench_result, fp16_run):
    out = fp16_run / "bench"
    report = (out / "report.md").read_text()
    assert "| batch | len | engine | n | warm-up | p50 ms" in report and "## Architecture" in report
    assert "Each engine ran in its own process" in report and "**TensorFlow**: measured now" in report
    assert "**Single-stream**: one closed-loop client" in report and "`rnnforge bench load RUN_DIR`" in report
    assert "## Provenance" in report and "ONNX Runtime's own placement" in report and "*n too small*" in report
    assert report.count("load average") == 2 and "2 warm-up calls per row" in report
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
    from rnnforge.export.eval_set import load_eval_set
    from rnnforge.export.onnx_export import export_fp16
    from rnnforge.export.parity import check_parity
    from rnnforge.models import get_spec

    run = RunDir(exported_run)
    spec = get_spec("sketch")
    strict = dataclasses.replace(spec, onnx=dataclasses.replace(spec.onnx, fp16_atol=1e-7))
    model = run.load_model()
    x = load_eval_set(run.eval_set, "sketch").x[:64]
    with pytest.raises(ParityError, match="fp16 variant differs from TensorFlow beyond atol 1e-07"):
        export_fp16(model, onnx.load(str(run.onnx)), strict, x, tmp_path / "model.fp16.onnx")
    assert not (tmp_path / "model.fp16.onnx").exists()
    assert check_parity(model, run.onnx.read_bytes(), spec, x, 1e-4)["passed"]  # fp32 passes its own gate


@pytest.mark.slow
def test_fp16_keeps_out_of_range_tensors_in_fp32(forecast_run, tmp_path):
    """The forecaster reads and writes raw riders (> 65,504): scaling must stay fp32."""
    run = copy_run(forecast_run, tmp_path / "forecast")
    result = run_cli("export", "onnx", run, "--fp16", "--output", tmp_path / "model.onnx")
    assert result.returncode == 0, result.stderr
    import onnxruntime as ort

    # the record lives beside the model it describes (issue #14): tmp/model.parity.json
    parity = json.loads((tmp_path / "model.parity.json").read_text())["fp16"]
    assert parity["passed"] and len(parity["nodes_kept_fp32"]) >= 4 and parity["max_abs_diff"] <= 1e3
    session = ort.InferenceSession(str(tmp_path / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"


@pytest.mark.slow
def test_bench_fp16_needs_the_export(exported_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "run")
    (run / "model.fp16.onnx").write_bytes(b"stale")  # from an earlier export --fp16
    exported = run_cli("export", "onnx", run)  # a plain export replaces the model: the fp16 copy is stale
    assert exported.returncode == 0, exported.stderr
    assert not (run / "model.fp16.onnx").exists() and "removed the stale" in exported.stdout
    line = error_line(run_cli("bench", run, "--variants", "fp16"))
    assert f"{run / 'model.fp16.onnx'} does not exist" in line and "--fp16" in line


@pytest.mark.slow
def test_cuda_is_never_faked(exported_run, tmp_path):
    """Asking for CUDA on a machine without a usable GPU must fail, not report CPU numbers."""
    run = copy_run(exported_run, tmp_path / "run")
    bench_json = run / "bench" / "bench.json"
    first = run_cli("bench", run, "--batch-sizes", "1", "--runs", "10", "--max-seconds", "0.1", "--tf-baseline", "none")
    assert first.returncode == 0, first.stderr
    before = bench_json.read_bytes()
    for provider in ("cuda", "tensorrt"):
        result = run_cli("bench", run, "--provider", provider, "--batch-sizes", "1", "--runs", "10")
        if shutil.which("nvidia-smi") is None:
            assert result.returncode == 4
            line = error_line(result)
            assert f"--provider {provider}" in line
            assert ("CPU" in line and "refusing" in line) or "not in this onnxruntime build" in line
            assert bench_json.read_bytes() == before
        else:
            assert result.returncode == 0, result.stderr


def test_gpu_provider_settings(exported_run, forecast_run, tmp_path):
    from rnnforge.core.errors import UserError
    from rnnforge.export.engines import provider_setup
    from rnnforge.export.settings import BenchSettings

    example = (100, 3)  # one input's shape, without the batch axis
    cuda = provider_setup(BenchSettings(provider="cuda"), exported_run / "model.onnx", example, tmp_path)
    name, options = cuda.providers[0]
    assert name == "CUDAExecutionProvider" and cuda.io_binding and cuda.device == "cuda"
    assert options["cudnn_conv_algo_search"] == "EXHAUSTIVE" and options["cudnn_conv1d_pad_to_nc1d"] == "1"
    assert "enable_cuda_graph" not in options and cuda.providers == [("CUDAExecutionProvider", options)]  # no CPU EP
    forecast = provider_setup(
        BenchSettings(
            provider="cuda",
            batch_sizes=(1, 8),
            cuda_graph=True,
            provider_options={"cudnn_conv_algo_search": "HEURISTIC"},
        ),
        forecast_run / "model.onnx",
        (56, 1),
        tmp_path,
    )
    assert "cudnn_conv1d_pad_to_nc1d" not in forecast.providers[0][1]  # no Conv1D in the forecaster
    assert forecast.providers[0][1]["enable_cuda_graph"] == "1" and forecast.cuda_graph
    assert forecast.providers[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"
    assert forecast.requested == {"cudnn_conv_algo_search": "HEURISTIC"}  # the session must report it back

    trt = provider_setup(
        BenchSettings(provider="tensorrt", seq_lengths=(25, 100)),
        exported_run / "model.onnx",
        example,
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
        provider_setup(BenchSettings(cuda_graph=True), exported_run / "model.onnx", example, tmp_path)


def test_provider_options_reach_the_session_or_are_refused(exported_run, tmp_path):
    """``--provider-option`` goes to the requested provider; an option the session does not report
    back (ONNX Runtime drops unknown CPU options without a word) is refused, never ignored."""
    from rnnforge.core.errors import UserError
    from rnnforge.export.engines import OrtEngine, provider_setup
    from rnnforge.export.settings import BenchSettings

    model = exported_run / "model.onnx"
    setup = provider_setup(BenchSettings(provider_options={"arena_extend_strategy": "1"}), model, (100, 3), tmp_path)
    assert setup.providers == [("CPUExecutionProvider", {"arena_extend_strategy": "1"})]
    assert setup.options() == {"CPUExecutionProvider": {"arena_extend_strategy": "1"}}
    with pytest.raises(UserError, match="--provider-option arena_extend_strategy: CPUExecutionProvider does not take"):
        OrtEngine(model, setup, threads=1)
    assert OrtEngine(model, provider_setup(BenchSettings(), model, (100, 3), tmp_path), 1).providers() == [
        "CPUExecutionProvider"
    ]

    run = copy_run(exported_run, tmp_path / "run")
    line = error_line(run_cli("bench", run, "--runs", "10", "--provider-option", "arena_extend_strategy=1"))
    assert "--provider-option arena_extend_strategy" in line and "silently ignored" in line
    assert not (run / "bench" / "bench.json").exists()
    assert "expected KEY=VALUE" in error_line(run_cli("bench", run, "--provider-option", "no_value"))


def test_io_binding_gives_the_same_outputs(exported_run, tmp_path):
    from rnnforge.export.engines import OrtEngine, provider_setup
    from rnnforge.export.measure import time_calls
    from rnnforge.export.settings import BenchSettings

    x = np.random.default_rng(0).normal(0, 5, size=(16, 100, 3)).astype(np.float32)
    model = exported_run / "model.onnx"
    plain = provider_setup(BenchSettings(batch_sizes=(16,)), model, x.shape[1:], tmp_path)
    bound = provider_setup(BenchSettings(batch_sizes=(16,), io_binding=True), model, x.shape[1:], tmp_path)
    assert not plain.io_binding and bound.io_binding and bound.device == "cpu"
    expected = OrtEngine(model, plain, 1).predict(x)
    engine = OrtEngine(model, bound, 1)
    assert engine.input_name == "strokes"
    np.testing.assert_array_equal(engine.predict(x), expected)
    latencies = time_calls(engine.bind(x), warmup=1, runs=10, max_seconds=0.1).latencies  # on bound buffers
    assert len(latencies) == 10 and min(latencies) > 0
    assert expected.shape == (16, 10)


def test_graph_sessions_replay_on_the_buffers_they_were_captured_with(exported_run, tmp_path):
    """A CUDA graph replays on the device addresses of its capture: with --cuda-graph every later
    call of a shape (timing, then scoring) must copy its inputs into that shape's first buffers.
    Checked on the CPU provider, where the same binding code runs (there is no graph to capture)."""
    import dataclasses

    from rnnforge.export.engines import OrtEngine, provider_setup
    from rnnforge.export.settings import BenchSettings

    rng = np.random.default_rng(1)
    first, later = (rng.normal(0, 5, size=(8, 100, 3)).astype(np.float32) for _ in range(2))
    model = exported_run / "model.onnx"
    plain = provider_setup(BenchSettings(batch_sizes=(8,)), model, first.shape[1:], tmp_path)
    bound = provider_setup(BenchSettings(batch_sizes=(8,), io_binding=True), model, first.shape[1:], tmp_path)
    engine = OrtEngine(model, dataclasses.replace(bound, cuda_graph=True), 1)
    timed = engine.bind(first)  # the timing's binding captures the graph of this shape
    timed()
    (binding, buffers), *others = engine._graph_bindings.values()
    address = buffers["strokes"].data_ptr()
    expected = OrtEngine(model, plain, 1)
    np.testing.assert_array_equal(engine.predict(later), expected.predict(later))  # scoring, same shape
    assert not others and buffers["strokes"].data_ptr() == address
    np.testing.assert_array_equal(buffers["strokes"].numpy(), later)
    np.testing.assert_array_equal(engine.predict(first[:5]), expected.predict(first[:5]))  # a new shape: its own
    assert len(engine._graph_bindings) == 2


@pytest.mark.slow
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


def test_compare_reads_schema_2_and_3(bench_result, tmp_path):
    """``bench compare`` gates a schema-3 result against a schema-2 one (with its duplicates)."""
    v3 = tmp_path / "v3.json"
    v3.write_text(json.dumps(bench_result))
    v2 = json.loads(json.dumps(bench_result))
    for key in ("eval", "tensorflow"):
        del v2[key]
    del v2["settings"]["tf_baseline"]
    v2.update(
        schema_version=2,
        onnx_model=v2["onnx_models"]["fp32"],
        session_creation_ms=v2["sessions"]["fp32"]["session_creation_ms"],
        first_inference_ms=v2["sessions"]["fp32"]["first_inference_ms"],
        ratio_ort_over_tf=v2["ratios_over_tf"]["onnxruntime"],
    )
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    result = run_cli("bench", "compare", tmp_path / "v2.json", v3)
    assert result.returncode == 0, result.stderr
    assert "no regression" in result.stdout and "| sketch | tensorflow | 8 | 40 |" in result.stdout
    assert "TensorFlow rows" not in result.stdout  # both measured

    recorded = json.loads(json.dumps(bench_result))
    recorded["tensorflow"]["source"] = "recorded"
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))
    result = run_cli("bench", "compare", tmp_path / "v2.json", tmp_path / "recorded.json")
    assert result.returncode == 0 and "TensorFlow rows: sketch measured vs recorded." in result.stdout

    future = dict(bench_result, schema_version=9)
    (tmp_path / "v9.json").write_text(json.dumps(future))
    line = error_line(run_cli("bench", "compare", v3, tmp_path / "v9.json"))
    assert "v9.json: bench.json schema_version 9; this rnnforge reads 2, 3, 4" in line


def test_compare_reads_a_committed_schema_3_file_beside_schema_4(bench_result, tmp_path):
    """The H100 document's raw files (schema 3) stay comparable with today's bench.json (schema 4)."""
    from pathlib import Path

    committed = Path(__file__).parent.parent / "docs" / "benchmarks" / "gpu-h100" / "cpu_bench_all.json"
    assert {r["schema_version"] for r in json.loads(committed.read_text()).values()} == {3}
    v4 = tmp_path / "v4.json"
    v4.write_text(json.dumps(bench_result))
    result = run_cli("bench", "compare", committed, v4, "--threshold", "1000")
    assert result.returncode == 0, result.stderr
    assert "| sketch | onnxruntime | 1 |" in result.stdout and "| sketch | tensorflow | 8 |" in result.stdout
