"""docs/cli.md, the command-line reference, generated from the click commands themselves.

Every option's line is the one ``--help`` prints (its help, default per task, range and limit),
so the page cannot disagree with ``--help``::

    python -m rnnforge.docs_cli            # rewrite docs/cli.md
    python -m rnnforge.docs_cli --check    # exit 1 when docs/cli.md is not what this prints
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from rnnforge.core import fileio

#: Where the page lives in a checkout.
PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
HEADER = (
    "# Command-line reference\n"
    "\n"
    "Generated from the commands themselves by `make docs` (`python -m rnnforge.docs_cli`): do not edit by hand.\n"
    "Each line is what `rnnforge COMMAND --help` prints. What the commands write and how to read it:\n"
    "[benchmarking.md](benchmarking.md), [tasks.md](tasks.md), [cluster.md](cluster.md); exit codes:\n"
    "[errors.md](errors.md)."
)


def commands(group: click.Group | None = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    """``("rnnforge", cli)``, then every sub-command depth first, in the order ``--help`` lists them."""
    from rnnforge.cli import cli

    group = group or cli
    yield " ".join(("rnnforge", *path)), group
    for name, command in group.commands.items():  # in the order they are defined: train, export, bench, demo
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join(("rnnforge", *path, name)), command


def _context(name: str, command: click.Command) -> click.Context:
    from rnnforge.cli import cli

    # The group's context settings (``-h``, the width), as ``rnnforge --help`` applies them: click
    # caches a command's help option, so a context without them would render what ran first.
    root = click.Context(cli, info_name="rnnforge", **cli.context_settings)
    if command is cli:
        return root
    return click.Context(command, info_name=name.split(" ", 1)[-1], parent=root)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole page."""
    parts = [HEADER]
    for name, command in commands():
        ctx = _context(name, command)
        usage = " ".join([name, *command.collect_usage_pieces(ctx)])
        parts += ["", f"## `{name}`", "", "```", usage, "```", ""]
        help_text = command.help or ""
        parts.append(_help_paragraphs(help_text))
        rows = [param.get_help_record(ctx) for param in command.get_params(ctx) if isinstance(param, click.Option)]
        rows = [row for row in rows if row]
        if rows:
            parts += ["", "| option | meaning |", "|---|---|"]
            parts += [f"| `{_cell(spec)}` | {_cell(text)} |" for spec, text in rows]
        if isinstance(command, click.Group):
            parts += ["", "Sub-commands: " + ", ".join(f"`{name} {sub}`" for sub in command.commands) + "."]
    return "\n".join(parts).rstrip() + "\n"


def _help_paragraphs(text: str) -> str:
    """A command's help as Markdown: click's ``\\b`` blocks (kept verbatim) as code blocks."""
    import inspect

    out = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b\n"):
            out.append("```\n" + inspect.cleandoc(block[2:]) + "\n```")
        else:
            out.append(" ".join(block.split()))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/cli.md from the click commands.")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs; write nothing")
    parser.add_argument("--output", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not args.output.is_file() or args.output.read_text() != page:
            print(f"error: {args.output} is not what the commands say: run make docs", file=sys.stderr)
            return 1
        return 0
    fileio.write_text(args.output, page)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
