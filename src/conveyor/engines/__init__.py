"""Engines: the contracts (`base`), the registry from URL to engine, and one package per engine."""
