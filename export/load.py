"""A serving load test: requests, one example each, sent to model instances behind a dynamic batcher.

This is what ``rnnforge bench load`` measures and what ``rnnforge.serving`` serves with. A
``Batcher`` keeps one FIFO queue in front of ``instances`` (callables that run a batch: ONNX
Runtime sessions, or a fake with a known latency in the tests), each served by its own thread:
ONNX Runtime's ``run`` releases the GIL, so threads in one process are how such a server really
runs. A free instance takes the oldest request and waits for more until it holds ``max_batch``
or the oldest has waited ``max_queue_delay_s`` (Triton's dynamic batcher), then runs them as one
batch.

Two ways to load it, as perf_analyzer does:

- **closed loop** (``concurrency``): N clients, each sends its next request when the last answer
  came back; latency from its send.
- **open loop** (``rate``): Poisson arrivals at a fixed mean rate, whatever the server does.
  Latency counts from each request's **scheduled** send time, so a stalled server (or a stalled
  sender) cannot hide its queue: no coordinated omission.

Time is cut into measurement windows by send time; windows are measured until the last
``STABLE_WINDOWS`` agree (perf_analyzer's rule: max/min of throughput and of p99 within
``stability``, 10 % by default) or ``max_windows`` ran. Each request records when it was
scheduled, sent, started computing (its batch's ``run`` call) and finished, and the size of its
batch: queue time and compute time are reported apart. The sender is one thread that sleeps
until the next arrival and enqueues every due request under one lock; its CPU time is reported
(``sender_cpu_share``) so a reader can see it did not steal the cores it measured.

    batcher = Batcher([session_runner(s) for s in sessions], max_batch=8, max_queue_delay_s=0.002)
    point = measure_open_loop(batcher, x, rate=500.0)
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rnnforge.core.arrays import Inputs, count, rows

#: perf_analyzer's stability rule: the last 3 windows' throughput and latency within 10 % (max/min).
STABLE_WINDOWS = 3
STABILITY = 0.10
#: Requests a window should hold (its length grows at low rates), its shortest and longest length.
WINDOW_REQUESTS = 150
MIN_WINDOW_S = 0.5
MAX_WINDOW_S = 2.0
#: Requests sent before the windows start (not measured): sessions and caches warm up.
WARMUP_S = 0.25
PERCENTILES = (50, 90, 95, 99)

clock = time.perf_counter


# --- the server: a queue in front of instances ---------------------------------------------------


@dataclass
class Request:
    """One request: its payload (an example index in a load test, the inputs in a service), when it
    was scheduled and sent, and where its answer goes (``done``: called with ``(output, timing)``)."""

    payload: object
    scheduled: float
    sent: float
    done: Callable | None = None


class Batcher:
    """A dynamic batcher: one queue, one thread per instance (see the module docstring).

    ``instances``: callables ``run(batch) -> outputs`` (a list of arrays, batch first); ``gather``
    turns a list of requests into the batch ``run`` takes; ``deliver(requests, outputs, started,
    run_start, run_end)`` hands the answers back (both have defaults for services: payloads are
    ``Inputs`` of one example each, answers go to each request's ``done``)."""

    def __init__(
        self,
        instances: Sequence[Callable],
        max_batch: int = 1,
        max_queue_delay_s: float = 0.0,
        gather: Callable | None = None,
        deliver: Callable | None = None,
    ):
        if not instances:
            raise ValueError("a Batcher needs at least one instance")
        self.max_batch, self.max_queue_delay_s = int(max_batch), float(max_queue_delay_s)
        self.gather, self.deliver = gather or gather_inputs, deliver or deliver_each
        self._queue: collections.deque[Request] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        self._busy = 0
        self.errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._serve, args=(run,), name=f"rnnforge-instance-{i}", daemon=True)
            for i, run in enumerate(instances)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, requests: Sequence[Request]) -> None:
        """Queue ``requests`` (in order) and wake a free instance."""
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.extend(requests)
            self._ready.notify()

    def pending(self) -> int:
        """Requests queued or running."""
        with self._ready:
            return len(self._queue) + self._busy

    def clear(self) -> int:
        """Drop every queued request (those running finish); how many were dropped."""
        with self._ready:
            dropped = len(self._queue)
            self._queue.clear()
            return dropped

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False if ``timeout`` seconds passed first."""
        deadline = clock() + timeout
        while self.pending():
            if clock() > deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        """Let the instances finish what is queued, then stop their threads."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _take(self) -> list[Request] | None:
        """The next batch (blocking), or None once closed and empty."""
        with self._ready:
            while not self._queue:
                if self._closed:
                    return None
                self._ready.wait()
            if self.max_batch > 1 and self.max_queue_delay_s > 0:
                deadline = self._queue[0].sent + self.max_queue_delay_s
                while len(self._queue) < self.max_batch and not self._closed:
                    left = deadline - clock()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                    if not self._queue:  # another instance took them
                        return []
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._busy += len(batch)
            if self._queue:
                self._ready.notify()  # more waiting: wake another free instance
            return batch

    def _serve(self, run: Callable) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            started = clock()
            try:
                inputs = self.gather(batch)
                run_start = clock()
                outputs = run(inputs)
                run_end = clock()
                self.deliver(batch, outputs, started, run_start, run_end)
            except BaseException as exc:  # noqa: BLE001 - kept and re-raised by the caller
                self.errors.append(exc)
                for request in batch:
                    if request.done is not None:
                        request.done(exc, None)
            finally:
                with self._ready:
                    self._busy -= len(batch)


