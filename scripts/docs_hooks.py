"""MkDocs hooks (`hooks:` in mkdocs.yml): the reference pages, generated from the code.

A page holds a marker line (`<!-- generated: cli -->`, `<!-- generated: configuration -->`)
that is replaced, at every build, by what the code says now: the CLI reference from the click
command tree of `conveyor.cli`, the configuration reference from the environment variables the
package reads (found in its source), the URL schemes of the engine registry, the broker classes'
and the scheduler's signatures with their docstrings' `Args:`, the task labels of
`TaskOptions` and the worker options of `WorkerOptions`.

Invariant: nothing here is a second copy of a default or a flag. The only hand-written text is
the description of an environment variable the code reads without a docstring of its own
(`ENVIRONMENT`) and of the two labels that are not `TaskOptions` fields (`EXTRA_LABELS`); a
variable or parameter with no description, or a description for a variable the code no longer
reads, is a warning, which fails `mkdocs build --strict`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
import re
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import msgspec

log = logging.getLogger("mkdocs.plugins.conveyor")

#: What each environment variable read outside a click option does. A variable that is also a
#: click option's `envvar` gets the option's help when it is not described here.
ENVIRONMENT = {
    "CONVEYOR_BROKER_URL": "the broker `broker_from_url()` makes when it is given no URL, so "
    "the broker of every app written `broker = broker_from_url()`; `{default_url}` when unset. "
    "A relative SQLite path is resolved against each process's current directory.",
    "CONVEYOR_RESULT_BACKEND_URL": "a result store replacing the engine's default, for brokers "
    "made by `broker_from_url()`: any engine URL that has one (`redis://...`, "
    "`sqlite:///results.db`, ...).",
    "CONVEYOR_SECRET_KEY": "signs every message with HMAC-SHA256, and every result, schedule "
    "and dashboard record read back from a store; unsigned or mismatched ones are refused "
    "(`secret_key=` wins). See [Security](../security.md).",
    "CONVEYOR_MAX_RETRIES": "retries of a task that sets no `retries` label (default 0).",
    "CONVEYOR_RETRY_DELAY": "seconds before a retry, for tasks that set no `retry_delay` "
    "(default 0).",
    "CONVEYOR_TASK_TIMEOUT": "hard time limit in seconds of a task that sets no `timeout` "
    "(default none).",
    "CONVEYOR_WEB_TOKEN": "the bearer token of the HTTP API and dashboard: `conveyor web`'s "
    "`--token`, and `conveyor.web.router()` / `create_app()` when given no `token`.",
}

#: Labels a task may carry that are not `TaskOptions` fields (they are read elsewhere).
EXTRA_LABELS = {
    "retry_on": (
        "tuple of exception types",
        "`(Exception,)`",
        "the errors that are retried (decorator only: it does not travel in the message).",
    ),
    "schedule": (
        "list of schedules",
        "none",
        "periodic or one-off runs: items with `cron`, `interval` or `time`, see "
        "[Scheduling](../scheduling.md).",
    ),
}

#: Parameters whose docstring says nothing, described here (class name, parameter).
EXTRA_PARAMETERS = {
    ("Broker", "defaults"): "a `conveyor.options.TaskDefaults`: the retries, retry delay and "
    "timeout of tasks that set none; read from `CONVEYOR_MAX_RETRIES`, `CONVEYOR_RETRY_DELAY` "
    "and `CONVEYOR_TASK_TIMEOUT` when not given.",
    ("InMemoryBroker", "logs_format"): "accepted for Taskiq compatibility and ignored: the "
    "library installs no log handler (the CLI does).",
}

_ENV_NAME = re.compile(r"CONVEYOR_[A-Z0-9_]+")
_UNSET = type(click.Option(["--x"]).default)  # click's "no default given" sentinel


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each marker line with the reference it names."""
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown


# --- the CLI reference ------------------------------------------------------------------------


