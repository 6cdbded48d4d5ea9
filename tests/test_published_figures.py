"""Every number in a table of docs/benchmarks/*.md is the figure of a committed JSON file, and
each benchmark folder's summary.md is what benchmarks/gpu_bench.py writes from its JSON alone.

A table declares where its numbers come from in an HTML comment right above it::

    <!-- figures
    cuda: gpu-h100/cuda_bench_all.json            ALIAS: a committed JSON file, beside the doc
    keys: run, engine                             columns whose numbers are labels, not figures
    b1 = @cuda:{run}.latency[engine={engine}&batch_size=1&seq_len=null].latency_ms.p50
    sketch | b8 = @cuda:sketch.accuracy.examples ; 2 * @cuda:...   (one row, by its first cell)
    -->

``COLUMN = EXPR ; EXPR`` gives one expression per number in that column's cells, in order;
``{COLUMN}`` is replaced by the row's text in that column. ``@ALIAS:PATH`` reads a JSON value:
dotted keys, and ``[key=value&...]`` picks the one list element that matches. Expressions may
use + - * /, numbers, ``round`` and ``wilson_lower``. A number followed by % is read as a
fraction. A number matches when it is its figure rounded to the digits shown. An empty cell
claims nothing; every number elsewhere (outside ``keys`` columns) needs a declared figure, and a
declaration that matches no column or row fails too.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

from rnnforge.core.stats import wilson_lower

DOCS = ROOT / "docs" / "benchmarks"
COMMENT = re.compile(r"<!--\s*figures\b((?:(?!-->).)*)-->$", re.S)
NUMBER = re.compile(r"(?<![\w.,+\-/])([-+]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![.,]?\d)(?![A-Za-wyz_])(\s?%)?")
REFERENCE = re.compile(r"@([\w-]+):((?:[\w-]+(?:\[[^\]]*\])?)(?:\.[\w-]+(?:\[[^\]]*\])?)*)")
FUNCTIONS = {"round": round, "wilson_lower": wilson_lower}
OPERATORS = {ast.Add: float.__add__, ast.Sub: float.__sub__, ast.Mult: float.__mul__, ast.Div: float.__truediv__}


def plain(cell: str) -> str:
    """A cell's text as read: code spans dropped, links to their text, emphasis removed."""
    cell = re.sub(r"`[^`]*`", "", cell)
    cell = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)
    return cell.replace("**", "").strip()


def numbers(cell: str) -> list[tuple[str, float, float]]:
    """``(text, value, tolerance)`` of each number in ``cell``: the value as a fraction where a %
    follows, the tolerance half a unit of the last digit shown."""
    found = []
    for match in NUMBER.finditer(plain(cell)):
        sign, whole, decimals, percent = match.groups()
        value = float(sign + whole.replace(",", "") + (decimals or ""))
        tolerance = 0.5 * 10.0 ** -(len(decimals) - 1 if decimals else 0)
        scale = 0.01 if percent else 1.0
        found.append((match.group(0).strip(), value * scale, tolerance * scale))
    return found


def rows_of(table: str) -> tuple[list[str], list[list[str]]]:
    lines = [line.strip() for line in table.strip().splitlines()]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return split[0], split[2:]


def resolve(value, path: str, where: str):
    """The JSON value at ``path`` (dotted keys, ``name[k=v&...]`` selecting one list element)."""
    for segment in re.findall(r"[\w-]+(?:\[[^\]]*\])?", path):
        name, _, selector = segment.partition("[")
        value = value[int(name)] if isinstance(value, list) else value[name]
        if selector:
            wanted = {
                k: json.loads(v) if re.fullmatch(r"null|-?\d+(\.\d+)?", v) else v
                for k, v in (pair.split("=", 1) for pair in selector.rstrip("]").split("&"))
            }
            matches = [item for item in value if all(item.get(k) == v for k, v in wanted.items())]
            assert len(matches) == 1, f"{where}: [{selector} matches {len(matches)} elements, not one"
            value = matches[0]
    return value


