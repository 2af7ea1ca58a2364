"""The Taskiq examples and project here are code to port, not tests of this suite: they are
imported or run by the tests next to them."""

collect_ignore = ["taskiq_docs", "taskiq_project"]