def cli_reference() -> str:
    """One section per command of the `conveyor` click tree: usage, help, parameters."""
    from conveyor.cli import cli

    root = click.Context(cli, info_name="conveyor")
    parts = [_command_section(root, level=2)]
    parts += [_command_section(ctx, level=2 + depth) for ctx, depth in _walk(root, 0)]
    return "\n".join(parts)


def _walk(ctx: click.Context, depth: int) -> Iterator[tuple[click.Context, int]]:
    group = ctx.command
    if not isinstance(group, click.Group):
        return
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        yield sub, depth
        yield from _walk(sub, depth + 1)


def _command_section(ctx: click.Context, level: int) -> str:
    command = ctx.command
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines = [f"{'#' * level} `{ctx.command_path}`", ""]
    lines += [inspect.cleandoc(command.help or ""), "", "```text", usage, "```", ""]
    rows = [_param_row(param, ctx) for param in command.params if not _skipped(param)]
    if rows:
        lines += ["| parameter | type | default | environment | meaning |", "|---|---|---|---|---|"]
        lines += rows
        lines.append("")
    return "\n".join(lines)


def _skipped(param: click.Parameter) -> bool:
    return bool(getattr(param, "hidden", False)) or param.name == "help"


def _param_row(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param, click.Argument):
        name = f"`{param.human_readable_name}`" + ("..." if param.nargs == -1 else "")
        name += "" if param.required else " (optional)"
        help_text = ""
    else:
        name = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        help_text = getattr(param, "help", None) or ""
    default = param.get_default(ctx, call=False)
    shown = "" if default in (None, False, ()) or isinstance(default, _UNSET) else f"`{default}`"
    env = f"`{param.envvar}`" if isinstance(param.envvar, str) else ""
    return _row(name, _type_name(param), shown, env, help_text)


def _type_name(param: click.Parameter) -> str:
    kind = param.type
    if getattr(param, "is_flag", False):
        return "flag"
    if isinstance(kind, click.Choice):
        return ", ".join(f"`{choice}`" for choice in kind.choices)
    if isinstance(kind, click.IntRange | click.FloatRange):
        base = "integer" if isinstance(kind, click.IntRange) else "number"
        low = f" ≥ {kind.min:g}" if kind.min is not None else ""
        high = f" ≤ {kind.max:g}" if kind.max is not None else ""
        return base + low + ("," if low and high else "") + high
    return {"text": "text", "integer": "integer", "float": "number", "path": "path"}.get(
        kind.name, kind.name
    )


# --- the configuration reference --------------------------------------------------------------


def configuration_reference() -> str:
    """Environment variables, URL schemes, broker and scheduler parameters, labels, worker."""
    sections = [
        _environment_section(),
        _schemes_section(),
        _brokers_section(),
        _labels_section(),
        _worker_section(),
        _scheduler_section(),
    ]
    return "\n".join(sections)