def gather_inputs(requests: Sequence[Request]) -> Inputs:
    """One batch from requests whose payloads are ``Inputs`` of one example (batch axis of 1)."""
    from rnnforge.core.arrays import concatenate

    return concatenate([r.payload for r in requests])


def deliver_each(requests: Sequence[Request], outputs, started: float, run_start: float, run_end: float) -> None:
    """Hand each request its rows of every output, and its timing."""
    timing = {
        "queue_ms": 0.0,
        "compute_ms": (run_end - run_start) * 1e3,
        "batch_size": len(requests),
    }
    for i, request in enumerate(requests):
        if request.done is not None:
            request.done([o[i] for o in outputs], {**timing, "queue_ms": (run_start - request.sent) * 1e3})


def session_runner(session, input_names: Sequence[str]) -> Callable:
    """``run(batch) -> outputs`` of an ONNX Runtime ``InferenceSession`` (``batch``: one array, or
    arrays keyed by input name)."""
    from rnnforge.core.arrays import feeds

    names = list(input_names)
    return lambda batch: session.run(None, feeds(batch, names))


def padded_runner(run: Callable, sizes: Sequence[int]) -> Callable:
    """``run`` fed only batches of ``sizes``: a batch of n rows is padded with copies of its last
    row up to the smallest size that holds it, and the answers cut back to n rows.

    Why (measured on an H200, docs/benchmarks/serving-gpu-h200.md): with the batch size changing
    from one call to the next, ONNX Runtime's CUDA session ran one batch in ten 20-50x slower than
    its p50, even with every size warmed up first (not garbage collection, not the GPU clock; the
    cause inside ONNX Runtime or cuDNN is not established). Fed one shape, it did not."""
    ladder = sorted(sizes)

    def padded(batch):
        n = count(batch)
        size = next((s for s in ladder if s >= n), n)
        if size == n:
            return run(batch)
        return [out[:n] for out in run(rows(batch, np.minimum(np.arange(size), n - 1)))]

    return padded


# --- the load generator ---------------------------------------------------------------------------


class Recorder:
    """Per-request timings of one load test, in preallocated arrays indexed by request id (the
    payload is ``(request id, example index)``): cheap enough that the generator costs little."""

    def __init__(self, capacity: int):
        self.scheduled = np.full(capacity, np.nan)
        self.sent = np.full(capacity, np.nan)
        self.run_start = np.full(capacity, np.nan)
        self.run_end = np.full(capacity, np.nan)
        self.done = np.full(capacity, np.nan)
        self.batch = np.zeros(capacity, dtype=np.int32)
        self.n = 0
        self.batch_sizes: collections.Counter = collections.Counter()

    def grow(self, capacity: int) -> None:
        for name in ("scheduled", "sent", "run_start", "run_end", "done"):
            old = getattr(self, name)
            if len(old) < capacity:
                setattr(self, name, np.concatenate([old, np.full(capacity - len(old), np.nan)]))
        if len(self.batch) < capacity:
            self.batch = np.concatenate([self.batch, np.zeros(capacity - len(self.batch), dtype=np.int32)])


