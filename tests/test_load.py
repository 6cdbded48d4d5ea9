"""``rnnforge bench load`` and ``rnnforge.serving``: the load generator, the dynamic batcher and the
SLO search on fake sessions whose latency is known (``time.sleep`` never returns early, so every
bound below holds however busy the machine is), then the real thing on a small exported run.

No test asserts that something is fast: only orderings and lower bounds that a sleep guarantees.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from conftest import ROOT, TRAINING_STACK, blocking_env, copy_run, error_line, run_cli, run_cli_process

from rnnforge.core.arrays import NamedArrays, count, first
from rnnforge.export.capacity import (
    GPU_INSTANCES,
    Config,
    Engines,
    Space,
    candidates,
    default_space,
    search,
    shortfall,
    sustained,
)
from rnnforge.export.load import (
    Batcher,
    Recorder,
    Request,
    clock,
    indexed_gather,
    measure_closed_loop,
    measure_open_loop,
    padded_runner,
    recording_deliver,
)

pytestmark = pytest.mark.xdist_group("load")  # one xdist worker builds the module's runs

X = np.zeros((64, 4), dtype=np.float32)  # 64 stored "examples" of 4 features


class FakeSession:
    """Runs a batch in ``base_s + per_example_s * batch`` (a sleep: releases the GIL, like ORT);
    records the batch sizes it ran. ``stall(at, seconds)``: the first call at or after ``at``
    (a ``clock()`` time) sleeps ``seconds`` more, and records when it stalled."""

    def __init__(self, base_s: float, per_example_s: float = 0.0):
        self.base_s, self.per_example_s = base_s, per_example_s
        self.sizes: list[int] = []
        self.stall_at, self.stall_s, self.stalled = None, 0.0, None
        self.lock = threading.Lock()

    def stall(self, at: float, seconds: float) -> None:
        self.stall_at, self.stall_s = at, seconds

    def __call__(self, batch):
        n = len(batch)
        with self.lock:
            self.sizes.append(n)
            stall = self.stall_at is not None and self.stalled is None and clock() >= self.stall_at
            if stall:
                self.stalled = [clock(), None]
        time.sleep(self.base_s + self.per_example_s * n + (self.stall_s if stall else 0.0))
        if stall:
            self.stalled[1] = clock()
        return [np.zeros((n, 3), dtype=np.float32)]


# --- queueing: open loop vs closed loop ----------------------------------------------------------


@pytest.mark.slow
def test_open_loop_above_capacity_queues_so_p99_grows_with_the_test_length_where_closed_loop_does_not():
    # 10 ms a request, one instance, no batching: at most 100 requests/s; offered 150/s.
    fake = FakeSession(0.010)
    open_p99, closed_p99 = {}, {}
    with Batcher([fake]) as batcher:
        for windows in (1, 4):
            point = measure_open_loop(batcher, X, 150.0, windows=windows, min_window_s=1.0, window_requests=1)
            open_p99[windows] = point.figures["latency_ms"]["p99"]
            point = measure_closed_loop(batcher, X, 1, windows=windows, min_window_s=1.0)
            closed_p99[windows] = point.figures["latency_ms"]["p99"]
    # open loop: the queue grows ~50 requests/s, i.e. ~0.5 s of waiting per second of test
    assert open_p99[4] - open_p99[1] > 500, open_p99
    # closed loop: one request in flight, whatever the length; no queue can build
    assert closed_p99[4] - closed_p99[1] < (open_p99[4] - open_p99[1]) / 2, (closed_p99, open_p99)
    assert closed_p99[4] < open_p99[4] / 3


@pytest.mark.slow
def test_a_stalled_server_cannot_hide_its_queue_latency_counts_from_the_scheduled_time():
    """Coordinated omission avoided: every request scheduled while the server stalled is at least
    as late as the stall's end, where a closed-loop client sees one slow request."""
    fake = FakeSession(0.001)
    with Batcher([fake]) as batcher:
        fake.stall(clock() + 0.6, 1.0)
        point = measure_open_loop(batcher, X, 200.0, windows=3, min_window_s=0.75, seed=3)
    start, end = fake.stalled
    rec = point.recorder
    n = rec.n
    latency = rec.done[:n] - rec.scheduled[:n]
    during = (rec.scheduled[:n] >= start) & (rec.scheduled[:n] < end - 0.01) & ~np.isnan(latency)
    assert during.sum() > 50  # ~200 requests were due during the 1 s stall (and answered before the end)
    assert np.all(latency[during] >= end - rec.scheduled[:n][during] - 1e-6)
    assert point.figures["latency_ms"]["p99"] > 500  # over 1 % of the requests waited half the stall
    assert np.count_nonzero(latency > 0.5) > 30
    # a closed-loop client waits for each answer before sending: only its one request sees the stall
    fake = FakeSession(0.001)
    with Batcher([fake]) as batcher:
        fake.stall(clock() + 0.6, 1.0)
        closed = measure_closed_loop(batcher, X, 1, windows=3, min_window_s=0.75)
    slow = np.count_nonzero(closed.recorder.done - closed.recorder.scheduled > 0.5)
    assert 1 <= slow <= 3  # the one in flight (a busy machine may add a straggler)


