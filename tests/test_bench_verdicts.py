"""Verdicts a skeptical reader can check (issue #28): where ONNX Runtime placed each node, and a
GPU session refused when one would run on the CPU; the provenance of every figure; percentiles
with 95 % intervals; warm-up until stable and ``--target-ci`` stopping. Fast: a two-node ONNX
model built here, an injected session factory standing in for a GPU build, and a fake clock
for the timing rules (no pass/fail on real timings)."""

from __future__ import annotations

import contextlib
import json
import os
import stat

import numpy as np
import pytest

from rnnforge.core import stats
from rnnforge.core.errors import ProviderError

REFUSAL = (
    "[ONNXRuntimeError] : 1 : FAIL : This session contains graph nodes that are assigned to the default CPU EP, "
    "but fallback to CPU EP has been explicitly disabled by the user."
)
#: What a strict session gives when the requested provider did not load and onnxruntime's Python
#: retried with its fall-back list (the CPU EP named): seen with --provider tensorrt, no libnvinfer.
CONFLICT = (
    "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Conflicting session configuration: explicitly added the CPU EP to "
    "the session, but also disabled fallback to the CPU EP via session configuration options."
)


@pytest.fixture
def tiny_model(tmp_path):
    """``y = sigmoid(relu(x))`` on ``x: [batch, 4]``: two nodes ORT does not fuse."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu0"),
        helper.make_node("Sigmoid", ["h"], ["y"], name="sig0"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def cpu_setup(model, tmp_path, **settings):
    from rnnforge.export.engines import provider_setup
    from rnnforge.export.settings import BenchSettings

    return provider_setup(BenchSettings(**settings), model, (4,), tmp_path)


def test_placement_is_onnx_runtimes_own_count_by_provider(tiny_model, tmp_path):
    from rnnforge.export.engines import OrtEngine

    engine = OrtEngine(tiny_model, cpu_setup(tiny_model, tmp_path), threads=1)
    x = np.ones((3, 4), np.float32)
    assert engine.placement(x) == {"nodes": 2, "by_provider": {"CPUExecutionProvider": 2}}
    applied = engine.applied()
    assert applied["session_providers"] == ["CPUExecutionProvider"] and applied["intra_op_threads"] == 1
    assert applied["provider_options"] == engine.session.get_provider_options()
    assert not list(tmp_path.glob("**/placement*.json"))  # the probe's profile is not left behind


class LackingSession:
    """A GPU build's session as a CPU machine can have one: a real CPU session whose profile says
    that ``lacking`` ran on the CPU EP and every other node on ``provider``."""

    def __init__(self, session, provider, lacking, loaded=True):
        self.session, self.provider, self.lacking, self.loaded = session, provider, lacking, loaded

    def get_providers(self):
        return [self.provider, "CPUExecutionProvider"] if self.loaded else ["CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self.session, name)

    def end_profiling(self):
        path = self.session.end_profiling()
        with open(path) as profile:
            events = json.load(profile)
        for event in events:
            if event.get("cat") == "Node" and "provider" in event.get("args", {}):
                lacking = event["args"]["op_name"] == self.lacking
                event["args"]["provider"] = "CPUExecutionProvider" if lacking else self.provider
        with open(path, "w") as out:
            json.dump(events, out)
        return path


def lacking_factory(lacking, loaded=True, calls=None, refusal=REFUSAL):
    """An ``InferenceSession`` stand-in: refuses a strict session as ONNX Runtime does when a node
    would fall back to the CPU; otherwise a ``LackingSession`` over a real CPU session."""
    import onnxruntime as ort

    def factory(path, sess_options, providers):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        strict = _entries(sess_options).get("session.disable_cpu_ep_fallback") == "1"
        if calls is not None:
            calls.append((names, strict))
        if strict:
            assert "CPUExecutionProvider" not in names  # ORT refuses that combination outright
            raise RuntimeError(refusal)
        real = ort.InferenceSession(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        return LackingSession(real, names[0], lacking, loaded)

    return factory


def _entries(options) -> dict:
    found = {}
    with contextlib.suppress(Exception):  # ORT raises for a key never set
        found["session.disable_cpu_ep_fallback"] = options.get_session_config_entry("session.disable_cpu_ep_fallback")
    return found


@pytest.fixture
def gpu_build(monkeypatch):
    """This onnxruntime as a GPU build (the refusal path runs the same on a CPU-only package)."""
    import onnxruntime as ort

    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(ort, "preload_dlls", lambda: None, raising=False)


@pytest.mark.usefixtures("gpu_build")
def test_a_gpu_session_with_a_node_on_the_cpu_is_refused_naming_it(tiny_model, tmp_path):
    from rnnforge.export.engines import OrtEngine, provider_setup
    from rnnforge.export.settings import BenchSettings

    setup = provider_setup(BenchSettings(provider="cuda"), tiny_model, (4,), tmp_path)
    assert [p[0] if isinstance(p, tuple) else p for p in setup.providers] == ["CUDAExecutionProvider"]
    calls = []
    with pytest.raises(ProviderError) as refused:
        OrtEngine(tiny_model, setup, threads=1, factory=lacking_factory("Sigmoid", calls=calls))
    assert refused.value.exit_code == 4
    line = str(refused.value)
    assert "\n" not in line and line.startswith("--provider cuda: node 'sig0' (op Sigmoid)")
    assert "cannot be placed on CUDAExecutionProvider" in line and "(1 of 2 nodes on CPUExecutionProvider)" in line
    assert calls == [  # strict first; then a probe that may use the CPU, to name the node
        (["CUDAExecutionProvider"], True),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], False),
    ]


def test_a_refusal_of_shape_arithmetic_on_the_cpu_says_where_it_comes_from(tiny_model, tmp_path):
    from rnnforge.export.engines import provider_setup, unplaced
    from rnnforge.export.settings import BenchSettings

    setup = provider_setup(BenchSettings(provider="cuda"), tiny_model, (4,), tmp_path)
    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    shapes = [
        {"name": "dense/Tensordot/Shape", "op": "Shape", "provider": cpu},
        {"name": "dense/Tensordot/Shape__9", "op": "Cast", "provider": cpu},
        {"name": "dense/Tensordot/GatherV2", "op": "Gather", "provider": cpu},
        {"name": "dense/Tensordot/MatMul", "op": "MatMul", "provider": cuda},
    ]
    line = str(unplaced(tiny_model, setup, shapes))
    assert "(3 of 4 nodes on CPUExecutionProvider); all of them shape arithmetic (Cast, Gather, Shape)" in line
    assert "Tensordot" in line and "\n" not in line
    compute = [*shapes, {"name": "lstm", "op": "LSTM", "provider": cpu}]  # real work on the CPU: no excuse given
    assert "shape arithmetic" not in str(unplaced(tiny_model, setup, compute))


@pytest.mark.usefixtures("gpu_build")
@pytest.mark.parametrize("refusal", [REFUSAL, CONFLICT])
def test_a_provider_that_did_not_load_is_a_fall_back_not_a_node(tiny_model, tmp_path, refusal):
    from rnnforge.export.engines import OrtEngine, provider_setup
    from rnnforge.export.settings import BenchSettings

    setup = provider_setup(BenchSettings(provider="tensorrt"), tiny_model, (4,), tmp_path)
    factory = lacking_factory("Sigmoid", loaded=False, refusal=refusal)
    with pytest.raises(ProviderError, match="fell back to CPUExecutionProvider .*refusing to label") as refused:
        OrtEngine(tiny_model, setup, threads=1, factory=factory)
    assert refused.value.exit_code == 4


def test_profile_nodes_are_counted_by_provider(tmp_path):
    """ONNX Runtime's profile: one count per node (its kernel_time event), by the provider it ran on."""
    from rnnforge.export.engines import placement_summary, profile_nodes

    profile = tmp_path / "profile.json"
    events = [
        {"cat": "Session", "name": "model_run", "args": {}},
        *(
            {"cat": "Node", "name": f"{name}_{part}", "args": {"op_name": op, "provider": provider}}
            for name, op, provider in (
                ("lstm", "LSTM", "CUDAExecutionProvider"),
                ("copy_in", "MemcpyFromHost", "CUDAExecutionProvider"),
                ("shape", "Shape", "CPUExecutionProvider"),
            )
            for part in ("fence_before", "kernel_time", "fence_after")
        ),
    ]
    profile.write_text(json.dumps(events))
    nodes = profile_nodes(profile)
    assert [n["name"] for n in nodes] == ["lstm", "copy_in", "shape"]
    assert placement_summary(nodes) == {
        "nodes": 3,
        "by_provider": {"CUDAExecutionProvider": 2, "CPUExecutionProvider": 1},
    }
    profile.write_text("[{]")
    with pytest.raises(ProviderError, match="could not be read"):
        profile_nodes(profile)