def indexed_gather(x: Inputs) -> Callable:
    """``gather`` for a load test: the batch is the eval examples the requests name."""

    def gather(requests: Sequence[Request]) -> Inputs:
        return rows(x, np.fromiter((r.payload[1] for r in requests), dtype=np.int64, count=len(requests)))

    return gather


def recording_deliver(recorder: Recorder, on_done: Callable | None = None, lock=None) -> Callable:
    """``deliver`` for a load test: write each request's timing into ``recorder`` (under ``lock``
    where the recorder may grow meanwhile)."""
    lock = lock or contextlib.nullcontext()

    def deliver(requests: Sequence[Request], outputs, started: float, run_start: float, run_end: float) -> None:
        ids = np.fromiter((r.payload[0] for r in requests), dtype=np.int64, count=len(requests))
        now = clock()
        with lock:
            recorder.run_start[ids] = run_start
            recorder.run_end[ids] = run_end
            recorder.done[ids] = now
            recorder.batch[ids] = len(requests)
            recorder.batch_sizes[len(requests)] += 1
        if on_done is not None:
            for request in requests:
                on_done(request)

    return deliver


@dataclass
class LoadResult:
    """One measured load point (see ``summarize``), plus its windows."""

    mode: str  # "open" (request rate) or "closed" (concurrency)
    offered: float  # requests/s offered (open) or clients (closed)
    figures: dict
    windows: list[dict] = field(default_factory=list)
    recorder: Recorder | None = None  # every request's timing (not written out)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "offered": self.offered, **self.figures, "windows": self.windows}


def window_length(rate: float, min_window_s: float = MIN_WINDOW_S, requests: int = WINDOW_REQUESTS) -> float:
    """Seconds per measurement window: at least ``min_window_s``, long enough for ``requests``
    but at most ``MAX_WINDOW_S`` (or ``min_window_s``, if longer)."""
    return max(min_window_s, min(MAX_WINDOW_S, requests / max(rate, 1e-9)))


def poisson_schedule(rate: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Send times (seconds from the start) of Poisson arrivals at ``rate`` per second."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds * 1.2 + 50)
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    while times[-1] < seconds:
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, n))])
    return times[times < seconds]


def _new_batcher_io(batcher: Batcher, x: Inputs, recorder: Recorder, on_done: Callable | None = None, lock=None):
    batcher.gather = indexed_gather(x)
    batcher.deliver = recording_deliver(recorder, on_done, lock)


def measure_open_loop(
    batcher: Batcher,
    x: Inputs,
    rate: float,
    *,
    slo_ms: float | None = None,
    max_windows: int = 6,
    stability: float = STABILITY,
    min_window_s: float = MIN_WINDOW_S,
    warmup_s: float = WARMUP_S,
    seed: int = 0,
    windows: int | None = None,
    window_requests: int = WINDOW_REQUESTS,
) -> LoadResult:
    """Poisson arrivals at ``rate``/s, each request one example of ``x`` (in turn); latency from
    its scheduled time. Windows run until stable, ``max_windows`` ran (or exactly ``windows``),
    or, with ``slo_ms``, half the requests so far missed the SLO (p50 beyond it: a queue that
    grows, a rate the server clearly cannot take; stopped early, ``aborted``)."""
    length = window_length(rate, min_window_s, window_requests)
    most = windows or max_windows
    horizon = warmup_s + length * most
    schedule = poisson_schedule(rate, horizon, seed)
    recorder = Recorder(len(schedule))
    _new_batcher_io(batcher, x, recorder)
    start = clock() + 0.01
    # every request is due at its scheduled time whether or not the sender got to send it: one the
    # sender is late with counts as late (no coordinated omission in the generator either)
    recorder.scheduled[:] = start + schedule
    recorder.n = len(schedule)
    n_examples = count(x)
    stop = threading.Event()
    cpu = [0.0]

    def send() -> None:
        cpu_start = time.thread_time()
        i, total = 0, len(schedule)
        while i < total and not stop.is_set():
            now = clock()
            due = start + schedule[i]
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            j = int(np.searchsorted(schedule, now - start, side="right"))
            requests = [Request((k, k % n_examples), start + schedule[k], now) for k in range(i, j)]
            recorder.sent[i:j] = now
            batcher.submit(requests)
            i = j
        cpu[0] = time.thread_time() - cpu_start

    sender = threading.Thread(target=send, name="rnnforge-open-loop", daemon=True)
    sender.start()
    try:
        measured, aborted = _windows(
            recorder, start + warmup_s, length, most, windows is not None, stability, slo_ms, grace=_grace(slo_ms)
        )
        stopped = clock()
    finally:
        stop.set()
        sender.join()
        batcher.clear()
        batcher.idle(timeout=30.0)
    figures = summarize(recorder, measured, start + warmup_s, length, batcher, aborted, stopped)
    figures["offered_per_s"] = rate
    figures["sender_cpu_share"] = cpu[0] / max(clock() - start, 1e-9)
    return LoadResult("open", rate, figures, measured, recorder)


