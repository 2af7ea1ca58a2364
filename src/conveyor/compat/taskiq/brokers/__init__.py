"""Taskiq's `taskiq.brokers`."""
