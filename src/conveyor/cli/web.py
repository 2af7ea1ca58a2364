"""`conveyor web APP`: the HTTP API, `/metrics` and the dashboard, served by uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket

import click

from conveyor.broker import Broker
from conveyor.cli.app import load_broker
from conveyor.cli.logs import configure_logging
from conveyor.errors import ConfigurationError

__all__ = ["web"]

log = logging.getLogger("conveyor.web")


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
    help="bearer token every route but /tasks/health needs [env CONVEYOR_WEB_TOKEN]",
)
@click.option("--log-level", default="INFO", show_default=True)
def web(
    app: str, modules: tuple[str, ...], host: str, port: int, token: str | None, log_level: str
) -> None:
    """Serve the HTTP API, Prometheus metrics and the dashboard for APP (module:broker)."""
    try:
        import uvicorn

        from conveyor.web import create_app
    except ImportError as exc:
        raise ConfigurationError(f"{exc} (missing {exc.name})") from None
    broker = load_broker(app, modules)
    configure_logging(log_level)
    asyncio.run(_reachable(broker))
    listener = _listen(host, port)
    bound = listener.getsockname()[1]
    log.info("dashboard and API on http://%s:%d/ for %s", host, bound, broker.transport.safe_url)
    if token is None:
        log.warning("no --token: anyone who reaches this port can send and cancel tasks")
    config = uvicorn.Config(
        create_app(broker, token=token),
        log_config=None,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=3,
    )
    uvicorn.Server(config).run(sockets=[listener])


async def _reachable(broker: Broker) -> None:
    """Start and stop the broker once, so an unreachable one is one line before serving."""
    try:
        await broker.startup()
    finally:
        await broker.shutdown()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port is one clear error before anything starts."""
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
