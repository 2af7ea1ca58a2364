"""conveyor: an async-first distributed task queue.

`@broker.task` on sync or async functions, `await task.kiq(...)` to send, typed results, workers
from the CLI; an embedded SQLite broker by default and real engines by URL.
"""

from typing import TYPE_CHECKING

from conveyor.brokers import (
    AmqpBroker,
    Broker,
    InMemoryBroker,
    NatsBroker,
    PostgresBroker,
    RedisBroker,
    SqliteBroker,
    ZeroMQBroker,
    broker_from_url,
)
from conveyor.context import Context, Depends
from conveyor.engines.base import MessageTransport, ResultBackend, StateStore
from conveyor.errors import (
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    ConveyorError,
    NoResult,
    Reject,
    Requeue,
    ResultError,
    ResultNotFound,
    ResultTimeout,
    Retry,
    SerializationError,
    SignatureError,
    SoftTimeLimitExceeded,
    TaskCancelled,
    TaskError,
    TaskNotFound,
    WorkflowError,
)
from conveyor.kicker import Kicker
from conveyor.message import TaskiqMessage, TaskMessage
from conveyor.middleware import (
    Middleware,
    SimpleRetryMiddleware,
    SmartRetryMiddleware,
    TaskiqMiddleware,
)
from conveyor.portal import SyncTaskHandle
from conveyor.result import TaskHandle, TaskResult, TaskStatus
from conveyor.scheduler import Scheduler
from conveyor.task import Signature, Task
from conveyor.workflows import chain, chord, group

if TYPE_CHECKING:  # imported on first use: prometheus-client is the `web` extra
    from conveyor.prometheus import PrometheusMiddleware

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Names whose optional extra is imported only when used (`PrometheusMiddleware`)."""
    if name == "PrometheusMiddleware":
        from conveyor.prometheus import PrometheusMiddleware

        return PrometheusMiddleware
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")


__all__ = [
    "AmqpBroker",
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "Context",
    "ConveyorError",
    "Depends",
    "InMemoryBroker",
    "Kicker",
    "MessageTransport",
    "Middleware",
    "NatsBroker",
    "NoResult",
    "PostgresBroker",
    "PrometheusMiddleware",
    "RedisBroker",
    "Reject",
    "Requeue",
    "ResultBackend",
    "ResultError",
    "ResultNotFound",
    "ResultTimeout",
    "Retry",
    "Scheduler",
    "SerializationError",
    "Signature",
    "SignatureError",
    "SimpleRetryMiddleware",
    "SmartRetryMiddleware",
    "SoftTimeLimitExceeded",
    "SqliteBroker",
    "StateStore",
    "SyncTaskHandle",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskHandle",
    "TaskMessage",
    "TaskNotFound",
    "TaskResult",
    "TaskStatus",
    "TaskiqMessage",
    "TaskiqMiddleware",
    "WorkflowError",
    "ZeroMQBroker",
    "__version__",
    "broker_from_url",
    "chain",
    "chord",
    "group",
]
