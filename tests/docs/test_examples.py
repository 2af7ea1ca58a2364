"""Every file the documentation site includes is run or checked here.

Python examples run as scripts (`python file.py`, on the embedded SQLite default or
`InMemoryBroker`, asserting what the page says); the getting-started one against a worker started
from the CLI; the testing example with pytest. Deployment files cannot run without a cluster, so
they are checked against the code: every `conveyor` command in them parses with the CLI, every
`CONVEYOR_*` variable is one the package reads, every metric the autoscaler asks for is one it
exports, every extra it installs exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conveyor.engines.base import QueueStats
from conveyor.prometheus import ClusterMetrics, render_metrics
from tests.docs.docsite import ROOT, included_files, known_variables, parse_command

INCLUDED = included_files()
GETTING_STARTED = "examples/getting_started/main.py"
TESTING = "examples/testing/"
DEPLOY = "examples/deploy/"
POSTGRES = "examples/postgres/"
SCRIPTS = sorted(
    path
    for path in INCLUDED
    if path.endswith(".py") and path != GETTING_STARTED and not path.startswith((TESTING, POSTGRES))
)
POSTGRES_SCRIPTS = sorted(path for path in INCLUDED if path.startswith(POSTGRES))


def _env() -> dict[str, str]:
    """This environment without conveyor's variables and the suite's pytest options."""
    drop = ("CONVEYOR_", "PYTEST_ADDOPTS")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _run(argv: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_every_included_file_is_run_or_checked() -> None:
    checked = {GETTING_STARTED, *SCRIPTS, *POSTGRES_SCRIPTS}
    checked |= {path for path in INCLUDED if path.startswith((TESTING, DEPLOY))}
    assert set(INCLUDED) == checked
    assert all(Path(path).suffix != ".py" for path in INCLUDED if path.startswith(DEPLOY))
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("path", SCRIPTS)
def test_example_runs(path: str, tmp_path: Path) -> None:
    _run([sys.executable, str(ROOT / path)], cwd=tmp_path)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A database of its own for the PostgreSQL examples (they make tables), dropped after."""
    import psycopg

    from tests.servers import postgres_url

    server = urlsplit(postgres_url())
    name = f"conveyor_docs_{uuid.uuid4().hex[:8]}"
    admin = server._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield server._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.parametrize("path", POSTGRES_SCRIPTS)
