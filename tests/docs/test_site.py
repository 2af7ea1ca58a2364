"""The documentation site builds with warnings as errors, its references are generated from the
code, and every code block on it is an included example file (run by `test_examples.py`) or a
shell/text block whose `conveyor` commands parse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from conveyor.cli import cli
from tests.docs.docsite import (
    INLINE,
    ROOT,
    blocks,
    included_files,
    known_variables,
    pages,
    parse_command,
    shell_commands,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once by `mkdocs build --strict` as CI builds it."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    return out


def test_the_site_builds_with_warnings_as_errors(site: Path) -> None:
    for page in ("", "getting-started", "deployment", "testing", "engines", "engines/redis"):
        assert (site / page / "index.html").is_file(), page


def test_the_cli_reference_has_every_command_and_option(site: Path) -> None:
    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    root = click.Context(cli, info_name="conveyor")
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        assert command is not None
        assert f"conveyor {name}</code>" in html, name
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and param.name != "help":
                assert f"<code>{param.opts[0]}</code>" in html, (name, param.opts)
    assert "<code>--child</code>" not in html  # hidden


def test_the_configuration_reference_has_every_variable_the_code_reads(site: Path) -> None:
    html = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    variables = known_variables()
    assert {"CONVEYOR_BROKER_URL", "CONVEYOR_SECRET_KEY", "CONVEYOR_WORKERS"} <= variables
    for name in variables:
        assert f"<code>{name}</code>" in html, name
    for expected in ("<code>redis+sentinel://</code>", "<code>SqliteBroker</code>", "unique_for"):
        assert expected in html


def test_the_included_examples_are_on_the_pages(site: Path) -> None:
    assert "add_routes" in (site / "tasks" / "index.html").read_text(encoding="utf-8")
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "--8&lt;--" not in html, page  # every inclusion was replaced
        assert "[start:" not in html, page  # section markers are not shown


def test_every_code_block_is_an_included_example_or_an_allowed_language() -> None:
    wrong = []
    for page in pages():
        for block in blocks(page):
            if block.lang not in INLINE and not block.only_includes():
                wrong.append(f"{block.where}: a {block.lang or 'bare'} block written inline")
            if block.includes() and not block.only_includes():
                wrong.append(f"{block.where}: an inclusion mixed with inline lines")
    assert not wrong, (
        "Python, YAML and other code on the site is a file under examples/ that the tests run, "
        'included with --8<-- "examples/...": ' + "; ".join(wrong)
    )


def test_every_included_file_exists_under_examples() -> None:
    for path, where in included_files().items():
        assert path.startswith("examples/"), (path, where)
        assert (ROOT / path).is_file(), (path, where)


def test_every_conveyor_command_in_a_shell_block_parses() -> None:
    checked = 0
    for page in pages():
        for block in blocks(page):
            if block.lang != "bash":
                continue
            for argv in shell_commands("\n".join(block.lines)):
                try:
                    parse_command(argv)
                except click.UsageError as exc:
                    pytest.fail(f"{block.where}: {' '.join(argv)}: {exc.format_message()}")
                checked += 1
    assert checked >= 10


def test_the_command_line_parser_catches_mistakes() -> None:
    assert parse_command(["conveyor", "dlq", "requeue", "a:b", "id1"]).params["task_ids"] == (
        "id1",
    )
    for wrong in (["conveyor", "worker", "a:b", "--nope"], ["conveyor", "nope"]):
        with pytest.raises(click.UsageError):
            parse_command(wrong)
    assert list(shell_commands("X=1 conveyor info a:b && .venv/bin/conveyor ping a:b # c")) == [
        ["conveyor", "info", "a:b"],
        [".venv/bin/conveyor", "ping", "a:b"],
    ]
