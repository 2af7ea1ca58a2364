"""The libraries and configurations a run measures, each one row of the table.

A variant names its adapter module (`bench.peers.<adapter>`), the venv whose Python runs its
driver and worker, the options its adapter reads, and its group: the server the harness runs
for it (its own Redis, or its own PostgreSQL) and the peers its conveyor rows are compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GROUPS", "NORESULT", "VARIANTS", "Variant", "select"]

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
        default: True when the variant runs the library as it ships as to results: storing
            none (`-noresult`, counted by the recorder) for taskiq, Celery and Dramatiq,
            storing them for the others. False for a peer given a result store it does not
            have by default. conveyor always stores results.
    """

    name: str
    adapter: str
    venv: str = MAIN_VENV
    options: dict[str, str] = field(default_factory=dict)
    conveyor: bool = False
    client_of: str | None = None
    group: str = "redis"
    default: bool = True

    @property
    def recorded(self) -> bool:
        """Completions counted by `bench.recorder` (option `done=recorder`), not observed as
        stored results."""
        return self.options.get("done") == "recorder"

    @property
    def stores_results(self) -> bool:
        """The variant stores a result per task (conveyor's `-recorded` rows do too)."""
        return self.options.get("results") != "none"

    def matches(self, token: str) -> bool:
        """True when `--only` names this variant or its library."""
        return token in (self.name, self.adapter)


#: The options of a peer with its defaults: no result store, completions counted by the
#: recorder (`bench.recorder`).
NORESULT = {"results": "none", "done": "recorder"}


def _conveyor(engine: str, workers: int = 1, recorded: bool = False) -> Variant:
    options = {"engine": engine, "workers": str(workers)}
    group = ENGINE_GROUP.get(engine, "redis")
    name, client = f"conveyor-{engine}", None
    if workers != 1:
        name, client = f"{name}-w{workers}", name
    if recorded:  # results stored all the same; counted as the -noresult peers are
        name, client = f"{name}-recorded", name
        options["done"] = "recorder"
    return Variant(name, "conveyor", options=options, conveyor=True, client_of=client, group=group)


def _noresult(variant: Variant, client_of: str | None = None) -> Variant:
    """`variant` (a peer given a result store) with its library's default: none."""
    return Variant(
        f"{variant.name}-noresult",
        variant.adapter,
        venv=variant.venv,
        options={**variant.options, **NORESULT},
        client_of=client_of,
        group=variant.group,
    )


TASKIQ_LIST = Variant("taskiq-list", "taskiq", options={"broker": "list"}, default=False)
TASKIQ_STREAM = Variant("taskiq-stream", "taskiq", options={"broker": "stream"}, default=False)
CELERY_SOLO = Variant("celery-solo", "celery", options={"pool": "solo"}, default=False)
CELERY_THREADS = Variant(
    "celery-threads",
    "celery",
    options={"pool": "threads"},
    client_of="celery-solo",
    default=False,
)
DRAMATIQ = Variant("dramatiq", "dramatiq", default=False)
TASKIQ_AIO_PIKA = Variant(
    "taskiq-aio-pika", "taskiq", options={"broker": "aio-pika"}, group="amqp", default=False
)
DRAMATIQ_RABBITMQ = Variant(
    "dramatiq-rabbitmq", "dramatiq", options={"broker": "rabbitmq"}, group="amqp", default=False
)
CELERY_AMQP = Variant(
    "celery-amqp",
    "celery",
    options={"pool": "threads", "broker": "amqp"},
    group="amqp",
    default=False,
)
TASKIQ_NATS = Variant(
    "taskiq-nats", "taskiq", options={"broker": "nats-pull"}, group="nats", default=False
)


VARIANTS: tuple[Variant, ...] = (
    _conveyor("redis"),
    _conveyor("redis", 2),
    _conveyor("redis", recorded=True),
    TASKIQ_LIST,
    _noresult(TASKIQ_LIST),
    TASKIQ_STREAM,
    _noresult(TASKIQ_STREAM),
    Variant("arq", "arq", venv=REDIS5_VENV),
    Variant("saq", "saq", venv=REDIS5_VENV),
    Variant("streaq", "streaq"),
    CELERY_SOLO,
    _noresult(CELERY_SOLO),
    CELERY_THREADS,
    _noresult(CELERY_THREADS, client_of="celery-solo-noresult"),
    DRAMATIQ,
    _noresult(DRAMATIQ),
    Variant("huey", "huey"),
    _conveyor("postgres", 1),
    _conveyor("postgres", 2),
    Variant("procrastinate", "procrastinate", venv=POSTGRES_VENV, group="postgres"),
    Variant("pgqueuer", "pgqueuer", venv=POSTGRES_VENV, group="postgres"),
    Variant("saq-postgres", "saq", venv=POSTGRES_VENV, group="postgres"),
    _conveyor("sqlite"),
    _conveyor("sqlite", 2),
    Variant("huey-sqlite", "huey", options={"storage": "sqlite"}, group="sqlite"),
    _conveyor("amqp"),
    _conveyor("amqp", recorded=True),
    TASKIQ_AIO_PIKA,
    _noresult(TASKIQ_AIO_PIKA),
    DRAMATIQ_RABBITMQ,
    _noresult(DRAMATIQ_RABBITMQ),
    CELERY_AMQP,
    _noresult(CELERY_AMQP),
    _conveyor("nats"),
    _conveyor("nats", recorded=True),
    TASKIQ_NATS,
    _noresult(TASKIQ_NATS),
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
