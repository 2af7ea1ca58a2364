"""URL -> engine: the one place a URL scheme names an engine package, imported on first use.

An engine package exposes `open_engine(url, **options) -> Engine`. One that keeps no state of
its own (RabbitMQ, ZeroMQ: `KEEPS_STATE = False`) gets the store of another engine, named by
its URL's `?state=` option or a `state_url` argument, passed in as `store=`; its results default
to that engine's too. Without a state URL that store is the memory engine's, per process.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from conveyor._urls import safe_url, split_options
from conveyor.engines.base import Engine, ResultBackend
from conveyor.errors import ConfigurationError

__all__ = ["SCHEMES", "engine_name", "engine_of", "open_url", "results_from_url"]

#: URL scheme -> engine package (under `conveyor.engines`).
SCHEMES = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+sentinel": "redis",
    "redis+cluster": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "nats": "nats",
    "amqp": "amqp",
    "amqps": "amqp",
    "zmq": "zmq",
}
#: Engine package -> the extra that installs its driver.
_EXTRAS = {"redis": "redis", "postgres": "postgres", "nats": "nats", "amqp": "amqp", "zmq": "zmq"}
_HINT = (
    "use sqlite:///file.db, redis://host:port/db, postgresql://host:5432/db,"
    " amqp://host:5672/, nats://host:4222,"
    " zmq://host:5555 or memory://"
)


def engine_name(url: str, what: str = "engine") -> str:
    """The name of the engine package a URL's scheme names; `what` the URL is for errors.

    Raises:
        ConfigurationError: the scheme is unknown.
    """
    name = SCHEMES.get(urlsplit(url).scheme)
    if name is None:
        raise ConfigurationError(f"unknown {what} URL scheme in {safe_url(url)!r}: {_HINT}")
    return name


def engine_of(url: str) -> ModuleType:
    """The engine package a URL's scheme names, imported.

    Raises:
        ConfigurationError: the scheme is unknown.
        ImportError: the engine's extra is not installed (the message names it).
    """
    name = engine_name(url)
    try:
        return importlib.import_module(f"conveyor.engines.{name}")
    except ImportError as exc:
        extra = _EXTRAS.get(name)
        if extra is None or exc.name == f"conveyor.engines.{name}":
            raise
        raise ImportError(
            f"the {name} engine needs the {extra} extra: pip install 'conveyor[{extra}]'",
            name=exc.name,
        ) from exc


def open_url(url: str, *, state_url: str | None = None, **options: Any) -> Engine:
    """The parts of the engine `url` names, each missing one filled from the state URL's engine.

    Raises:
        ConfigurationError: an unknown scheme, or a malformed URL or option.
        ImportError: the engine's extra is not installed.
    """
    module = engine_of(url)
    if getattr(module, "KEEPS_STATE", True):
        if state_url is not None:
            raise ConfigurationError(f"{safe_url(url)!r} keeps its own state: drop state_url")
        engine: Engine = module.open_engine(url, **options)
        return engine
    url, query = split_options(url, ("state",))
    state = open_url(query.get("state") or state_url or "memory://")
    engine = module.open_engine(url, store=state.store, **options)
    return Engine(engine.transport, state.store, engine.results or state.results)


def results_from_url(url: str) -> ResultBackend:
    """The result store of the engine `url` names (`CONVEYOR_RESULT_BACKEND_URL`)."""
    engine_name(url, "result backend")
    results = open_url(url).results
    if results is None:
        raise ConfigurationError(f"{safe_url(url)!r} names no result store")
    return results
