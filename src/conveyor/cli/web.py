"""`conveyor web APP`: the HTTP API, `/metrics` and the dashboard, served by uvicorn."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

import click

from conveyor.broker import Broker
from conveyor.cli.app import load_broker
from conveyor.cli.output import log_level_option
from conveyor.errors import ConfigurationError
from conveyor.logs import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["web"]

log = logging.getLogger("conveyor.web")

#: Host names a server bound to a loopback address answers to (DNS rebinding protection).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class _NoQuery(logging.Filter):
    """Drops the query string from uvicorn's access lines: a URL may carry a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the path argument of an access record; keep every record."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


@click.command()
@click.argument("app")
@click.argument("modules", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free"
)
@click.option(
    "--token",
    envvar="CONVEYOR_WEB_TOKEN",
    default=None,
    help="bearer token every route but /tasks/health needs [env CONVEYOR_WEB_TOKEN]; "
    "prefer the variable or --token-file: a command line is visible to every local user",
)
@click.option(
    "--token-file",
    envvar="CONVEYOR_WEB_TOKEN_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="read the token from this file [env CONVEYOR_WEB_TOKEN_FILE]",
)
@click.option(
    "--max-body",
    type=click.IntRange(1),
    default=16 * 1024 * 1024,
    show_default=True,
    help="largest request body in bytes (413 beyond it)",
)
@log_level_option
def web(
    app: str,
    modules: tuple[str, ...],
    host: str,
    port: int,
    token: str | None,
    token_file: str | None,
    max_body: int,
    log_level: str,
) -> None:
    """Serve the HTTP API, Prometheus metrics and the dashboard for APP (module:broker)."""
    try:
        import uvicorn

        import conveyor.web  # noqa: F401 - fail here, naming what is missing
    except ImportError as exc:
        raise ConfigurationError(f"{exc} (missing {exc.name})") from None
    token = _token(token, token_file)
    broker = load_broker(app, modules)
    configure_logging(log_level)
    asyncio.run(_reachable(broker))
    listener = _listen(host, port)
    bound = listener.getsockname()[1]
    log.info("dashboard and API on http://%s:%d/ for %s", host, bound, broker.transport.safe_url)
    if token is None:
        log.warning("no --token: anyone who reaches this port can send and cancel tasks")
    logging.getLogger("uvicorn.access").addFilter(_NoQuery())
    config = uvicorn.Config(
        _web_app(broker, token, host, max_body),
        log_config=None,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=3,
    )
    uvicorn.Server(config).run(sockets=[listener])


def _token(token: str | None, token_file: str | None) -> str | None:
    """The token given, or read from `token_file` (its first line, without spaces)."""
    if token_file is None:
        return token
    if token is not None:
        raise ConfigurationError("give --token or --token-file, not both")
    try:
        with open(token_file, encoding="utf-8") as file:
            read = file.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigurationError(f"cannot read the token file {token_file}: {reason}") from None
    if not read:
        raise ConfigurationError(f"the token file {token_file} is empty")
    return read


def _web_app(broker: Broker, token: str | None, host: str, max_body: int) -> FastAPI:
    """`create_app(broker)`, answering only to local host names when bound to a loopback address
    (so a web page cannot reach it by pointing its own name at 127.0.0.1: DNS rebinding)."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from conveyor.web import create_app

    app = create_app(broker, token=token, max_body=max_body)
    if _is_loopback(host):
        names = [*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host]
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=names)
    return app


async def _reachable(broker: Broker) -> None:
    """Start and stop the broker once, so an unreachable one is one line before serving."""
    try:
        await broker.startup()
    finally:
        await broker.shutdown()


def _is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses: only this machine should reach the server."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port is one clear error before anything starts."""
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
