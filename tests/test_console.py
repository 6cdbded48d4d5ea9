"""The console is for people: what `train`, `demo` and `bench` print, and what they keep out of it
(TensorFlow's C++ start-up lines, Ray's notices and actor prefixes) unless ``--verbose``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import NO_GPU, NOISE, ROOT, noise, run_cli_process

from rnnforge.cluster.progress import report_lines
from rnnforge.core.console import VERBOSE_ENV, captured_stderr, ray_init_options
from rnnforge.export.report import summary_table, to_html


def _python(code: str, env: dict | None = None, path: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join([*path, str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=environ, timeout=300
    )


def test_captured_stderr_drops_file_descriptor_2_and_gives_it_back_on_failure(capfd, monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with captured_stderr() as captured:
        os.write(2, b"I0000 start-up chatter\n")
    assert captured == ["I0000 start-up chatter\n"]
    assert "chatter" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), captured_stderr():
        os.write(2, b"E0000 the real reason\n")
        raise RuntimeError("import failed")
    assert "E0000 the real reason" in capfd.readouterr().err  # a failure shows what it printed
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with captured_stderr() as captured:
        os.write(2, b"shown with --verbose\n")
    assert captured == [] and "shown with --verbose" in capfd.readouterr().err


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_kept_unless_verbose():
    code = "import rnnforge, tensorflow as tf\nprint(len(tf.config.list_physical_devices()) > 0)"
    quiet = _python(code)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "True", quiet.stderr
    assert not [n for n in NOISE if n in quiet.stderr], quiet.stderr
    loud = _python(code, env={VERBOSE_ENV: "1"})
    assert loud.returncode == 0, loud.stderr
    assert "absl::InitializeLog" in loud.stderr and "I0000" in loud.stderr
    if NO_GPU:
        assert "cuInit" in loud.stderr


def test_a_failing_tensorflow_import_shows_what_it_printed(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'E0000 libcudart.so.12: cannot open shared object file\\n')\n"
        "raise ImportError('DLL load failed')\n"
    )
    result = _python("import rnnforge\nimport tensorflow", path=(str(tmp_path),))
    assert result.returncode == 1
    assert "E0000 libcudart.so.12: cannot open shared object file" in result.stderr
    assert "ImportError: DLL load failed" in result.stderr


def test_progress_lines_from_rank_0_reports():
    entry = {"epoch": 3, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.75}
    entry |= {"seconds": 2.0, "samples_per_s": 4000.0, "samples_per_s_per_worker": 2000.0, "restarts": 0}
    (line,) = report_lines(entry, epochs=5, metric="accuracy", restarts_seen=0)
    assert line == (
        "epoch 3/5  loss 0.5000  accuracy 0.8000  val_loss 0.6000  val_accuracy 0.7500  "
        "4000 samples/s (2000/worker)  2.0s  eta 4s"
    )
    resumed = report_lines({**entry, "restarts": 1, "resumed_after": 2}, 5, "accuracy", restarts_seen=0)
    assert resumed[0] == "resumed from checkpoint after epoch 2 (restart 1)" and resumed[1] == line
    assert report_lines({**entry, "restarts": 1}, 5, "accuracy", restarts_seen=1) == [line]
    shown = [e for e in range(1, 41) if report_lines({**entry, "epoch": e}, 40, "accuracy", 0, every=5)]
    assert shown == [1, 5, 10, 15, 20, 25, 30, 35, 40]  # the demo's thinned lines: first, every 5th, last
    done = {"epoch": 5, "finished": True, "fit_seconds": 12.34, "restarts": 0}
    assert report_lines(done, 5, "accuracy", 0) == ["training done in 12.3s"]


def test_ray_notices_stay_out_only_on_rnnforges_own_instance(monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert ray_init_options(None)["log_to_driver"] is False
    assert "log_to_driver" not in ray_init_options("auto")  # a joined cluster keeps Ray's defaults
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert "log_to_driver" not in ray_init_options(None)


def _result(task: str, scores: dict, ratios: dict, report: str) -> dict:
    return {
        "task": task,
        "accuracy": {"tensorflow": scores, "onnxruntime": scores},
        "parity": {"max_abs_diff": 7.15e-7, "passed": True},
        "ratios_over_tf": {"onnxruntime": ratios} if ratios else {},
        "tensorflow": {"source": "measured" if ratios else "none"},
        "report": report,
    }


def test_summary_table_has_score_parity_ratios_and_html_report():
    table = summary_table(
        {
            "sketch": _result("sketch", {"accuracy": 0.91}, {"1": 0.16, "32": 1.25}, "/r/sketch/bench/report.md"),
            "forecast": _result("forecast", {"mae": 1234.5, "naive_mae": 2345.6}, {}, "/r/forecast/bench/report.md"),
        }
    ).splitlines()
    assert len(table) == 3 and table[0].split() == [
        "run",
        "score",
        "(ORT)",
        "parity",
        "ORT/TF",
        "p50",
        "by",
        "batch",
    ] + ["report"]
    assert "accuracy 0.9100" in table[1] and "7.2e-07 ok" in table[1] and "1: 0.16, 32: 1.25" in table[1]
    assert table[1].endswith("/r/sketch/bench/report.html")
    assert "MAE 1,234 vs naive 2,346" in table[2] and "no TensorFlow baseline" in table[2]


def test_summary_html_links_each_html_report(tmp_path):
    (tmp_path / "sketch" / "bench").mkdir(parents=True)
    (tmp_path / "sketch" / "bench" / "report.html").write_text("<html></html>")
    page = to_html("[report](sketch/bench/report.md) and [notes](notes.md)", tmp_path, "t")
    assert 'href="sketch/bench/report.html"' in page and 'href="notes.md"' in page


@pytest.mark.slow
@pytest.mark.ray
def test_demo_console_is_clean_and_ends_with_one_table(tmp_path):
    """The quiet console of a train (and its export and bench); ``--verbose``'s is checked by the
    rerun in tests/test_cluster.py, a train that runs the same way."""
    result = run_cli_process("demo", "--tasks", "sketch", "--epochs", "2", "--out", tmp_path, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert not noise(output), output
    assert "Token authentication" not in output and "\x1b[" not in output  # no Ray notice, no colour codes
    assert "epoch 1/2  loss" in result.stdout and "epoch 2/2  loss" in result.stdout
    assert result.stderr.strip() == "", result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run ") and "ORT/TF p50 by batch" in line)
    assert lines[header + 1].startswith("sketch ") and "accuracy" in lines[header + 1]
    assert lines[header + 1].endswith(str(tmp_path / "sketch" / "bench" / "report.html"))
    assert lines[-1] == f"report: {tmp_path / 'report.md'} (HTML: {tmp_path / 'report.html'})"
    assert 'href="sketch/bench/report.html"' in (tmp_path / "report.html").read_text()
