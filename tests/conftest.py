"""The shared fixtures, registered once for every test folder: the real servers and factories on them
(tests/support/servers.py) and the running pipeline of the end-to-end tests (tests/support/pipeline.py).

Markers come from the folder a test lives in, not from each file: unit/ none, integration/
``integration``, e2e/ ``e2e``, ``integration`` and ``slow``, containers/ ``containers`` and
``integration``. What is not a folder's (a slow integration test, the long ``faults`` and ``bench``
suites, the whole pipeline in containers) stays on the tests themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.servers", "tests.support.pipeline"]

FOLDER_MARKERS = {
    "integration": ("integration",),
    "e2e": ("e2e", "integration", "slow"),
    "containers": ("containers", "integration"),
    "labs": ("labs", "e2e", "integration", "slow"),
}
TESTS = Path(__file__).resolve().parent


# First, so that -m deselects by these markers too.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        for marker in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)
