"""Reading our services' Prometheus ``/metrics``: what the stage collector and ``tsdemo up``'s progress
line take the stage counters from.

A target is a ``/metrics`` URL. Its host may name several instances (a Kubernetes headless Service, a
compose service with replicas): ``instances`` turns it into one URL per address the name resolves to,
so each replica's counter is read and summed, not whichever one a load-balanced name happens to reach.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families


class ScrapeError(OSError):
    """A target did not answer with metrics."""


def fetch(url: str, timeout: float = 2.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our services' own URLs)
            return resp.read().decode()
    except (OSError, ValueError) as exc:
        raise ScrapeError(f"cannot read {url}: {exc}") from exc


def sample_sums(text: str, names: set[str], labels: Mapping[str, str] | None = None) -> dict[str, float]:
    """Per sample name in ``names``: the sum over its samples whose labels include ``labels`` (all of them
    by default); a name without such a sample is left out."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def instances(url: str) -> list[str]:
    """One URL per address the URL's host resolves to; the URL itself for an address or a single instance."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return [url]
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ScrapeError(f"cannot resolve {host!r} in {url}: {exc}") from exc
    addresses = sorted({info[4][0] for info in infos})
    if len(addresses) <= 1:
        return [url]
    return [urlunsplit(parts._replace(netloc=(f"[{a}]" if ":" in a else a) + f":{port}")) for a in addresses]


def scrape_sum(urls: list[str], names: set[str], timeout: float = 2.0) -> dict[str, float]:
    """Each name summed over every instance of every URL; raises ``ScrapeError`` if any instance fails,
    since a sum missing one instance would look like a counter going back and then jumping forward."""
    totals = dict.fromkeys(names, 0.0)
    for url in urls:
        for instance in instances(url):
            for name, value in sample_sums(fetch(instance, timeout), names).items():
                totals[name] += value
    return totals
