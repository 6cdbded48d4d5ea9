"""Shared fixtures. Tests never download: they use the embedded synthetic data, files they
write, and the real samples in ../shared/data/.

``run_cli`` runs ``rnnforge ARGS`` in this process (``rnnforge.cli.main``), which is what most
tests need: the one-line errors, exports and benches. ``run_cli_process`` starts a fresh
interpreter for the tests where a process is the point: start-up imports, SIGKILL, Ray.

Session fixtures are shared read-only: a test that changes a run copies it first (``copy_run``).
``ray_head`` is one Ray head shared by the Ray runs whose point is not a cluster's start; the
files that use it run last, one after the other, so the head is up only while they run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:  # in-process runs import this checkout, as run_cli_process (cwd ROOT) does
    sys.path.insert(0, str(ROOT))

import rnnforge.cli  # noqa: E402  (click only; sets the package's environment defaults first)

#: What TensorFlow's and Ray's machinery prints that a user should not have to read: kept off the
#: console unless ``--verbose`` (tests/test_console.py, and the verbose rerun in test_cluster.py).
NOISE = ("I0000", "E0000", "absl::InitializeLog", "cuInit", "RayTrainWorker pid=")
#: A machine without a GPU: TensorFlow's CUDA probe fails there (E0000 ... cuInit) when it is shown.
NO_GPU = not Path("/dev/nvidia0").exists()


def noise(output: str) -> list[str]:
    """The ``NOISE`` markers in ``output``."""
    return [n for n in NOISE if n in output]


@dataclass
class CliResult:
    """What ``rnnforge ARGS`` returned and printed: the fields of ``subprocess.CompletedProcess``."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class _Timeout(BaseException):
    """Raised by SIGALRM in ``run_cli``: not an ``Exception``, so product code cannot swallow it."""


def run_cli(*args, timeout: float = 900) -> CliResult:
    """Run ``rnnforge ARGS`` in this process as the console script does (``main(args)``).

    Like a fresh process: the working directory is ROOT (``runs`` means ROOT/runs), stdout and
    stderr are captured, an exception that escapes ``main`` (``--debug``) is a traceback on stderr
    and exit code 1, and the environment, working directory, logging handlers and warning filters
    are put back afterwards. A command that leaves Ray running here fails: Ray belongs in
    ``run_cli_process``.
    """
    argv = [str(a) for a in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    environ, cwd = dict(os.environ), Path.cwd()
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level

    def on_alarm(signum, frame):
        raise _Timeout(f"rnnforge {' '.join(argv)} took more than {timeout:g}s")

    previous_alarm = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        os.chdir(ROOT)
        with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = rnnforge.cli.main(argv)
            except SystemExit as exc:  # as the interpreter turns it into an exit status
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()  # what the interpreter prints for an uncaught exception
                code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)
        os.chdir(cwd)
        if dict(os.environ) != environ:
            os.environ.clear()
            os.environ.update(environ)
        root_logger.handlers[:], root_logger.level = handlers, level
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        raise AssertionError(f"rnnforge {' '.join(argv)} started Ray in the test process: use run_cli_process")
    return CliResult(argv, code, stdout.getvalue(), stderr.getvalue())


