"""Taskiq's `taskiq.brokers.zmq_broker`."""

from conveyor.compat.taskiq._broker import ZeroMQBroker

__all__ = ["ZeroMQBroker"]