class StallingSender(Batcher):
    """A batcher whose ``submit`` blocks once for ``stall_s`` at or after ``at``: the sender stalls."""

    def __init__(self, *args, at: float, stall_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.stall_s, self.stalled = at, stall_s, False

    def submit(self, requests) -> None:
        if not self.stalled and clock() >= self.at:
            self.stalled = True
            time.sleep(self.stall_s)
        super().submit(requests)


@pytest.mark.slow
def test_a_stalled_sender_cannot_hide_its_lateness_either():
    with StallingSender([FakeSession(0.001)], at=clock() + 0.6, stall_s=0.6) as batcher:
        point = measure_open_loop(batcher, X, 200.0, windows=3, min_window_s=0.75, seed=5)
    rec = point.recorder
    lag = rec.sent - rec.scheduled
    late = lag > 0.3  # due during the sender's stall, sent when it woke
    assert late.sum() > 20
    assert np.all((rec.done - rec.scheduled)[late] >= lag[late])
    assert point.figures["latency_ms"]["p99"] > 300
    assert point.figures["send_lag_ms"]["max"] > 500


# --- dynamic batching -------------------------------------------------------------------------


def _submit(batcher: Batcher, ids: range, recorder: Recorder) -> None:
    now = clock()
    recorder.scheduled[ids.start : ids.stop] = recorder.sent[ids.start : ids.stop] = now
    batcher.submit([Request((k, k % len(X)), now, now) for k in ids])


def test_the_batcher_runs_what_queued_in_batches_of_at_most_max_batch():
    gate = threading.Event()
    ran: list[int] = []

    def gated(batch):
        ran.append(len(batch))
        gate.wait(10)
        time.sleep(0.010)
        return [np.zeros((len(batch), 3))]

    recorder = Recorder(64)
    with Batcher([gated], max_batch=8, gather=indexed_gather(X), deliver=recording_deliver(recorder)) as batcher:
        _submit(batcher, range(1), recorder)
        while not ran:  # the instance took the first request alone and is now busy
            time.sleep(0.001)
        _submit(batcher, range(1, 21), recorder)  # 20 more queue behind it
        time.sleep(0.2)
        gate.set()
        assert batcher.idle(10)
    recorder.n = 21
    assert ran == [1, 8, 8, 4]
    assert dict(recorder.batch_sizes) == {1: 1, 8: 2, 4: 1}
    compute = (recorder.run_end - recorder.run_start)[:21]
    queue = (recorder.run_start - recorder.sent)[:21]
    assert np.all(compute >= 0.010)  # the sleep after the gate
    assert np.all(queue[1:] >= 0.2)  # queued behind the gated first batch
    assert queue[0] < queue[1:].min()


def test_the_queue_delay_holds_a_lone_request_and_a_full_batch_goes_at_once():
    fake = FakeSession(0.001)
    recorder = Recorder(8)
    with Batcher(
        [fake], max_batch=4, max_queue_delay_s=0.1, gather=indexed_gather(X), deliver=recording_deliver(recorder)
    ) as batcher:
        _submit(batcher, range(1), recorder)
        assert batcher.idle(10)
        _submit(batcher, range(1, 5), recorder)
        assert batcher.idle(10)
    assert fake.sizes == [1, 4]
    assert recorder.run_start[0] - recorder.sent[0] >= 0.1  # waited the whole delay for company


def test_a_probe_that_falls_behind_says_so_though_its_p99_is_within_the_slo():
    """The console's and the report's reason is the rule that failed, not always the p99."""
    figures = {"aborted": False, "latency_ms": {"p99": 289.4}, "requests": 1100, "seconds": 10.0}
    behind = {**figures, "throughput_per_s": 83.0}  # 110 arrived a second, 83 answered
    assert not sustained(behind, 400.0)
    assert shortfall(behind, 400.0) == "answered 83/s of 110/s arriving (under 95%: the queue grows)"
    assert shortfall({**figures, "throughput_per_s": 110.0}, 400.0) is None
    assert shortfall({**figures, "throughput_per_s": 110.0}, 200.0) == "p99 289.40 ms over the 200 ms SLO"
    assert shortfall({**behind, "aborted": True}, 400.0) == "stopped early: p50 over the SLO"


def test_the_load_report_says_why_a_confirming_run_did_not_hold():
    """A committed load test (its refuted runs recorded only their p99) and the same with the
    reasons the search now records."""
    from rnnforge.export.load_report import serving_lines

    path = ROOT / "docs" / "benchmarks" / "serving-cpu" / "sketch-1202.load.json"
    result = json.loads(path.read_text())
    text = "\n".join(serving_lines(result))
    assert "requests/s did not hold (p99 70.42 ms): the next ran at 80 % of that rate" in text
    result["search"]["refuted"][0]["missed"] = "answered 83/s of 110/s arriving (under 95%: the queue grows)"
    result["search"]["confirmed"] |= {"within_slo": False, "missed": "p99 12.00 ms over the 10 ms SLO"}
    text = "\n".join(serving_lines(result))
    assert "did not hold (answered 83/s of 110/s arriving (under 95%: the queue grows))" in text
    assert "**NOT sustained** (p99 12.00 ms over the 10 ms SLO): treat the rate as optimistic" in text


def test_load_figures_report_the_batch_sizes_that_ran_and_queue_apart_from_compute():
    fake = FakeSession(0.005, 0.001)
    with Batcher([fake], max_batch=4) as batcher:
        point = measure_closed_loop(batcher, X, 8, windows=3, min_window_s=0.3).figures
    sizes = {int(b) for b in point["batch_sizes"]}
    assert sizes <= {1, 2, 3, 4} and 4 in sizes  # 8 clients, 4 at most per batch
    assert point["compute_ms"]["p50"] >= 5.0  # a batch's sleep, at least
    assert point["queue_ms"]["p50"] > 0
    assert point["latency_ms"]["p50"] >= point["compute_ms"]["p50"]
    assert point["mean_batch"] > 1


# --- the SLO search --------------------------------------------------------------------------------


class FakeEngines(Engines):
    """A model whose batch of b takes ``40 + 5 b`` ms on any engine."""

    def open(self, config: Config) -> list:
        return [FakeSession(0.040, 0.005) for _ in range(config.instances)]


@pytest.mark.slow
def test_the_slo_search_picks_the_configuration_whose_capacity_is_highest_at_a_rate_it_can_take():
    # capacities (requests/s): batch 1 1/0.045 = 22; batch 4 4/0.060 = 67; batch 8 8/0.080 = 100
    space = Space(variants=("fp32",), providers=("cpu",), threads=(1,), instances=(1,), cores=1, max_batch=8)
    lines: list[str] = []
    result = search(
        FakeEngines(),
        space,
        X,
        slo_ms=400.0,
        time_limit_s=90,
        progress=lines.append,
        max_windows=3,
        window={"min_window_s": 0.3, "window_requests": 15},
    )
    assert result.baseline.config == Config("fp32", "cpu", 1, 1, 1, 0.0)
    assert result.chosen.config.max_batch == 8
    assert 22.2 < result.chosen.rate <= 1.25 * 100  # beyond batch 1's capacity, not beyond its own
    assert result.baseline.rate <= 1.25 * 22.2
    assert any(line.startswith("profile fp32 cpu 1") for line in lines)
    assert any("s left)" in line for line in lines)
    assert result.confirmation is not None


def test_candidates_are_pruned_to_batches_that_fit_the_slo_and_threads_that_fit_the_cores():
    space = Space(variants=("fp32", "int8"), threads=(1, 2), instances=(1, 2), cores=2, max_batch=64)
    profiles = {
        ("fp32", "cpu", 1): {1: 1.0, 2: 1.5, 4: 2.5, 8: 6.0},
        ("fp32", "cpu", 2): {1: 0.8, 2: 1.2, 4: 2.0, 8: 4.0},
        ("int8", "cpu", 1): {1: 0.5, 2: 0.7, 4: 1.0, 8: 1.8},
        ("int8", "cpu", 2): {1: 0.5, 2: 0.6, 4: 0.9, 8: 1.6},
    }
    found = dict(candidates(space, profiles, slo_ms=10.0))
    assert all(c.threads * c.instances <= 2 for c in found)
    assert all(2 * profiles[c.engine()][c.max_batch] <= 10.0 for c in found)
    best = max(found, key=found.get)
    assert best == Config("int8", "cpu", 1, 2, 8, 0.0) and found[best] == pytest.approx(2 * 8 / 1.8e-3)
    assert Config("fp32", "cpu", 1, 1, 4, 0.0) in found  # fp32 at 1 thread: batch 8 takes 6 ms > SLO / 2
    assert Config("fp32", "cpu", 1, 1, 8, 0.0) not in found


def test_candidates_keep_the_most_efficient_batch_where_bigger_batches_cost_more_per_request():
    space = Space(variants=("fp32",), threads=(1,), instances=(1, 2), cores=2, max_batch=64)
    profiles = {("fp32", "cpu", 1): {1: 0.5, 2: 1.0, 4: 2.3, 8: 6.5, 16: 25.0}}  # video-like
    ranked = candidates(space, profiles, slo_ms=100.0)
    assert ranked[0] == (Config("fp32", "cpu", 1, 2, 1, 0.0), pytest.approx(2 / 0.5e-3))  # measured first
    assert dict(ranked)[Config("fp32", "cpu", 1, 2, 16, 0.0)] == pytest.approx(2 / 0.5e-3)  # its best batch: 1


def test_on_a_gpu_the_search_tries_at_most_two_instances_and_counts_the_device_once():
    space = default_space(("fp32",), ("cuda",), cores=16)
    assert space.instances == (1, 2)  # not one session per core: they share one device
    mixed = default_space(("fp32",), ("cpu", "cuda"), cores=4)
    profiles = {("fp32", "cpu", 1): {1: 1.0}, ("fp32", "cuda", 1): {1: 0.5, 2: 0.5}}
    found = dict(candidates(mixed, profiles, slo_ms=10.0))
    assert max(c.instances for c in found if c.provider == "cpu") == 4
    assert max(c.instances for c in found if c.provider == "cuda") == GPU_INSTANCES


def test_padded_batches_take_only_the_ladder_sizes_and_answer_each_request():
    seen = []

    def run(batch):
        seen.append(count(batch))
        return [first(batch) * 2]

    padded = padded_runner(run, [1, 2, 4, 8])
    for n in (1, 3, 4, 5, 8):
        x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
        out = padded(x)[0]
        assert out.shape == (n, 2) and np.array_equal(out, x * 2)  # padding rows never reach an answer
    assert seen == [1, 4, 4, 8, 8]
    named = padded(NamedArrays({"series": np.ones((3, 5)), "days": np.zeros((3, 7), np.int64)}))
    assert seen[-1] == 4 and named[0].shape == (3, 5)


# --- the real thing: a small exported run ---------------------------------------------------------


FAST = ("--max-windows", "3")


@pytest.fixture(scope="module")
def load_run(exported_run, tmp_path_factory):
    """A private copy of the exported sketch run with a load test and a serving.json in it."""
    run = copy_run(exported_run, tmp_path_factory.mktemp("load") / "sketch")
    result = run_cli("bench", "load", run, "--slo-p99-ms", "500", "--time-limit", "12", "--variants", "fp32")
    assert result.returncode == 0, result.stdout + result.stderr
    return run, result


@pytest.mark.slow
def test_bench_load_search_writes_serving_json_and_the_report(load_run):
    run, result = load_run
    serving = json.loads((run / "bench" / "serving.json").read_text())
    assert serving["kind"] == "serving" and serving["slo_p99_ms"] == 500
    assert serving["rate_per_s"] > 0 and serving["settings"]["variant"] == "fp32"
    assert serving["confirmed"] is not None and "baseline" in serving and "runner_ups" in serving
    load = json.loads((run / "bench" / "load.json").read_text())
    assert load["kind"] == "load" and load["points"] and load["load_average"]["before"]
    assert (run / "bench" / "load_vs_rate.png").is_file()
    report = (run / "bench" / "load.md").read_text()
    assert "Serving capacity" in report and "Recommended" in report
    assert "within p99 500 ms" in result.stdout
    assert "profile fp32 cpu" in result.stdout


@pytest.mark.slow
def test_serving_load_answers_like_the_exported_model(load_run):
    from rnnforge import serving
    from rnnforge.export.eval_set import load_eval_set

    run, _ = load_run
    stored = load_eval_set(run / "eval.npz", "sketch")
    with serving.load(run) as service:
        assert service.config.to_dict() == json.loads((run / "bench" / "serving.json").read_text())["settings"]
        futures = [service.submit({"strokes": stored.x[i]}) for i in range(40)]
        answers = [f.result(30) for f in futures]
        one = service.predict(stored.x[0])
    probabilities = np.stack([a["probabilities"] for a in answers])
    np.testing.assert_allclose(probabilities, stored.reference[:40], atol=1e-4)
    assert one["label"] == one["class_names"][int(np.argmax(stored.reference[0]))]


def test_serving_takes_named_inputs_of_a_multi_input_model(forecast_run):
    from rnnforge import serving
    from rnnforge.export.eval_set import load_eval_set

    stored = load_eval_set(forecast_run / "eval.npz", "forecast")
    assert isinstance(stored.x, dict) and len(stored.x) == 3
    with serving.load(forecast_run, {"max_batch": 4, "threads": 1}) as service:
        answers = [service.submit({n: a[i] for n, a in stored.x.items()}) for i in range(8)]
        got = np.stack([next(iter(f.result(30).values())) for f in answers])
    np.testing.assert_allclose(got, stored.reference[:8], rtol=1e-4, atol=1e-2)


def test_serving_refuses_bad_requests_in_one_line(exported_run):
    from rnnforge import serving
    from rnnforge.core.errors import UserError

    with serving.load(exported_run) as service:  # no serving.json: one request at a time
        assert service.config.max_batch == 1
        for bad, says in (
            ({"strokes": np.zeros((10, 3)), "extra": 1}, "unknown extra"),
            ({"pen": np.zeros((10, 3))}, "missing strokes"),
            (np.zeros((10, 4)), "shape [10, 4]"),
            (np.full((5, 3), np.nan), "NaN"),
            ([["a", "b", "c"]], "not float32"),
        ):
            with pytest.raises(UserError, match=says.replace("[", r"\[")):
                service.predict(bad)
        short = service.predict(np.ones((7, 3), dtype=np.float32))  # padded to the run's 100 rows
        assert short["probabilities"].shape == (len(short["class_names"]),)


def test_serving_refuses_a_corrupt_serving_json(exported_run, tmp_path):
    from rnnforge import serving
    from rnnforge.core.errors import UserError

    run = copy_run(exported_run, tmp_path / "sketch")
    (run / "bench").mkdir()
    (run / "bench" / "serving.json").write_text('{"kind": "serving", "settings": {"variant": "fp32", "gpus": 3}}')
    with pytest.raises(UserError, match="not a readable serving.json"):
        serving.load(run)


@pytest.mark.slow
def test_bench_load_closed_and_open_loop_from_the_cli(exported_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "sketch")
    result = run_cli(
        "bench",
        "load",
        run,
        "--concurrency",
        "1,2",
        "--request-rate",
        "100",
        "--max-batch",
        "4",
        "--threads",
        "1",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    points = json.loads((run / "bench" / "load.json").read_text())["points"]
    assert [(p["mode"], p["offered"]) for p in points] == [("closed", 1), ("closed", 2), ("open", 100.0)]
    for point in points:
        assert point["requests"] > 0 and point["latency_ms"]["p99"] >= point["latency_ms"]["p50"] > 0
        assert max(int(b) for b in point["batch_sizes"]) <= 4 and point["peak_rss_bytes"] > 0
    assert "open 100 req/s" in result.stdout and "answered/s" in result.stdout


@pytest.mark.slow
def test_bench_load_sends_a_multi_input_model_its_named_inputs(forecast_run, tmp_path):
    run = copy_run(forecast_run, tmp_path / "forecast")
    result = run_cli("bench", "load", run, "--request-rate", "50", "--max-batch", "4", "--threads", "1", *FAST)
    assert result.returncode == 0, result.stderr
    (point,) = json.loads((run / "bench" / "load.json").read_text())["points"]
    assert point["mode"] == "open" and point["requests"] > 0 and point["unanswered"] == 0


@pytest.mark.parametrize(
    "args, says",
    [
        (("--request-rate", "fast"), "expected comma-separated numbers"),
        (("--request-rate", "0"), "--request-rate must be positive"),
        (("--concurrency", "0"), "--concurrency must be positive"),
        (("--slo-p99-ms", "-1"), "--slo-p99-ms must be above 0"),
        (("--slo-p99-ms", "10", "--concurrency", "2"), "without --concurrency"),
        (("--variant", "int8"), "model.int8.onnx does not exist"),
        (("--max-windows", "2"), "--max-windows"),
    ],
)
def test_bench_load_refuses_bad_input_in_one_line(exported_run, tmp_path, args, says):
    run = copy_run(exported_run, tmp_path / "sketch")
    result = run_cli("bench", "load", run, *args)
    assert says in error_line(result)
    assert result.returncode == 2
    assert not (run / "bench" / "load.json").exists()


def test_bench_load_of_a_missing_run_dir_is_one_line(tmp_path):
    assert "does not exist" in error_line(run_cli("bench", "load", tmp_path / "nothing", "--concurrency", "1"))


def test_bench_compare_gates_the_max_rate_within_the_slo(tmp_path):
    def serving(rate: float) -> dict:
        settings = Config("fp32", "cpu", 1, 2, 8, 0.0).to_dict()
        return {"kind": "serving", "task": "sketch", "slo_p99_ms": 10, "rate_per_s": rate, "settings": settings}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(serving(1000)))
    b.write_text(json.dumps(serving(800)))
    result = run_cli("bench", "compare", a, b)
    assert result.returncode == 5 and "REGRESSED" in result.stdout and "0.800" in result.stdout
    assert "on the max rate within the SLO" in error_line(result)
    assert run_cli("bench", "compare", a, b, "--threshold", "1.3").returncode == 0
    b.write_text(json.dumps({**serving(1000), "slo_p99_ms": 20}))
    assert "same --slo-p99-ms" in error_line(run_cli("bench", "compare", a, b))


@pytest.mark.process
def test_bench_load_runs_on_a_serving_install_without_tensorflow_or_ray(exported_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "sketch")
    env = blocking_env(tmp_path / "inference_python", TRAINING_STACK)
    result = run_cli_process(
        "bench", "load", run, "--request-rate", "50", "--threads", "1", *FAST, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "open 50 req/s" in result.stdout
    assert json.loads((run / "bench" / "load.json").read_text())["points"][0]["mode"] == "open"


def test_summary_reports_name_each_runs_recommended_configuration(tmp_path):
    from rnnforge.export.load_report import serving_summary

    (tmp_path / "sketch" / "bench").mkdir(parents=True)
    settings = Config("int8", "cpu", 1, 2, 16, 0.0).to_dict()
    record = {"kind": "serving", "slo_p99_ms": 10, "rate_per_s": 3674.0, "settings": settings, "over_baseline": 4.2}
    (tmp_path / "sketch" / "bench" / "serving.json").write_text(
        json.dumps({**record, "confirmed": {"within_slo": True}})
    )
    lines = serving_summary({"sketch": {"run_dir": str(tmp_path / "sketch")}, "video": {"run_dir": str(tmp_path)}})
    assert lines[2] == (
        "- sketch: 3,674 requests/s within p99 10 ms with int8 cpu 1 thread x 2 instances, batch <= 16, "
        "delay 0 ms (4.2x one at a time)"
    )
    assert len(lines) == 4