# --- percentiles with intervals ------------------------------------------------------------------


def test_percentiles_carry_intervals_only_where_n_supports_them():
    """A synthetic sample with known quantiles: 1..1000 ms, shuffled."""
    from rnnforge.export.measure import latency_stats, row_line
    from rnnforge.export.report import percentile_cell

    sample = np.random.default_rng(0).permutation(np.arange(1, 1001, dtype=float))
    row = {"engine": "onnxruntime", "batch_size": 1, "seq_len": None, **latency_stats(list(sample), 1)}
    ci = row["ci95_ms"]
    assert ci["p99_9"] is None  # 2,995 calls needed, 1,000 timed
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        expected = stats.quantile_interval(sample, q)
        assert (ci[key]["low"], ci[key]["high"]) == (expected.low, expected.high)  # ranks on 1..1000 are values
        assert ci[key]["low"] <= row["latency_ms"][key] <= ci[key]["high"] and ci[key]["coverage"] >= 0.95
        assert ci[key]["low"] <= 1000 * q <= ci[key]["high"]  # the known quantile
    assert 460 <= ci["p50"]["low"] < 500 < ci["p50"]["high"] <= 540  # about +-31 ranks at n = 1000
    assert percentile_cell(row, "p99_9") == "*n too small*"
    assert percentile_cell(row, "p50") == f"500.500 ({ci['p50']['low']:.3f}-{ci['p50']['high']:.3f})"
    short = {"engine": "onnxruntime", "batch_size": 1, "seq_len": None, **latency_stats(list(sample[:20]), 1)}
    assert short["ci95_ms"]["p90"] is None and short["ci95_ms"]["p50"] is not None  # p90 needs 29
    assert "p99 n too small" in row_line(short) and "p50 " in row_line(short)
    assert (
        percentile_cell({k: v for k, v in short.items() if k != "ci95_ms"}, "p90")
        == f"{short['latency_ms']['p90']:.3f}"
    )


