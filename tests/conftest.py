"""Shared test setup.

- One torch thread per process (inherited by the subprocesses tests start): the children here are
  tiny, train faster on one thread, and several processes on 2 cores must not oversubscribe them.
- The default evaluation store goes to a temporary file, never ~/.cache.
- ``@pytest.mark.gpu`` tests run only where CUDA is available (skipped otherwise).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_default_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["NAS_GYM_STORE"] = str(tmp_path_factory.mktemp("store") / "evaluations.sqlite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with ``slow`` tests first (each module kept whole, for its module-scoped fixtures;
    order otherwise unchanged): ``pytest -n 2`` hands the long tests out early, so one of them does
    not run alone at the end while the other worker idles."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    slow = {module(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: module(item) not in slow)
    if not torch.cuda.is_available():  # the ``gpu`` marker: CUDA paths, skipped without a GPU
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)
