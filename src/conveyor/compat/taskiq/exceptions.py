"""Taskiq's exceptions (`taskiq.exceptions`), each conveyor's own class under Taskiq's name."""

from conveyor.errors import (
    BrokerError as SendTaskError,
)
from conveyor.errors import (
    ConveyorError as TaskiqError,
)
from conveyor.errors import (
    NoResult as NoResultError,
)
from conveyor.errors import (
    Reject as TaskRejectedError,
)
from conveyor.errors import (
    ResultError as ResultIsReadyError,
)
from conveyor.errors import (
    ResultNotFound as ResultGetError,
)
from conveyor.errors import (
    ResultTimeout as TaskiqResultTimeoutError,
)
from conveyor.errors import (
    SignatureError as SecurityError,
)

__all__ = [
    "NoResultError",
    "ResultGetError",
    "ResultIsReadyError",
    "SecurityError",
    "SendTaskError",
    "TaskRejectedError",
    "TaskiqError",
    "TaskiqResultTimeoutError",
]