def run_cli_process(*args, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``rnnforge ARGS`` as a user would, in a fresh process (for Ray, signals, imports);
    ``env``: its environment (e.g. ``blocking_env``'s)."""
    return subprocess.run(
        [sys.executable, "-m", "rnnforge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def own_lines(output: str) -> list[str]:
    """The driver's own lines: without those Ray forwards from its actors (``(Name pid=N) ...``)."""
    return [line for line in output.splitlines() if not re.match(r"(\x1b\[\d+m)?\(\S+ pid=\d+", line)]


def error_line(result: CliResult | subprocess.CompletedProcess) -> str:
    """The one-line error a failed command printed (asserting it is one line, no traceback)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def snapshot(*roots: Path) -> dict:
    """Every path under ``roots``: directories, and files with size, mtime and hash."""
    state = {}
    for root in roots:
        for path in sorted([root, *root.rglob("*")]):
            if path.is_dir():
                state[str(path)] = "dir"
            else:
                stat = path.stat()
                state[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def rewrite_eval_set(path: Path, edit) -> Path:
    """``path`` (a copied run's eval.npz) rewritten with its arrays and meta record changed in
    place by ``edit(arrays, meta)``: a tampered eval set."""
    import numpy as np

    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    edit(arrays, meta)
    np.savez_compressed(path, **arrays, meta=np.array(json.dumps(meta)))
    return path


def copy_run(source: Path, target: Path) -> Path:
    """A private copy of a shared run (without its bench results) for a test that changes it."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("bench", "_ckpt", "checkpoints", "tensorboard"))
    return target


def make_run_dir(
    path: Path,
    task: str = "sketch",
    epochs_steps: int = 30,
    config_overrides: dict | None = None,
    passes: int = 1,
) -> Path:
    """A finished run without Ray: a briefly trained model written by ``finish_run`` (``passes``
    Keras epochs over the first ``epochs_steps`` batches of 64, recorded as one epoch)."""
    import numpy as np
    import ray.train
    from tensorflow import keras

    from rnnforge.cluster.finish import finish_run
    from rnnforge.cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
    from rnnforge.core.run_dir import RunDir
    from rnnforge.models import get_spec
    from rnnforge.models.common import compile_model
    from rnnforge.models.resolve import resolve_config

    config = resolve_config(task, {"epochs": 1, **(config_overrides or {})})
    spec = get_spec(task)
    data = spec.load_data(config)
    keras.utils.set_random_seed(0)
    model = spec.build_model(config, data.info)
    compile_model(model, spec, config, total_steps=epochs_steps * passes, info=data.info)
    x, y = data.splits["train"]
    y = spec.targets_for_training(x, y, data.info)
    x_valid, y_valid = data.splits["valid"]
    history = model.fit(
        x[: 64 * epochs_steps],
        y[: 64 * epochs_steps],
        batch_size=64,
        epochs=passes,
        verbose=0,
        validation_data=(x_valid, spec.targets_for_training(x_valid, y_valid, data.info)),
    )
    entry = {
        "epoch": 1,
        **{k: float(v[-1]) for k, v in history.history.items()},
        "seconds": 1.0,
        "samples_per_s": 1.0,
        "samples_per_s_per_worker": 1.0,
    }
    ckpt = path / "_ckpt"
    ckpt.mkdir(parents=True)
    model.save(ckpt / CHECKPOINT_MODEL, save_format="keras_v3")
    (ckpt / CHECKPOINT_STATE).write_text(json.dumps({"epoch": 1, "history": [entry], "restarts": 0, "world_size": 1}))
    finish_run(config, RunDir(path), ray.train.Checkpoint.from_directory(ckpt), 1.0)
    assert np.isfinite(entry["loss"])
    return path


def built_once(tmp_path_factory, key: str, name: str, build) -> Path:
    """``build(path)``'s run dir at ``path`` (a folder named ``name``), built once per session: under
    pytest-xdist the workers share one (the first to ask builds it while the others wait on a
    lock), since a run that trains and exports costs seconds of CPU each time it is built.
    Shared runs are read-only, so one copy serves every worker."""
    from filelock import FileLock

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(key) / name)
    root = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    path, done = root / f"shared-{key}" / name, root / f"shared-{key}.done"
    with FileLock(str(root / f"shared-{key}.lock")):
        if not done.is_file():
            shutil.rmtree(path.parent, ignore_errors=True)  # a build that failed in another worker
            build(path)
            done.touch()
    return path


def exported(path: Path | str) -> Path:
    """``path`` after ``rnnforge export onnx``."""
    path = Path(path)
    result = run_cli("export", "onnx", path)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished (briefly trained, not Ray) sketch run dir, shared read-only by the tests."""
    path = built_once(tmp_path_factory, "trained", "sketch", make_run_dir)
    before = snapshot(path)
    yield path
    assert snapshot(path) == before, "a test changed the shared trained_run: change a copy (copy_run)"


@pytest.fixture(scope="session")
def exported_run(trained_run, tmp_path_factory) -> Path:
    """A copy of ``trained_run`` after ``rnnforge export onnx`` (``trained_run`` stays unexported)."""
    return built_once(tmp_path_factory, "exported", "sketch", lambda path: exported(shutil.copytree(trained_run, path)))


@pytest.fixture(scope="session")
def forecast_run(tmp_path_factory) -> Path:
    """A finished (briefly trained, not Ray) forecast run on the synthetic series, exported: the
    default forecaster with 2 members instead of 5 (an averaged ensemble all the same; the members'
    count is tests/test_forecast_ensemble.py's point, and each member costs every test here)."""
    return built_once(
        tmp_path_factory,
        "forecast",
        "forecast",
        lambda path: exported(make_run_dir(path, "forecast", epochs_steps=10, config_overrides={"ensemble": 2})),
    )


@pytest.fixture(scope="session")
def video_run(tmp_path_factory) -> Path:
    """A finished (briefly trained, not Ray; validation accuracy ~0.4 of 12 classes) video run of 8
    frames of 32 x 32, exported; shared read-only by the tests."""
    path = built_once(
        tmp_path_factory,
        "video",
        "video",
        lambda path: exported(
            make_run_dir(
                path,
                task="video",
                epochs_steps=37,  # the whole training split, four times: int8's agreement gate needs a model past chance
                config_overrides={"frames": 8, "frame_size": 32, "lr_warmup": 0},
                passes=4,
            )
        ),
    )
    before = snapshot(path)
    yield path
    assert snapshot(path) == before, "a test changed the shared video_run"


@pytest.fixture(scope="session")
def ray_head():
    """One token-authenticated Ray head on 127.0.0.1 (2 CPUs, 2 logical GPUs: tests/test_gpus.py)
    and the environment to reach it (``--address head.gcs`` with ``env=env``, or ``ray job submit
    --address head.dashboard``), shared by the Ray runs whose point is not a cluster's start, so
    that the suite starts one head, not one per file or one local Ray per run. Each run finishes
    (or fails) before the next starts, so they never share the head's CPUs. Stopped at the end,
    with every process that mentions its folder."""
    from ray_cluster import local_ray_head, token_env

    base = Path(tempfile.mkdtemp(prefix="rf-head-"))  # short: Ray's socket paths must stay short
    # Ray would put this machine's outward address in place of 127.0.0.1 for a driver joining the
    # cluster (this sandbox cannot reach it); this switch (meant for macOS/Windows) keeps loopback.
    env = {**token_env(base), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    try:
        with local_ray_head(base, env, num_cpus=2, num_gpus=2) as head:
            yield head, env
    finally:
        Path(env["RAY_AUTH_TOKEN_PATH"]).unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


RAY_PROCESSES = frozenset({"gcs_server", "raylet"})


def pytest_itemcollected(item):
    """The tests that start Ray (marked ``ray``, or on the shared ``ray_head``) form one xdist group,
    so that `make test`'s parallel workers never run two local Ray instances side by side: a
    local run's own Ray helpers find their cluster by looking for one on the machine (Ray Train's
    placement-group cleaner fails, "Found multiple active Ray instances", where it sees two).
    ``@pytest.mark.ray(group="NAME")`` puts a file's tests in a group of their own, beside the
    others: for runs that join their own cluster by address (rnnforge gives the job that address,
    tests/test_gpus.py checks it). Marked as each test is collected, before any plugin's
    ``pytest_collection_modifyitems`` (xdist reads the groups in its own)."""
    if "ray_head" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.ray)
    if mark := item.get_closest_marker("ray"):
        item.add_marker(pytest.mark.xdist_group(f"ray-{mark.kwargs['group']}" if "group" in mark.kwargs else "ray"))


#: xdist groups handed out first (`make test` keeps this order: ``--no-loadscope-reorder``): the
#: two Ray groups, the longest, start at once on the two workers, and the load tests, which
#: mostly wait on sleeping fake sessions, run beside the Ray group's CPU-bound training; the
#: many short files after them even out the two workers' ends.
FIRST_GROUPS = ("ray", "ray-two-nodes", "load")


def group_rank(item) -> int:
    """An item's place in ``FIRST_GROUPS`` (after them all: ``len(FIRST_GROUPS)``)."""
    mark = item.get_closest_marker("xdist_group")
    return FIRST_GROUPS.index(mark.args[0]) if mark and mark.args[0] in FIRST_GROUPS else len(FIRST_GROUPS)


def pytest_collection_modifyitems(items):
    """``FIRST_GROUPS`` first, in that order; the files with a test on the shared ``ray_head`` run
    last within their group, in their own order, so the head starts once and is not left idling
    beside the other Ray tests."""
    on_head = {item.path for item in items if "ray_head" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: (group_rank(item), item.path in on_head))  # stable: files stay whole and in order


class RayWatch:
    """Within ``with``: the names of the Ray daemons (``RAY_PROCESSES``) that started among this
    process's descendants, polled every ``poll`` s (a local ``ray.init`` or ``ray start`` lasts
    seconds); those already running at the start (a session's head) do not count."""

    def __init__(self, poll: float = 0.25):
        self.poll, self.seen, self._done = poll, set(), threading.Event()
        self._before = {proc.pid for proc in self._daemons()}
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _daemons():
        import psutil

        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.name() in RAY_PROCESSES:
                    yield proc

    def _watch(self):
        while not self._done.wait(self.poll):
            self.seen.update(proc.name() for proc in self._daemons() if proc.pid not in self._before)

    def __enter__(self) -> RayWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


@pytest.fixture(autouse=True)
def _ray_only_where_marked(request):
    """A test without the ``ray`` mark that starts Ray fails: the mark is what keeps two Ray
    instances from running side by side under `make test`'s parallel workers."""
    if request.node.get_closest_marker("ray"):
        yield
        return
    with RayWatch() as watch:
        yield
    if watch.seen:
        pytest.fail(f"this test started Ray ({', '.join(sorted(watch.seen))}): mark it @pytest.mark.ray", pytrace=False)


#: What an inference machine with only the serving install lacks: the training stack.
TRAINING_STACK = (
    "tensorflow",
    "tf_keras",
    "keras",
    "ray",
    "tf2onnx",
    "tensorflow_datasets",
    "pandas",
    "imageio",
    "imageio_ffmpeg",
    "onnxconverter_common",
)
SITECUSTOMIZE = """
import importlib.abc, sys

class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {packages!r} or name in {modules!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: an inference machine)", name=name)
        return None

sys.meta_path.insert(0, _Blocked())
"""


def blocking_env(folder: Path, packages=TRAINING_STACK, modules=(), path: tuple[Path, ...] = ()) -> dict:
    """The environment of a machine where ``packages`` (and the exact ``modules``) cannot be
    imported: a ``sitecustomize`` in ``folder``, first on ``PYTHONPATH``, then ``path``, blocks
    them in every Python process started with it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(packages=tuple(packages), modules=tuple(modules)))
    entries = [str(folder), *map(str, path), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, entries))}
