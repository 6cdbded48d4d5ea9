"""The rules the suite keeps so that `make test` can run on two workers: the tests that start Ray
are marked, grouped into one worker, and an unmarked test that starts Ray is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, RayWatch, group_rank


def _process_named(name: str, folder) -> subprocess.Popen:
    """A short-lived process whose name is ``name`` (a copy of this Python, sleeping)."""
    binary = folder / name
    shutil.copy(sys.executable, binary)
    return subprocess.Popen([binary, "-c", "import time; time.sleep(1.5)"])


@pytest.mark.ray  # its fake daemons would trip conftest's guard, which is the watch under test
@pytest.mark.parametrize("name, seen", [("gcs_server", {"gcs_server"}), ("raylet", {"raylet"}), ("other", set())])
def test_the_watch_sees_a_ray_daemon_among_the_descendants(tmp_path, name, seen):
    with RayWatch(poll=0.1) as watch:
        _process_named(name, tmp_path).wait()
    assert watch.seen == seen


@pytest.mark.ray  # the planted suite's fake daemon is this test's descendant too
def test_an_unmarked_test_that_starts_ray_fails(pytester):
    """conftest's guard, planted in a fresh suite: the unmarked test fails, naming the mark."""
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    ray: starts Ray\n")
    pytester.makepyfile(
        test_planted="""
import shutil, subprocess, sys, pytest

def start(tmp_path):
    shutil.copy(sys.executable, tmp_path / "gcs_server")
    subprocess.run([tmp_path / "gcs_server", "-c", "import time; time.sleep(1)"], check=True)

def test_unmarked(tmp_path):
    start(tmp_path)

@pytest.mark.ray
def test_marked(tmp_path):
    start(tmp_path)
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)  # the unmarked one passes its call, fails its teardown
    result.stdout.fnmatch_lines(["*this test started Ray (gcs_server): mark it @pytest.mark.ray*"])


@pytest.mark.ray
def test_a_daemon_already_running_does_not_count(tmp_path):
    """A session's Ray head, started before the test, is not the test's doing."""
    head = _process_named("gcs_server", tmp_path)
    with RayWatch(poll=0.1) as watch:
        head.wait()
    assert watch.seen == set()


def test_ray_tests_share_one_xdist_group(request):
    items = request.session.items
    groups = {item.nodeid: mark.args[0] for item in items if (mark := item.get_closest_marker("xdist_group"))}
    marked = {item.nodeid for item in items if item.get_closest_marker("ray")}
    on_head = {item.nodeid for item in items if "ray_head" in item.fixturenames}
    ray_groups = {nodeid for nodeid, group in groups.items() if group.startswith("ray")}
    assert on_head <= marked and ray_groups == marked
    assert all(groups[nodeid] == "ray" for nodeid in on_head)  # every run on the shared head in one worker


def test_the_longest_groups_are_handed_out_first(request):
    """`make test` hands xdist's work units out in collection order (``--no-loadscope-reorder``):
    conftest's ``FIRST_GROUPS`` lead it, in their order, and the shared head's files end the Ray group."""
    items = request.session.items
    ranks = [group_rank(item) for item in items]
    assert ranks == sorted(ranks)
    ray = [item for item in items if group_rank(item) == 0]
    on_head = ["ray_head" in item.fixturenames for item in ray]
    assert on_head == sorted(on_head)
    assert "--no-loadscope-reorder" in (ROOT / "Makefile").read_text()


@pytest.mark.slow
def test_make_tests_workers_run_the_ray_tests_in_one_of_them(pytester, tmp_path, monkeypatch):
    """A planted suite under `make test`'s options: the six ``ray`` tests all run in one worker,
    the others in both (an upgrade of pytest or xdist that breaks the groups fails here)."""
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    ray: starts Ray\n")
    pytester.makepyfile(
        test_planted="""
import os, time, pytest
from pathlib import Path

@pytest.mark.ray
@pytest.mark.parametrize("i", range(6))
def test_on_ray(i):
    (Path(os.environ["PLANTED_OUT"]) / f"ray-{i}").write_text(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.parametrize("i", range(6))
def test_other(i):
    time.sleep(0.2)
    (Path(os.environ["PLANTED_OUT"]) / f"other-{i}").write_text(os.environ["PYTEST_XDIST_WORKER"])
"""
    )
    monkeypatch.setenv("PLANTED_OUT", str(tmp_path))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=12)
    written = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert len({written[f"ray-{i}"] for i in range(6)}) == 1, written
    assert len(set(written.values())) == 2, written
