"""Taskiq's `taskiq.depends`: dependencies a task can ask for."""
