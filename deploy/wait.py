"""``wait_until``: the one polling loop of the deployment code and the tests (servers becoming ready,
services becoming healthy, data arriving), so each wait names what it waited for when it gives up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError, AssertionError):
    """``wait_until`` gave up. Also an AssertionError, so a test waiting on it fails rather than errors."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, every: float = 0.2,
               detail: Callable[[], str] | None = None) -> T:
    """Call ``predicate`` every ``every`` seconds until it returns something true, and return that.

    Raises ``WaitTimeout`` naming ``what`` (and ``detail()``, say a log tail) after ``timeout`` seconds.
    A predicate that can tell waiting is pointless (the process it waits for exited) raises instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"gave up after {timeout:.0f}s waiting for {what}"
            raise WaitTimeout(f"{message}\n{detail()}" if detail is not None else message)
        time.sleep(every)
