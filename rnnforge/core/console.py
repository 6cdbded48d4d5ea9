"""Keep the machinery's start-up lines off the console: the console is for people.

TensorFlow 2.21 writes its C++ start-up lines (``WARNING: All log messages before
absl::InitializeLog()``, ``I0000 ... oneDNN custom operations are on``, ``I0000 ... Could not
find cuda drivers``) while it is imported, before absl logging exists, so ``TF_CPP_MIN_LOG_LEVEL``
cannot silence them; the first device query adds ``E0000 ... failed call to cuInit`` on a machine
without a GPU. They go to file descriptor 2, below Python's ``sys.stderr``.

``install_tensorflow_import_capture()`` (run by ``import rnnforge`` and, through Ray's
``worker_process_setup_hook``, in every Ray worker) makes the first ``import tensorflow`` of the
process run with file descriptor 2 captured, together with the first device query. The captured
text is dropped when both succeed, and written back to stderr when either fails: a failing import
shows everything it printed. With ``RNNFORGE_VERBOSE=1`` (``rnnforge --verbose``) nothing is
captured.

``ray_init_options(address)``: on the local Ray instance rnnforge starts and stops itself, the
workers' output stays in Ray's log files and Ray's notices (token authentication, the preemption
watcher) stay out of the console; a cluster joined with ``--address`` keeps Ray's defaults, its
warnings included. Ray is imported only by ``worker_setup_hook``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

#: Set to 1 by ``rnnforge --verbose`` (and passed to every Ray worker): show the machinery's output.
VERBOSE_ENV = "RNNFORGE_VERBOSE"


def verbose() -> bool:
    """Whether the machinery's output is wanted on the console (``rnnforge --verbose``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 (C/C++ writes included) to a temporary file for the block.

    Yields a list that holds the captured text once the block is over. When the block raises,
    the captured text is written back to stderr before the exception goes on, so no error is ever
    hidden. A no-op (nothing captured) with ``RNNFORGE_VERBOSE=1``. Keep the block short: what
    other threads write to file descriptor 2 meanwhile is captured too.
    """
    captured: list[str] = []
    if verbose():
        yield captured
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a daemon): nothing to keep off a console
        yield captured
        return
    failed = False
    try:
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            except BaseException:
                failed = True
                raise
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                sink.seek(0)
                captured.append(sink.read().decode("utf-8", "replace"))
                if failed and captured[0]:
                    os.write(2, captured[0].encode())
    finally:
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with file descriptor 2 captured, plus the first device query."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_filename, is_package, resource readers: TensorFlow's own
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with captured_stderr():
            self.loader.exec_module(module)
        # CUDA's probe (cuInit) writes its lines at the first device query. A failing query has
        # shown what it printed; TensorFlow raises it again where a device is really needed.
        with contextlib.suppress(Exception), captured_stderr():
            module.config.list_physical_devices()


class _TensorflowImportCapture(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, with ``_QuietLoader`` around its loader; once."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # one capture per process: later imports are plain
        spec = None
        for finder in list(sys.meta_path):  # the finders after this one, as the import system asks them
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or verbose():
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def install_tensorflow_import_capture() -> None:
    """Capture TensorFlow's start-up lines at its first import in this process (see the module doc).

    Safe to call more than once, and a no-op once TensorFlow is imported."""
    if "tensorflow" in sys.modules or any(isinstance(f, _TensorflowImportCapture) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TensorflowImportCapture())


def ray_init_options(address: str | None) -> dict:
    """``ray.init`` keyword arguments for the console: quiet for the local instance rnnforge starts
    (errors only, workers' output in Ray's log files), Ray's defaults on a joined cluster."""
    if verbose():
        return {"logging_level": logging.INFO}
    if address:
        return {"logging_level": logging.WARNING}
    return {"logging_level": logging.ERROR, "log_to_driver": False}


def worker_setup_hook():
    """The ``worker_process_setup_hook`` of every Ray worker process (Ray Train's controller and
    workers): TensorFlow's C++ start-up lines are captured at its first import there too.

    Pickled by value: Ray runs the hook before the worker's ``sys.path`` gets the driver's code
    paths, so it must work without importing this checkout's ``rnnforge``."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return install_tensorflow_import_capture
