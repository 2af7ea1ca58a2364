"""The memory engine: typed objects in this process, so nothing malformed can be planted."""

from __future__ import annotations

from tests.contract.cases import EngineCase

CASE = EngineCase("memory", lambda tmp_path: "memory://")