def environment_variables() -> dict[str, list[str]]:
    """Every `CONVEYOR_*` name written as a string in the package's code -> its modules."""
    import conveyor

    root = Path(conveyor.__file__).parent
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = ".".join(("conveyor", *path.relative_to(root).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and _ENV_NAME.fullmatch(value):
                modules = found.setdefault(value, [])
                if module not in modules:
                    modules.append(module)
    return found


def _click_envvars() -> dict[str, str]:
    """envvar -> "`conveyor CMD --opt`: help" for every option of the CLI that has one."""
    from conveyor.cli import cli

    found: dict[str, str] = {}
    for ctx, _ in _walk(click.Context(cli, info_name="conveyor"), 0):
        for param in ctx.command.params:
            if isinstance(param, click.Option) and isinstance(param.envvar, str):
                found[param.envvar] = f"`{ctx.command_path} {param.opts[0]}`: {param.help or ''}"
    return found


def _environment_section() -> str:
    from conveyor.brokers import DEFAULT_URL

    used = environment_variables()
    options = _click_envvars()
    for name in sorted(set(ENVIRONMENT) - set(used)):
        log.warning("docs_hooks.ENVIRONMENT describes %s, which no code reads any more", name)
    lines = [
        "## Environment variables",
        "",
        "Every `CONVEYOR_*` variable the package reads (found in its source at each build). "
        "All are optional; an argument given in code wins over the variable.",
        "",
        "| variable | meaning | used in |",
        "|---|---|---|",
    ]
    for name, modules in sorted(used.items()):
        if name in ENVIRONMENT:
            text: str | None = ENVIRONMENT[name].format(default_url=DEFAULT_URL)
        else:
            text = options.get(name)
        if text is None:
            log.warning(
                "%s is read in %s but not described in docs_hooks.ENVIRONMENT", name, modules
            )
            text = ""
        where = ", ".join(f"`{module}`" for module in modules)
        lines.append(_row(f"`{name}`", text, where))
    return "\n".join(lines) + "\n"


def _schemes_section() -> str:
    from conveyor.engines import registry

    extras: dict[str, str] = getattr(registry, "_EXTRAS", {})
    lines = [
        "## Broker URLs",
        "",
        "The schemes `broker_from_url()` and `CONVEYOR_BROKER_URL` accept "
        "(`conveyor.engines.registry.SCHEMES`); each engine's page lists its URL options.",
        "",
        "| scheme | engine | extra to install |",
        "|---|---|---|",
    ]
    for scheme, engine in registry.SCHEMES.items():
        extra = f"`pip install 'conveyor[{extras[engine]}]'`" if engine in extras else "built in"
        lines.append(_row(f"`{scheme}://`", f"`conveyor.engines.{engine}`", extra))
    return "\n".join(lines) + "\n"


def _brokers_section() -> str:
    import conveyor
    from conveyor.broker import Broker as Core
    from conveyor.brokers import Broker

    lines = [
        "## Brokers",
        "",
        "The parameters of each public broker class (from their signatures and docstrings). "
        "Every class also takes the options of every broker, below, as keywords.",
        "",
    ]
    for name in sorted(conveyor.__all__):
        cls = getattr(conveyor, name, None)
        if isinstance(cls, type) and issubclass(cls, Broker) and cls is not Broker:
            lines += [f"### `{name}`", "", _first_line(cls), "", _signature_table(cls), ""]
    lines += [
        "### Options of every broker",
        "",
        _first_line(Core),
        "",
        _signature_table(Core, keyword_only=True),
        "",
    ]
    return "\n".join(lines)


def _labels_section() -> str:
    from conveyor.options import TaskOptions

    described = _docstring_section(TaskOptions, "Attributes")
    lines = [
        "## Task labels",
        "",
        "Set on the decorator (`@broker.task(retries=3)`), with `.with_labels(...)` on a task, "
        "a signature or a kicker, or by the kicker's helpers (`with_queue`, `with_priority`, "
        "`with_delay`, `with_eta`). Any other label is free metadata that travels with the "
        "message. From `conveyor.options.TaskOptions`:",
        "",
        "| label | type | default | meaning |",
        "|---|---|---|---|",
    ]
    fields = msgspec.structs.fields(TaskOptions)
    label_of = {field.name: field.encode_name for field in fields}
    for field in fields:
        text = described.get(field.name)
        if text is None:
            log.warning("TaskOptions.%s has no line under Attributes: in its docstring", field.name)
        else:  # the docstring names fields (`retry_delay_seconds`); users write labels
            text = re.sub(r"`(\w+)`", lambda m: f"`{label_of.get(m[1], m[1])}`", text)
        default = "none" if field.default is None else f"`{field.default!r}`"
        lines.append(_row(f"`{field.encode_name}`", _annotation(field.type), default, text or ""))
    for label, (kind, default, text) in EXTRA_LABELS.items():
        lines.append(_row(f"`{label}`", kind, default, text))
    return "\n".join(lines) + "\n"


def _worker_section() -> str:
    from conveyor.worker.consumer import WorkerOptions

    described = _docstring_section(WorkerOptions, "Attributes")
    lines = [
        "## Worker options",
        "",
        "Keywords of `broker.run(...)`, `await broker.run_async(...)` and "
        "`conveyor.testing.worker(broker, ...)` (`conveyor.worker.consumer.WorkerOptions`); "
        "`conveyor worker` sets them from its flags ([CLI](cli.md#conveyor-worker)). "
        "`broker.run()` also takes `workers` (processes) and `with_scheduler`.",
        "",
        "| option | default | meaning |",
        "|---|---|---|",
    ]
    for field in dataclasses.fields(WorkerOptions):
        text = described.get(field.name)
        if text is None:
            log.warning("WorkerOptions.%s has no line under Attributes:", field.name)
        lines.append(_row(f"`{field.name}`", f"`{field.default!r}`", text or ""))
    return "\n".join(lines) + "\n"


def _scheduler_section() -> str:
    from conveyor.scheduler import Scheduler

    return "\n".join(
        ["## Scheduler", "", _first_line(Scheduler), "", _signature_table(Scheduler), ""]
    )


# --- docstrings, signatures, types ------------------------------------------------------------


def _signature_table(cls: type, keyword_only: bool = False) -> str:
    described = _docstring_section(cls, "Args")
    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    for param in inspect.signature(cls.__init__).parameters.values():  # type: ignore[misc]  # a class's own __init__
        if param.name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if keyword_only and param.kind is not param.KEYWORD_ONLY:
            continue
        text = described.get(param.name) or EXTRA_PARAMETERS.get((cls.__name__, param.name))
        if text is None:
            log.warning(
                "%s(%s=...) has no line under Args: in its docstring", cls.__name__, param.name
            )
        default = "required" if param.default is param.empty else _default(param.default)
        rows.append(_row(f"`{param.name}`", default, text or ""))
    return "\n".join(rows)


def _default(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and value >= 3600:
        return f"`{value:g}` ({value / 3600:g} h)"
    return f"`{value!r}`"


def _docstring_section(obj: object, title: str) -> dict[str, str]:
    """`name: text` entries of a Google docstring section; `a / b: text` names several, and
    the ones after the first refer to it."""
    doc = inspect.getdoc(obj) or ""
    entries: dict[str, str] = {}
    inside, current = False, ""
    for line in doc.splitlines():
        if line.strip() == f"{title}:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        match = re.match(r"^    (\*{0,2}[\w /*]+?):\s+(.*)$", line)
        if match and not line.startswith("     "):
            current = match.group(1)
            entries[current] = match.group(2)
        elif current and line.strip():
            entries[current] += " " + line.strip()
    found: dict[str, str] = {}
    for key, text in entries.items():
        first, *others = (name.strip() for name in key.split(" / "))
        found[first] = text
        found.update((name, f"see `{first}`.") for name in others)
    return found


def _first_line(obj: object) -> str:
    return (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")


def _annotation(kind: Any) -> str:
    """A field's type in words: `int 0-9`, `number ≥ 0 or none`, `"thread", "process"`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        return " or ".join(_annotation(m) for m in members) + (
            " or none" if len(members) < len(typing.get_args(kind)) else ""
        )
    if typing.get_origin(kind) is typing.Annotated:
        base, *metas = typing.get_args(kind)
        text = _annotation(base)
        for meta in metas:
            low, high = getattr(meta, "ge", None), getattr(meta, "le", None)
            if low is not None and high is not None:
                text += f" {low}-{high}"
            elif low is not None:
                text += f" ≥ {low}"
        return text
    if typing.get_origin(kind) is typing.Literal:
        return ", ".join(f'`"{value}"`' for value in typing.get_args(kind))
    if getattr(kind, "__name__", "") == "Rate":  # a rate limit is written as text
        return '`"N/s"`, `"N/m"` or `"N/h"`'
    names = {int: "integer", float: "number", str: "text", bool: "boolean"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


MARKERS: dict[str, Callable[[], str]] = {
    "<!-- generated: cli -->": cli_reference,
    "<!-- generated: configuration -->": configuration_reference,
}