def measure_closed_loop(
    batcher: Batcher,
    x: Inputs,
    concurrency: int,
    *,
    max_windows: int = 6,
    stability: float = STABILITY,
    min_window_s: float = MIN_WINDOW_S,
    warmup_s: float = WARMUP_S,
    windows: int | None = None,
) -> LoadResult:
    """``concurrency`` clients, each sending its next request (one example of ``x``) as soon as
    its last one is answered; latency from its send. Windows as ``measure_open_loop``."""
    length = max(min_window_s, 0.5)
    most = windows or max_windows
    n_examples = count(x)
    recorder = Recorder(4096)
    lock = threading.Lock()
    next_id = [0]
    stop = threading.Event()
    answered = [threading.Event() for _ in range(concurrency)]

    def on_done(request: Request) -> None:
        answered[request.payload[2]].set()

    _new_batcher_io(batcher, x, recorder, on_done, lock)
    start = clock() + 0.01
    cpu = [0.0] * concurrency

    def client(c: int) -> None:
        cpu_start = time.thread_time()
        while clock() < start:
            time.sleep(0.001)
        while not stop.is_set():
            with lock:
                k = next_id[0]
                next_id[0] += 1
                if k >= len(recorder.sent):
                    recorder.grow(2 * len(recorder.sent))
                now = clock()
                recorder.scheduled[k] = recorder.sent[k] = now
                recorder.n = max(recorder.n, k + 1)
            answered[c].clear()
            batcher.submit([Request((k, k % n_examples, c), now, now)])
            while not answered[c].wait(0.1):
                if stop.is_set():
                    break
        cpu[c] = time.thread_time() - cpu_start

    clients = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(concurrency)]
    for thread in clients:
        thread.start()
    try:
        measured, aborted = _windows(
            recorder, start + warmup_s, length, most, windows is not None, stability, None, 0.0
        )
        stopped = clock()
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        batcher.idle(timeout=30.0)
    with lock:
        figures = summarize(recorder, measured, start + warmup_s, length, batcher, aborted, stopped)
    figures["offered_per_s"] = None
    figures["sender_cpu_share"] = sum(cpu) / max(clock() - start, 1e-9)
    return LoadResult("closed", concurrency, figures, measured, recorder)


def _grace(slo_ms: float | None) -> float:
    """How long after a window ends its last requests may still be answered before it is judged."""
    return min(0.25, 2 * slo_ms / 1e3) if slo_ms else 0.05


def _windows(
    recorder: Recorder,
    first: float,
    length: float,
    most: int,
    fixed: bool,
    stability: float,
    slo_ms: float | None,
    grace: float,
) -> tuple[list[dict], bool]:
    """Judge windows ``[first + k * length, first + (k + 1) * length)`` as they end (plus
    ``grace``); stop when the last ``STABLE_WINDOWS`` agree (unless ``fixed``), after ``most``,
    or when p50 so far passes ``slo_ms``. Returns the windows and whether it stopped early."""
    measured: list[dict] = []
    for k in range(most):
        end = first + (k + 1) * length
        _sleep_until(end + grace)
        measured.append(window_figures(recorder, first + k * length, end, clock()))
        if slo_ms is not None:
            pooled = latencies(recorder, first, end, clock())
            if len(pooled) >= 20 and np.percentile(pooled, 50) > slo_ms:
                return measured, True
        if not fixed and stable(measured, stability):
            break
    return measured, False


def _sleep_until(when: float) -> None:
    while (left := when - clock()) > 0:
        time.sleep(min(left, 0.05))


