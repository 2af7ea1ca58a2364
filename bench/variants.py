"""The libraries and configurations a run measures, each one row of the table.

A variant names its adapter module (`bench.peers.<adapter>`), the venv whose Python runs its
driver and worker, and the options its adapter reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["VARIANTS", "Variant", "select"]

MAIN_VENV = ".venv"
REDIS5_VENV = ".venv-redis5"  # arq and saq: redis-py < 6 (see requirements-redis5.txt)


@dataclass(frozen=True)
class Variant:
    """One measured configuration.

    Attributes:
        name: the row's name, e.g. "conveyor-redis" or "celery-solo".
        adapter: the module in `bench.peers` that drives the library.
        venv: the venv directory under bench/ whose Python runs it.
        options: adapter options (engine, pool, broker kind, worker processes).
        conveyor: True for conveyor's own rows, which are compared with the best peer.
        client_of: the variant with the same client (only the worker differs): the bulk
            half of scenario (a) measures the client, so it is run once, on that variant.
    """

    name: str
    adapter: str
    venv: str = MAIN_VENV
    options: dict[str, str] = field(default_factory=dict)
    conveyor: bool = False
    client_of: str | None = None

    def matches(self, token: str) -> bool:
        """True when `--only` names this variant or its library."""
        return token in (self.name, self.adapter)


def _conveyor(engine: str, workers: int) -> Variant:
    options = {"engine": engine, "workers": str(workers)}
    if workers == 1:
        return Variant(f"conveyor-{engine}", "conveyor", options=options, conveyor=True)
    name, client = f"conveyor-{engine}-w{workers}", f"conveyor-{engine}"
    return Variant(name, "conveyor", options=options, conveyor=True, client_of=client)


VARIANTS: tuple[Variant, ...] = (
    _conveyor("redis", 1),
    _conveyor("redis", 2),
    _conveyor("sqlite", 1),
    _conveyor("sqlite", 2),
    _conveyor("nats", 1),
    _conveyor("amqp", 1),
    Variant("taskiq-list", "taskiq", options={"broker": "list"}),
    Variant("taskiq-stream", "taskiq", options={"broker": "stream"}),
    Variant("arq", "arq", venv=REDIS5_VENV),
    Variant("saq", "saq", venv=REDIS5_VENV),
    Variant("streaq", "streaq"),
    Variant("celery-solo", "celery", options={"pool": "solo"}),
    Variant("celery-threads", "celery", options={"pool": "threads"}, client_of="celery-solo"),
    Variant("dramatiq", "dramatiq"),
    Variant("huey", "huey"),
)


def select(only: str | None) -> list[Variant]:
    """The variants `--only a,b` names (by variant or library name), or all of them.

    Raises:
        ValueError: a name matches no variant.
    """
    if not only:
        return list(VARIANTS)
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    unknown = [t for t in tokens if not any(v.matches(t) for v in VARIANTS)]
    if unknown:
        known = sorted({v.adapter for v in VARIANTS} | {v.name for v in VARIANTS})
        raise ValueError(f"--only: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return [v for v in VARIANTS if any(v.matches(t) for t in tokens)]
