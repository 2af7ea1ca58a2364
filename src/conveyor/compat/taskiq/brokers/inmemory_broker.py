"""Taskiq's `taskiq.brokers.inmemory_broker`."""

from conveyor.compat.taskiq._broker import InMemoryBroker

__all__ = ["InMemoryBroker"]