def latencies(recorder: Recorder, begin: float, end: float, now: float) -> np.ndarray:
    """Latencies (ms) of the requests scheduled in ``[begin, end)`` (and by ``now``); one still
    unanswered at ``now``, sent or not, counts as ``now`` minus its scheduled time (a lower bound:
    it is at least that late)."""
    n = recorder.n
    scheduled = recorder.scheduled[:n]
    mine = (scheduled >= begin) & (scheduled < min(end, now))
    done = recorder.done[:n][mine]
    done = np.where(np.isnan(done), now, done)
    return (done - scheduled[mine]) * 1e3


def window_figures(recorder: Recorder, begin: float, end: float, now: float) -> dict:
    """One window: requests sent in it, answered in it (throughput), p50/p99 latency."""
    values = latencies(recorder, begin, end, now)
    done = recorder.done[: recorder.n]
    answered = int(np.count_nonzero((done >= begin) & (done < end)))
    return {
        "requests": int(len(values)),
        "throughput_per_s": answered / (end - begin),
        "p50_ms": float(np.percentile(values, 50)) if len(values) else None,
        "p99_ms": float(np.percentile(values, 99)) if len(values) else None,
    }


def stable(windows: list[dict], tolerance: float = STABILITY) -> bool:
    """perf_analyzer's rule: the last ``STABLE_WINDOWS`` windows' throughput and p99 each have
    max/min within ``1 + tolerance``."""
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    for key in ("throughput_per_s", "p99_ms"):
        values = [w[key] for w in last]
        if any(v is None or v <= 0 for v in values) or max(values) / min(values) > 1 + tolerance:
            return False
    return True


def summarize(
    recorder: Recorder,
    windows: list[dict],
    first: float,
    length: float,
    batcher: Batcher,
    aborted: bool,
    now: float,
) -> dict:
    """The load point's figures over the last ``STABLE_WINDOWS`` windows measured (all, if fewer):
    throughput answered, latency percentiles from the scheduled time, queue and compute time apart,
    the batch sizes that ran, the sender's lag, and whether the windows were stable."""
    if batcher.errors:
        raise batcher.errors[0]
    used = windows[-STABLE_WINDOWS:]
    begin = first + (len(windows) - len(used)) * length
    end = first + len(windows) * length
    n = recorder.n
    scheduled = recorder.scheduled[:n]
    mine = (scheduled >= begin) & (scheduled < end)
    values = latencies(recorder, begin, end, now)
    answered = mine & ~np.isnan(recorder.done[:n])
    queue = (recorder.run_start[:n] - recorder.sent[:n])[answered] * 1e3
    compute = (recorder.run_end[:n] - recorder.run_start[:n])[answered] * 1e3
    lag = (recorder.sent[:n] - scheduled)[mine & ~np.isnan(recorder.sent[:n])] * 1e3
    sizes = recorder.batch[:n][answered]
    done = recorder.done[:n]
    throughput = int(np.count_nonzero((done >= begin) & (done < end))) / max(end - begin, 1e-9)
    per_request = collections.Counter(int(s) for s in sizes)
    return {
        "requests": int(len(values)),
        "unanswered": int(np.count_nonzero(mine & np.isnan(recorder.done[:n]))),
        "seconds": end - begin,
        "throughput_per_s": throughput,
        "latency_ms": _percentiles(values),
        "queue_ms": _percentiles(queue),
        "compute_ms": _percentiles(compute),
        "send_lag_ms": _percentiles(lag),
        # batches that ran, by size, counted over the requests measured (a batch of 8 holding
        # measured requests counts once per request it held, so divide by the size for batches)
        "batch_sizes": {str(s): round(c / s) for s, c in sorted(per_request.items())},
        "mean_batch": float(sizes.mean()) if len(sizes) else None,
        "windows_measured": len(windows),
        "window_s": length,
        "stable": stable(windows) if not aborted else False,
        "aborted": aborted,
    }


def _percentiles(values: np.ndarray) -> dict:
    if not len(values):
        return {f"p{p}": None for p in PERCENTILES} | {"mean": None, "max": None}
    return {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES} | {
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


# --- memory -----------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process since the last ``reset_peak_rss`` (``VmHWM``), else
    since it started (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        return None


def gpu_memory_bytes() -> int | None:
    """Device memory this process holds on the GPU (``nvidia-smi --query-compute-apps``), or None."""
    import os
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return int(float(used.strip()) * 2**20)
    return None
