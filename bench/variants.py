"""The libraries and configurations a run measures, each one row of the table.

A variant names its adapter module (`bench.peers.<adapter>`), the venv whose Python runs its
driver and worker, the options its adapter reads, and its group: the server the harness runs
for it (its own Redis, or its own PostgreSQL) and the peers its conveyor rows are compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GROUPS", "VARIANTS", "Variant", "select"]

MAIN_VENV = ".venv"
REDIS5_VENV = ".venv-redis5"  # arq and saq: redis-py < 6 (see requirements-redis5.txt)
POSTGRES_VENV = ".venv-postgres"  # the PostgreSQL peers (see requirements-postgres.txt)
#: The groups, in the order of the report: each has its own server and its own best peers.
GROUPS = ("redis", "postgres", "sqlite", "amqp", "nats")
#: The group of each conveyor engine (every one has a group of its own).
ENGINE_GROUP = {"postgres": "postgres", "sqlite": "sqlite", "amqp": "amqp", "nats": "nats"}


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
        group: "redis" (the harness's Redis), "postgres" (the harness's PostgreSQL),
            "sqlite" (no server: a file in the session's scratch directory), "amqp" (the
            machine's RabbitMQ, names under a prefix of the run; state and results in the
            harness's Redis) or "nats" (the harness's nats-server; taskiq's results in its
            Redis).
    """

    name: str
    adapter: str
    venv: str = MAIN_VENV
    options: dict[str, str] = field(default_factory=dict)
    conveyor: bool = False
    client_of: str | None = None
    group: str = "redis"

    def matches(self, token: str) -> bool:
        """True when `--only` names this variant or its library."""
        return token in (self.name, self.adapter)


def _conveyor(engine: str, workers: int) -> Variant:
    options = {"engine": engine, "workers": str(workers)}
    group = ENGINE_GROUP.get(engine, "redis")
    if workers == 1:
        return Variant(
            f"conveyor-{engine}", "conveyor", options=options, conveyor=True, group=group
        )
    name, client = f"conveyor-{engine}-w{workers}", f"conveyor-{engine}"
    return Variant(name, "conveyor", options=options, conveyor=True, client_of=client, group=group)


VARIANTS: tuple[Variant, ...] = (
    _conveyor("redis", 1),
    _conveyor("redis", 2),
    Variant("taskiq-list", "taskiq", options={"broker": "list"}),
    Variant("taskiq-stream", "taskiq", options={"broker": "stream"}),
    Variant("arq", "arq", venv=REDIS5_VENV),
    Variant("saq", "saq", venv=REDIS5_VENV),
    Variant("streaq", "streaq"),
    Variant("celery-solo", "celery", options={"pool": "solo"}),
    Variant("celery-threads", "celery", options={"pool": "threads"}, client_of="celery-solo"),
    Variant("dramatiq", "dramatiq"),
    Variant("huey", "huey"),
    _conveyor("postgres", 1),
    _conveyor("postgres", 2),
    Variant("procrastinate", "procrastinate", venv=POSTGRES_VENV, group="postgres"),
    Variant("pgqueuer", "pgqueuer", venv=POSTGRES_VENV, group="postgres"),
    Variant("saq-postgres", "saq", venv=POSTGRES_VENV, group="postgres"),
    _conveyor("sqlite", 1),
    _conveyor("sqlite", 2),
    Variant("huey-sqlite", "huey", options={"storage": "sqlite"}, group="sqlite"),
    _conveyor("amqp", 1),
    Variant("taskiq-aio-pika", "taskiq", options={"broker": "aio-pika"}, group="amqp"),
    Variant("dramatiq-rabbitmq", "dramatiq", options={"broker": "rabbitmq"}, group="amqp"),
    Variant("celery-amqp", "celery", options={"pool": "threads", "broker": "amqp"}, group="amqp"),
    _conveyor("nats", 1),
    Variant("taskiq-nats", "taskiq", options={"broker": "nats-pull"}, group="nats"),
)


def select(only: str | None, engine: str | None = None) -> list[Variant]:
    """The variants of group `engine` (default "redis", "all" for every group), or those of
    them that `--only a,b` names (by variant or library name).

    Without `--engine`, a name is looked up in the Redis group first, so `--only conveyor,saq`
    means what it always did; a name only another group has (`procrastinate`,
    `conveyor-postgres`, `conveyor-sqlite`, `dramatiq-rabbitmq`) picks from that group.

    Raises:
        ValueError: a name matches no variant of the group.
    """
    groups = GROUPS if engine == "all" else (engine or "redis",)
    pool = [v for v in VARIANTS if v.group in groups]
    if not only:
        return pool
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    chosen: set[str] = set()
    for token in tokens:
        found = [v.name for v in pool if v.matches(token)]
        if not found and engine is None:
            found = [v.name for v in VARIANTS if v.matches(token)]
        if not found:
            known = sorted({v.adapter for v in pool} | {v.name for v in pool})
            raise ValueError(f"--only: unknown {token} (known: {', '.join(known)})")
        chosen.update(found)
    return [v for v in VARIANTS if v.name in chosen]
