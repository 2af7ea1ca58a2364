"""Broker URLs never show a password: in `safe_url`, in errors, in what the broker prints."""

from __future__ import annotations

import pytest

from conveyor import BrokerConnectionError, ConfigurationError, RedisBroker, broker_from_url
from conveyor._urls import safe_url
from conveyor.engines.registry import results_from_url
from tests.servers import free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:secret@h:1/0", "redis://user:***@h:1/0"),
        ("redis://:secret@localhost:6379/1", "redis://:***@localhost:6379/1"),
        ("rediss://user:secret@h/0?ssl_cert_reqs=none", "rediss://user:***@h/0?ssl_cert_reqs=none"),
        ("amqp://guest:secret@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        ("amqp://secretive:secret@h/", "amqp://secretive:***@h/"),
        ("nats://user:se%40cret@h:4222", "nats://user:***@h:4222"),
        ("redis://user:sec@ret@h:1/0", "redis://user:***@h:1/0"),
        ("redis://user:sec:ret@h:1/0", "redis://user:***@h:1/0"),
        ("nats://secret@h:4222", "nats://***@h:4222"),
        ("redis://h/0?password=secret&db=1", "redis://h/0?password=***&db=1"),
        ("nats://h:4222?token=secret", "nats://h:4222?token=***"),
        (
            "amqp://guest:secret@h/?prefix=p&state=redis%3A%2F%2F%3Asecret%40r%3A6379%2F0",
            "amqp://guest:***@h/?prefix=p&state=redis://:***@r:6379/0",
        ),
        ("sqlite:///x.db?lease=5", "sqlite:///x.db?lease=5"),
    ],
)
def test_safe_url_hides_the_password(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert "secret" not in safe_url(url).replace("secretive", "")
    assert "sec" not in safe_url(url).replace("secretive", "")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///conveyor.db",
        "sqlite:////abs/path.db?lease=5",
        "memory://",
        "redis://localhost:6379/0",
        "redis://user@localhost:6379/0",
    ],
)
def test_safe_url_keeps_a_url_without_password(url: str) -> None:
    assert safe_url(url) == url


def test_an_unknown_scheme_error_hides_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        broker_from_url("kafka://user:secret@h:1/0")
    assert "kafka://user:***@h:1/0" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_a_bad_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="lease='soon'"):
        broker_from_url("sqlite:///q.db?lease=soon")


@pytest.mark.parametrize("url", ["sqlite://user:secret@/q.db", "sqlite://localhost/tmp/x.db"])
def test_a_sqlite_url_with_a_host_is_refused_without_showing_a_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="names a host") as caught:
        broker_from_url(url)
    assert "secret" not in str(caught.value)


def test_an_unknown_result_backend_error_hides_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        results_from_url("kafka://user:secret@h:1/0")
    assert "secret" not in str(caught.value)


async def test_an_unreachable_redis_error_names_the_url_without_the_password() -> None:
    broker = broker_from_url(f"redis://user:secret@127.0.0.1:{free_port()}/0?prefix=x")
    assert isinstance(broker, RedisBroker)
    with pytest.raises(BrokerConnectionError) as caught:
        await broker.startup()
    assert "redis://user:***@127.0.0.1" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_redis_url_options_are_read() -> None:
    broker = broker_from_url("redis://127.0.0.1:1/3?prefix=app1&lease=7")
    assert isinstance(broker, RedisBroker)
    assert broker.transport.lease_seconds == 7.0
    assert broker.url == "redis://127.0.0.1:1/3"
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisBroker("redis://127.0.0.1:1/0", prefix="a{b}")
