"""``tsdemo up``'s progress line reads each stage from the counter its service really exports: served by
servicekit's health endpoint (as every service serves it), with the services' own metric objects."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from deploy.stack.commands import Progress
from generators.publisher import READINGS_ACKED
from ingest.metrics import FORWARDED
from processing.sink import READINGS_STORED
from servicekit.service import serve_health


def _stack(metrics_url: str) -> SimpleNamespace:
    urls = {name: [metrics_url] for name in ("processing", "ingest", "generator")}
    return SimpleNamespace(pipeline=SimpleNamespace(metrics_urls=lambda: urls))


@pytest.fixture
def stack():
    server = serve_health(0, lambda: (True, {}), host="127.0.0.1")
    # One process holds all three services' metric objects here: each "service" is the same endpoint.
    yield _stack(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    server.shutdown()


def _rates(line: str) -> dict[str, float]:
    return {name.strip(): float(rate.replace(",", "")) for name, rate in re.findall(r"([a-z ]+?) ([\d,.-]+)/s", line)}


def test_the_line_shows_a_published_rate_from_the_generators_own_counter(stack):
    progress = Progress(stack)
    first = progress.line()
    assert "published -" not in first and "bridged msgs -" not in first and "stored -" not in first
    READINGS_ACKED.inc(500)
    FORWARDED.inc(250)
    READINGS_STORED.inc(100)
    second = progress.line()
    rates = _rates(second)
    assert rates["published"] > 0 and rates["bridged msgs"] > 0 and rates["stored"] > 0, second
    assert rates["published"] > rates["bridged msgs"] > rates["stored"]


def test_a_service_that_does_not_answer_shows_a_dash():
    line = Progress(_stack("http://127.0.0.1:9/metrics")).line()
    assert line == "published - | bridged msgs - | stored - | spark -"
