"""What the documentation site's tests share: its pages, their code blocks and included files,
and checks of command lines and environment variables against the code.

A page's code block is either an inclusion of files (`--8<-- "examples/...`, pymdownx.snippets)
or, in a few languages that are not code the suite could run (shell sessions, text, JSON), written
inline; every `conveyor` command line in a shell block is still parsed with the CLI.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from conveyor.cli import cli
from scripts.docs_hooks import environment_variables

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"

#: Languages a block may be written in inline. Everything else (Python first) is included.
INLINE = frozenset({"bash", "text", "json"})

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<lang>[\w+-]*)[^\n]*$")
_INCLUDE = re.compile(r'^\s*--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"\s*$')


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        """`page.md:line`, for messages."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def includes(self) -> list[tuple[str, str | None]]:
        """The (path, section) of each inclusion line of the block."""
        found = [_INCLUDE.match(line) for line in self.lines]
        return [(m["path"], m["section"]) for m in found if m]

    def only_includes(self) -> bool:
        """Whether every non-blank line of the block includes a file."""
        return all(_INCLUDE.match(line) for line in self.lines if line.strip())


def pages() -> list[Path]:
    """Every Markdown page of the site, in or out of the nav."""
    return sorted(DOCS.rglob("*.md"))


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of `page`."""
    lines = page.read_text(encoding="utf-8").splitlines()
    start: tuple[int, str, str] | None = None
    body: list[str] = []
    for number, line in enumerate(lines, 1):
        match = _FENCE.match(line)
        if start is None and match:
            start, body = (number, match["fence"], match["lang"]), []
        elif start is not None and line.strip() == start[1]:
            yield Block(page, start[0], start[2], tuple(body))
            start = None
        elif start is not None:
            body.append(line)
    assert start is None, f"{page}:{start and start[0]}: a code block is never closed"


def included_files() -> dict[str, list[str]]:
    """Every file a page includes (relative to the repository) -> where it is included."""
    found: dict[str, list[str]] = {}
    for page in pages():
        for block in blocks(page):
            for path, _ in block.includes():
                found.setdefault(path, []).append(block.where)
    return found


def parse_command(argv: list[str]) -> click.Context:
    """Parse a `conveyor ...` command line with the CLI's click tree, without running it.

    Raises:
        click.UsageError: no such command or option, a missing argument, a bad value.
    """
    assert Path(argv[0]).name == "conveyor", argv
    ctx = click.Context(cli, info_name="conveyor")
    command: click.Command = cli
    name, args = "conveyor", argv[1:]
    while isinstance(command, click.Group):
        if not args:
            raise click.UsageError("missing a command", ctx)
        name, *args = args
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"no such command {name!r}", ctx)
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=name, parent=ctx)
        command = sub
    return command.make_context(name, args, parent=ctx)


def shell_commands(text: str) -> Iterator[list[str]]:
    """The `conveyor` command lines of a shell snippet, without leading `VAR=value`s."""
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in {";", "&&", "||", "|", "&"}:
                while command and re.fullmatch(r"\w+=.*", command[0]):
                    command.pop(0)
                if command and os.path.basename(command[0]) == "conveyor":
                    yield command
                command = []
            else:
                command.append(token)


@functools.cache
def known_variables() -> frozenset[str]:
    """The `CONVEYOR_*` variables the package's code reads."""
    return frozenset(environment_variables())
