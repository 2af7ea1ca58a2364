"""The public surface: exported names, label errors, serializers and signing, `broker_from_url`,
`kiq_sync` from plain code, and `python -m conveyor`."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor import (
    ConfigurationError,
    InMemoryBroker,
    Middleware,
    ResultTimeout,
    SerializationError,
    SignatureError,
    SqliteBroker,
    SyncTaskHandle,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskMessage,
    TaskStatus,
    broker_from_url,
)
from conveyor.serializers import Signer, get_serializer

#: Names SPEC.md fixes that exist today.
SPEC_NAMES = [
    "Broker",
    "InMemoryBroker",
    "SqliteBroker",
    "broker_from_url",
    "Context",
    "Depends",
    "Retry",
    "SoftTimeLimitExceeded",
    "TaskHandle",
    "TaskResult",
    "TaskStatus",
    "Middleware",
    "TaskiqMiddleware",
    "TaskMessage",
    "TaskiqMessage",
    "SimpleRetryMiddleware",
    "SmartRetryMiddleware",
    "ResultTimeout",
    "TaskError",
    "BrokerError",
    "SyncTaskHandle",
    "Scheduler",
    "chain",
    "group",
    "chord",
]

#: Names SPEC.md fixes that later issues add: exported as soon as they exist.
SPEC_NAMES_LATER = [
    "RedisBroker",
    "AmqpBroker",
    "NatsBroker",
    "PostgresBroker",
    "ZeroMQBroker",
    "PrometheusMiddleware",
]


def _exists(name: str) -> bool:
    """True when `conveyor.<name>` is defined (an engine whose extra is missing still is)."""
    try:
        getattr(conveyor, name)
    except AttributeError:
        return False
    except ImportError:
        return True
    return True


def test_all_names_exist_are_unique_and_sorted() -> None:
    names = conveyor.__all__
    assert [name for name in names if not _exists(name)] == []
    assert len(set(names)) == len(names)
    assert names == sorted(names)


def test_all_has_every_spec_name() -> None:
    assert [name for name in SPEC_NAMES if name not in conveyor.__all__] == []
    later = [name for name in SPEC_NAMES_LATER if _exists(name)]
    assert [name for name in later if name not in conveyor.__all__] == []


def test_seed_names_are_aliases() -> None:
    assert TaskiqMiddleware is Middleware
    assert TaskiqMessage is TaskMessage


def test_version_is_the_package_version() -> None:
    assert conveyor.__version__ == importlib.metadata.version("conveyor")


# -- labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "mentions"),
    [
        ({"priority": 42}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"rate_limit": "10 per minute"}, "rate_limit"),
        ({"rate_limit": "0/s"}, "rate_limit"),
        ({"rate_limit": "ten/m"}, "rate_limit"),
        ({"rate_limit": 10}, "rate_limit"),
        ({"retries": -1}, "retries"),
        ({"timeout": "30"}, "timeout"),
        ({"retry_delay": -5}, "retry_delay"),
        ({"queue": ""}, "queue"),
        ({"executor": "gpu"}, "executor"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
def test_a_bad_label_is_an_error_naming_the_task(labels: dict[str, Any], mentions: str) -> None:
    broker = InMemoryBroker()
    with pytest.raises(ConfigurationError) as caught:

        @broker.task("emails.send", **labels)
        def send_email(to: str) -> None:
            """Never registered."""

    assert "'emails.send'" in str(caught.value)
    assert mentions in str(caught.value)
    assert broker.find_task("emails.send") is None


def test_a_bad_label_names_a_task_by_its_default_name() -> None:
    broker = InMemoryBroker()
    with pytest.raises(ConfigurationError, match="priority") as caught:

        @broker.task(priority=42)
        async def job() -> None:
            """Never registered."""

    assert f"'{__name__}:" in str(caught.value)
    assert ".job'" in str(caught.value)


@pytest.mark.parametrize("rate", ["10/m", "5/s", "100/h", "3/10s"])
def test_good_rate_limits_are_accepted(rate: str) -> None:
    broker = InMemoryBroker()

    @broker.task("limited", rate_limit=rate)
    async def limited() -> None:
        """Registered."""

    assert broker.find_task("limited") is limited
    assert limited.labels["rate_limit"] == rate


# -- serializers and signing ---------------------------------------------------------------------

MESSAGE = TaskMessage(
    task_id="id-1",
    task_name="emails.send",
    labels={"queue": "emails", "priority": 3, "my_label": "x"},
    args=[1, "two", [3.5], {"four": 4}, None, True],
    kwargs={"to": "a@b.c"},
    attempt=2,
)


@pytest.mark.parametrize("name", ["json", "msgpack", "pickle"])
def test_a_message_round_trips(name: str) -> None:
    serializer = get_serializer(name)
    assert serializer.name == name
    data = serializer.encode(MESSAGE)
    assert isinstance(data, bytes)
    assert serializer.decode(data, TaskMessage) == MESSAGE


@pytest.mark.parametrize("name", ["json", "msgpack", "pickle"])
def test_malformed_bytes_are_a_serialization_error(name: str) -> None:
    with pytest.raises(SerializationError):
        get_serializer(name).decode(b"\x00\xff not a message {", TaskMessage)


def test_an_unknown_serializer_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="yaml"):
        get_serializer("yaml")


def test_json_is_the_default_and_pickle_only_when_asked() -> None:
    broker = InMemoryBroker()
    assert broker.serializer.name == "json"
    body = broker.outgoing(MESSAGE).body
    assert json.loads(body)["task_name"] == "emails.send"
    assert InMemoryBroker(serializer="pickle").serializer.name == "pickle"


def test_signing_accepts_its_own_messages_and_rejects_the_rest() -> None:
    body = get_serializer("json").encode(MESSAGE)
    signed = Signer("k").sign(body)
    assert signed != body
    assert Signer("k").verify(signed) == body
    assert Signer(b"k").verify(signed) == body
    assert Signer(None).verify(body) == body

    tampered = signed[:-1] + bytes([signed[-1] ^ 1])
    with pytest.raises(SignatureError, match="does not match"):
        Signer("k").verify(tampered)
    with pytest.raises(SignatureError, match="does not match"):
        Signer("other").verify(signed)
    with pytest.raises(SignatureError, match="not signed"):
        Signer("k").verify(body)
    with pytest.raises(SignatureError, match="CONVEYOR_SECRET_KEY"):
        Signer(None).verify(signed)


def test_a_broker_signs_with_the_secret_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", "from-env")
    broker = InMemoryBroker()
    assert broker.signer.enabled
    body = broker.outgoing(MESSAGE).body
    assert get_serializer("json").decode(Signer("from-env").verify(body), TaskMessage) == MESSAGE
    with pytest.raises(SignatureError):
        Signer("other").verify(body)


# -- broker_from_url -----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No `CONVEYOR_*` broker settings, and the working directory is `tmp_path`."""
    for name in ("CONVEYOR_BROKER_URL", "CONVEYOR_RESULT_BACKEND_URL", "CONVEYOR_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


async def test_the_default_broker_is_sqlite_conveyor_db_in_the_cwd(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broker = broker_from_url()
    assert isinstance(broker, SqliteBroker)
    assert broker.path == "conveyor.db"
    assert broker.transport.safe_url == "sqlite:///conveyor.db"
    async with broker:
        pass
    assert (tmp_path / "conveyor.db").is_file()


def test_the_environment_names_the_broker(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("CONVEYOR_BROKER_URL", f"sqlite:///{tmp_path / 'env.db'}?lease=3")
    broker = broker_from_url()
    assert isinstance(broker, SqliteBroker)
    assert broker.path == str(tmp_path / "env.db")
    assert broker.transport.lease_seconds == 3.0

    clean_env.setenv("CONVEYOR_BROKER_URL", "memory://")
    assert isinstance(broker_from_url(), InMemoryBroker)


def test_an_explicit_url_wins_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONVEYOR_BROKER_URL", "sqlite:///env.db")
    assert isinstance(broker_from_url("memory://"), InMemoryBroker)
    broker = broker_from_url("sqlite:///relative.db")
    assert isinstance(broker, SqliteBroker)
    assert broker.path == "relative.db"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://h/db",
        "sqlite://",
        "sqlite:///q.db?lease=x",
        "postgresql://h/db?schema=Not-A-Name",
        "postgresql://h/db?lease=-1",
    ],
)
def test_a_bad_url_is_a_configuration_error(clean_env: pytest.MonkeyPatch, url: str) -> None:
    with pytest.raises(ConfigurationError):
        broker_from_url(url)


# -- kiq_sync ------------------------------------------------------------------------------------


def test_kiq_sync_from_plain_sync_code() -> None:
    broker = InMemoryBroker()

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    @broker.task
    async def slow() -> str:
        await asyncio.sleep(0.5)
        return "slow"

    try:
        handle = add.kiq_sync(1, 2)
        assert isinstance(handle, SyncTaskHandle)
        result = handle.wait_result(timeout=10)
        assert result.return_value == 3
        assert result.status is TaskStatus.SUCCEEDED
        assert handle.is_ready()
        assert handle.status() is TaskStatus.SUCCEEDED

        late = slow.kiq_sync()
        with pytest.raises(ResultTimeout):
            late.wait_result(timeout=0.05)
        assert late.wait_result(timeout=10).return_value == "slow"
    finally:
        broker.shutdown_sync()


# -- the module entry point ------------------------------------------------------------------------


def test_python_dash_m_conveyor_help(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: conveyor ")
    assert "worker" in done.stdout
    assert done.stderr == ""
