"""Shared test setup: the default evaluation store goes to a temporary file, never ~/.cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_default_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["NAS_GYM_STORE"] = str(tmp_path_factory.mktemp("store") / "evaluations.sqlite")
