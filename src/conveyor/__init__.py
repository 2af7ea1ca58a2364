"""conveyor: an async-first distributed task queue.

`@broker.task` on sync or async functions, `await task.kiq(...)` to send, typed results, workers
from the CLI; an embedded SQLite broker by default and real engines by URL.
"""

from conveyor.broker import Broker
from conveyor.brokers import InMemoryBroker, RedisBroker, SqliteBroker, broker_from_url
from conveyor.context import Context, Depends
from conveyor.errors import (
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    ConveyorError,
    Reject,
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
from conveyor.results.base import ResultBackend
from conveyor.task import Signature, Task
from conveyor.transports.base import Transport

__version__ = "0.1.0"

__all__ = [
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "Context",
    "ConveyorError",
    "Depends",
    "InMemoryBroker",
    "Kicker",
    "Middleware",
    "RedisBroker",
    "Reject",
    "ResultBackend",
    "ResultError",
    "ResultNotFound",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Signature",
    "SignatureError",
    "SimpleRetryMiddleware",
    "SmartRetryMiddleware",
    "SoftTimeLimitExceeded",
    "SqliteBroker",
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
    "Transport",
    "__version__",
    "broker_from_url",
]