def test_postgres_example_runs(path: str, database_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / path)],
        cwd=tmp_path,
        env={**_env(), "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{path}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.timeout(60)
def test_getting_started_against_a_worker_from_the_cli(tmp_path: Path) -> None:
    shutil.copy(ROOT / GETTING_STARTED, tmp_path / "main.py")
    conveyor = [sys.executable, "-m", "conveyor"]
    worker = subprocess.Popen(
        [*conveyor, "worker", "main:broker"],
        cwd=tmp_path,
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed = _run([sys.executable, "main.py"], cwd=tmp_path).stdout
        sent = _run(
            [*conveyor, "send", "main:broker", "main:add", "--args", "[1, 2]", "--wait"], tmp_path
        )
        letters = _run([*conveyor, "dlq", "list", "main:broker"], cwd=tmp_path).stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=30)
    assert "add(1, 2) = 3" in printed
    assert "divide(1, 0): failed after 3 attempts" in printed
    assert "result: 3" in sent.stdout
    assert "main:divide" in letters
    assert worker.returncode == 0, log
    assert "Traceback" not in log


@pytest.mark.timeout(60)
def test_the_testing_example_passes_under_pytest(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(ROOT / TESTING, project)
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
    assert "5 passed" in done.stdout


# --- deployment files -------------------------------------------------------------------------


def _deploy(suffix: str) -> list[Path]:
    return [ROOT / p for p in INCLUDED if p.startswith(DEPLOY) and p.endswith(suffix)]


def _check_command(argv: list[str], where: str) -> None:
    import click

    try:
        parse_command(argv)
    except click.UsageError as exc:
        pytest.fail(f"{where}: {shlex.join(argv)}: {exc.format_message()}")


def _check_variables(names: Any, where: str) -> None:
    unknown = {n for n in names if str(n).startswith("CONVEYOR_")} - known_variables()
    assert not unknown, f"{where}: no code reads {sorted(unknown)}"


def test_the_systemd_units_run_valid_commands() -> None:
    units = _deploy(".service")
    assert len(units) == 3
    for unit in units:
        settings = [line.partition("=") for line in unit.read_text().splitlines() if "=" in line]
        [start] = [value for key, _, value in settings if key == "ExecStart"]
        _check_command(shlex.split(start), unit.name)
        _check_variables([v.split("=")[0] for k, _, v in settings if k == "Environment"], unit.name)
        assert "EnvironmentFile" in {key for key, _, _ in settings}
    [env_file] = _deploy(".env")
    _check_variables([line.split("=")[0] for line in env_file.read_text().splitlines()], "env")


def test_the_dockerfile_and_compose_file_run_valid_commands() -> None:
    [dockerfile] = _deploy("Dockerfile")
    [cmd] = [line[4:] for line in dockerfile.read_text().splitlines() if line.startswith("CMD ")]
    _check_command(json.loads(cmd), "Dockerfile")
    [compose] = _deploy("compose.yaml")
    services = yaml.safe_load(compose.read_text())["services"]
    commands = 0
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
        command = service.get("command", [])
        if command and command[0] == "conveyor":
            _check_command(command, f"compose service {name}")
            _check_variables(service.get("environment", {}), f"compose service {name}")
            commands += 1
    assert commands == 3


def test_the_image_installs_extras_that_exist() -> None:
    [requirements] = _deploy("requirements.txt")
    extras = set(metadata("conveyor").get_all("Provides-Extra") or [])
    lines = [line for line in requirements.read_text().splitlines() if not line.startswith("#")]
    for line in filter(None, lines):
        match = re.fullmatch(r"conveyor\[([\w,]+)\]", line.strip())
        assert match, line
        assert set(match[1].split(",")) <= extras, (line, extras)


def _kubernetes() -> dict[str, list[dict[str, Any]]]:
    return {
        p.name: list(yaml.safe_load_all(p.read_text()))
        for p in _deploy(".yaml")
        if "kube" in str(p)
    }


def _containers(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents:
        if document.get("kind") == "Deployment":
            for container in document["spec"]["template"]["spec"]["containers"]:
                yield document["metadata"]["name"], container


def test_the_kubernetes_deployments_run_valid_commands() -> None:
    files = _kubernetes()
    found = 0
    for documents in files.values():
        for name, container in _containers(documents):
            _check_command([*container["command"], *container.get("args", [])], name)
            _check_variables([env["name"] for env in container.get("env", [])], name)
            found += 1
    assert found == 3


def _exported() -> dict[str, set[str]]:
    """Metric (sample) name -> its label names, as conveyor exports them."""
    metrics = ClusterMetrics(queues=[QueueStats(name="default", ready=1, scheduled=0, running=0)])
    text = render_metrics(metrics).decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return {sample.name: set(sample.labels) for sample in samples}


def test_the_autoscaler_uses_metrics_conveyor_exports() -> None:
    exported = _exported()
    files = _kubernetes()
    documents = [document for docs in files.values() for document in docs]
    [hpa] = [d for d in documents if d.get("kind") == "HorizontalPodAutoscaler"]
    deployments = {d["metadata"]["name"] for d in documents if d.get("kind") == "Deployment"}
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    for metric in hpa["spec"]["metrics"]:
        name = metric["external"]["metric"]["name"]
        labels = metric["external"]["metric"]["selector"]["matchLabels"]
        assert name in exported, name
        assert set(labels) <= exported[name], (labels, exported[name])
    [adapter] = files["prometheus-adapter.yaml"]
    queries = json.dumps(adapter)
    used = set(re.findall(r"conveyor_\w+", queries))
    assert used
    assert used <= set(exported), used - set(exported)
