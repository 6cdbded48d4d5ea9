"""The user's documents: the README is a front door whose pages are all reachable, the CLI
reference is what ``--help`` says, the demo transcript has the shape today's demo prints, and no
page tells the project's history."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

from rnnforge import docs_cli, transcript
from rnnforge.cli import cli
from rnnforge.core import errors
from rnnforge.export.report import summary_table
from rnnforge.models import TASKS

README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: The reference pages a user reaches from the README (the measured-results pages are linked too).
USER_PAGES = ("cli", "tasks", "training", "benchmarking", "cluster", "gpu", "errors", "troubleshooting", "architecture")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+://", target)]


def test_readme_is_a_front_door_to_every_reference_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for name in USER_PAGES:
        assert f"(docs/{name}.md" in text, f"the README does not link docs/{name}.md"
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_every_local_link_resolves(page):
    problems = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: {file} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", ["README", *USER_PAGES])
def test_user_documents_tell_no_project_history(page):
    path = README if page == "README" else DOCS / f"{page}.md"
    text = path.read_text()
    found = re.findall(r"issue #\d+|\(issue|(?<![\w/])#\d+\b|issue \d+", text, flags=re.I)
    assert not found, f"{path.name}: {found}"


def test_the_exit_code_table_lists_every_exit_code():
    table = (DOCS / "errors.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    raised = {cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and hasattr(cls, "exit_code")}
    assert raised | {0} == listed
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.UserError):
            assert f"`{cls.__name__}`" in table, cls.__name__


def test_cli_reference_is_generated_from_the_commands():
    assert (DOCS / "cli.md").read_text() == docs_cli.render(), "docs/cli.md is stale: run make docs"


def test_cli_reference_does_not_depend_on_what_ran_before():
    """click caches each command's help option on first use: the page a fresh process renders is
    the committed page both before and after the CLI printed its help (as when other tests ran)."""
    script = (
        "from click.testing import CliRunner\n"
        "from rnnforge.cli import cli\n"
        "from rnnforge import docs_cli\n"
        "print(docs_cli.render(), end='\\0')\n"
        "for args in (['--help'], ['bench', '--help'], ['export', 'onnx', '-h']):\n"
        "    CliRunner().invoke(cli, args)\n"
        "print(docs_cli.render(), end='')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    fresh, after_help = result.stdout.split("\0")
    assert fresh == after_help == (DOCS / "cli.md").read_text(), "the page depends on what printed its help first"


def _section(page: str, name: str) -> str:
    return page.split(f"\n## `{name}`\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", [name for name, _ in docs_cli.commands()])
def test_every_option_of_help_is_in_the_reference(name):
    help_text = CliRunner().invoke(cli, [*name.split()[1:], "--help"], prog_name="rnnforge").output
    options = help_text.split("\nOptions:\n", 1)[1].split("\nCommands:\n", 1)[0]
    in_help = set(re.findall(r"^\s{2}(?:-\w, )?(--[\w-]+)(?: / (--[\w-]+))?", options, flags=re.M))
    in_help = {flag for pair in in_help for flag in pair if flag}
    section = _section((DOCS / "cli.md").read_text(), name)
    in_page = set(re.findall(r"^\| `(?:-\w, )?(--[\w-]+)", section, flags=re.M))
    in_page |= set(re.findall(r"^\| `[^`]*? / (--[\w-]+)", section, flags=re.M))
    assert in_help and in_help == in_page, in_help ^ in_page


def _fixture_results() -> dict:
    """What the demo's summary writer needs of a bench result, for every task."""
    scores = {"sketch": {"accuracy": 0.9}, "forecast": {"mae": 1.0, "naive_mae": 2.0}, "video": {"accuracy": 0.8}}
    return {
        task: {
            "task": task,
            "accuracy": {"tensorflow": scores[task], "onnxruntime": scores[task]},
            "parity": {"max_abs_diff": 1e-6, "passed": True},
            "ratios_over_tf": {"onnxruntime": {"1": 0.5, "32": 0.6}},
            "report": f"runs/demo/{task}/bench/report.md",
        }
        for task in TASKS
    }


def test_the_transcript_has_the_shape_the_demo_prints_today():
    about, recorded, output = transcript.block(README.read_text())
    assert about.startswith("Recorded") and output.strip(), "the README's transcript block is empty: make transcript"
    header = summary_table(_fixture_results()).splitlines()[0]
    assert transcript.shape(output) == transcript.expected_shape(list(TASKS), header), "make transcript"
    today = transcript.settings(list(TASKS))
    changed = {
        f"{task}.{key}": (recorded.get(task, {}).get(key), value)
        for task in TASKS
        for key, value in today[task].items()
        if recorded.get(task, {}).get(key) != value
    }
    assert not changed, f"the demo's settings changed since the transcript (then, now): {changed}; make transcript"


def test_shape_notices_a_changed_table_step_or_epoch_count():
    _, _, output = transcript.block(README.read_text())
    header = summary_table(_fixture_results()).splitlines()[0]
    expected = transcript.expected_shape(list(TASKS), header)
    assert transcript.shape(output) == expected  # the block as it is passes (the test above)
    renamed = output.replace("ORT/TF p50 by batch", "ratio by batch", 1)
    assert transcript.shape(renamed)["columns"] != expected["columns"]
    fewer = output.replace("epoch 1/12 ", "epoch 1/10 ", 1)
    assert transcript.shape(fewer)["epochs"] != expected["epochs"]
    other = output.replace("exporting to ONNX", "converting", 1)
    assert transcript.shape(other)["steps"] != expected["steps"]


def test_make_transcript_rewrites_only_its_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nabove\n\n{transcript.BEGIN}\nold\n{transcript.END}\n\nbelow\n")
    log = tmp_path / "demo.log"
    log.write_text(
        "==> sketch: training with 2 Ray workers\nreport: runs/demo/report.md (HTML: runs/demo/report.html)\n"
    )
    assert transcript.main(["--from", str(log), "--readme", str(readme), "--about", "Recorded here."]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nabove\n\n") and text.endswith(f"{transcript.END}\n\nbelow\n")
    about, recorded, output = transcript.block(text)
    assert about == "Recorded here." and output == log.read_text().rstrip()
    assert json.dumps(recorded) == "{}"  # no table rows in that log: no task's settings to record
    readme.write_text("no markers\n")
    assert transcript.main(["--from", str(log), "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers\n"
