"""The HTTP API, Prometheus metrics and live dashboard of SPEC §8.

`conveyor web app.tasks:broker` serves them; `conveyor.web.router(broker)` mounts the same routes
in your own FastAPI app and `conveyor.web.create_app(broker)` builds a whole app.
"""

try:
    import fastapi  # noqa: F401 - fail here, naming the extra, rather than deep inside
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the web API needs FastAPI: pip install 'conveyor[web]'", name=exc.name
    ) from exc

from conveyor.web.app import create_app, router

__all__ = ["create_app", "router"]