class FakeClock:
    """Seconds that advance only when a fake call says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_call(clock, latencies_ms):
    values = iter(latencies_ms)

    def call():
        clock.now += next(values) / 1e3

    return call


def test_target_ci_times_until_the_p50_interval_is_narrow_enough():
    from rnnforge.export.measure import MIN_RUNS, time_calls

    rng = np.random.default_rng(1)
    clock = FakeClock()
    latencies = rng.lognormal(0.0, 0.3, size=100_000)  # median 1 ms
    timing = time_calls(fake_call(clock, latencies), 0, runs=100, max_seconds=1e6, target_ci=0.02, clock=clock)
    n = len(timing.latencies)
    assert timing.stopped == "target ci" and n > 100  # --runs does not cap it
    assert stats.median_within(timing.latencies, 0.02)
    checked = MIN_RUNS  # the check before the last one was not yet narrow enough
    while checked + max(MIN_RUNS, checked // 10) < n:
        checked += max(MIN_RUNS, checked // 10)
    assert not stats.median_within(timing.latencies[:checked], 0.02)
    np.testing.assert_allclose(timing.latencies, latencies[:n])

    clock = FakeClock()
    cut = time_calls(fake_call(clock, latencies), 0, runs=100, max_seconds=0.05, target_ci=0.001, clock=clock)
    assert cut.stopped == "time limit" and not stats.median_within(cut.latencies, 0.001)
    assert len(cut.latencies) == 50  # 0.05 s of 1 ms calls (after MIN_RUNS)
    clock = FakeClock()
    plain = time_calls(fake_call(clock, latencies), 3, runs=40, max_seconds=1e6, clock=clock)
    assert (plain.stopped, len(plain.latencies), plain.warmup_calls, plain.warmup_until) == ("runs", 40, 3, "fixed")


def test_warm_up_runs_until_the_latency_is_stable_and_counts_the_calls():
    from rnnforge.export.measure import time_calls, warm_up

    cold = list(np.linspace(8.0, 1.0, 45))  # a cold start settling over 45 calls
    steady = list(1.0 + 0.01 * np.random.default_rng(2).standard_normal(1000))
    clock = FakeClock()
    calls, until = warm_up(fake_call(clock, cold + steady), None, 1e6, clock)
    assert until == "stable" and calls == stats.warmup_calls(cold + steady) and 45 < calls <= 90
    assert calls % 10 == 0
    clock = FakeClock()
    rising = list(np.geomspace(1.0, 1e4, 2000))  # never stable: the time limit ends it
    calls, until = warm_up(fake_call(clock, rising), None, 0.5, clock)
    assert until == "time limit" and stats.warmup_calls(rising[:calls]) is None
    clock = FakeClock()
    timing = time_calls(fake_call(clock, cold + steady), None, runs=20, max_seconds=1e6, clock=clock)
    assert (timing.warmup_until, timing.warmup_calls) == ("stable", stats.warmup_calls(cold + steady))
    assert timing.latencies == pytest.approx(steady[timing.warmup_calls - 45 : timing.warmup_calls - 45 + 20])


def test_settings_refuse_a_bad_target_ci():
    from rnnforge.core.errors import UserError
    from rnnforge.export.settings import BenchSettings

    assert BenchSettings(target_ci=0.02).checked().target_ci == 0.02 and BenchSettings().warmup is None
    for bad in (0.0, -1.0, 0.9, float("nan")):
        with pytest.raises(UserError, match="--target-ci"):
            BenchSettings(target_ci=bad).checked()


# --- provenance ----------------------------------------------------------------------------------


#: What nvidia-smi printed on an idle H200 (driver 580.159.04) for ``core.machine.GPU_FIELDS``, and
#: its header line: the real output's format, so the parser is tested against it.
H200_LINE = "0, NVIDIA H200, 580.159.04, P0, 345, 1980, 3201, 40, 93.11, 700.00"
H200_HEADER = "| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |"


def fake_nvidia_smi(folder, csv_line: str, exit_code: int = 0):
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in --query-gpu=*) echo "' + csv_line + '"; exit ' + str(exit_code) + ";; esac\n"
        f'echo "{H200_HEADER}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_provenance_records_ort_its_file_the_gpu_state_and_the_load(tmp_path, monkeypatch):
    import onnxruntime as ort

    from rnnforge.core.machine import GPU_FIELDS, gpu_state
    from rnnforge.export.provenance import provenance, snapshot
    from rnnforge.export.report import provenance_block

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    absent = snapshot()
    assert absent["gpu"] == {"available": False, "why": "no nvidia-smi on the PATH"}
    assert len(absent["load_average"]) == 3

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_nvidia_smi(bin_dir, H200_LINE)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")  # sh for the script
    state = gpu_state()
    assert state["available"] and len(state["gpus"]) == 1 and set(state["gpus"][0]) == set(GPU_FIELDS)
    gpu = state["gpus"][0]
    assert (gpu["name"], gpu["clocks.sm"], gpu["clocks.max.sm"], gpu["temperature.gpu"], gpu["power.limit"]) == (
        "NVIDIA H200",
        345,
        1980,
        40,
        700.0,
    )
    record = provenance(snapshot(), snapshot())
    assert record["onnxruntime"]["version"] == ort.__version__ and record["onnxruntime"]["file"] == ort.__file__
    assert record["cuda"]["driver"] == "580.159.04" and record["cuda"]["driver_cuda_version"] == "13.0"
    assert set(record["cpu"]) == {"model", "governor"} and record["after"]["gpu"]["available"]

    result = {
        "provenance": record,
        "sessions": {
            "fp32": {
                "session_providers": ["CPUExecutionProvider"],
                "provider_options": {"CPUExecutionProvider": {}},
                "intra_op_threads": 2,
                "inter_op_threads": 0,
                "placement": {"nodes": 2, "by_provider": {"CPUExecutionProvider": 2}},
            }
        },
    }
    block = "\n".join(provenance_block(result))
    assert block.startswith("## Provenance") and f"imported from `{ort.__file__}`" in block
    assert "- fp32: 2 nodes, 2 on CPUExecutionProvider" in block and "inter-op ONNX Runtime's default" in block
    assert "NVIDIA driver 580.159.04 (CUDA 13.0)" in block and "SM 345/1980 MHz" in block and "700.0 W limit" in block
    assert block.count("load average") == 2

    fake_nvidia_smi(bin_dir, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver", 9)
    failed = gpu_state()
    assert not failed["available"] and "exit 9" in failed["why"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    without = "\n".join(provenance_block({**result, "provenance": provenance(snapshot(), snapshot())}))
    assert "GPU not available (no nvidia-smi on the PATH)" in without and "NVIDIA driver" not in without