def evaluate(expression: str, files: dict[str, dict], where: str) -> float:
    """``expression`` with its ``@ALIAS:PATH`` references read from ``files``."""
    values = {}

    def reference(match: re.Match) -> str:
        alias, path = match.groups()
        assert alias in files, f"{where}: no file declared as {alias!r}"
        values[f"_r{len(values)}"] = float(resolve(files[alias], path, where))
        return f"_r{len(values) - 1}"

    tree = ast.parse(REFERENCE.sub(reference, expression), mode="eval").body

    def run(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in values:
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](run(node.left), run(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -run(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
            return float(FUNCTIONS[node.func.id](*(run(a) for a in node.args)))
        raise AssertionError(f"{where}: {ast.unparse(node)!r} is not allowed in a figure expression")

    return run(tree)


def check_table(doc: Path, declaration: str, table: str, repo: Path) -> list[str]:
    """Every number of ``table`` against its declared figure; the problems, one line each."""
    header, rows = rows_of(table)
    files, keys, by_column, by_cell, used = {}, set(), {}, {}, set()
    for line in filter(None, (raw.strip() for raw in declaration.splitlines())):
        if re.fullmatch(r"[\w-]+:\s*\S+\.json", line):
            alias, path = (part.strip() for part in line.split(":", 1))
            source = (doc.parent / path).resolve()
            tracked = subprocess.run(["git", "ls-files", "--error-unmatch", source], cwd=repo, capture_output=True)
            if tracked.returncode != 0:
                return [f"{doc.name}: {path} is not a committed file"]
            files[alias] = json.loads(source.read_text())
        elif line.startswith("keys:"):
            keys = {k.strip() for k in line[5:].split(",")}
        else:
            target, _, expressions = line.partition(" = ")
            row, _, column = target.rpartition(" | ")
            (by_cell if row else by_column)[(row.strip(), column.strip()) if row else column.strip()] = expressions
    problems = [f"{doc.name}: declared column {c!r} is not in the table" for c in by_column if c not in header]
    for cells in rows:
        for column, cell in zip(header, cells):
            found = numbers(cell)
            if column in keys or not plain(cell):
                continue  # a label, or no figure (an empty cell claims nothing)
            declared = by_cell.get((plain(cells[0]), column), by_column.get(column))
            used.add((plain(cells[0]), column))
            where = f"{doc.name} row {plain(cells[0])!r} column {column!r}"
            if declared is None:
                problems += [f"{where}: {text} has no declared source" for text, _, _ in found]
                continue
            text_of = dict(zip(header, map(plain, cells)))
            expressions = [
                e.strip()
                for e in re.sub(r"\{([^}]+)\}", lambda m, text_of=text_of: text_of[m.group(1)], declared).split(";")
            ]
            expressions = [e for e in expressions if e]
            if len(expressions) != len(found):
                problems.append(f"{where}: {len(found)} numbers ({cell!r}) but {len(expressions)} declared figures")
                continue
            for (text, value, tolerance), expression in zip(found, expressions):
                figure = evaluate(expression, files, where)
                if abs(value - figure) > tolerance * (1 + 1e-9):
                    problems.append(f"{where}: {text} but {expression} is {figure:.6g}")
    problems += [f"{doc.name}: declared cell {r!r} | {c!r} matches no row" for r, c in by_cell if (r, c) not in used]
    return problems


def tables(text: str) -> list[tuple[str | None, str]]:
    """Each table of a markdown text with the figures comment right above it (or None)."""
    lines, found, at = text.splitlines(), [], 0
    while at < len(lines):
        if not lines[at].startswith("|"):
            at += 1
            continue
        end = at
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        comment = COMMENT.search("\n".join(lines[:at]).rstrip())
        found.append((comment.group(1) if comment else None, "\n".join(lines[at:end])))
        at = end
    return found


def check_document(doc: Path, repo: Path = ROOT) -> tuple[int, list[str]]:
    """(tables checked, problems) for one document; a table with numbers must declare its sources."""
    checked, problems = 0, []
    for declaration, table in tables(doc.read_text()):
        if declaration is not None:
            checked += 1
            problems += check_table(doc, declaration, table, repo)
        elif any(numbers(cell) for row in rows_of(table)[1] for cell in row):
            first = table.splitlines()[0][:60]
            problems.append(f"{doc.name}: the table {first!r} has numbers and no <!-- figures --> comment")
    return checked, problems


PUBLISHED = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("doc", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_every_number_in_a_published_table_is_its_committed_figure(doc):
    checked, problems = check_document(doc)
    assert not problems, "\n".join(problems)
    assert checked >= 1


def copy_for_editing(tmp_path: Path) -> Path:
    """docs/benchmarks/gpu-h100.md and its JSON in a fresh git repository: the committed state."""
    repo = tmp_path / "repo"
    shutil.copytree(DOCS, repo / "docs" / "benchmarks", ignore=shutil.ignore_patterns("*.png"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    return repo / "docs" / "benchmarks" / "gpu-h100.md"


def test_an_edited_number_a_missing_declaration_and_an_uncommitted_source_fail(tmp_path):
    doc = copy_for_editing(tmp_path)
    repo = tmp_path / "repo"
    original = doc.read_text()
    assert check_document(doc, repo)[1] == []
    assert "| sketch | onnxruntime | cuda | 1.124 |" in original
    doc.write_text(
        original.replace("| sketch | onnxruntime | cuda | 1.124 |", "| sketch | onnxruntime | cuda | 1.125 |")
    )
    problems = check_document(doc, repo)[1]
    assert len(problems) == 1 and "row 'sketch' column 'b1': 1.125 but" in problems[0], problems
    doc.write_text(original.replace("b8 = ", "b8_undeclared = ", 1))
    problems = check_document(doc, repo)[1]
    assert any("has no declared source" in p for p in problems) and any(
        "'b8_undeclared' is not in the table" in p for p in problems
    )
    undeclared = re.sub(r"<!-- figures\nrecord: [^>]*-->\n", "", original)
    assert undeclared != original
    doc.write_text(undeclared)
    problems = check_document(doc, repo)[1]
    assert problems == [
        "gpu-h100.md: the table '| run | provider | node events | node time us | LSTM share o' has numbers and no <!-- figures --> comment"
    ], problems
    (doc.parent / "gpu-h100" / "cuda_bench_all.json").rename(doc.parent / "gpu-h100" / "moved.json")
    doc.write_text(original.replace("gpu-h100/cuda_bench_all.json", "gpu-h100/moved.json"))
    assert any("moved.json is not a committed file" in p for p in check_document(doc, repo)[1])


def test_an_edited_raw_file_fails_too(tmp_path):
    doc = copy_for_editing(tmp_path)
    raw = doc.parent / "gpu-h100" / "cpu_bench_all.json"
    results = json.loads(raw.read_text())
    row = next(r for r in results["video"]["latency"] if r["engine"] == "onnxruntime" and r["batch_size"] == 256)
    row["latency_ms"]["p50"] *= 1.01
    raw.write_text(json.dumps(results))
    problems = check_document(doc, tmp_path / "repo")[1]
    assert problems and all("video" in p for p in problems), problems


def test_numbers_are_read_as_shown():
    assert [(t, v) for t, v, _ in numbers("**1,000 of 1,000**, lower bound 99.62 %: `use_tf32=0` fp16 b1 top-1")] == [
        ("1,000", 1000.0),
        ("1,000", 1000.0),
        ("99.62 %", pytest.approx(0.9962)),
    ]
    assert [(t, v) for t, v, _ in numbers("10.46x; -0.6 riders, 11.705 ms")] == [
        ("10.46", 10.46),
        ("-0.6", -0.6),
        ("11.705", 11.705),
    ]
    assert numbers("1.124")[0][2] == pytest.approx(0.0005) and numbers("12,599")[0][2] == 0.5


def gpu_bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder", [p.parent for p in sorted(DOCS.glob("*/record.json"))], ids=lambda p: p.name)
def test_a_kept_summary_is_what_gpu_bench_writes_from_the_kept_json(folder):
    gpu_bench = gpu_bench_module()
    record = json.loads((folder / "record.json").read_text())
    plots = {run: f"{run}_latency.png" for run in sorted(record["profile"])}
    assert (folder / "summary.md").read_text() == gpu_bench.summary(folder, record, plots)


def test_a_bench_whose_file_is_not_there_gives_no_figure(tmp_path):
    """The video CUDA graph bench named in record.json was not kept: no figure; a copy of the
    sketch graph bench put in its place shows, with the speed-up over the same run's default session."""
    gpu_bench = gpu_bench_module()
    folder = tmp_path / "gpu"
    shutil.copytree(DOCS / "gpu-h100", folder, ignore=shutil.ignore_patterns("*.png"))
    record = json.loads((folder / "record.json").read_text())
    before = gpu_bench.summary(folder, record)
    assert "| video | CUDA graph >= 1.5x faster at batch 1 | not measured (raw file not kept) | n/a |" in before
    assert "cuda graph" not in before  # no p50 row of a graph bench
    (folder / "cuda_graph" / "video-fp32").mkdir(parents=True)
    shutil.copy(folder / "sketch_cuda_graph_after_fix.json", folder / "cuda_graph" / "video-fp32" / "bench.json")
    after = gpu_bench.summary(folder, record)
    assert "| video | CUDA graph >= 1.5x faster at batch 1 | 0.509 / 0.277 ms: 1.84x | met |" in after
    assert "| video | onnxruntime | cuda graph | 0.277 | 0.374 | 0.361 | 0.479 |" in after
