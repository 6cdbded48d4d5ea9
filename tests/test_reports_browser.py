"""The HTML reports as a person sees them: the demo's summary ``report.html`` and each task's
``bench/report.html``, opened in headless Chromium (Debian's ``chromium``; ``.ci/run`` installs
it). Every image must load, every local link resolve, the console stay free of errors and the page
fit the window's width; a screenshot of each page is saved under the test's temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import Page, find_chromium, local_link_problems
from conftest import copy_run, run_cli

from rnnforge.demo import write_summary

# A browser in a fresh process, and a bench of two runs (built by one xdist worker).
pytestmark = [pytest.mark.process, pytest.mark.xdist_group("reports_browser")]


@pytest.fixture(scope="module")
def page():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does it): reports not opened")
    try:
        browser = Page(chromium)
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"Chromium cannot run here ({exc}): reports not opened")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def demo_out(exported_run, forecast_run, tmp_path_factory) -> Path:
    """A demo's output folder from the test fixtures: two benched runs and the demo's summary report."""
    out = tmp_path_factory.mktemp("demo")
    copy_run(exported_run, out / "sketch")
    copy_run(forecast_run, out / "forecast")
    args = ("--batch-sizes", "1,8", "--warmup", "1", "--runs", "10", "--max-seconds", "0.2", "--tf-baseline", "none")
    result = run_cli("bench", "--all", out, *args)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "bench_all.json").read_text())
    write_summary(out, results)
    return out


def _look(page: Page, path: Path, shots: Path) -> dict:
    found = page.open(path)
    name = "_".join(path.relative_to(path.parents[2] if path.parent.name == "bench" else path.parent).parts)
    shot = page.screenshot(shots / name.replace(".html", ".png"))
    print(f"screenshot: {shot}")
    assert found["errors"] == [], found["errors"]
    assert not local_link_problems(found, path)
    broken = [image for image in found["images"] if not image["complete"] or image["width"] == 0]
    assert not broken, broken
    assert found["pageOverflow"] <= 0 and not found["wide"], (found["pageOverflow"], found["wide"])
    return found


def test_the_demo_summary_report_in_a_browser(page, demo_out, tmp_path):
    found = _look(page, demo_out / "report.html", tmp_path)
    linked = {link["href"] for link in found["links"]}
    assert {"sketch/bench/report.html", "forecast/bench/report.html"} <= linked


@pytest.mark.parametrize("task", ["sketch", "forecast"])
def test_a_task_report_in_a_browser(page, demo_out, task, tmp_path):
    found = _look(page, demo_out / task / "bench" / "report.html", tmp_path)
    plots = {"training_curve.png", "latency_vs_batch.png", "throughput_vs_latency.png", "latency_distribution.png"}
    plots |= {"confusion_matrix.png"} if task == "sketch" else {"forecast.png", "mae_per_horizon.png"}
    assert len(found["images"]) == len(plots)  # every plot of the run, inlined
    assert all(image["shown"] >= 400 for image in found["images"]), found["images"]  # none shrunk past reading
    if task == "forecast":  # its errors are in riders, which the accuracy section says
        assert "MAE in riders per day, MAPE in %." in (demo_out / task / "bench" / "report.md").read_text()


def test_a_missing_image_and_a_dead_link_are_caught(page, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="gone.png"><a href="nowhere.html">x</a><a href="#nope">y</a></body></html>')
    found = page.open(bad)
    assert [image["width"] for image in found["images"]] == [0]
    assert len(local_link_problems(found, bad)) == 2
    assert any("gone.png" in error for error in found["errors"])
